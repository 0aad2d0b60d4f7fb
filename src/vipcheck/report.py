"""The JSON summary: one record per result, for dashboards, diffs and support engineers."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipcheck.cases import Outcome, Result, render


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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")


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
                "commands": list(v.commands),
                "cluster_commands": list(v.cluster_commands),
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
