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
    failed = result.outcome is Outcome.FAILED
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
            }
            for v in result.violations
        ],
    }
