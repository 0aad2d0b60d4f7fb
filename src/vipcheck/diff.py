"""`vipcheck diff BEFORE AFTER`: what got worse, what got better, and what cannot be compared.

Each side is a JSON summary or a snapshot directory (its checks are run here, offline). Failures
are compared by (check, subject, node). A failure is only new or resolved when the other side
judged the same subject on the same node; otherwise (a Service added or removed, a node gone, an
item that errored or skipped) it is incomparable, never counted as fixed or broken.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vipcheck.cases import cases_for, run_case
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS
from vipcheck.facts import Facts
from vipcheck.json_summary import Summary
from vipcheck.saved_summaries import (
    FAILING,
    FindingKey,
    SummaryError,
    load_summary,
    record_findings,
)
from vipcheck.settings import DEFAULTS, Settings
from vipcheck.snapshot import MAX_FILE_BYTES, SnapshotError, load_snapshot
from vipcheck.untrusted import printable

JUDGED = FAILING | {"passed"}
# Lines the terminal shows of each list: two runs of a big cluster can differ in every item
# (10,000 new failures printed 10,000 lines); --json keeps them all.
SHOWN = 50
HANDSHAKE = "vip-handshake"
Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finding:
    """One failure on one node, with what was observed there."""

    check: str
    subject: str
    node: str | None
    observed: tuple[str, ...] = ()
    why: str = ""  # for an incomparable one: why it cannot be compared

    def key(self) -> FindingKey:
        return self.check, self.subject, self.node

    def text(self) -> str:
        where = f" on {self.node}" if self.node else ""
        detail = self.why or "; ".join(self.observed)
        return f"{self.check} {self.subject}{where}: {detail}"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "check": self.check,
            "subject": self.subject,
            "node": self.node,
            "observed": list(self.observed),
        }
        if self.why:
            data["why"] = self.why
        return data


@dataclass
class Side:
    """One run, indexed: failures by key, judged subjects, Service ports and nodes seen."""

    name: str
    failures: dict[FindingKey, Finding] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)
    service_ports: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    # Handshake failures per (Service port, "ClusterIP VIP:PORT from VANTAGE").
    unreachable: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, summary: Mapping[str, Any]) -> Side:
        side = cls(name)
        for record in summary["results"]:
            check, subject, node = record["check"], record["subject"], record.get("node")
            side.outcomes[(check, subject)] = record["outcome"]
            if node:
                side.nodes.add(node)
            else:
                side.service_ports.add(subject)
            if record["outcome"] not in FAILING:
                continue
            violations = record.get("violations") or []
            for key in record_findings(record):
                observed = tuple(
                    str(v.get("observed", ""))
                    for v in violations
                    if (v.get("node") or node) == key[2]
                )
                side.failures[key] = Finding(*key, observed=observed)
            if check == HANDSHAKE:
                for v in violations:
                    side.unreachable[(subject, str(v.get("subject", "")))] = str(
                        v.get("observed", "")
                    )
        return side

    def judged(self, check: str, subject: str) -> bool:
        return self.outcomes.get((check, subject)) in JUDGED


@dataclass
class Diff:
    """New, resolved, unchanged and incomparable failures; subjects on one side only."""

    before: str
    after: str
    new: list[Finding] = field(default_factory=list)
    resolved: list[Finding] = field(default_factory=list)
    unchanged: list[Finding] = field(default_factory=list)
    incomparable: list[Finding] = field(default_factory=list)
    only_before: dict[str, list[str]] = field(default_factory=dict)
    only_after: dict[str, list[str]] = field(default_factory=dict)
    became_unreachable: list[str] = field(default_factory=list)
    became_reachable: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when anything is new, as a gate wants; 0 otherwise."""
        return 1 if self.new else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "new": [f.as_json() for f in self.new],
            "resolved": [f.as_json() for f in self.resolved],
            "unchanged": [f.as_json() for f in self.unchanged],
            "incomparable": [f.as_json() for f in self.incomparable],
            "only_before": self.only_before,
            "only_after": self.only_after,
            "handshake": {
                "reachable_before_not_after": self.became_unreachable,
                "reachable_after_not_before": self.became_reachable,
            },
        }

    def lines(self, json_path: Path | None = None) -> Iterator[str]:
        """What the terminal shows: every count, at most SHOWN lines of each list (the rest
        counted; json_path, the --json file, holds them all), each line escaped: subjects,
        nodes and observations come from the runs compared."""
        hint = f"see {json_path}" if json_path else "--json FILE lists them all"
        yield _line(f"vipcheck diff: {self.before} -> {self.after}")
        for title, findings in (
            ("new", self.new),
            ("resolved", self.resolved),
            ("unchanged", self.unchanged),
            ("incomparable", self.incomparable),
        ):
            yield f"{title} ({len(findings)}):"
            yield from _listed(findings, Finding.text, hint)
        for title, items in (
            ("handshake: reachable before, not after", self.became_unreachable),
            ("handshake: reachable after, not before", self.became_reachable),
        ):
            if items:
                yield f"{title} ({len(items)}):"
                yield from _listed(items, str, hint)
        for label, side in (
            ("only in before", self.only_before),
            ("only in after", self.only_after),
        ):
            for kind, subjects in side.items():
                named = ", ".join(subjects[:SHOWN])
                if len(subjects) > SHOWN:
                    named += f", ... and {len(subjects) - SHOWN:,} more ({hint})"
                yield _line(f"{label} (incomparable): {kind}: {named}")
        verdict = "new failures: exit 1" if self.new else "nothing new: exit 0"
        yield (
            f"{len(self.new)} new, {len(self.resolved)} resolved, {len(self.unchanged)} unchanged, "
            f"{len(self.incomparable)} incomparable; {verdict}"
        )


def _listed(items: Sequence[T], text: Callable[[T], str], hint: str) -> Iterator[str]:
    """The first SHOWN items, one escaped line each, then how many more there are."""
    for item in items[:SHOWN]:
        yield _line(f"  {text(item)}")
    if len(items) > SHOWN:
        yield f"  ... and {len(items) - SHOWN:,} more ({hint})"


def _line(text: str) -> str:
    return printable(text, one_line=True)


def compare(before: Mapping[str, Any], after: Mapping[str, Any], names: tuple[str, str]) -> Diff:
    """Compare two JSON summaries."""
    old, new = Side.of(names[0], before), Side.of(names[1], after)
    diff = Diff(*names)
    all_nodes = old.nodes | new.nodes
    for key in sorted(old.failures.keys() | new.failures.keys(), key=_order):
        in_old, in_new = key in old.failures, key in new.failures
        finding = new.failures[key] if in_new else old.failures[key]
        if in_old and in_new:
            diff.unchanged.append(finding)
            continue
        other = old if in_new else new
        why = _incomparable(key, other, all_nodes)
        if why:
            diff.incomparable.append(Finding(*key, observed=finding.observed, why=why))
        elif in_new:
            diff.new.append(finding)
        else:
            diff.resolved.append(finding)
    diff.only_before = _only(old, new)
    diff.only_after = _only(new, old)
    for (subject, target), observed in sorted(new.unreachable.items()):
        if (subject, target) not in old.unreachable and old.judged(HANDSHAKE, subject):
            diff.became_unreachable.append(f"{subject} {target}: {observed}")
    for (subject, target), observed in sorted(old.unreachable.items()):
        if (subject, target) not in new.unreachable and new.judged(HANDSHAKE, subject):
            diff.became_reachable.append(f"{subject} {target} (was: {observed})")
    return diff


def _incomparable(key: FindingKey, other: Side, all_nodes: set[str]) -> str:
    """Why a failure on one side cannot be compared with the other side, or "" when it can."""
    check, subject, node = key
    if node in all_nodes and node not in other.nodes:
        return f"node {node} is not in {other.name}"
    outcome = other.outcomes.get((check, subject))
    if outcome is None:
        return f"{subject} is not in {other.name}"
    if outcome not in JUDGED:
        return f"{subject} was not judged in {other.name} ({outcome})"
    return ""


def _only(side: Side, other: Side) -> dict[str, list[str]]:
    only = {
        "Service ports": sorted(side.service_ports - other.service_ports),
        "nodes": sorted(side.nodes - other.nodes),
    }
    return {kind: subjects for kind, subjects in only.items() if subjects}


def _order(key: FindingKey) -> tuple[str, str, str]:
    return key[0], key[1], key[2] or ""


def load_side(
    path: Path,
    progress: Progress,
    max_file_bytes: int = MAX_FILE_BYTES,
    settings: Settings = DEFAULTS,
) -> dict[str, Any]:
    """A JSON summary as is; a snapshot directory through every check, offline, with the
    thresholds a run would use (settings). Either is held to max_file_bytes
    (--vipcheck-max-file-size), as a replayed snapshot is."""
    if path.is_dir():
        return summarize_snapshot(path, progress, max_file_bytes, settings)
    return load_summary(path, max_file_bytes)


def summarize_snapshot(
    directory: Path,
    progress: Progress,
    max_file_bytes: int = MAX_FILE_BYTES,
    settings: Settings = DEFAULTS,
) -> dict[str, Any]:
    """Run the catalogue on a snapshot (its recorded probes, if any) into a JSON summary."""
    progress(f"running the checks on snapshot {printable(str(directory), one_line=True)}")
    try:
        facts = Facts.from_snapshot(load_snapshot(directory, max_file_bytes))
    except SnapshotError as error:
        raise SummaryError(str(error)) from None
    summary = Summary()
    for check in (check for check in CATALOGUE if check not in MIGRATION_CHECKS):  # as a run
        for case in cases_for(check, facts):
            summary.add(run_case(case, facts, settings))
    return summary.as_json()


def write_json(diff: Diff, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(diff.as_json(), indent=2) + "\n")
