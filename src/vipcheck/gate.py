"""The gate: what a failure means for the run. Waived, carried from a baseline, or failing.

Pure: the plugin hands each result to `Gate.judge` and asks `blocks` whether a failure of some
severity makes the exit code 1. Nothing here knows pytest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from vipcheck.cases import Case, Outcome, Result
from vipcheck.checks.base import Severity
from vipcheck.saved_summaries import FindingKey
from vipcheck.waivers import Waiver

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def blocks(severity: Severity, fail_on: Severity) -> bool:
    """Whether a failure of this severity makes the run fail (exit 1) at --vipcheck-fail-on."""
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[fail_on]


def today_utc() -> date:
    return datetime.now(UTC).date()


def finding_keys(result: Result) -> frozenset[FindingKey]:
    """(check, subject, node) of each node a failing result involves; the result's own node."""
    check, subject = result.case.check.id, result.case.id
    nodes = {v.node or result.case.node for v in result.violations} or {result.case.node}
    return frozenset((check, subject, node) for node in nodes)


@dataclass
class Gate:
    """Judges failures against waivers and a baseline, and remembers what it matched."""

    waivers: tuple[Waiver, ...] = ()
    baseline: frozenset[FindingKey] | None = None
    baseline_source: str = ""
    today: date = field(default_factory=today_utc)
    matched: set[Waiver] = field(default_factory=set)
    # Waivers an item deselected (-k, -m) could have matched: not judged, rather than unused.
    unjudged: set[Waiver] = field(default_factory=set)
    waived: list[tuple[str, str, Waiver]] = field(default_factory=list)  # (check, subject, waiver)
    carried: int = 0

    def judge(self, result: Result) -> Result:
        """WAIVED under a live waiver; FAILED naming an expired one; KNOWN if in the baseline."""
        if result.outcome is not Outcome.FAILED:
            return result
        check, subject = result.case.check.id, result.case.id
        nodes = _nodes(result)
        matching = [w for w in self.waivers if w.matches(check, subject, nodes)]
        self.matched.update(matching)
        live = next((w for w in matching if w.live(self.today)), None)
        if live is not None:
            self.waived.append((check, subject, live))
            note = f"waived by {live.owner} until {live.expires.isoformat()}: {live.reason}"
            return replace(result, outcome=Outcome.WAIVED, waiver=live, notes=(note,))
        if matching:
            # An expired waiver makes its owner look again: never carried by a baseline.
            expired = max(matching, key=lambda w: w.expires)
            note = (
                f"waiver expired on {expired.expires.isoformat()} ({expired.owner}): "
                f"{expired.reason} [{expired.source}]"
            )
            return replace(result, waiver=expired, notes=(note,))
        if self.baseline is not None and finding_keys(result) <= self.baseline:
            self.carried += 1
            note = f"known failure: already in the baseline {self.baseline_source}"
            return replace(result, outcome=Outcome.KNOWN, notes=(note,))
        return result

    def deselect(self, cases: Iterable[Case[Any]]) -> None:
        """Note the cases -k or -m left out (read only when there are waivers to tell apart)."""
        if not self.waivers:
            return
        for case in cases:
            check, subject, node = case.check.id, case.id, case.node
            self.unjudged.update(w for w in self.waivers if w.could_match(check, subject, node))

    def unmatched(self) -> list[Waiver]:
        """Waivers that matched no failure in this run and no item it left out, in file order:
        nothing they could have matched was found wrong, so they may have outlived their use."""
        return [w for w in self.waivers if w not in self.matched and w not in self.unjudged]

    def deselected(self) -> list[Waiver]:
        """Waivers that matched no failure among the items run, some of whose items -k or -m
        left out: this run cannot say whether they are still needed."""
        return [w for w in self.waivers if w not in self.matched and w in self.unjudged]

    def expired(self) -> list[Waiver]:
        return [w for w in self.waivers if not w.live(self.today)]


def _nodes(result: Result) -> Iterable[str | None]:
    if result.case.node is not None:
        return [result.case.node]
    return [v.node for v in result.violations]
