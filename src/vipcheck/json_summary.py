"""The JSON summary: one record per result, for dashboards, diffs and support engineers.

Also the end-of-run summary grouped by check, so a run of 20,000 items ends with what failed
where in a screenful instead of one line per failing item.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipcheck.cases import Outcome, Result, render
from vipcheck.checks.base import Severity

FIRST_NAMED = 5  # subjects and nodes named per check in the grouped summary


@dataclass
class Summary:
    """Results in the order they ran, written once at the end of the session."""

    results: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.results.append(result)

    def totals(self) -> dict[str, int]:
        counts = Counter(result.outcome for result in self.results)
        return {outcome.value: counts[outcome] for outcome in Outcome}

    def totals_text(self) -> str:
        return ", ".join(f"{n} {outcome}" for outcome, n in self.totals().items() if n)

    def as_json(self) -> dict[str, Any]:
        return {
            "totals": self.totals(),
            "results": [_record(result) for result in self.results],
        }

    def write(self, path: Path) -> None:
        """Stream the records, one per line, so no second copy of every result is built."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            out.write(f'{{\n  "totals": {json.dumps(self.totals())},\n  "results": [')
            for index, result in enumerate(self.results):
                out.write(("," if index else "") + "\n    " + json.dumps(_record(result)))
            out.write("\n  ]\n}\n")

    def by_check(self, first: int = FIRST_NAMED) -> list[str]:
        """Per check with failures or errors: items counted, subjects and nodes, the first named."""
        return grouped_by_check(self.results, first)


@dataclass
class _CheckTally:
    """One check's items: how many ran, which subjects failed or errored, on which nodes."""

    severity: str
    scope: str
    items: int = 0
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    nodes: dict[str, None] = field(default_factory=dict)  # ordered set


def grouped_by_check(results: Iterable[Result], first: int = FIRST_NAMED) -> list[str]:
    """Lines for the end of a run: each check that failed or errored, worst first."""
    tallies: dict[str, _CheckTally] = {}
    for result in results:
        check = result.case.check
        tally = tallies.get(check.id)
        if tally is None:
            tally = tallies[check.id] = _CheckTally(check.severity.value, check.scope.name)
        tally.items += 1
        if result.outcome is Outcome.FAILED:
            tally.failed.append(result.case.id)
            for node in (result.case.node, *(v.node for v in result.violations)):
                if node:
                    tally.nodes[node] = None
        elif result.outcome is Outcome.ERROR:
            tally.errors.append(result.case.id)
    lines = []
    rank = defaultdict(lambda: 3, {"critical": 0, "warning": 1, "info": 2})
    for check_id, tally in sorted(tallies.items(), key=lambda item: rank[item[1].severity]):
        if not tally.failed and not tally.errors:
            continue
        parts = []
        if tally.failed:
            parts.append(f"{len(tally.failed)} failed")
        if tally.errors:
            parts.append(f"{len(tally.errors)} error")
        nodes = f", on {_counted(list(tally.nodes), 'node', first)}" if tally.nodes else ""
        lines.append(
            f"{check_id} [{tally.severity}]: {' and '.join(parts)} of {tally.items} "
            f"{tally.scope} item(s){nodes}"
        )
        if tally.failed:
            lines.append(f"    failed: {_named(tally.failed, first)}")
        if tally.errors:
            lines.append(f"    error: {_named(tally.errors, first)}")
    return lines


def unjudged_critical(results: Iterable[Result]) -> list[str]:
    """Lines for the end of a run: each critical check with skipped items, the first reason
    named, so a gate that passes says what it did not prove (probes cut by the time cap, say)."""
    skipped: dict[str, list[Result]] = defaultdict(list)
    items: Counter[str] = Counter()
    for result in results:
        check = result.case.check
        if check.severity is not Severity.CRITICAL or result.other_mode:
            continue
        items[check.id] += 1
        if result.outcome is Outcome.SKIPPED:
            skipped[check.id].append(result)
    lines = []
    for check_id, unjudged in skipped.items():
        scope = unjudged[0].case.check.scope.name
        lines.append(
            f"{check_id} [critical]: {len(unjudged)} of {items[check_id]} {scope} item(s) "
            "not judged (skipped)"
        )
        lines.append(f"    first: {unjudged[0].case.id}: {unjudged[0].reason}")
    return lines


def _counted(names: list[str], noun: str, first: int) -> str:
    return f"{len(names)} {noun}{'s' if len(names) != 1 else ''} ({_named(names, first)})"


def _named(names: list[str], first: int) -> str:
    more = len(names) - first
    return ", ".join(names[:first]) + (f" and {more} more" if more > 0 else "")


def _record(result: Result) -> dict[str, Any]:
    case = result.case
    failed = bool(result.violations)  # failed, waived or known: the violations stay visible
    return {
        "check": case.check.id,
        "severity": case.check.severity.value,
        "subject": case.id,
        "node": case.node,
        "outcome": result.outcome.value,
        "message": render(result) if failed else result.reason,
        "unseen_nodes": list(result.unseen),
        "fix": [v.fix for v in result.violations] if failed else [],
        "violations": [
            {
                "kind": v.kind.value,
                "node": v.node,
                "subject": v.subject,
                "observed": v.observed,
                "expected": v.expected,
                "fix": v.fix,
                "evidence": list(v.evidence),
                "commands": [list(argv) for argv in v.commands],
                "cluster_commands": [list(argv) for argv in v.cluster_commands],
            }
            for v in result.violations
        ],
        **_gate_fields(result),
    }


def _gate_fields(result: Result) -> dict[str, Any]:
    """The waiver that matched (live or expired) and the gate's notes, when there are any."""
    fields: dict[str, Any] = {}
    if result.waiver is not None:
        waiver = result.waiver
        fields["waiver"] = {
            "check": waiver.check,
            "subject": waiver.subject,
            "node": waiver.node,
            "reason": waiver.reason,
            "owner": waiver.owner,
            "expires": waiver.expires.isoformat(),
            "expired": result.outcome is Outcome.FAILED,
            "source": waiver.source,
        }
    if result.notes:
        fields["notes"] = list(result.notes)
    return fields
