"""The packet trace: what each node's own nftables rules do to a Service's traffic (issue 19).

The map and chain checks compare kube-proxy's table with what it should have written; this one
judges what the rules DO, however they are spelled: for every Service port, on every node in
nftables mode, a new connection from a pod on the node and one from outside the cluster are
traced (vipcheck.datapath.nft_trace) to each VIP the node serves, and the DNAT targets reached
(or DROP/REJECT) must equal the endpoints the nftables datapath's expected state gives
(vipcheck.datapath.nftables: CategorizeEndpoints without IPVS's Local fallback), with nftables
mode's differences from IPVS (kubernetes/kubernetes@803d40a57714 pkg/proxy/nftables/proxier.go,
syncProxyRules):

- NodePorts only on nodePortAddresses, whose default in this mode is the Node's primary IPs
  (cmd/kube-proxy/app/server_linux.go platformApplyDefaults), never 127.0.0.1;
- externalTrafficPolicy Local: traffic from pods short-circuits to the cluster endpoints (the
  `external-` chain's "short-circuit pod traffic" rule), traffic from outside reaches only the
  local ones, and is DROPped when there is none (`no-endpoint-services` ... `drop`);
- internalTrafficPolicy Local with no local endpoint: ClusterIP traffic is DROPped;
- no endpoint at all: REJECT (`goto reject-chain`);
- an LB IP of a Service with loadBalancerSourceRanges: a source outside them is DROPped by its
  `firewall-` chain before anything else, so such a VIP is traced from an outside source inside
  the ranges and from one outside them (PortRules.firewall_sources, admits).

A mismatch names the rule path the packet took. Not judged, and said so: pod traffic on a node
with no pod CIDR known; a node with no kube-proxy table at all, which is not in nftables mode:
kube-proxy-mode's one finding. A node with the other family's table only is flagged, per port
of the missing family. Both as the map and chain checks decide (checks.nftables.no_table), so
the trace flags exactly where they do (tests/unit/lab/test_nftables_agreement.py, on every lab
scenario).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

from vipcheck.checks.base import Check, FindingKind, Severity, Violation
from vipcheck.checks.kube_proxy import (
    NFTABLES_MODE,
    NotShown,
    judge_ports,
    restart_kube_proxy,
)
from vipcheck.checks.kube_proxy import restart_kube_proxy_text as restart_text
from vipcheck.checks.nftables import no_table
from vipcheck.checks.scopes import SERVICE_PORTS
from vipcheck.datapath.ipvs import node_port_candidates
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
from vipcheck.datapath.nftables import NftExpectedState, PortRules, family_of
from vipcheck.expected import ExpectedVirtualService, VirtualServiceKind
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
    ServicePortKey,
)
from vipcheck.model.nftables import KUBE_PROXY_TABLE, NftFamily
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
    vs: ExpectedVirtualService, origin: Origin, rules: PortRules, source: IPAddress
) -> Expectation:
    """kube-proxy's nftables semantics for one VIP, origin and source (the module docstring)."""
    if vs.kind is VirtualServiceKind.LOAD_BALANCER and not rules.admits(source):
        return Expectation(frozenset(), Verdict.DROP, f"{source} is outside the source ranges")
    anywhere = rules.cluster_endpoints | rules.local_endpoints
    if vs.kind is VirtualServiceKind.CLUSTER_IP:
        local, policy = rules.internal_local, "internalTrafficPolicy"
        targets = rules.local_endpoints if local else rules.cluster_endpoints
        why = (
            "the local endpoints (internalTrafficPolicy Local)" if local else "the usable endpoints"
        )
    elif rules.external_local and origin is Origin.POD:
        local, policy = False, "externalTrafficPolicy"
        targets, why = (
            rules.cluster_endpoints,
            "pod traffic short-circuits to the cluster endpoints",
        )
    else:
        local, policy = rules.external_local, "externalTrafficPolicy"
        targets = rules.local_endpoints if local else rules.cluster_endpoints
        why = f"the local endpoints ({policy} Local)" if local else "the endpoints"
    if targets:
        return Expectation(targets, None, why)
    if local and anywhere:
        return Expectation(frozenset(), Verdict.DROP, f"{policy} Local, none here")
    return Expectation(frozenset(), Verdict.REJECT, "no endpoints: goto reject-chain")


def firewall_sources(
    rules: PortRules, outside: IPAddress, avoid: Iterable[IPNetwork]
) -> list[IPAddress]:
    """Outside sources for a firewalled LB IP: one its source ranges admit and one they do not
    (where the ranges leave any), neither in `avoid` (the pod CIDRs and the node's own
    addresses, which the external chain short-circuits). `outside` is tried first for either."""
    cidrs = tuple(avoid)
    candidates = [
        outside,
        *(
            r.network_address + 1 if r.num_addresses > 2 else r.network_address
            for r in rules.source_ranges
        ),
        *(ip_address(a) for a in _BLOCKED_CLIENTS[outside.version]),
    ]
    found: dict[bool, IPAddress] = {}
    for candidate in candidates:
        if candidate.version == outside.version and not any(candidate in c for c in cidrs):
            found.setdefault(rules.admits(candidate), candidate)
    return list(found.values())


# Sources a range may not admit, upstream's TestLoadBalancer blocked client first.
_BLOCKED_CLIENTS = {
    4: ("203.0.113.130", "198.51.100.2", "192.0.2.2", "100.64.0.2"),
    6: ("2001:db8:ffff::2", "64:ff9b::1", "2600:5200::2"),
}


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
    expected = NftExpectedState.of(facts)
    cluster = facts.cluster.cluster
    memo = facts.derive("nft trace memo", TraceMemo)  # traces shared between the nodes

    return judge_ports(
        facts, subject, "nft-trace", lambda name, node: _judge_all(expected, cluster, node, memo)
    )


_Verdicts = dict[ServicePortKey, list[Violation | NotShown]]


@dataclass(frozen=True, slots=True)
class _NodeView:
    """What tracing on one node needs: a tracer per table (None: no such table), pod CIDRs."""

    facts: NodeFacts
    tracers: dict[NftFamily, Tracer | None]
    pod_cidrs: tuple[IPNetwork, ...]

    @property
    def name(self) -> str:
        return self.facts.name


def _judge_all(
    expected: NftExpectedState, cluster: Cluster, node: NodeFacts, memo: TraceMemo
) -> _Verdicts:
    """Every Service port of the node traced once, the ports with something to say kept."""
    node_object = cluster.node(node.name)
    own = node_port_candidates(node, node_object)
    pod_cidrs = (node_object.pod_cidrs if node_object else ()) or (
        cluster.kube_proxy.cluster_cidrs if cluster.kube_proxy else ()
    )
    tables = {family: node.nftables(family) for family in NftFamily}
    tracers = {f: None if t is None else Tracer(t, own, memo) for f, t in tables.items()}
    view = _NodeView(node, tracers, pod_cidrs)
    judged: _Verdicts = {}
    for port, found in expected.on_node(node.name).ports.items():
        vss = expected.for_port(node, port)
        verdicts: list[Violation | NotShown] = []
        for rules in found:
            for vs in vss:
                if family_of(vs.address) is rules.family:
                    verdicts += _judge_vip(view, vs, rules)
        if verdicts:
            judged[port] = verdicts
    return judged


def _judge_vip(
    view: _NodeView, vs: ExpectedVirtualService, rules: PortRules
) -> list[Violation | NotShown]:
    """One VIP traced from a pod and from outside, each against its expectation."""
    node = view.name
    family = rules.family
    tracer = view.tracers[family]
    vip = HostPort(vs.address, vs.port)
    if tracer is None:
        return [no_table(view.facts, family, str(vs.port_key))]
    found: list[Violation | NotShown] = []
    by_origin = sources(view.pod_cidrs, vs.address.version)
    outside = [by_origin[Origin.OUTSIDE]]
    if vs.kind is VirtualServiceKind.LOAD_BALANCER and rules.uses_firewall:
        own = (ip_network(address) for address in tracer.local)
        outside = firewall_sources(rules, outside[0], (*view.pod_cidrs, *own))
    origins = [(Origin.OUTSIDE, source) for source in outside]
    if Origin.POD in by_origin:
        origins.append((Origin.POD, by_origin[Origin.POD]))
    else:
        found.append(NotShown(f"{vip}: pod traffic (no pod CIDR known for {node})"))
    for origin, source in origins:
        wanted = expectation(vs, origin, rules, source)
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
    modes=NFTABLES_MODE,
)
