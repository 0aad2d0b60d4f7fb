"""The scopes checks declare: how each lists its subjects, and what a subject list cannot read."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vipcheck.checks.base import ClusterSubject, InterfaceSubject, NodeSubject, Scope, Unlisted
from vipcheck.facts import ClusterFacts, Facts, MissingInput, NodeFacts, Unobserved
from vipcheck.model.cluster import Service, ServicePortKey
from vipcheck.model.node import L4Protocol
from vipcheck.parse import ParseError

# What stops a subject list from being built: its case reports it as run_case would.
UNREADABLE = (MissingInput, Unobserved, ParseError)


def service_port_subjects(services: tuple[Service, ...]) -> list[ServicePortKey]:
    """Every port of every Service kube-proxy programs (no ExternalName, headless, other proxy)."""
    return [
        ServicePortKey(service.key, port.port, port.protocol)
        for service in services
        if service.exclusion is None
        for port in service.ports
    ]


def _service_ports(facts: Facts) -> Iterator[ServicePortKey | Unlisted]:
    try:
        yield from service_port_subjects(facts.cluster.services)
    except UNREADABLE as error:
        yield Unlisted("cluster", None, error)


def _tcp_service_ports(facts: Facts) -> Iterator[ServicePortKey | Unlisted]:
    for subject in _service_ports(facts):
        if isinstance(subject, Unlisted) or subject.protocol is L4Protocol.TCP:
            yield subject


def _nodes(facts: Facts) -> Iterator[NodeSubject | Unlisted]:
    for name in facts.nodes:
        yield NodeSubject(name)


def _cluster(facts: Facts) -> Iterator[ClusterSubject | Unlisted]:
    yield ClusterSubject()


InterfaceChoice = Callable[[NodeFacts, ClusterFacts], list[str]]


def node_interfaces(choose: InterfaceChoice) -> Scope[InterfaceSubject]:
    """One subject per node and interface the check chooses; a node it cannot read, one case."""

    def subjects(facts: Facts) -> Iterator[InterfaceSubject | Unlisted]:
        for name, node in facts.nodes.items():
            try:
                interfaces = choose(node, facts.cluster)
            except UNREADABLE as error:
                yield Unlisted(name, name, error)
                continue
            for interface in interfaces:
                yield InterfaceSubject(name, interface)

    return Scope("node interface", subjects)


SERVICE_PORTS = Scope("service port", _service_ports)
TCP_SERVICE_PORTS = Scope("TCP Service port, probed", _tcp_service_ports)
NODES = Scope("node", _nodes)
CLUSTER = Scope("cluster", _cluster)
