"""The IPVS datapath: what kube-proxy in IPVS mode programs on each node, indexed once per snapshot.

Checks run once per Service port and node (1.25 million calls at 100 nodes x 6,250 ports), so
each node's expected state (vipcheck.expected) is computed once and indexed by Service port.
Most Services are the same on every node (ClusterIPs under policy Cluster): their VSs are
computed for the first node and shared, and each node keeps its own index only where it differs
(its NodePorts). All of it belongs to one snapshot's Facts (Facts.derive), never to the process,
so two snapshots judged in one process (`vipcheck diff`) each get their own answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from vipcheck.expected import (
    ExpectedVirtualService,
    SameOnEveryNode,
    VirtualServiceKind,
    expected_virtual_services,
)
from vipcheck.facts import (
    IPVS_CONNECTIONS,
    IPVS_TABLE,
    IPVS_TIMEOUTS,
    Derived,
    Facts,
    Input,
    MissingInput,
    NodeFacts,
    Unobserved,
)
from vipcheck.model.cluster import Cluster, IPAddress, Node, ProxyMode, ServicePortKey

# Defined in the model, where the facts read it too (observed_mode); re-exported for the checks.
from vipcheck.model.node import KUBE_IPVS0 as KUBE_IPVS0  # noqa: PLC0414 (re-exported)
from vipcheck.model.node import HostPort, Interfaces, InvalidValue, L4Protocol, VirtualService
from vipcheck.parse import ParseError
from vipcheck.snapshot import SnapshotError

_Expected = tuple[ExpectedVirtualService, ...]


@dataclass(frozen=True, slots=True)
class NodeExpected:
    """One node's expected VSs per Service port: its own where it differs, else the common."""

    own: Mapping[ServicePortKey, _Expected]
    common: Mapping[ServicePortKey, _Expected]

    def get(self, key: ServicePortKey, default: _Expected = ()) -> _Expected:
        found = self.own.get(key)
        return found if found is not None else self.common.get(key, default)

    def items(self) -> Iterator[tuple[ServicePortKey, _Expected]]:
        """Every Service port with its expected VSs (own ports are among the common ones)."""
        for key, found in self.common.items():
            yield key, self.own.get(key, found)
        if not self.common:
            yield from self.own.items()

    def every(self) -> _Expected:
        """Every expected VS of the node, port after port."""
        return tuple(vs for _, found in self.items() for vs in found)


class ExpectedState:
    """One snapshot's expected IPVS state, node by node, built on first use.

    Holds, for its Cluster: the VSs of the Services that are the same on every node (computed
    for the first node), and the first node's index, which the other nodes share where they hold
    the very same VSs, keeping only where they differ.
    """

    def __init__(self, cluster: Cluster, nodes: Mapping[str, NodeFacts]) -> None:
        self.cluster = cluster
        self._nodes = nodes
        self._same_on_every_node: SameOnEveryNode = {}
        self._common: dict[ServicePortKey, _Expected] | None = None
        self._derived = Derived()

    @classmethod
    def of(cls, facts: Facts) -> ExpectedState:
        """The snapshot's expected state, made once by its Facts."""
        return facts.derive("ipvs expected state", lambda: cls(facts.cluster.cluster, facts.nodes))

    def on_node(self, node: NodeFacts) -> NodeExpected:
        """The node's whole expected state, indexed by Service port (computed once per node,
        kept with its facts so it goes when they are let go, vipcheck.judging; a node whose
        addresses are unknown raises MissingInput, each time it is asked)."""
        return node.derive((self, "expected state"), lambda: self._index(node))

    def for_port(self, node: NodeFacts, port: ServicePortKey) -> _Expected:
        """The VSs a correct kube-proxy keeps on the node for this one Service port."""
        return self.on_node(node).get(port)

    def reached_at(self, node: str) -> _Expected:
        """The node's VSs with NodePorts on the addresses its Node object lists, where vantage
        points reach it (the probe's targets): its own expected state, those NodePorts kept,
        when they are among its NodePort candidates (they are on a node's own interfaces);
        computed for them when the node's facts do not tell or do not have them (an external
        IP NATed to the node, a node not observed)."""
        return self._derived.get(("reached", node), lambda: self._reached_at(node))

    def _addresses(self, node: NodeFacts) -> tuple[IPAddress, ...]:
        return node_port_candidates(node, self.cluster.node(node.name))

    def _index(self, node: NodeFacts) -> NodeExpected:
        grouped: defaultdict[ServicePortKey, list[ExpectedVirtualService]] = defaultdict(list)
        every = expected_virtual_services(
            self.cluster, node.name, self._addresses(node), self._same_on_every_node
        )
        for expected in every:
            grouped[expected.port_key].append(expected)
        mine = {key: tuple(found) for key, found in grouped.items()}
        common = self._common
        if common is None:
            self._common = mine
            return NodeExpected({}, mine)
        if mine.keys() != common.keys():
            return NodeExpected(mine, {})  # other ports than the first node: nothing to share
        own = {key: found for key, found in mine.items() if not _same_objects(common[key], found)}
        return NodeExpected(own, common)

    def _reached_at(self, name: str) -> _Expected:
        node_object = self.cluster.node(name)
        addresses = () if node_object is None else _node_object_addresses(node_object)
        own = self._own_holding(name, addresses)
        if own is None:
            return expected_virtual_services(
                self.cluster, name, addresses, self._same_on_every_node
            )
        reached = set(addresses)
        return tuple(
            vs
            for vs in own.every()
            if vs.kind is not VirtualServiceKind.NODE_PORT or vs.address in reached
        )

    def _own_holding(self, name: str, addresses: tuple[IPAddress, ...]) -> NodeExpected | None:
        """The node's own expected state if its NodePort candidates hold these addresses (its
        NodePort VSs on them are then those computed for them), else None."""
        node = self._nodes.get(name)
        if node is None:
            return None
        try:
            if not set(addresses) <= set(self._addresses(node)):
                return None
            return self.on_node(node)
        except _NODE_READ_ERRORS:
            return None


# What reading a node's facts may raise; the probe then plans from the Node object alone.
_NODE_READ_ERRORS = (MissingInput, Unobserved, ParseError, InvalidValue, SnapshotError)


def _same_objects(first: _Expected, other: _Expected) -> bool:
    """Whether two nodes' VSs for a port are the very objects computed once for every node."""
    return len(first) == len(other) and all(a is b for a, b in zip(first, other, strict=True))


def _node_object_addresses(node: Node) -> tuple[IPAddress, ...]:
    return (*node.internal_ips, *node.external_ips)


def node_port_candidates(node: NodeFacts, node_object: Node | None) -> tuple[IPAddress, ...]:
    """The node's own addresses outside kube-ipvs0 (kube-proxy's NodePort candidates).

    Without `ip -j addr` the Node object's addresses stand in, so ClusterIP checks still run.
    """
    try:
        interfaces = node.interfaces
    except MissingInput:
        if node_object is None:
            raise
        return _node_object_addresses(node_object)
    if interfaces.addr_source is None and node_object is not None:
        return _node_object_addresses(node_object)
    return own_addresses(interfaces)


def own_addresses(interfaces: Interfaces) -> tuple[IPAddress, ...]:
    """Addresses on every interface but kube-ipvs0: kube-proxy's nodeAddressSet
    (GetAllLocalAddressesExcept), without loopback and IPv6 link-local ones."""
    return tuple(
        address.ip
        for interface in interfaces
        if interface.name != KUBE_IPVS0
        for address in interface.addresses or ()
        if not address.ip.is_loopback and not (address.version == 6 and address.ip.is_link_local)
    )


@dataclass(frozen=True, slots=True)
class IpvsDatapath:
    """kube-proxy's IPVS mode: virtual servers, kube-ipvs0 addresses, the IPVS connection table."""

    mode: ProxyMode = ProxyMode.IPVS
    node_inputs: tuple[Input, ...] = (IPVS_TABLE, IPVS_TIMEOUTS, IPVS_CONNECTIONS)

    def expected(self, facts: Facts) -> ExpectedState:
        return ExpectedState.of(facts)

    def sends_to(self, node: NodeFacts, vip: HostPort) -> frozenset[HostPort]:
        """Real servers (weight > 0) the node's IPVS has for a TCP VS; none if it was not read."""
        try:
            return _real_servers(node, vip)
        except (MissingInput, Unobserved, ParseError):
            return frozenset()

    def reaches(self, facts: Facts, node: NodeFacts, vip: HostPort) -> frozenset[HostPort]:
        """Real servers (weight > 0) the node's IPVS has for a TCP VS, none without the VS;
        raises what reading the table raises. A VS the same on many nodes is one object
        (the snapshot's SharedServices), so its real servers are listed once for them all."""
        del facts  # nothing beyond the node's table
        return _real_servers(node, vip)


def _real_servers(node: NodeFacts, vip: HostPort) -> frozenset[HostPort]:
    vs = _virtual_service(node, vip)
    return frozenset() if vs is None else vs.weighted_real_servers


def _virtual_service(node: NodeFacts, vip: HostPort) -> VirtualService | None:
    return node.ipvs.get((L4Protocol.TCP.value, vip.address, vip.port))


IPVS = IpvsDatapath()
