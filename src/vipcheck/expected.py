"""What a correct kube-proxy in IPVS mode programs on a node, computed from the API objects.

The rules follow kube-proxy's own code, read in kubernetes/kubernetes:
- pkg/proxy/ipvs/proxier.go, syncProxyRules and syncEndpoint (stored version with
  `proxy.CategorizeEndpoints(endpoints, svcInfo, proxier.nodeName, proxier.nodeLabels)`);
- pkg/proxy/topology.go at 008b3652959ca58af8be3fb5b6ecfe9ae7638282 (CategorizeEndpoints,
  topologyModeFromHints, availableForTopology), and its earlier canUseTopology;
- pkg/proxy/util/nodeport_addresses.go at 030880a5dc5449403c6d1f0aa146a7dc21d6c6dc
  (NewNodePortAddresses, GetNodeIPs);
- pkg/proxy/serviceport.go at 5ce22905a86fca8fa196524c760bb403c57dca17 (newBaseServiceInfo keeps
  the load-balancer IPs IsVIPMode passes, pkg/proxy/util/utils.go).
Where a rule changed between releases, VERSION_RULES says which release has which, and the
kube-proxy version picks them: the kube-proxy DaemonSet's image tag, else the Node's
status.nodeInfo.kubeProxyVersion (Cluster.kube_proxy_release).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from ipaddress import IPv4Address, ip_network

from vipcheck.model.cluster import (
    SERVICE_PROXY_NAME_LABEL,
    TOPOLOGY_AWARE_HINTS_ANNOTATION,
    ZONE_LABEL,
    AddressType,
    Cluster,
    Endpoint,
    EndpointSlice,
    IPAddress,
    IPNetwork,
    KubeProxyConfig,
    KubeRelease,
    NodePortKeyword,
    ProxyExclusion,
    Service,
    ServicePort,
    ServicePortKey,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from vipcheck.model.node import HostPort, L4Protocol


class VirtualServiceKind(StrEnum):
    """Which Service address a VS serves; it decides which traffic policy filters its servers."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    EXTERNAL_IP = "ExternalIP"
    LOAD_BALANCER = "LoadBalancer"


_AddressKey = tuple[L4Protocol, IPAddress, int]

SCHEDULER_PROBE: _AddressKey = (L4Protocol.TCP, IPv4Address("198.51.100.0"), 20000)
"""The VS kube-proxy's canUseIPVSProxier() creates and deletes at start-up (scheduler probe)."""


class Rule(StrEnum):
    """A kube-proxy rule that makes an expected VS what it is where that is not obvious."""

    LOCAL_FALLBACK = "local-fallback"
    NO_LOCAL_ENDPOINT = "no-local-endpoint"
    TOPOLOGY = "topology"
    TERMINATING = "terminating"
    NO_TERMINATING = "no-terminating"
    NODE_PORT_FAMILY_UNLISTED = "node-port-family-unlisted"
    NODE_PORT_ON_KUBE_IPVS0 = "node-port-on-kube-ipvs0"
    LB_PROXY_MODE_AS_VIP = "lb-proxy-mode-as-vip"


@dataclass(frozen=True, slots=True)
class Because:
    """Why an expected VS is as it is: the rule, and a sentence naming its source."""

    rule: Rule
    text: str


class TopologyGate(StrEnum):
    """What makes kube-proxy honour EndpointSlice hints, by release (pkg/proxy/topology.go)."""

    NEVER = "no topology hints (before 1.24, TopologyAwareHints off by default)"
    AUTO_ANNOTATION = "hints only with the topology-aware-hints annotation Auto"
    ANNOTATION = "hints only with a topology-mode (or topology-aware-hints) annotation not Disabled"
    HINTS = "hints whenever every ready endpoint has one, whatever the Service says"


@dataclass(frozen=True, slots=True)
class KubeProxyRules:
    """The version-dependent parts of kube-proxy's IPVS programming, as one release has them."""

    release: KubeRelease | None
    local_fallback: bool
    terminating_fallback: bool
    topology: TopologyGate
    node_hints: bool
    lb_ip_mode: bool

    @property
    def who(self) -> str:
        """`kube-proxy 1.30`, or what is assumed without a version."""
        if self.release is None:
            return "kube-proxy (version unknown: the newest rules are assumed)"
        return f"kube-proxy {self.release}"


def _release(major: int, minor: int) -> KubeRelease:
    return KubeRelease(major, minor)


@dataclass(frozen=True, slots=True)
class VersionRule:
    """One place where the expected state depends on the kube-proxy release, for docs/checks.md."""

    place: str
    since: str
    before: str
    unknown: str
    source: str


# Every place where vipcheck's expected state depends on the kube-proxy release. Releases assume
# kube-proxy's default feature gates; docs/checks.md is generated from this table.
VERSION_RULES: tuple[VersionRule, ...] = (
    VersionRule(
        place="Local traffic policy (externalTrafficPolicy, or internalTrafficPolicy on a Service "
        "that is also reachable from outside) on a node without a local endpoint",
        since="from 1.21: the VS gets the cluster-wide endpoints (topology and terminating rules "
        "applied)",
        before="no real server",
        unknown="the fallback (1.21 and later)",
        source="pkg/proxy/ipvs/proxier.go syncEndpoint, kubernetes/kubernetes#97081",
    ),
    VersionRule(
        place="No ready endpoint: serving and terminating endpoints",
        since="from 1.26 (ProxyTerminatingEndpoints on by default, GA 1.28): they become real "
        "servers, cluster-wide for Cluster policy and among local ones for Local",
        before="no real server",
        unknown="the fallback (1.26 and later)",
        source="pkg/proxy/topology.go CategorizeEndpoints",
    ),
    VersionRule(
        place="Topology-aware routing (zone hints)",
        since="1.24-1.26: only with the annotation service.kubernetes.io/topology-aware-hints "
        "Auto; 1.27-1.30: with service.kubernetes.io/topology-mode (or the old annotation) set "
        "and not Disabled (trafficDistribution needs the ServiceTrafficDistribution gate, off "
        "in 1.30); 1.31 and later: whenever every ready endpoint has a zone hint, whatever "
        "the Service's annotation or trafficDistribution. In every case the node must carry "
        "topology.kubernetes.io/zone and some endpoint must be hinted for that zone",
        before="hints ignored (TopologyAwareHints off by default before 1.24)",
        unknown="1.31 and later (hints whenever present)",
        source="pkg/proxy/topology.go canUseTopology, topologyModeFromHints; KEP-2433, KEP-4444",
    ),
    VersionRule(
        place="Node hints (trafficDistribution PreferSameNode)",
        since="from 1.34 (PreferSameTrafficDistribution on by default): when every ready endpoint "
        "has a node hint and one names this node, only those endpoints",
        before="node hints ignored",
        unknown="honoured (1.34 and later)",
        source="pkg/proxy/topology.go topologyModeFromHints; KEP-3015",
    ),
    VersionRule(
        place="A load-balancer ingress IP with ipMode Proxy (status.loadBalancer.ingress[].ipMode)",
        since="from 1.30 (LoadBalancerIPMode on by default, GA 1.32): nothing for it, neither a VS "
        "nor a kube-ipvs0 address; the load balancer proxies to the nodes itself",
        before="treated like any load-balancer IP (a VIP): a VS per port and a kube-ipvs0 "
        "address, so nodes of a cluster in version skew differ",
        unknown="honoured (1.30 and later): nothing for it",
        source="pkg/proxy/util/utils.go IsVIPMode, pkg/proxy/serviceport.go newBaseServiceInfo; "
        "pkg/features/kube_features.go LoadBalancerIPMode; KEP-1860",
    ),
)


def kube_proxy_rules(release: KubeRelease | None) -> KubeProxyRules:
    """The rules of VERSION_RULES for one release; without a release the newest ones."""

    def since(major: int, minor: int) -> bool:
        return release is None or release >= _release(major, minor)

    if since(1, 31):
        topology = TopologyGate.HINTS
    elif since(1, 27):
        topology = TopologyGate.ANNOTATION
    elif since(1, 24):
        topology = TopologyGate.AUTO_ANNOTATION
    else:
        topology = TopologyGate.NEVER
    return KubeProxyRules(
        release=release,
        local_fallback=since(1, 21),
        terminating_fallback=since(1, 26),
        topology=topology,
        node_hints=since(1, 34),
        lb_ip_mode=since(1, 30),
    )


@dataclass(frozen=True, slots=True)
class ExpectedVirtualService:
    """One VS a correct kube-proxy keeps on a node, with the real servers it needs at weight > 0."""

    protocol: L4Protocol
    address: IPAddress
    port: int
    kind: VirtualServiceKind
    service_key: str
    port_name: str
    service_port: int
    scheduler: str
    persistent_timeout: int | None
    real_servers: frozenset[HostPort]
    because: tuple[Because, ...] = ()
    # Every endpoint of the port in this family, usable or not, so a real server that is an
    # endpoint kube-proxy leaves out here (unready, another zone's, not local) reads as such.
    endpoints: frozenset[HostPort] = frozenset()
    # Computed once: every node's table is looked up by the key, its state indexed by port_key.
    _key: tuple[str, IPAddress, int] = field(init=False, repr=False, compare=False)
    _port_key: ServicePortKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", (self.protocol.value, self.address, self.port))
        port_key = ServicePortKey(self.service_key, self.service_port, self.protocol)
        object.__setattr__(self, "_port_key", port_key)

    @property
    def key(self) -> tuple[str, IPAddress, int]:
        """The key model.node.VirtualService uses, to look the observed VS up in the IPVS table."""
        return self._key

    @property
    def port_key(self) -> ServicePortKey:
        """The Service port this VS serves."""
        return self._port_key

    def follows(self, rule: Rule) -> bool:
        """Whether this rule shaped the VS (e.g. its real servers are a Local-policy fallback)."""
        return any(because.rule is rule for because in self.because)

    @property
    def why(self) -> str:
        """The rules that shaped this VS, as one sentence for a failure message, or ""."""
        return "; ".join(because.text for because in self.because)


class Explanation(StrEnum):
    """Why a VS may legitimately exist on a node, for the orphan check's verdict and message."""

    SERVICE = "a Service address"
    NODE_PORT = "a Service nodePort"
    OTHER_PROXY = "a Service another proxy owns"
    SCHEDULER_PROBE = "kube-proxy's transient scheduler probe"
    EXCLUDE_CIDRS = "inside ipvs.excludeCIDRs (another agent's)"


@dataclass(frozen=True, slots=True)
class Explained:
    """A reason for a VS and its detail (the Service port subject, or the excluding CIDR)."""

    why: Explanation
    detail: str


@dataclass(frozen=True, slots=True)
class VirtualServiceExplanations:
    """The VSs the cluster accounts for, indexed once so the orphan check stays linear in VSs."""

    by_address: Mapping[_AddressKey, Explained]
    by_node_port: Mapping[tuple[L4Protocol, int], Explained]
    exclude_cidrs: tuple[IPNetwork, ...]

    def explain(self, protocol: L4Protocol, address: IPAddress, port: int) -> Explained | None:
        """Why a (non-fwmark) VS may exist, or None for an orphan."""
        found = self.by_address.get((protocol, address, port)) or self.by_node_port.get(
            (protocol, port)
        )
        if found is not None:
            return found
        if (protocol, address, port) == SCHEDULER_PROBE:
            return Explained(Explanation.SCHEDULER_PROBE, "created and deleted at start-up")
        cidr = excluding_cidr(self.exclude_cidrs, address)
        if cidr is not None:
            return Explained(Explanation.EXCLUDE_CIDRS, str(cidr))
        return None


SameOnEveryNode = dict[KubeProxyRules, dict[int, tuple[ExpectedVirtualService, ...]]]
"""The VSs of Services that are the same on every node (_same_on_every_node), by kube-proxy rules
and the Service's position in Cluster.services: valid for that one Cluster only, which its holder
(one snapshot's expected state, vipcheck.datapath.ipvs) keeps beside it."""


def expected_virtual_services(
    cluster: Cluster,
    node: str,
    node_addresses: Sequence[IPAddress],
    same_on_every_node: SameOnEveryNode | None = None,
) -> tuple[ExpectedVirtualService, ...]:
    """Every VS a correct kube-proxy programs on the node, per Service port, family and address.

    node_addresses are the node's own addresses outside kube-ipvs0, the NodePort candidates.
    The node's kube-proxy version (its Node object) picks the version-dependent rules.
    same_on_every_node, kept by the caller for this cluster's nodes, spares the other nodes
    computing again the VSs of a Service that does not depend on the node (most of them).
    """
    config = cluster.kube_proxy or KubeProxyConfig()
    slices = _slices_by_service(cluster.endpoint_slices)
    node_object = cluster.node(node)
    where = _Where(
        node=node,
        zone=None if node_object is None else node_object.zone,
        rules=kube_proxy_rules(cluster.kube_proxy_release(node)),
    )
    node_ports = _node_port_selection(cluster, node, node_addresses, where.rules)
    known = {} if same_on_every_node is None else same_on_every_node.setdefault(where.rules, {})
    expected: list[ExpectedVirtualService] = []
    for index, service in enumerate(cluster.services):
        if service.exclusion is not None:
            continue
        found = known.get(index)
        if found is None:
            service_slices = slices.get(service.key, ())
            found = tuple(
                _service_virtual_services(
                    service, service_slices, config.scheduler, where, node_ports
                )
            )
            if _same_on_every_node(service, service_slices):
                known[index] = found
        expected += found
    return tuple(expected)


def _same_on_every_node(service: Service, slices: Sequence[EndpointSlice]) -> bool:
    """Whether a Service's VSs are the same on every node of one kube-proxy release: it has no
    nodePort (served on the node's addresses), no Local policy (the node's own endpoints) and no
    topology hint (endpoints picked by node or zone)."""
    if TrafficPolicy.LOCAL in (service.internal_traffic_policy, service.external_traffic_policy):
        return False
    if service.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER) and any(
        port.node_port is not None for port in service.ports
    ):
        return False
    return not any(
        endpoint.zone_hints or endpoint.node_hints
        for endpoint_slice in slices
        for endpoint in endpoint_slice.endpoints
    )


@dataclass(frozen=True, slots=True)
class _Where:
    """The node the expected state is for: its name, zone label, and its kube-proxy's rules."""

    node: str
    zone: str | None
    rules: KubeProxyRules


@dataclass(frozen=True, slots=True)
class _NodePortSelection:
    """The node addresses that get NodePort VSs, and the families nodePortAddresses leaves open.

    on_kube_ipvs0: those of the addresses that kube-proxy binds to kube-ipvs0 (a Service's), with
    the CIDR that holds each and whose address it is.
    """

    addresses: tuple[IPAddress, ...]
    unlisted_families: frozenset[int]
    on_kube_ipvs0: Mapping[IPAddress, tuple[IPNetwork, str]]


def node_port_addresses(
    cluster: Cluster, node: str, node_addresses: Sequence[IPAddress]
) -> tuple[IPAddress, ...]:
    """The node addresses nodePortAddresses selects, per IP family as kube-proxy selects them.

    Empty selects them all; `primary` the Node's primary IP of each family. A family the
    entries name no CIDR of matches every address of that family (NewNodePortAddresses in
    pkg/proxy/util/nodeport_addresses.go adds 0.0.0.0/0 or ::/0 for it). In a family they name
    CIDRs of, the Service addresses on kube-ipvs0 inside them are selected too (_on_kube_ipvs0).
    """
    rules = kube_proxy_rules(cluster.kube_proxy_release(node))
    return _node_port_selection(cluster, node, node_addresses, rules).addresses


def _node_port_selection(
    cluster: Cluster, node: str, node_addresses: Sequence[IPAddress], rules: KubeProxyRules
) -> _NodePortSelection:
    selectors = (cluster.kube_proxy or KubeProxyConfig()).node_port_addresses
    node_object = cluster.node(node)
    primary = () if node_object is None else node_object.primary_ips
    networks: list[IPNetwork] = []
    for selector in selectors:
        if selector is NodePortKeyword.PRIMARY:
            # cmd/kube-proxy turns `primary` into the Node's primary IPs as host CIDRs.
            networks += [ip_network(address) for address in primary]
        else:
            networks.append(selector)
    listed = {network.version for network in networks}
    # A family with a zero CIDR (0.0.0.0/0, ::/0) is matched whole (MatchAll), as is one unlisted.
    whole = {network.version for network in networks if network.prefixlen == 0}
    inside = [network for network in networks if network.version not in whole]
    on_kube_ipvs0 = _on_kube_ipvs0(cluster.services, inside, node_addresses, rules)
    return _NodePortSelection(
        addresses=(
            *(
                address
                for address in node_addresses
                if address.version not in listed or _holding(networks, address) is not None
            ),
            *on_kube_ipvs0,
        ),
        unlisted_families=frozenset({4, 6} - listed) if selectors else frozenset(),
        on_kube_ipvs0=on_kube_ipvs0,
    )


def _on_kube_ipvs0(
    services: Iterable[Service],
    networks: Sequence[IPNetwork],
    node_addresses: Sequence[IPAddress],
    rules: KubeProxyRules,
) -> dict[IPAddress, tuple[IPNetwork, str]]:
    """The addresses kube-proxy binds to kube-ipvs0 inside nodePortAddresses' CIDRs, with the CIDR
    and whose each is: with CIDRs, syncProxyRules serves NodePorts on what GetNodeIPs returns,
    every interface's addresses inside them, kube-ipvs0's included; only a family matched whole
    uses nodeAddressSet, which leaves kube-ipvs0 out (pkg/proxy/ipvs/proxier.go,
    pkg/proxy/util/nodeport_addresses.go). A correct kube-ipvs0 holds the bound Service
    addresses, so those are taken rather than the ones observed: an address missing or left
    there is what the kube-ipvs0 checks report.
    """
    found: dict[IPAddress, tuple[IPNetwork, str]] = {}
    if not networks:
        return found
    spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for network in networks:
        spans[network.version].append(
            (int(network.network_address), int(network.broadcast_address))
        )
    own = frozenset(node_addresses)
    for service in services:
        # Most Services have no address inside: only integers compared, once per node.
        if not _any_inside(spans, service) or service.exclusion is not None or not service.ports:
            continue
        for kind, address in _bound_addresses(service, rules):
            holding = _holding(networks, address)
            # The node's own addresses are selected as such (and never bound, but a ClusterIP).
            if holding is not None and address not in own:
                found.setdefault(address, (holding, f"{kind} of {service.key}"))
    return found


def _any_inside(spans: Mapping[int, Sequence[tuple[int, int]]], service: Service) -> bool:
    """Whether any address of the Service lies in one of the spans (first, last) of its family."""
    addresses = service.cluster_ips
    if service.external_ips or service.lb_ingress_ips or service.lb_proxy_mode_ips:
        addresses = (
            *addresses,
            *service.external_ips,
            *service.lb_ingress_ips,
            *service.lb_proxy_mode_ips,
        )
    for address in addresses:
        value = int(address)
        for first, last in spans[address.version]:
            if first <= value <= last:
                return True
    return False


def _holding(networks: Iterable[IPNetwork], address: IPAddress) -> IPNetwork | None:
    """The first of the networks that holds the address, or None."""
    return next(
        (n for n in networks if n.version == address.version and address in n),
        None,
    )


def expected_real_servers(
    service: Service,
    port: ServicePort,
    slices: Iterable[EndpointSlice],
    *,
    address_type: AddressType,
    node: str,
    policy: TrafficPolicy,
    zone: str | None = None,
    release: KubeRelease | None = None,
) -> frozenset[HostPort]:
    """The usable endpoints of a Service port and family, as kube-proxy's CategorizeEndpoints picks.

    Ready endpoints (those hinted for the node's zone when topology applies); with none ready,
    serving+terminating ones. For policy Local the same choice is made among this node's
    endpoints only, so a local terminating pod still serves; with no local endpoint at all the
    cluster-wide choice stands in (kubernetes#97081).
    """
    servers, _ = _real_servers(
        service,
        port,
        slices,
        address_type=address_type,
        where=_Where(node, zone, kube_proxy_rules(release)),
        policy=policy,
        policy_field="externalTrafficPolicy",
        uses_cluster=True,
    )
    return servers


def categorize_endpoints(
    service: Service,
    port: ServicePort,
    slices: Iterable[EndpointSlice],
    *,
    address_type: AddressType,
    node: str,
    zone: str | None = None,
    release: KubeRelease | None = None,
) -> tuple[frozenset[HostPort], frozenset[HostPort]]:
    """CategorizeEndpoints' clusterEndpoints and localEndpoints for one Service port and family
    on a node (pkg/proxy/topology.go), as the nftables proxier takes them: the cluster ones
    (ready, topology-filtered; else serving+terminating) and the node's own (ready, else
    serving+terminating), with no fallback from one to the other. IPVS's fallback for a Local
    policy is syncEndpoint's, not CategorizeEndpoints' (expected_real_servers keeps it)."""
    rules = kube_proxy_rules(release)
    cluster, _ = _real_servers(
        service,
        port,
        slices,
        address_type=address_type,
        where=_Where(node, zone, rules),
        policy=TrafficPolicy.CLUSTER,
        policy_field="internalTrafficPolicy",
        uses_cluster=True,
    )
    local, _ = _real_servers(
        service,
        port,
        slices,
        address_type=address_type,
        where=_Where(node, zone, replace(rules, local_fallback=False)),
        policy=TrafficPolicy.LOCAL,
        policy_field="externalTrafficPolicy",
        uses_cluster=False,
    )
    return cluster, local


_Candidate = tuple[Endpoint, int]
_Chosen = tuple[frozenset[HostPort], tuple[Because, ...]]


def _real_servers(
    service: Service,
    port: ServicePort,
    slices: Iterable[EndpointSlice],
    *,
    address_type: AddressType,
    where: _Where,
    policy: TrafficPolicy,
    policy_field: str,
    uses_cluster: bool,
) -> _Chosen:
    """The real servers of one VS and the rules that chose them (pkg/proxy/topology.go and
    syncEndpoint in pkg/proxy/ipvs/proxier.go)."""
    rules = where.rules
    candidates = [
        (endpoint, endpoint_port)
        for endpoint_slice in slices
        if endpoint_slice.address_type is address_type and endpoint_slice.service_key == service.key
        for endpoint_port in _matching_ports(endpoint_slice, port)
        for endpoint in endpoint_slice.endpoints
    ]
    because: list[Because] = []
    terminating = [c for c in candidates if _serving_terminating(c[0])]
    ready = [c for c in candidates if c[0].ready]
    # Cluster endpoints: ready ones, filtered by topology; else serving+terminating anywhere.
    topology = _topology(service, ready, where)
    cluster = [c for c in ready if topology is None or topology.admits(c[0])]
    if not cluster and rules.terminating_fallback:
        cluster = terminating
    cluster_because = [] if topology is None else [topology.because]
    if not ready and terminating:
        cluster_because.append(_terminating_because(rules))
    if policy is TrafficPolicy.CLUSTER:
        chosen, because = cluster, cluster_because
    else:
        local_ready = [c for c in ready if c[0].node_name == where.node]
        local_terminating = [c for c in terminating if c[0].node_name == where.node]
        if local_ready:
            chosen = local_ready
        elif local_terminating and rules.terminating_fallback:
            chosen = local_terminating
            because = [_terminating_because(rules, local=True)]
        elif rules.local_fallback:
            # Allow access from local pods even if no local endpoint exists; an external
            # client's reply comes from the pod and is discarded (syncEndpoint, #97081).
            # kube-proxy computes cluster endpoints only if the port UsesClusterEndpoints().
            chosen = cluster if uses_cluster else []
            if chosen:
                because = [
                    Because(
                        Rule.LOCAL_FALLBACK,
                        f"{rules.who} falls back to cluster endpoints here because {where.node} "
                        f"has no local endpoint ({policy_field} Local): local pods keep access, "
                        "an external client's reply is discarded (pkg/proxy/ipvs/proxier.go "
                        "syncEndpoint, kubernetes/kubernetes#97081)",
                    ),
                    *cluster_because,
                ]
            elif ready or terminating:
                because = [
                    Because(
                        Rule.NO_LOCAL_ENDPOINT,
                        f"{rules.who} programs no real server here: {where.node} has no local "
                        f"endpoint ({policy_field} Local) and the Service is not reachable from "
                        "outside, so it has no cluster endpoints to fall back to "
                        "(CategorizeEndpoints, UsesClusterEndpoints)",
                    )
                ]
        else:
            chosen = []
            because = [
                Because(
                    Rule.NO_LOCAL_ENDPOINT,
                    f"{rules.who} programs no real server here: {where.node} has no local "
                    f"endpoint ({policy_field} Local), and the fallback to cluster endpoints "
                    "came only in 1.21 (kubernetes/kubernetes#97081)",
                )
            ]
    # kube-proxy uses only an endpoint's first address; the API says the rest are ignored.
    servers = frozenset(HostPort(endpoint.addresses[0], number) for endpoint, number in chosen)
    return servers, tuple(because)


def _terminating_because(rules: KubeProxyRules, *, local: bool = False) -> Because:
    """Why serving+terminating endpoints are (or are not) real servers."""
    among = "this node's" if local else "the"
    if rules.terminating_fallback:
        return Because(
            Rule.TERMINATING,
            f"no endpoint is ready, so {rules.who} uses {among} serving, terminating ones "
            "(ProxyTerminatingEndpoints; pkg/proxy/topology.go CategorizeEndpoints)",
        )
    return Because(
        Rule.NO_TERMINATING,
        f"{rules.who} does not use serving, terminating endpoints (ProxyTerminatingEndpoints is "
        "on by default only from 1.26)",
    )


@dataclass(frozen=True, slots=True)
class _Topology:
    """The topology filter kube-proxy applies: endpoints hinted for this node or its zone."""

    zone: str | None
    node: str | None
    because: Because

    def admits(self, endpoint: Endpoint) -> bool:
        if self.node is not None:
            return self.node in endpoint.node_hints
        return self.zone in endpoint.zone_hints


def _topology(service: Service, ready: Sequence[_Candidate], where: _Where) -> _Topology | None:
    """kube-proxy's topology mode for these ready endpoints on this node, or None (no filter).

    pkg/proxy/topology.go: topologyModeFromHints (1.31 and later) and canUseTopology (before).
    """
    rules = where.rules
    if not ready or not _hints_enabled(service, rules.topology):
        return None
    endpoints = [endpoint for endpoint, _ in ready]
    if (
        rules.node_hints
        and all(e.node_hints for e in endpoints)
        and any(where.node in e.node_hints for e in endpoints)
    ):
        return _Topology(
            zone=None,
            node=where.node,
            because=Because(
                Rule.TOPOLOGY,
                f"{rules.who} keeps only the endpoints hinted for node {where.node} "
                "(every ready endpoint has a node hint: trafficDistribution PreferSameNode; "
                "pkg/proxy/topology.go topologyModeFromHints)",
            ),
        )
    if where.zone is None or not all(e.zone_hints for e in endpoints):
        return None
    if not any(where.zone in e.zone_hints for e in endpoints):
        return None
    annotation = service.hints_annotation
    enabled = (
        "whatever the Service's annotation or trafficDistribution"
        if rules.topology is TopologyGate.HINTS
        else f"the Service's topology annotation is {annotation!r} ({rules.topology})"
    )
    return _Topology(
        zone=where.zone,
        node=None,
        because=Because(
            Rule.TOPOLOGY,
            f"{rules.who} keeps only the endpoints hinted for zone {where.zone}: {where.node} is "
            f"labelled {ZONE_LABEL}={where.zone}, every ready endpoint has a zone hint, and "
            f"{enabled} (pkg/proxy/topology.go)",
        ),
    )


def _hints_enabled(service: Service, gate: TopologyGate) -> bool:
    """Whether the release's gate lets this Service's hints count (canUseTopology before 1.31)."""
    if gate is TopologyGate.AUTO_ANNOTATION:
        # Before 1.27 kube-proxy read only the topology-aware-hints annotation, and only Auto.
        return service.annotations.get(TOPOLOGY_AWARE_HINTS_ANNOTATION) in ("Auto", "auto")
    if gate is TopologyGate.ANNOTATION:
        return service.hints_annotation not in ("", "disabled", "Disabled")
    return gate is TopologyGate.HINTS


def expected_cluster_ips(
    services: Iterable[Service],
    node_addresses: Iterable[IPAddress] = (),
    release: KubeRelease | None = None,
) -> frozenset[IPAddress]:
    """Addresses kube-proxy binds to kube-ipvs0: ClusterIPs, externalIPs, LB ingress IPs.

    An externalIP or LB ingress IP that is one of the node's own addresses (node_addresses,
    outside kube-ipvs0) gets its VS but is not bound: `shouldBind := !nodeAddressSet.Has(...)`
    in syncProxyRules (pkg/proxy/ipvs/proxier.go). ClusterIPs are always bound.
    """
    return ServiceAddresses.of(services, kube_proxy_rules(release)).bound(node_addresses)


def unbound_node_addresses(
    services: Iterable[Service],
    node_addresses: Iterable[IPAddress],
    release: KubeRelease | None = None,
) -> dict[IPAddress, str]:
    """Service externalIPs and LB IPs kube-proxy leaves off kube-ipvs0 as node addresses: why."""
    return ServiceAddresses.of(services, kube_proxy_rules(release)).unbound(node_addresses)


@dataclass(frozen=True, slots=True)
class ServiceAddresses:
    """The addresses of the programmed Services, gathered once for every node: the ClusterIPs,
    always bound, and the externalIPs and LB IPs, bound unless the node has them itself."""

    cluster_ips: frozenset[IPAddress]
    others: tuple[tuple[VirtualServiceKind, IPAddress, str], ...]  # kind, address, Service key

    @classmethod
    def of(cls, services: Iterable[Service], rules: KubeProxyRules) -> ServiceAddresses:
        """Those of kube-proxy with these rules (which load-balancer IPs it programs)."""
        bound = [
            (kind, address, service.key)
            for service in services
            if service.exclusion is None and service.ports
            for kind, address in _bound_addresses(service, rules)
        ]
        return cls(
            frozenset(a for kind, a, _ in bound if kind is VirtualServiceKind.CLUSTER_IP),
            tuple(item for item in bound if item[0] is not VirtualServiceKind.CLUSTER_IP),
        )

    def bound(self, node_addresses: Iterable[IPAddress]) -> frozenset[IPAddress]:
        """What kube-proxy binds to kube-ipvs0 on a node with these addresses."""
        own = frozenset(node_addresses)
        return self.cluster_ips | {address for _, address, _ in self.others if address not in own}

    def unbound(self, node_addresses: Iterable[IPAddress]) -> dict[IPAddress, str]:
        """What it leaves off kube-ipvs0 there, being the node's own, and whose it is."""
        own = frozenset(node_addresses)
        return {
            address: f"{kind} of {service}"
            for kind, address, service in self.others
            if address in own
        }


def explain_virtual_services(cluster: Cluster) -> VirtualServiceExplanations:
    """Index every VS a Service accounts for on any node, for the orphan check."""
    by_address: dict[_AddressKey, Explained] = {}
    by_node_port: dict[tuple[L4Protocol, int], Explained] = {}
    for service in cluster.services:
        exclusion = service.exclusion
        if exclusion not in (None, ProxyExclusion.OTHER_PROXY):
            continue
        for port in service.ports:
            subject = str(ServicePortKey(service.key, port.port, port.protocol))
            if exclusion is ProxyExclusion.OTHER_PROXY:
                proxy = service.labels[SERVICE_PROXY_NAME_LABEL]
                address_why = node_port_why = Explained(
                    Explanation.OTHER_PROXY, f"{subject} (service-proxy-name {proxy})"
                )
            else:
                address_why = Explained(Explanation.SERVICE, subject)
                node_port_why = Explained(Explanation.NODE_PORT, f"{subject} nodePort")
            # ipMode Proxy IPs too: kube-proxy before 1.30 programs them, and this index, built
            # for every node alike, does not know the node's release.
            for address in (
                *service.cluster_ips,
                *service.external_ips,
                *service.lb_ingress_ips,
                *service.lb_proxy_mode_ips,
            ):
                by_address.setdefault((port.protocol, address, port.port), address_why)
            if port.node_port is not None:
                by_node_port.setdefault((port.protocol, port.node_port), node_port_why)
    config = cluster.kube_proxy or KubeProxyConfig()
    return VirtualServiceExplanations(by_address, by_node_port, config.exclude_cidrs)


def excluding_cidr(exclude_cidrs: Iterable[IPNetwork], address: IPAddress) -> IPNetwork | None:
    """The ipvs.excludeCIDRs entry holding the address (kube-proxy leaves such VSs alone)."""
    return next(
        (cidr for cidr in exclude_cidrs if cidr.version == address.version and address in cidr),
        None,
    )


def _service_virtual_services(
    service: Service,
    slices: Sequence[EndpointSlice],
    scheduler: str,
    where: _Where,
    node_ports: _NodePortSelection,
) -> Iterator[ExpectedVirtualService]:
    """The VSs of one programmed Service: per port, per ClusterIP family, per address kind."""
    persistent_timeout = (
        service.session_affinity_timeout
        if service.session_affinity is SessionAffinity.CLIENT_IP
        else None
    )
    has_node_ports = service.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
    for port in service.ports:
        listeners = [
            (kind, address, port.port, _traffic_policy(service, kind))
            for kind, address in _bound_addresses(service, where.rules)
        ]
        if has_node_ports and port.node_port is not None:
            listeners += [
                (
                    VirtualServiceKind.NODE_PORT,
                    address,
                    port.node_port,
                    service.external_traffic_policy,
                )
                for address in node_ports.addresses
                if _serves_family(service, address)
            ]
        # Listeners of one family and policy share their real servers and endpoints (a port's
        # ClusterIP and NodePort VSs): computed once per port for them all.
        chosen: dict[tuple[AddressType, TrafficPolicy, str, bool], _Chosen] = {}
        every_endpoint: dict[AddressType, frozenset[HostPort]] = {}
        for kind, address, number, policy in listeners:
            address_type = _address_type(address)
            policy_field = (
                "internalTrafficPolicy"
                if kind is VirtualServiceKind.CLUSTER_IP
                else "externalTrafficPolicy"
            )
            uses_cluster = kind is not VirtualServiceKind.CLUSTER_IP or _externally_accessible(
                service, port, address.version, where.rules
            )
            choice = (address_type, policy, policy_field, uses_cluster)
            if choice not in chosen:
                chosen[choice] = _real_servers(
                    service,
                    port,
                    slices,
                    address_type=address_type,
                    where=where,
                    policy=policy,
                    policy_field=policy_field,
                    uses_cluster=uses_cluster,
                )
            servers, because = chosen[choice]
            if kind is not VirtualServiceKind.CLUSTER_IP:  # the rules of where a VS sits
                because += tuple(_address_because(service, kind, address, where.rules, node_ports))
            if address_type not in every_endpoint:
                every_endpoint[address_type] = frozenset(
                    HostPort(endpoint.addresses[0], endpoint_port)
                    for endpoint_slice in slices
                    if endpoint_slice.address_type is address_type
                    for endpoint_port in _matching_ports(endpoint_slice, port)
                    for endpoint in endpoint_slice.endpoints
                )
            yield ExpectedVirtualService(
                protocol=port.protocol,
                address=address,
                port=number,
                kind=kind,
                service_key=service.key,
                port_name=port.name,
                service_port=port.port,
                scheduler=scheduler,
                persistent_timeout=persistent_timeout,
                real_servers=servers,
                because=because,
                endpoints=every_endpoint[address_type],
            )


def _address_because(
    service: Service,
    kind: VirtualServiceKind,
    address: IPAddress,
    rules: KubeProxyRules,
    node_ports: _NodePortSelection,
) -> Iterator[Because]:
    """The rules that make a VS exist on this address where that is not obvious."""
    if kind is VirtualServiceKind.NODE_PORT and address.version in node_ports.unlisted_families:
        yield Because(
            Rule.NODE_PORT_FAMILY_UNLISTED,
            f"nodePortAddresses lists no IPv{address.version} CIDR, so kube-proxy "
            f"serves NodePorts on every IPv{address.version} address of the node "
            "(NewNodePortAddresses, pkg/proxy/util/nodeport_addresses.go)",
        )
    if kind is VirtualServiceKind.NODE_PORT and address in node_ports.on_kube_ipvs0:
        network, whose = node_ports.on_kube_ipvs0[address]
        yield Because(
            Rule.NODE_PORT_ON_KUBE_IPVS0,
            f"nodePortAddresses lists {network}, which holds {address} ({whose}, bound to "
            "kube-ipvs0): with CIDRs kube-proxy serves NodePorts on every local address inside "
            "them, kube-ipvs0's included (GetNodeIPs, pkg/proxy/util/nodeport_addresses.go)",
        )
    if kind is VirtualServiceKind.LOAD_BALANCER and address in service.lb_proxy_mode_ips:
        yield Because(
            Rule.LB_PROXY_MODE_AS_VIP,
            f"{rules.who} treats {address}, a load-balancer IP with ipMode Proxy, like a VIP: "
            "LoadBalancerIPMode is on by default only from 1.30 (IsVIPMode, "
            "pkg/proxy/util/utils.go)",
        )


def _externally_accessible(
    service: Service, port: ServicePort, family: int, rules: KubeProxyRules
) -> bool:
    """ExternallyAccessible() of one port in one family's proxier: a nodePort, externalIP or LB IP.

    Only then does an internalTrafficPolicy Local port use cluster endpoints at all
    (UsesClusterEndpoints), so only then does its ClusterIP VS fall back to them.
    """
    has_node_port = port.node_port is not None and service.type in (
        ServiceType.NODE_PORT,
        ServiceType.LOAD_BALANCER,
    )
    return has_node_port or any(
        address.version == family
        for address in (*service.external_ips, *_lb_addresses(service, rules))
    )


def _traffic_policy(service: Service, kind: VirtualServiceKind) -> TrafficPolicy:
    """ITP governs the ClusterIP VS; ETP every VS reached from outside (node, external, LB)."""
    if kind is VirtualServiceKind.CLUSTER_IP:
        return service.internal_traffic_policy
    return service.external_traffic_policy


def _bound_addresses(
    service: Service, rules: KubeProxyRules
) -> Iterator[tuple[VirtualServiceKind, IPAddress]]:
    """The Service's addresses kube-proxy binds, in the families its ClusterIPs give it.

    kube-proxy runs one proxier per family and a proxier ignores a Service without a ClusterIP of
    its family, so an IPv6 externalIP on a single-stack IPv4 Service is never programmed.
    """
    for address in service.cluster_ips:
        yield VirtualServiceKind.CLUSTER_IP, address
    for kind, addresses in (
        (VirtualServiceKind.EXTERNAL_IP, service.external_ips),
        (VirtualServiceKind.LOAD_BALANCER, _lb_addresses(service, rules)),
    ):
        for address in addresses:
            if _serves_family(service, address):
                yield kind, address


def _lb_addresses(service: Service, rules: KubeProxyRules) -> tuple[IPAddress, ...]:
    """The load-balancer IPs kube-proxy programs: before 1.30 the ipMode Proxy ones too."""
    if rules.lb_ip_mode or not service.lb_proxy_mode_ips:
        return service.lb_ingress_ips
    return (*service.lb_ingress_ips, *service.lb_proxy_mode_ips)


def _address_type(address: IPAddress) -> AddressType:
    """The EndpointSlice addressType whose endpoints can serve a VS on this address."""
    return AddressType.IPV4 if address.version == 4 else AddressType.IPV6


def _serves_family(service: Service, address: IPAddress) -> bool:
    """Whether the Service has a ClusterIP of the address's family (its proxier handles it)."""
    return any(cluster_ip.version == address.version for cluster_ip in service.cluster_ips)


def _slices_by_service(slices: Iterable[EndpointSlice]) -> Mapping[str, list[EndpointSlice]]:
    """EndpointSlices grouped by owning Service key; slices without the label belong to none."""
    grouped: defaultdict[str, list[EndpointSlice]] = defaultdict(list)
    for endpoint_slice in slices:
        if endpoint_slice.service_key is not None:
            grouped[endpoint_slice.service_key].append(endpoint_slice)
    return grouped


def _matching_ports(endpoint_slice: EndpointSlice, port: ServicePort) -> Iterator[int]:
    """The slice's resolved port for a Service port, matched by name and protocol (kube-proxy)."""
    for endpoint_port in endpoint_slice.ports:
        if (
            endpoint_port.name == port.name
            and endpoint_port.protocol is port.protocol
            and endpoint_port.port is not None
        ):
            yield endpoint_port.port


def endpoint_node(slices: Iterable[EndpointSlice], address: IPAddress) -> str | None:
    """The EndpointSlice nodeName of an endpoint with this address, if any slice lists it: the
    node a real server runs on, for the probe's plan and the checks' fixes."""
    return next(
        (
            endpoint.node_name
            for endpoint_slice in slices
            for endpoint in endpoint_slice.endpoints
            if address in endpoint.addresses and endpoint.node_name
        ),
        None,
    )


def _serving_terminating(endpoint: Endpoint) -> bool:
    """The fallback kube-proxy uses when no endpoint is ready (ProxyTerminatingEndpoints)."""
    return endpoint.serving and endpoint.terminating
