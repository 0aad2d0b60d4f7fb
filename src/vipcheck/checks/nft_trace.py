"""The packet trace: what each node's own nftables rules do to a Service's traffic (issue 19).

The map and chain checks compare kube-proxy's table with what it should have written; this one
judges what the rules DO, however they are spelled: for every Service port, on every node in
nftables mode, a new connection from a pod on the node and one from outside the cluster are
traced (vipcheck.datapath.nft_trace) to each VIP the node serves, and the DNAT targets reached
(or DROP/REJECT) must equal the endpoints kube-proxy's semantics give (vipcheck.expected, as for
IPVS), with nftables mode's differences from IPVS (kubernetes/kubernetes@803d40a57714
pkg/proxy/nftables/proxier.go, syncProxyRules):

- NodePorts only on nodePortAddresses, whose default in this mode is the Node's primary IPs
  (cmd/kube-proxy/app/server_linux.go platformApplyDefaults), never 127.0.0.1;
- externalTrafficPolicy Local: traffic from pods short-circuits to the cluster endpoints (the
  `external-` chain's "short-circuit pod traffic" rule), traffic from outside reaches only the
  local ones, and is DROPped when there is none (`no-endpoint-services` ... `drop`);
- internalTrafficPolicy Local with no local endpoint: ClusterIP traffic is DROPped;
- no endpoint at all: REJECT (`goto reject-chain`).

A mismatch names the rule path the packet took. Not judged, and said so: traffic to a LoadBalancer
IP the table firewalls (`firewall-ips`; loadBalancerSourceRanges is not in vipcheck's Service
model, so which sources it admits is unknown), pod traffic to an externally reachable Local-policy
port whose cluster endpoints the expected state does not hold (internalTrafficPolicy Local too), and
pod traffic on a node with no pod CIDR known.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address

from vipcheck.checks.base import Check, FindingKind, Severity, Violation
from vipcheck.checks.kube_proxy import (
    NotShown,
    judge_each_node,
    require_nftables_mode,
    restart_kube_proxy,
)
from vipcheck.checks.kube_proxy import restart_kube_proxy_text as restart_text
from vipcheck.checks.scopes import SERVICE_PORTS
from vipcheck.datapath.ipvs import ExpectedState, node_port_candidates
from vipcheck.datapath.nft_trace import (
    OUTSIDE_CLIENT,
    CannotTrace,
    Origin,
    Packet,
    Trace,
    TraceMemo,
    Tracer,
    Verdict,
)
from vipcheck.expected import ExpectedVirtualService, VirtualServiceKind, node_port_addresses
from vipcheck.facts import (
    ENDPOINT_SLICES,
    IP_ADDR,
    IP_LINK,
    KUBE_PROXY,
    KUBE_PROXY_DAEMONSET,
    NFT_IP,
    NFT_IP6,
    NFT_TABLES,
    NODE_OBJECTS,
    SERVICES,
    Facts,
    NodeFacts,
)
from vipcheck.model.cluster import (
    Cluster,
    IPAddress,
    IPNetwork,
    Service,
    ServicePortKey,
    TrafficPolicy,
)
from vipcheck.model.nftables import KUBE_PROXY_TABLE, NftFamily, NftTable
from vipcheck.model.node import HostPort, InvalidValue
from vipcheck.settings import Settings

OUTSIDE_CLIENT_6 = ip_address("2600:5200::1")
"""An IPv6 source outside the cluster, as upstream's TestNodePorts externalClientIP."""

EXTERNAL_KINDS = (
    VirtualServiceKind.NODE_PORT,
    VirtualServiceKind.EXTERNAL_IP,
    VirtualServiceKind.LOAD_BALANCER,
)


@dataclass(frozen=True, slots=True)
class Expectation:
    """Where one origin's new connections to one VIP should go: targets, or DROP/REJECT."""

    targets: frozenset[HostPort]
    verdict: Verdict | None
    why: str

    def met_by(self, traced: Trace) -> bool:
        if self.verdict is not None:
            return not traced.targets and traced.verdicts == {self.verdict}
        return traced.targets == self.targets and not traced.verdicts

    def __str__(self) -> str:
        if self.verdict is not None:
            return f"{self.verdict.value} ({self.why})"
        return f"DNAT to exactly {', '.join(sorted(map(str, self.targets)))} ({self.why})"


def expectation(
    vs: ExpectedVirtualService,
    origin: Origin,
    service: Service,
    port_vss: Iterable[ExpectedVirtualService],
) -> Expectation | NotShown:
    """kube-proxy's nftables semantics for one VIP and origin (see the module docstring)."""
    every = tuple(port_vss)
    if not any(other.real_servers for other in every):
        return Expectation(frozenset(), Verdict.REJECT, "no endpoints: goto reject-chain")
    if vs.kind is VirtualServiceKind.CLUSTER_IP:
        if vs.real_servers:
            return Expectation(vs.real_servers, None, "the usable endpoints")
        return Expectation(frozenset(), Verdict.DROP, "internalTrafficPolicy Local, none here")
    local = service.external_traffic_policy is TrafficPolicy.LOCAL
    if origin is Origin.POD and local:
        return _short_circuit(vs, service, every)
    if vs.real_servers:
        why = "the local endpoints (externalTrafficPolicy Local)" if local else "the endpoints"
        return Expectation(vs.real_servers, None, why)
    return Expectation(frozenset(), Verdict.DROP, "externalTrafficPolicy Local, none here")


def _short_circuit(
    vs: ExpectedVirtualService, service: Service, every: tuple[ExpectedVirtualService, ...]
) -> Expectation | NotShown:
    """Pod traffic to a Local-policy external address goes to the cluster endpoints: those of
    the ClusterIP, when its own policy is Cluster (else the expected state does not hold them)."""
    cluster = next((o for o in every if o.kind is VirtualServiceKind.CLUSTER_IP), None)
    if cluster is None or service.internal_traffic_policy is TrafficPolicy.LOCAL:
        return NotShown(f"{vs.address}: pod traffic (cluster endpoints not computed)")
    return Expectation(cluster.real_servers, None, "pod traffic short-circuits to the cluster")


def sources(node_object_cidrs: Iterable[IPNetwork], family: int) -> dict[Origin, IPAddress]:
    """A pod source in the node's pod CIDR (when known) and one outside any cluster."""
    found: dict[Origin, IPAddress] = {
        Origin.OUTSIDE: OUTSIDE_CLIENT if family == 4 else OUTSIDE_CLIENT_6
    }
    for network in node_object_cidrs:
        if network.version == family and network.num_addresses > 2:
            found[Origin.POD] = network.network_address + 2
            break
    return found


def check_trace_reaches_endpoints(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per node, VIP and origin whose traced outcome is not the expected one."""
    require_nftables_mode(facts.cluster)
    expected = ExpectedState.of(facts)
    cluster = facts.cluster.cluster
    memo = facts.derive("nft trace memo", TraceMemo)  # traces shared between the nodes

    def judge(name: str, node: NodeFacts) -> list[Violation | NotShown]:
        judged = facts.derive(
            ("nft-trace", name), lambda: _judge_all(expected, cluster, node, memo)
        )
        return judged.get(subject, [])

    return judge_each_node(facts, judge)


_Verdicts = dict[ServicePortKey, list[Violation | NotShown]]


@dataclass(frozen=True, slots=True)
class _NodeView:
    """What tracing on one node needs: a tracer per table (None: no such table), pod CIDRs."""

    name: str
    tracers: dict[NftFamily, Tracer | None]
    pod_cidrs: tuple[IPNetwork, ...]


def _judge_all(
    expected: ExpectedState, cluster: Cluster, node: NodeFacts, memo: TraceMemo
) -> _Verdicts:
    """Every Service port of the node traced once, the ports with something to say kept."""
    node_object = cluster.node(node.name)
    own = node_port_candidates(node, node_object)
    selected = _node_ports_on(cluster, node.name, own)
    pod_cidrs = (node_object.pod_cidrs if node_object else ()) or (
        cluster.kube_proxy.cluster_cidrs if cluster.kube_proxy else ()
    )
    services = {service.key: service for service in cluster.services}
    ports = tuple(expected.on_node(node).items())
    tables = {family: node.nftables(family) for family in NftFamily}
    tracers = {f: None if t is None else Tracer(t, own, memo) for f, t in tables.items()}
    view = _NodeView(node.name, tracers, pod_cidrs)
    judged: _Verdicts = {}
    for port, vss in ports:
        service = services[port.service_key]
        verdicts: list[Violation | NotShown] = []
        for vs in vss:
            if vs.kind is VirtualServiceKind.NODE_PORT and vs.address not in selected:
                continue  # nftables mode serves NodePorts on nodePortAddresses only
            same_family = [other for other in vss if other.address.version == vs.address.version]
            verdicts += _judge_vip(view, vs, service, same_family)
        if verdicts:
            judged[port] = verdicts
    return judged


def _node_ports_on(cluster: Cluster, node: str, own: tuple[IPAddress, ...]) -> frozenset[IPAddress]:
    """The addresses nftables mode serves NodePorts on: nodePortAddresses, `primary` (the Node's
    primary IPs) when unset."""
    config = cluster.kube_proxy
    if config is None or not config.node_port_addresses:
        node_object = cluster.node(node)
        return frozenset(node_object.primary_ips if node_object else ())
    return frozenset(node_port_addresses(cluster, node, own)) & frozenset(own)


def _judge_vip(
    view: _NodeView,
    vs: ExpectedVirtualService,
    service: Service,
    same_family: list[ExpectedVirtualService],
) -> list[Violation | NotShown]:
    """One VIP traced from a pod and from outside, each against its expectation."""
    node = view.name
    family = NftFamily.IP if vs.address.version == 4 else NftFamily.IP6
    tracer = view.tracers[family]
    vip = HostPort(vs.address, vs.port)
    if tracer is None:
        return [_violation(node, vs, f"nft lists no table {family} {KUBE_PROXY_TABLE}", (), "")]
    if vs.kind is VirtualServiceKind.LOAD_BALANCER and _firewalled(tracer.table, vs):
        return [NotShown(f"{vip}: firewalled (loadBalancerSourceRanges not modelled)")]
    found: list[Violation | NotShown] = []
    origins = sources(view.pod_cidrs, vs.address.version)
    if Origin.POD not in origins:
        found.append(NotShown(f"{vip}: pod traffic (no pod CIDR known for {node})"))
    for origin, source in origins.items():
        wanted = expectation(vs, origin, service, same_family)
        if isinstance(wanted, NotShown):
            found.append(wanted)
            continue
        packet = Packet(source, vs.address, vs.protocol, vs.port, origin)
        try:
            traced = tracer.trace(packet)
        except CannotTrace as error:
            raise InvalidValue(f"{node}'s {family} {KUBE_PROXY_TABLE} table ({error})") from None
        if not wanted.met_by(traced):
            reached = traced.output or "delivered to the node, no DNAT"
            text = f"{packet}: {reached}"
            found.append(_violation(node, vs, text, _evidence(traced), str(wanted)))
    return found


def _firewalled(table: NftTable, vs: ExpectedVirtualService) -> bool:
    firewall = table.sets.get("firewall-ips")
    if firewall is None:
        return False
    key = (str(vs.address), vs.protocol.value.lower(), str(vs.port))
    return any(element.key == key for element in firewall.elements)


def _evidence(traced: Trace) -> tuple[str, ...]:
    return tuple(f"[{', '.join(b.outputs) or 'no DNAT'}] {b.evidence()}" for b in traced.branches)


def _violation(
    node: str, vs: ExpectedVirtualService, observed: str, evidence: tuple[str, ...], wanted: str
) -> Violation:
    return Violation(
        kind=FindingKind.TRACE_MISMATCH,
        subject=str(vs.port_key),
        node=node,
        observed=observed,
        expected=f"{vs.kind} {HostPort(vs.address, vs.port)}: {wanted}".rstrip(": "),
        fix=f"restart kube-proxy on {node} so it rewrites its table: {restart_text(node)}",
        evidence=evidence,
        cluster_commands=(restart_kube_proxy(node),),
    )


NFT_TRACE_REACHES_ENDPOINTS = Check(
    id="nft-trace-reaches-endpoints",
    title="A packet traced through the node's nftables rules reaches exactly the endpoints",
    why=(
        "What the rules DO, however they are spelled: a new connection from a pod and from outside "
        "is traced through the node's own kube-proxy table as kube-proxy's tests trace theirs "
        "(nftablesTracer, pkg/proxy/nftables/helpers_test.go), every numgen branch followed; a "
        "stale `dnat to pod:80` after a port edit to 6379 (the first founding incident), a "
        "missing element or a wrong verdict sends clients where no endpoint listens."
    ),
    fix=(
        "Restart kube-proxy on the node so it rewrites its table (a full sync); if the trace "
        "still disagrees, compare the rule path with the map and chain checks' findings."
    ),
    severity=Severity.CRITICAL,
    scope=SERVICE_PORTS,
    inputs=(
        SERVICES,
        ENDPOINT_SLICES,
        NODE_OBJECTS,
        KUBE_PROXY,
        KUBE_PROXY_DAEMONSET,
        IP_ADDR,
        IP_LINK,
        NFT_TABLES,
        NFT_IP,
        NFT_IP6,
    ),
    run=check_trace_reaches_endpoints,
)
