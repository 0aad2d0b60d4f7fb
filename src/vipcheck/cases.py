"""Test cases: one per check and subject, and what running one yields. No pytest here.

Each check's scope lists its subjects (Service ports, nodes, node interfaces), so items grow with
services + nodes, and every check is called the same way: `check.run(subject, facts, settings)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic

from vipcheck.checks.base import (
    Check,
    NotApplicable,
    OtherMode,
    PartlyJudged,
    S,
    Unlisted,
    Violation,
)
from vipcheck.checks.kube_proxy import require_mode
from vipcheck.checks.observed import NODE_OBSERVED
from vipcheck.facts import Facts, MissingInput, Unobserved
from vipcheck.model.node import InvalidValue
from vipcheck.parse import ParseError
from vipcheck.settings import Settings
from vipcheck.snapshot import SnapshotError
from vipcheck.waivers import Waiver


class Outcome(StrEnum):
    """A case's result, as the JSON summary names it."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    WAIVED = "waived"  # failed, and a live waiver accepts it
    KNOWN = "known"  # failed, and the --vipcheck-baseline summary already had it


@dataclass(frozen=True, slots=True)
class Case(Generic[S]):
    """One check applied to one subject, or where and why its subjects could not be listed."""

    check: Check[S]
    subject: S | Unlisted

    @property
    def id(self) -> str:
        """The pytest id: what `-k` matches, e.g. `default/redis:6379/TCP` or `node-2/tunl0`."""
        return str(self.subject)

    @property
    def node(self) -> str | None:
        """The one node the case is about; None for a Service port, which spans nodes."""
        return self.subject.node

    @property
    def unavailable(self) -> Exception | None:
        """Why the subjects could not be listed, or None for a case with a subject."""
        return self.subject.error if isinstance(self.subject, Unlisted) else None

    def run(self, facts: Facts, settings: Settings) -> list[Violation]:
        """The check's violations on this subject; read errors and skips propagate."""
        if isinstance(self.subject, Unlisted):
            raise self.subject.error
        return self.check.run(self.subject, facts, settings)


@dataclass(frozen=True, slots=True)
class Result:
    """What running a case found: violations (FAILED when any), or why it could not run."""

    case: Case[Any]
    outcome: Outcome
    violations: tuple[Violation, ...] = ()
    reason: str = ""
    unseen: tuple[str, ...] = ()  # nodes not observed, so not judged by this case
    waiver: Waiver | None = None  # the waiver that matched, live (WAIVED) or expired (FAILED)
    notes: tuple[str, ...] = ()  # what the gate said of it: an expired waiver, a known failure
    other_mode: bool = False  # SKIPPED as the check judges another kube-proxy mode (OtherMode)


OTHER_MODE = "other kube-proxy mode"


def cases_for(check: Check[S], facts: Facts) -> Iterator[Case[S]]:
    """Every case of one check; a subject list that cannot be built is itself one case, and so
    is a check of another kube-proxy mode than the cluster's: one skipped item, not one per
    subject (the nftables checks on an IPVS cluster of 6,250 ports would add 31,000 items)."""
    try:
        require_mode(check.modes, facts.cluster)
    except OtherMode as other:
        yield Case(check, Unlisted(OTHER_MODE, None, other))
        return
    except (MissingInput, ParseError, InvalidValue, SnapshotError):
        pass  # the ConfigMap cannot be read: each item says so when it runs (run_case)
    for subject in check.scope.subjects(facts):
        yield Case(check, subject)


def run_case(case: Case[Any], facts: Facts, settings: Settings) -> Result:
    """Run one case: violations fail it; missing input skips it; an unobserved node errors once.

    A node that could not be observed ERRORS its `node-observed` item, with the cause; its other
    node items SKIP, pointing there, so one dead node is one problem. A case that spans nodes
    judges the observed ones: what they show wrong FAILS; nothing wrong PASSES on the nodes seen,
    naming the unseen ones in its reason and `unseen` (never a pass for them: their own items
    error, so the run fails). A node observed but lacking the check's input (PartlyJudged) is
    named the same way, and without violations elsewhere the case SKIPS.
    """
    unobserved = facts.unobserved_nodes()
    check = case.check
    if case.node is not None and case.node in unobserved and not check.reports_node_observation:
        where = f"{NODE_OBSERVED.id}[{case.node}]"
        return Result(case, Outcome.SKIPPED, reason=f"{unobserved[case.node]} (see {where})")
    if case.node is not None:
        unobserved = {}
    unjudged = ""
    try:
        require_mode(check.modes, facts.cluster)
        violations = case.run(facts.observed_only() if unobserved else facts, settings)
    except PartlyJudged as partly:
        violations, unjudged = partly.violations, str(partly)
    except (MissingInput, NotApplicable) as reason:
        other_mode = isinstance(reason, OtherMode)
        return Result(case, Outcome.SKIPPED, reason=str(reason), other_mode=other_mode)
    except Unobserved as error:
        return Result(case, Outcome.ERROR, reason=str(error))
    except (ParseError, InvalidValue, SnapshotError) as error:
        # SnapshotError: a replayed file gone or unreadable since the snapshot was loaded.
        return Result(case, Outcome.ERROR, reason=f"cannot read {error}")
    not_seen = "; ".join([*unobserved.values(), *filter(None, [unjudged])])
    unseen = tuple(sorted(unobserved))
    if (unjudged or set(unobserved) == set(facts.nodes)) and not violations:
        # Nothing wrong where judged, but some nodes lack the input, or no node was seen at all.
        return Result(case, Outcome.SKIPPED, reason=not_seen, unseen=unseen)
    if unobserved and not violations:
        seen = ", ".join(sorted(set(facts.nodes) - set(unobserved))) or "none"
        not_seen = f"passed on the nodes seen ({seen}); not judged: {not_seen}"
    outcome = Outcome.FAILED if violations else Outcome.PASSED
    return Result(case, outcome, tuple(violations), reason=not_seen, unseen=unseen)


def render(result: Result) -> str:
    """The failure text: subject first, then per node observed vs expected, fix, evidence, why."""
    check = result.case.check
    nodes = sorted({v.node for v in result.violations if v.node})
    where = f" on {', '.join(nodes)}" if nodes else ""
    lines = [f"{result.case.id}: {check.title} — violated{where} [{check.id}, {check.severity}]"]
    lines.extend(f"  {note}" for note in result.notes)
    for violation in result.violations:
        prefix = f"{violation.node}: " if violation.node else ""
        lines.append(f"  {prefix}{violation.subject}: {violation.observed}")
        lines.append(f"      expected: {violation.expected}")
        lines.append(f"      fix: {violation.fix}")
        lines.extend(f"      evidence: {line.rstrip()}" for line in violation.evidence)
    if result.reason:
        lines.append(f"  also not observed: {result.reason}")
    lines.append(f"  why: {check.why}")
    lines.append(f"  fix: {check.fix}")
    return "\n".join(lines)
