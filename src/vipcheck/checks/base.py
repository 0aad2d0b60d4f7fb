"""What a check is and what it returns: declared data, so the catalogue and docs come from code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from vipcheck.facts import ClusterFacts, Facts, NodeFacts
from vipcheck.model.cluster import ServicePortKey
from vipcheck.settings import Settings


class Severity(StrEnum):
    """How bad a violation is for traffic through Service VIPs."""

    CRITICAL = "critical"  # connections fail now
    WARNING = "warning"  # connections fail under load, churn or later
    INFO = "info"  # worth knowing; nothing fails because of it


class Scope(StrEnum):
    """What one test item covers, so items grow with services + nodes, not their product."""

    SERVICE_PORT = "service port"  # API-vs-datapath: one item per Service port, all nodes
    NODE = "node"  # one item per node
    NODE_INTERFACE = "node interface"  # one item per node and relevant interface
    HANDSHAKE = "TCP Service port, probed"  # one item per TCP Service port, all vantage points


@dataclass(frozen=True, slots=True)
class Violation:
    """One thing observed wrong: subject first, observed vs expected, the exact fix, evidence."""

    subject: str
    node: str | None
    observed: str
    expected: str
    fix: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InterfaceSubject:
    """An interface on a node, for per-interface checks such as rp_filter."""

    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}/{self.interface}"


ServicePortCheckFn = Callable[[ServicePortKey, Facts, Settings], list[Violation]]
NodeCheckFn = Callable[[NodeFacts, ClusterFacts, Settings], list[Violation]]
InterfaceCheckFn = Callable[[InterfaceSubject, NodeFacts, ClusterFacts, Settings], list[Violation]]


@dataclass(frozen=True, slots=True)
class Check:
    """A catalogue entry: stable id, what it asserts, why (with the reference), the generic fix."""

    id: str
    title: str
    why: str
    fix: str
    severity: Severity
    scope: Scope
    inputs: tuple[str, ...]
    run: ServicePortCheckFn | NodeCheckFn | InterfaceCheckFn


class NotApplicable(Exception):
    """The check does not apply to this subject (e.g. IPVS not in use): SKIP with this reason."""
