"""What the IPVS checks share about kube-proxy: whether IPVS applies, what it programs, resyncs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from vipcheck.checks.base import NotApplicable
from vipcheck.expected import ExpectedVirtualService, expected_virtual_services
from vipcheck.facts import ClusterFacts, MissingInput, NodeFacts
from vipcheck.model.cluster import Cluster, IPAddress, Node, ProxyMode, ServicePortKey
from vipcheck.model.node import Protocol

KUBE_IPVS0 = "kube-ipvs0"


def require_ipvs_mode(cluster: ClusterFacts) -> None:
    """Skip an IPVS check where kube-proxy runs another mode; without the ConfigMap, run it."""
    config = cluster.kube_proxy_or_none
    if config is not None and config.mode is not ProxyMode.IPVS:
        raise NotApplicable(f"kube-proxy mode is {config.mode}: IPVS checks do not apply")


def restart_kube_proxy(node: str) -> str:
    """The command that restarts kube-proxy on one node, so it resyncs the whole IPVS state."""
    return (
        "kubectl -n kube-system delete pod -l k8s-app=kube-proxy "
        f"--field-selector spec.nodeName={node}"
    )


def ipvsadm_service_option(protocol: Protocol) -> str:
    """ipvsadm's option naming a virtual service of this protocol (-t, -u, --sctp-service)."""
    return {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}[protocol]


def expected_for_port(
    cluster: Cluster, node: NodeFacts, subject: ServicePortKey
) -> tuple[ExpectedVirtualService, ...]:
    """The VSs a correct kube-proxy keeps on the node for this one Service port.

    The node's whole expected state is computed once and indexed by Service port: checks run
    once per Service port, and recomputing it per call cost Services^2 x nodes.
    """
    # Keyed by identity: hashing a Cluster hashes every Service. Facts hand out one Cluster.
    computed_for, by_port = node.derive(
        ("expected-by-port", id(cluster)), lambda: (cluster, _expected_by_port(cluster, node))
    )
    if computed_for is not cluster:
        by_port = _expected_by_port(cluster, node)
    return by_port.get(subject, ())


_Expected = tuple[ExpectedVirtualService, ...]


@dataclass
class _Shared:
    """For the last Cluster seen (by identity): one copy of each port's expected VSs, and the
    first node's index, which the other nodes share where they agree (ClusterIPs under policy
    Cluster: nearly every port), keeping only where they differ (their NodePorts)."""

    cluster: Cluster | None = None
    copies: dict[_Expected, _Expected] = field(default_factory=dict)
    common: dict[ServicePortKey, _Expected] = field(default_factory=dict)

    def of(self, cluster: Cluster) -> _Shared:
        if self.cluster is not cluster:
            self.cluster, self.copies, self.common = cluster, {}, {}
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


def _expected_by_port(cluster: Cluster, node: NodeFacts) -> _NodeExpected:
    grouped: defaultdict[ServicePortKey, list[ExpectedVirtualService]] = defaultdict(list)
    candidates = node_port_candidates(node, cluster.node(node.name))
    for expected in expected_virtual_services(cluster, node.name, candidates):
        grouped[expected.port_key].append(expected)
    shared = _SHARED.of(cluster)
    mine = {key: shared.copies.setdefault(found, found) for key, found in _as_tuples(grouped)}
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
    return tuple(
        address.ip
        for interface in interfaces
        if interface.name != KUBE_IPVS0
        for address in interface.addresses or ()
        if not address.ip.is_loopback and not (address.version == 6 and address.ip.is_link_local)
    )
