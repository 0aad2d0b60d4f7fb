"""What the IPVS checks share about kube-proxy: whether IPVS applies, what it programs, resyncs."""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from vipcheck.checks.base import Argv, NotApplicable, PartlyJudged, Violation
from vipcheck.expected import ExpectedVirtualService, SameOnEveryNode, expected_virtual_services
from vipcheck.facts import ClusterFacts, Facts, MissingInput, NodeFacts
from vipcheck.model.cluster import (
    Cluster,
    IPAddress,
    KubeRelease,
    Node,
    ProxyMode,
    ServicePortKey,
)
from vipcheck.model.node import Interfaces, IpvsTable, Protocol

KUBE_IPVS0 = "kube-ipvs0"


def require_ipvs_mode(cluster: ClusterFacts) -> None:
    """Skip an IPVS check where kube-proxy runs another mode; without the ConfigMap, run it."""
    config = cluster.kube_proxy_or_none
    if config is not None and config.mode is not ProxyMode.IPVS:
        raise NotApplicable(f"kube-proxy mode is {config.mode}: IPVS checks do not apply")


@dataclass(frozen=True, slots=True)
class NotShown:
    """What a node's input does not show, as a paste was cut: not judged, never called missing."""

    why: str


def not_in_paste(node: NodeFacts, what: str) -> NotShown:
    """A virtual service absent from a partial table: not in the pasted part, so not judged."""
    return NotShown(f"{what} not in the pasted part of its IPVS table ({node.ipvs.partial})")


def judge_each_node(
    facts: Facts, judge: Callable[[str, NodeFacts], Iterable[Violation | NotShown]]
) -> list[Violation]:
    """Every node's violations; a node lacking an input or part of it is named (PartlyJudged)."""
    violations: list[Violation] = []
    unjudged: dict[str, str] = {}
    for name, node in facts.nodes.items():
        try:
            found = list(judge(name, node))
        except MissingInput as missing:
            unjudged[name] = str(missing)
            continue
        violations += [item for item in found if isinstance(item, Violation)]
        not_shown = [item.why for item in found if isinstance(item, NotShown)]
        if not_shown:
            unjudged[name] = f"{name}: " + "; ".join(not_shown)
    if unjudged:
        raise PartlyJudged(violations, unjudged)
    return violations


def restart_kube_proxy(node: str) -> Argv:
    """The command that restarts kube-proxy on one node, so it resyncs the whole IPVS state."""
    return (
        *("kubectl", "-n", "kube-system", "delete", "pod", "-l", "k8s-app=kube-proxy"),
        *("--field-selector", f"spec.nodeName={node}"),
    )


def restart_kube_proxy_text(node: str) -> str:
    """restart_kube_proxy as a person pastes it into a shell: quoted, whatever the node's name."""
    return shlex.join(restart_kube_proxy(node))


def ipvsadm_service_option(protocol: Protocol) -> str:
    """ipvsadm's option naming a virtual service of this protocol (-t, -u, --sctp-service)."""
    return {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}[protocol]


def expected_for_port(
    cluster: Cluster, node: NodeFacts, subject: ServicePortKey
) -> tuple[ExpectedVirtualService, ...]:
    """The VSs a correct kube-proxy keeps on the node for this one Service port."""
    return _expected_index(cluster, node).get(subject, ())


PortJudge = Callable[
    [str, NodeFacts, IpvsTable, ServicePortKey, tuple[ExpectedVirtualService, ...]],
    list[Violation | NotShown],
]
"""Judges one Service port on one node: (node name, node, its IPVS table, port, expected VSs)."""


def judge_port_on_each_node(
    facts: Facts, subject: ServicePortKey, key: str, judge_port: PortJudge
) -> list[Violation]:
    """judge_each_node for one Service port, each node judged on all its ports in one pass.

    Such a check runs once per Service port and node (1.25 million times at 100 nodes x 6,250
    ports): a node's verdicts are computed once under key, only the ports with something to say
    kept, and each item looks its own up.
    """
    cluster = facts.cluster.cluster

    def judge(name: str, node: NodeFacts) -> list[Violation | NotShown]:
        # The Cluster by identity, as for the expected state (_expected_index).
        computed_for, judged = node.derive(
            (key, id(cluster)), lambda: (cluster, _judge_all(cluster, name, node, judge_port))
        )
        if computed_for is not cluster:
            judged = _judge_all(cluster, name, node, judge_port)
        return judged.get(subject, [])

    return judge_each_node(facts, judge)


def _judge_all(
    cluster: Cluster, name: str, node: NodeFacts, judge_port: PortJudge
) -> dict[ServicePortKey, list[Violation | NotShown]]:
    """Every Service port the node is expected to serve, judged; the empty verdicts left out."""
    table = node.ipvs
    judged = {}
    for port, expected in _expected_index(cluster, node).items():
        found = judge_port(name, node, table, port, expected)
        if found:
            judged[port] = found
    return judged


def _expected_index(cluster: Cluster, node: NodeFacts) -> _NodeExpected:
    """The node's whole expected state, computed once and indexed by Service port.

    Checks run once per Service port, and recomputing it per call cost Services^2 x nodes. The
    index is keyed by everything the expected state depends on (_expected_inputs).
    """
    # The Cluster by identity: hashing one hashes every Service. Facts hand out one Cluster.
    computed_for, inputs = node.derive(
        ("expected-inputs", id(cluster)), lambda: (cluster, _expected_inputs(cluster, node))
    )
    if computed_for is not cluster:
        inputs = _expected_inputs(cluster, node)
    computed_for, by_port = node.derive(
        ("expected-by-port", inputs), lambda: (cluster, _expected_by_port(cluster, node, inputs))
    )
    if computed_for is not cluster:
        by_port = _expected_by_port(cluster, node, inputs)
    return by_port


@dataclass(frozen=True, slots=True)
class _ExpectedInputs:
    """What a node's expected state depends on beyond the Cluster's Services, EndpointSlices and
    kube-proxy config (the Cluster, by identity): the node's name, its own addresses (the NodePort
    candidates and node-address externalIPs), its kube-proxy release (which rules apply), its
    zone label and primary IPs (topology hints, nodePortAddresses: primary)."""

    cluster: int
    node: str
    addresses: tuple[IPAddress, ...]
    release: KubeRelease | None
    zone: str | None
    primary_ips: tuple[IPAddress, ...]
    # Hashed once: the key is looked up once per node and Service port.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.cluster, self.node, self.addresses, self.release, self.zone, self.primary_ips)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash


def _expected_inputs(cluster: Cluster, node: NodeFacts) -> _ExpectedInputs:
    node_object = cluster.node(node.name)
    return _ExpectedInputs(
        cluster=id(cluster),
        node=node.name,
        addresses=node_port_candidates(node, node_object),
        release=cluster.kube_proxy_release(node.name),
        zone=None if node_object is None else node_object.zone,
        primary_ips=() if node_object is None else node_object.primary_ips,
    )


_Expected = tuple[ExpectedVirtualService, ...]


@dataclass
class _Shared:
    """For the last Cluster seen (by identity): the VSs of the Services that are the same on
    every node, computed for the first; one copy of each port's expected VSs (by the identities
    of its VSs, which that copy keeps alive), and the first node's index, which the other nodes
    share where they agree (ClusterIPs under policy Cluster: nearly every port), keeping only
    where they differ (their NodePorts)."""

    cluster: Cluster | None = None
    same_on_every_node: SameOnEveryNode = field(default_factory=dict)
    copies: dict[tuple[int, ...], _Expected] = field(default_factory=dict)
    common: dict[ServicePortKey, _Expected] = field(default_factory=dict)

    def of(self, cluster: Cluster) -> _Shared:
        if self.cluster is not cluster:
            self.cluster, self.same_on_every_node, self.copies, self.common = cluster, {}, {}, {}
        return self


_SHARED = _Shared()


@dataclass(frozen=True, slots=True)
class _NodeExpected:
    """One node's expected VSs per Service port: its own where it differs, else the common."""

    own: Mapping[ServicePortKey, _Expected]
    common: Mapping[ServicePortKey, _Expected]

    def get(self, key: ServicePortKey, default: _Expected) -> _Expected:
        found = self.own.get(key)
        return found if found is not None else self.common.get(key, default)

    def items(self) -> Iterator[tuple[ServicePortKey, _Expected]]:
        """Every Service port with its expected VSs (own ports are among the common ones)."""
        for key, found in self.common.items():
            yield key, self.own.get(key, found)
        if not self.common:
            yield from self.own.items()


def _expected_by_port(cluster: Cluster, node: NodeFacts, inputs: _ExpectedInputs) -> _NodeExpected:
    shared = _SHARED.of(cluster)
    grouped: defaultdict[ServicePortKey, list[ExpectedVirtualService]] = defaultdict(list)
    every = expected_virtual_services(
        cluster, node.name, inputs.addresses, shared.same_on_every_node
    )
    for expected in every:
        grouped[expected.port_key].append(expected)
    mine = {
        key: shared.copies.setdefault(tuple(map(id, found)), found)
        for key, found in _as_tuples(grouped)
    }
    if not shared.common:
        shared.common = mine
        return _NodeExpected({}, mine)
    if mine.keys() != shared.common.keys():
        return _NodeExpected(mine, {})  # other ports than the first node: nothing to share
    own = {key: found for key, found in mine.items() if shared.common[key] is not found}
    return _NodeExpected(own, shared.common)


def _as_tuples(
    grouped: Mapping[ServicePortKey, list[ExpectedVirtualService]],
) -> Iterator[tuple[ServicePortKey, tuple[ExpectedVirtualService, ...]]]:
    for key, found in grouped.items():
        yield key, tuple(found)


def node_port_candidates(node: NodeFacts, node_object: Node | None) -> tuple[IPAddress, ...]:
    """The node's own addresses outside kube-ipvs0 (kube-proxy's NodePort candidates).

    Without `ip -j addr` the Node object's addresses stand in, so ClusterIP checks still run.
    """
    try:
        interfaces = node.interfaces
    except MissingInput:
        if node_object is None:
            raise
        return (*node_object.internal_ips, *node_object.external_ips)
    if interfaces.addr_source is None and node_object is not None:
        return (*node_object.internal_ips, *node_object.external_ips)
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
