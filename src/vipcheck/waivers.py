"""Waivers: a known, accepted deviation, with an owner and an expiry date, read from YAML.

A waiver names a check and selects failures by subject and/or node (exact or glob). Until its
`expires` date (inclusive) it waives what it matches; after that it waives nothing, and the
failure names it, so an accepted deviation comes back to its owner instead of staying hidden.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

REQUIRED = ("check", "reason", "owner", "expires")
OPTIONAL = ("subject", "node")


class WaiverError(Exception):
    """A waivers file that cannot be used: file, line and field, in one line."""


@dataclass(frozen=True, slots=True)
class Waiver:
    """One accepted deviation: which failures, why, who answers for it, until when."""

    check: str
    reason: str
    owner: str
    expires: date
    subject: str | None = None
    node: str | None = None
    source: str = ""  # file:line, to point the reader at the entry

    def live(self, today: date) -> bool:
        """Waives through its expiry date, not after."""
        return today <= self.expires

    def matches(self, check: str, subject: str, nodes: Iterable[str | None]) -> bool:
        """Same check; subject glob on the item's subject; node glob on every node involved."""
        if not self._selects(check, subject):
            return False
        if self.node is None:
            return True
        node_list = [node for node in nodes if node]
        return bool(node_list) and all(fnmatch.fnmatchcase(n, self.node) for n in node_list)

    def could_match(self, check: str, subject: str, node: str | None) -> bool:
        """Whether a failure of an item not run (deselected) might have matched: a Service
        port's nodes are those of its violations, known only once judged, so for an item
        without a node of its own the node glob cannot rule it out."""
        if not self._selects(check, subject):
            return False
        return self.node is None or node is None or fnmatch.fnmatchcase(node, self.node)

    def _selects(self, check: str, subject: str) -> bool:
        """Same check, and the subject glob (if any) on the item's subject."""
        if check != self.check:
            return False
        return self.subject is None or fnmatch.fnmatchcase(subject, self.subject)

    def describe(self) -> str:
        """`rp-filter-not-strict node=node-2 (alice, until 2027-01-31: reason) [file:3]`."""
        selector = " ".join(
            f"{name}={value}"
            for name, value in (("subject", self.subject), ("node", self.node))
            if value is not None
        )
        return (
            f"{self.check} {selector} ({self.owner}, until {self.expires.isoformat()}: "
            f"{self.reason}) [{self.source}]"
        )


def load_waivers(path: Path, known_checks: Sequence[str] = ()) -> tuple[Waiver, ...]:
    """Every waiver in a YAML file: a list, or a mapping with a `waivers:` list."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise WaiverError(f"{path}: cannot read: {error}") from None
    return parse_waivers(text, str(path), known_checks)


def parse_waivers(text: str, source: str, known_checks: Sequence[str] = ()) -> tuple[Waiver, ...]:
    """Parse waivers from YAML text; a problem names source, line and field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(error, "problem", None) or str(error)
        raise WaiverError(f"{source}:{line}: not YAML: {problem}") from None
    except RecursionError:  # `[[[...` 100,000 deep: PyYAML's composer recurses per level
        raise WaiverError(f"{source}: not YAML vipcheck can read: nested too deeply") from None
    if root is None:
        return ()
    entries = root
    if isinstance(root, yaml.MappingNode):
        keys = {key.value: value for key, value in root.value}
        if set(keys) != {"waivers"}:
            raise WaiverError(
                f"{source}:{_line(root)}: expected a list of waivers, or `waivers:` with one"
            )
        entries = keys["waivers"]
    if not isinstance(entries, yaml.SequenceNode):
        raise WaiverError(f"{source}:{_line(entries)}: expected a list of waivers")
    return tuple(_waiver(entry, source, known_checks) for entry in entries.value)


def _waiver(node: yaml.Node, source: str, known_checks: Sequence[str]) -> Waiver:
    if not isinstance(node, yaml.MappingNode):
        raise WaiverError(f"{source}:{_line(node)}: a waiver is a mapping of {', '.join(REQUIRED)}")
    fields: dict[str, str] = {}
    for key, value in node.value:
        name = str(key.value)
        if name not in REQUIRED + OPTIONAL:
            raise WaiverError(
                f"{source}:{_line(key)}: field {name!r}: unknown (known: "
                f"{', '.join(REQUIRED + OPTIONAL)})"
            )
        if not isinstance(value, yaml.ScalarNode) or not str(value.value).strip():
            raise WaiverError(f"{source}:{_line(value)}: field {name!r}: expected a non-empty text")
        fields[name] = str(value.value).strip()
    where = f"{source}:{_line(node)}"
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        raise WaiverError(
            f"{where}: field {missing[0]!r}: missing (required: {', '.join(REQUIRED)})"
        )
    if "subject" not in fields and "node" not in fields:
        raise WaiverError(f"{where}: field 'subject': give a subject and/or a node to waive")
    if known_checks and fields["check"] not in known_checks:
        raise WaiverError(
            f"{source}:{_field_line(node, 'check')}: field 'check': no check "
            f"{fields['check']!r}; known: {', '.join(known_checks)}"
        )
    try:
        expires = date.fromisoformat(fields["expires"])
    except ValueError:
        raise WaiverError(
            f"{source}:{_field_line(node, 'expires')}: field 'expires': expected a date "
            f"YYYY-MM-DD, got {fields['expires']!r}"
        ) from None
    return Waiver(
        check=fields["check"],
        reason=fields["reason"],
        owner=fields["owner"],
        expires=expires,
        subject=fields.get("subject"),
        node=fields.get("node"),
        source=where,
    )


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _field_line(node: yaml.MappingNode, name: str) -> int:
    return next((_line(k) for k, _ in node.value if k.value == name), _line(node))
