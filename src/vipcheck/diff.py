"""`vipcheck diff BEFORE AFTER`: what got worse, what got better, and what cannot be compared.

Each side is a JSON summary or a snapshot directory (its checks are run here, offline). Failures
are compared by (check, subject, node). A failure is only new or resolved when the other side
judged the same subject on the same node; otherwise (a Service added or removed, a node gone, an
item that errored or skipped) it is incomparable, never counted as fixed or broken.

Where the sides' kube-proxy modes differ (IPVS before, nftables after), the diff also compares
what the switch must keep: where each node sends each VIP, and the handshakes
(vipcheck.equivalence); a diff of one mode is what it always was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vipcheck.cases import cases_for, run_case
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS
from vipcheck.datapath import datapath_for
from vipcheck.equivalence import (
    Compared,
    Equivalence,
    SideRecord,
    Verdict,
    compare_sides,
    unavailable,
)
from vipcheck.facts import Facts, Unobserved
from vipcheck.json_summary import Summary
from vipcheck.model.cluster import ProxyMode
from vipcheck.parse import ParseError
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
    # Across a kube-proxy mode switch only (the sides' modes differ); None otherwise.
    equivalence: Equivalence | None = None

    @property
    def lost(self) -> bool:
        """Whether an endpoint or a handshake was lost across a mode switch."""
        return self.equivalence is not None and bool(self.equivalence.lost)

    @property
    def exit_code(self) -> int:
        """1 when anything is new or lost across a mode switch, as a gate wants; 0 otherwise."""
        return 1 if self.new or self.lost else 0

    def as_json(self) -> dict[str, Any]:
        data = {
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
        if self.equivalence is not None:
            data["equivalence"] = self.equivalence.as_json()
        return data

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
        if self.equivalence is not None:
            yield from _equivalence_lines(self.equivalence, hint)
        verdict = "new failures: exit 1" if self.new else "nothing new: exit 0"
        if self.lost:
            verdict = f"{'new failures and ' if self.new else ''}lost across the switch: exit 1"
        yield (
            f"{len(self.new)} new, {len(self.resolved)} resolved, {len(self.unchanged)} unchanged, "
            f"{len(self.incomparable)} incomparable; {verdict}"
        )


def _equivalence_lines(equivalence: Equivalence, hint: str) -> Iterator[str]:
    """The comparison across a mode switch: what was lost, gained and not comparable (at most
    SHOWN lines each), then its counts in one line."""
    modes = f"{equivalence.before_mode} -> {equivalence.after_mode}"
    if equivalence.unavailable:
        yield _line(
            f"equivalence across the switch ({modes}): not compared: {equivalence.unavailable}"
        )
        return
    yield (
        f"equivalence across the switch ({modes}): per TCP Service port and node the endpoints "
        "each VIP is sent to, per VIP and vantage point the handshakes"
    )
    for verdict in (Verdict.LOST, Verdict.GAINED, Verdict.INCOMPARABLE):
        found = equivalence.found[verdict]
        if found:
            yield f"equivalence {verdict.value} ({len(found)}):"
            yield from _listed(found, Compared.text, hint)
    yield equivalence.counts()


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


@dataclass
class Loaded:
    """One side read: its JSON summary, the kube-proxy mode its checks judged (None: unknown),
    and, for a snapshot compared across a mode switch, what its nodes send each VIP to."""

    summary: dict[str, Any]
    mode: ProxyMode | None
    snapshot: bool = False
    record: SideRecord | None = None


def load_sides(
    paths: tuple[Path, Path],
    progress: Progress,
    max_file_bytes: int = MAX_FILE_BYTES,
    settings: Settings = DEFAULTS,
) -> tuple[Loaded, Loaded]:
    """Both sides: a JSON summary as is; a snapshot directory through every check, offline, with
    the thresholds a run would use (settings). Either is held to max_file_bytes
    (--vipcheck-max-file-size), as a replayed snapshot is.

    Two snapshots of different kube-proxy modes also get their SideRecord (vipcheck.equivalence),
    each made right after its own checks from the same facts (their traces and expected state
    shared), so the first side's facts are gone before the second's are judged: the modes are
    known first, from each snapshot's kube-proxy ConfigMap alone (its files are read on use).
    """
    opened = [_open(path, max_file_bytes) for path in paths]
    modes = [_mode(side) for side in opened]
    across = (
        all(isinstance(side, Facts) for side in opened)
        and None not in modes
        and modes[0] != modes[1]
    )
    pending = list(zip(paths, opened, modes, strict=True))
    del opened  # each side's facts are then held by `pending` alone, and let go once judged
    loaded: list[Loaded] = []
    while pending:
        path, side, mode = pending.pop(0)
        if isinstance(side, Facts):
            summary = _summarize(path, side, progress, settings)
            loaded.append(Loaded(summary, mode, True, SideRecord.of(side) if across else None))
        else:
            loaded.append(Loaded(side, mode))
        del side
    return loaded[0], loaded[1]


def _open(path: Path, max_file_bytes: int) -> Facts | dict[str, Any]:
    """A snapshot's facts (its files read on use), or a JSON summary read and checked."""
    if not path.is_dir():
        return load_summary(path, max_file_bytes)
    try:
        return Facts.from_snapshot(load_snapshot(path, max_file_bytes))
    except SnapshotError as error:
        raise SummaryError(str(error)) from None


def _mode(side: Facts | Mapping[str, Any]) -> ProxyMode | None:
    """The kube-proxy mode a side's checks judge: a snapshot's datapath (its ConfigMap's
    `mode`; IPVS without one); for a summary, the one mode whose mode-only checks have items
    judged there (the other mode's skip). None when it cannot be told."""
    if isinstance(side, Facts):
        try:
            return datapath_for(side.cluster).mode
        except (ParseError, Unobserved):
            return None  # the checks error on the ConfigMap, and the diff shows it
    judged = {
        mode
        for record in side["results"]
        if record["outcome"] in JUDGED
        for mode in _SINGLE_MODE.get(record["check"], ())
    }
    return next(iter(judged)) if len(judged) == 1 else None


# Each check that judges one kube-proxy mode only, with that mode.
_SINGLE_MODE = {
    check.id: check.modes for check in CATALOGUE if check.modes and len(check.modes) == 1
}


def _summarize(
    directory: Path, facts: Facts, progress: Progress, settings: Settings
) -> dict[str, Any]:
    """Run the catalogue on a snapshot (its recorded probes, if any) into a JSON summary."""
    progress(f"running the checks on snapshot {printable(str(directory), one_line=True)}")
    summary = Summary()
    for check in (check for check in CATALOGUE if check not in MIGRATION_CHECKS):  # as a run
        for case in cases_for(check, facts):
            summary.add(run_case(case, facts, settings))
    return summary.as_json()


def compare_loaded(before: Loaded, after: Loaded, names: tuple[str, str]) -> Diff:
    """compare() of the two summaries, and, where the sides' kube-proxy modes differ, the
    equivalence across the switch (two snapshots), or why it is not made (a summary)."""
    diff = compare(before.summary, after.summary, names)
    if before.mode is None or after.mode is None or before.mode == after.mode:
        return diff  # the same mode (or unknown): the diff as it always was
    if before.record is not None and after.record is not None:
        diff.equivalence = compare_sides(before.record, after.record, names)
        return diff
    summaries = [
        name for name, side in zip(names, (before, after), strict=True) if not side.snapshot
    ]
    which = (
        "is a JSON summary, which holds"
        if len(summaries) == 1
        else "are JSON summaries, which hold"
    )
    diff.equivalence = unavailable(
        before.mode.value,
        after.mode.value,
        f"needs two snapshots (vipcheck --save-snapshot DIR); {' and '.join(summaries)} {which} "
        "verdicts, not the endpoints each node sends a VIP to",
    )
    return diff


def write_json(diff: Diff, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(diff.as_json(), indent=2) + "\n")
