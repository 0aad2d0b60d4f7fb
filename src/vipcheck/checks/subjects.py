"""What the checks run over: Service ports kube-proxy programs, interfaces rp_filter guards."""

from __future__ import annotations

from vipcheck.expected import ExpectedVirtualService, expected_virtual_services
from vipcheck.facts import ClusterFacts, MissingInput, NodeFacts
from vipcheck.model.cluster import Cluster, IPAddress, Node, ServicePortKey
from vipcheck.model.node import Interface

KUBE_IPVS0 = "kube-ipvs0"
TUNNEL_KINDS = frozenset({"ipip", "gre", "vxlan", "geneve", "wireguard", "ip6tnl", "sit"})
TUNNEL_NAMES = ("tunl0", "vxlan.calico")
TUNNEL_PREFIXES = ("flannel.", "cilium_")
# Host ends of pod veths (Calico, generic CNI, Cilium): their rp_filter is the CNI's business.
POD_SIDE_PREFIXES = ("cali", "veth", "lxc")


def service_port_subjects(cluster: Cluster) -> list[ServicePortKey]:
    """Every port of every Service kube-proxy programs (no ExternalName, headless, other proxy)."""
    return [
        ServicePortKey(service.key, port.port, port.protocol)
        for service in cluster.services
        if service.exclusion is None
        for port in service.ports
    ]


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
    return tuple(
        address.ip
        for interface in interfaces
        if interface.name != KUBE_IPVS0
        for address in interface.addresses or ()
        if not address.ip.is_loopback and not (address.version == 6 and address.ip.is_link_local)
    )


def rp_filter_interfaces(node: NodeFacts, cluster: ClusterFacts) -> list[str]:
    """Interfaces where strict rp_filter drops service traffic: tunnels and the node's own NIC.

    The NIC is the one holding the Node's InternalIP; without one, every non-virtual interface
    with a global address. lo, kube-ipvs0 and pod-side veths are never chosen.
    """
    candidates = [interface for interface in node.interfaces if not _never_filtered(interface)]
    internal_ips = set(_internal_ips(node.name, cluster))
    nics = [
        interface
        for interface in candidates
        if any(address.ip in internal_ips for address in interface.addresses or ())
    ] or [interface for interface in candidates if _has_global_address(interface)]
    chosen = {interface.name for interface in (*filter(_is_tunnel, candidates), *nics)}
    return [interface.name for interface in candidates if interface.name in chosen]


def _internal_ips(node: str, cluster: ClusterFacts) -> tuple[IPAddress, ...]:
    """The Node's InternalIPs from nodes.json, or none when the API was not read."""
    try:
        node_object = cluster.cluster.node(node)
    except MissingInput:
        return ()
    return () if node_object is None else node_object.internal_ips


def _never_filtered(interface: Interface) -> bool:
    """Interfaces whose rp_filter does not decide whether service replies are dropped."""
    return (
        interface.name in ("lo", KUBE_IPVS0)
        or "LOOPBACK" in interface.flags
        or interface.name.startswith(POD_SIDE_PREFIXES)
    )


def _is_tunnel(interface: Interface) -> bool:
    """Tunnel/overlay devices, where decapsulated packets arrive while replies leave elsewhere."""
    return (
        interface.kind in TUNNEL_KINDS
        or interface.name in TUNNEL_NAMES
        or interface.name.startswith(TUNNEL_PREFIXES)
    )


def _has_global_address(interface: Interface) -> bool:
    """A real NIC candidate: not a dummy, and holding an address beyond link or host scope."""
    return interface.kind != "dummy" and any(
        not address.ip.is_loopback and not address.ip.is_link_local
        for address in interface.addresses or ()
    )
