"""Test cases: one per check and subject, and what running one yields. No pytest here.

Items grow with services + nodes: API-vs-datapath checks are one case per Service port (all nodes),
node checks one per node, interface checks one per node and relevant interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from vipcheck.checks.base import (
    Check,
    InterfaceCheckFn,
    InterfaceSubject,
    NodeCheckFn,
    NotApplicable,
    Scope,
    ServicePortCheckFn,
    Violation,
)
from vipcheck.checks.subjects import rp_filter_interfaces, service_port_subjects
from vipcheck.facts import Facts, MissingInput, Unobserved
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import InvalidValue, Protocol
from vipcheck.parse import ParseError
from vipcheck.settings import Settings

Subject = ServicePortKey | InterfaceSubject | str


class Outcome(StrEnum):
    """A case's result, as the JSON summary names it."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Case:
    """One check applied to one subject, or the reason its subjects could not be listed."""

    check: Check
    subject: Subject
    node: str | None
    unavailable: Exception | None = None

    @property
    def id(self) -> str:
        """The pytest id: what `-k` matches, e.g. `default/redis:6379/TCP` or `node-2/tunl0`."""
        return str(self.subject)


@dataclass(frozen=True, slots=True)
class Result:
    """What running a case found: violations (FAILED when any), or why it could not run."""

    case: Case
    outcome: Outcome
    violations: tuple[Violation, ...] = ()
    reason: str = ""


def cases_for(check: Check, facts: Facts) -> Iterator[Case]:
    """Every case of one check; a subject list that cannot be built is itself one case."""
    if check.scope in (Scope.SERVICE_PORT, Scope.HANDSHAKE):
        try:
            subjects = service_port_subjects(facts.cluster.cluster)
            if check.scope is Scope.HANDSHAKE:
                subjects = [s for s in subjects if s.protocol is Protocol.TCP]
        except (MissingInput, Unobserved, ParseError) as error:
            yield Case(check, "cluster", None, error)
            return
        for subject in subjects:
            yield Case(check, subject, None)
        return
    for name, node in facts.nodes.items():
        if check.scope is Scope.NODE:
            yield Case(check, name, name)
            continue
        try:
            interfaces = rp_filter_interfaces(node, facts.cluster)
        except (MissingInput, Unobserved, ParseError) as error:
            yield Case(check, name, name, error)
            continue
        for interface in interfaces:
            yield Case(check, InterfaceSubject(name, interface), name)


def run_case(case: Case, facts: Facts, settings: Settings) -> Result:
    """Run one case: violations fail it; missing input skips it; an unobserved node errors it.

    A case that spans nodes runs on the observed ones: what they show wrong still FAILS (naming
    the nodes it could not see); a pass is not claimed for nodes nobody saw, so it ERRORS instead.
    """
    unobserved = facts.unobserved_nodes() if case.node is None else {}
    try:
        if case.unavailable is not None:
            raise case.unavailable
        violations = call_check(case, facts.observed_only() if unobserved else facts, settings)
    except (MissingInput, NotApplicable) as reason:
        return Result(case, Outcome.SKIPPED, reason=str(reason))
    except Unobserved as error:
        return Result(case, Outcome.ERROR, reason=str(error))
    except (ParseError, InvalidValue) as error:
        return Result(case, Outcome.ERROR, reason=f"cannot read {error}")
    not_seen = "; ".join(unobserved.values())
    if unobserved and not violations:
        return Result(case, Outcome.ERROR, reason=not_seen)
    outcome = Outcome.FAILED if violations else Outcome.PASSED
    return Result(case, outcome, tuple(violations), reason=not_seen)


def call_check(case: Case, facts: Facts, settings: Settings) -> list[Violation]:
    """Call the case's check with the arguments its scope takes; exceptions propagate."""
    check, subject = case.check, case.subject
    if isinstance(subject, ServicePortKey):
        run_port: ServicePortCheckFn = check.run  # type: ignore[assignment]
        return run_port(subject, facts, settings)
    if isinstance(subject, InterfaceSubject):
        run_interface: InterfaceCheckFn = check.run  # type: ignore[assignment]
        return run_interface(subject, facts.nodes[subject.node], facts.cluster, settings)
    run_node: NodeCheckFn = check.run  # type: ignore[assignment]
    return run_node(facts.nodes[subject], facts.cluster, settings)


def render(result: Result) -> str:
    """The failure text: subject first, then per node observed vs expected, fix, evidence, why."""
    check = result.case.check
    nodes = sorted({v.node for v in result.violations if v.node})
    where = f" on {', '.join(nodes)}" if nodes else ""
    lines = [f"{result.case.id}: {check.title} — violated{where} [{check.id}, {check.severity}]"]
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
