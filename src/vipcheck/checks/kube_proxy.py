"""What the IPVS checks share about kube-proxy: whether IPVS applies, what it programs, resyncs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vipcheck.checks.base import NotApplicable, PartlyJudged, Violation
from vipcheck.expected import ExpectedVirtualService, expected_virtual_services
from vipcheck.facts import ClusterFacts, Facts, MissingInput, NodeFacts
from vipcheck.model.cluster import Cluster, IPAddress, Node, ProxyMode, ServicePortKey
from vipcheck.model.node import Interfaces, Protocol

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
) -> list[ExpectedVirtualService]:
    """The VSs a correct kube-proxy keeps on the node for this one Service port."""
    return [
        expected
        for expected in expected_virtual_services(
            cluster, node.name, node_port_candidates(node, cluster.node(node.name))
        )
        if expected.port_key == subject
    ]


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
