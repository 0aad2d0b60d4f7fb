"""Handshake probing, the plan: which VIPs and real servers to probe from where, from the facts.

Planning is a step after facts (expected state and what IPVS holds); running a round is the
gathering layer's (vipcheck.gather.vantage_points). Rounds:
1. every TCP Service VIP with usable endpoints (ClusterIPs, externalIPs, NodePorts on the nodes'
   addresses), attempts derived from the real-server count (model.handshakes.attempts_for);
2. only for VIPs that failed somewhere: each real server behind them, expected (endpoints) and
   actual (IPVS, so a stale one is named), directly from the same vantage point and from the node
   that runs it, so a failure is pinned on the backend or on the path;
3. only when something failed: /proc/net/ip_vs_conn once more on each node, so the SYN_RECV
   entries the probes themselves left are part of the evidence.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from vipcheck.datapath import datapath_for
from vipcheck.expected import (
    ExpectedVirtualService,
    Rule,
    VirtualServiceKind,
    endpoint_node,
)
from vipcheck.facts import Facts
from vipcheck.gather.vantage_points import VantagePoint, reread_connections, run_round
from vipcheck.model.cluster import Cluster, ServicePortKey
from vipcheck.model.handshakes import (
    MIN_ATTEMPTS,
    ConnectOutcome,
    ProbePlan,
    ProbeRound,
    ProbeSettings,
    ProbeTarget,
    RealServerOrigin,
    TargetKind,
    Vantage,
    attempts_for,
)
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse import ParseError
from vipcheck.parse.handshakes import parse_probe_output, plan_as_json
from vipcheck.snapshot import PROBE_PLAN
from vipcheck.transport import HOST_SPEC_RUNNER, NodeRunner

Progress = Callable[[str], None]
_KINDS = {
    VirtualServiceKind.CLUSTER_IP: TargetKind.CLUSTER_IP,
    VirtualServiceKind.NODE_PORT: TargetKind.NODE_PORT,
    VirtualServiceKind.EXTERNAL_IP: TargetKind.EXTERNAL_IP,
    VirtualServiceKind.LOAD_BALANCER: TargetKind.LOAD_BALANCER,
}


@dataclass(frozen=True, slots=True)
class _Vip:
    """One probed VIP address:port: its Service port, kind, and the nodes that serve it."""

    address: HostPort
    service: ServicePortKey
    kind: TargetKind
    expected: Mapping[str, frozenset[HostPort]]  # node -> expected real servers there
    only_node: str | None  # a NodePort is one node's address
    # Nodes where a Local policy falls back to other nodes' endpoints (kubernetes#97081): the
    # replies reach only the node itself and its pods, so only the node probes there.
    fallback: frozenset[str] = frozenset()


def _vips(facts: Facts) -> list[_Vip]:
    """Every TCP VS a correct kube-proxy programs, merged over nodes, NodePorts per node: the
    expected state the checks read (the datapath's, kept by the Facts), computed once."""
    return facts.derive("probe VIPs", lambda: _merged_vips(facts))


def _merged_vips(facts: Facts) -> list[_Vip]:
    expected_state = datapath_for(facts.cluster).expected(facts)
    merged: dict[tuple[HostPort, str | None], dict[str, ExpectedVirtualService]] = defaultdict(dict)
    for node in facts.cluster.cluster.nodes:
        for expected in expected_state.reached_at(node.name):
            if expected.protocol is not L4Protocol.TCP:
                continue
            on = node.name if expected.kind is VirtualServiceKind.NODE_PORT else None
            merged[HostPort(expected.address, expected.port), on][node.name] = expected
    vips = []
    for (address, on), by_node in merged.items():
        first = next(iter(by_node.values()))
        vips.append(
            _Vip(
                address,
                first.port_key,
                _KINDS[first.kind],
                {node: vs.real_servers for node, vs in by_node.items()},
                on,
                frozenset(n for n, vs in by_node.items() if vs.follows(Rule.LOCAL_FALLBACK)),
            )
        )
    return sorted(vips, key=lambda v: (str(v.service), v.kind.value, str(v.address)))


def _observed_real_servers(facts: Facts, node: str, address: HostPort) -> frozenset[HostPort]:
    """Where the node's datapath sends the TCP VIP (IPVS: real servers of weight > 0); none if
    its state was not read."""
    node_facts = facts.nodes.get(node)
    if node_facts is None:
        return frozenset()
    return datapath_for(facts.cluster).sends_to(node_facts, address)


def _directors(vip: _Vip, vantage: Vantage) -> list[str]:
    """Nodes whose IPVS handles this VIP for this vantage point: its own, the NodePort's, or all.

    A node whose Local policy falls back to remote endpoints answers only itself.
    """
    if vip.only_node is not None:
        directors = [vip.only_node]
    elif vantage.node is not None:
        directors = [vantage.node]
    else:
        directors = list(vip.expected)
    return [n for n in directors if n not in vip.fallback or n == vantage.node]


# Large clusters: what one vantage point may do in one round, and the whole probe's time cap.
CONNECT_S = 0.01  # a LAN connect, for the pace estimate: one attempt takes delay_s + CONNECT_S
TOTAL_CAP_S = 600
MAX_PARALLEL = 128  # vantage points probing at once in a large cluster: all of a 100-node one


def connection_limit(settings: ProbeSettings) -> int:
    """Connections one vantage point makes within its time cap at the probe's pace."""
    return max(1, int(settings.budget_s / (settings.delay_s + CONNECT_S)))


def plan_vips(
    facts: Facts, vantages: Iterable[Vantage], settings: ProbeSettings
) -> list[ProbeTarget]:
    """Round 1: each vantage point to each VIP that has usable endpoints where it is handled.

    When that is more than a vantage point can do within its time cap (a large cluster), the
    budget policy applies instead (docs/probe.md): each Service port is dealt to one node
    vantage point, which probes it fully (its NodePort on its own address), and every outside
    host probes every Service port once per address (NodePorts at the dealt node's address),
    with fewer attempts where its share would not fit.
    """
    cluster = facts.cluster.cluster
    vips = _vips(facts)
    vantages = list(vantages)
    limit = connection_limit(settings)
    large = len(vips) * MIN_ATTEMPTS > limit
    keep = _dealt(vips, vantages, cluster) if large else None
    targets = []
    for vantage in vantages:
        mine = []
        for vip in vips:
            if keep is not None and not keep(vantage, vip):
                continue
            directors = _directors(vip, vantage)
            expected = frozenset().union(*(vip.expected.get(n, frozenset()) for n in directors))
            if not expected:
                continue  # nothing should answer (no endpoints, or Local policy elsewhere)
            observed = [_observed_real_servers(facts, n, vip.address) for n in directors]
            count = max(len(expected), *(len(o) for o in observed)) if observed else len(expected)
            mine.append(
                ProbeTarget(
                    ProbeRound.VIP,
                    vantage.name,
                    vip.address,
                    attempts_for(count),
                    vip.service,
                    vip.kind,
                )
            )
        targets += _within(mine, limit) if large else mine
    return targets


def _dealt(
    vips: Sequence[_Vip], vantages: Sequence[Vantage], cluster: Cluster
) -> Callable[[Vantage, _Vip], bool]:
    """Which (vantage point, VIP) pairs a large cluster probes: ports dealt round robin."""
    ports = sorted({vip.service for vip in vips}, key=str)
    nodes = [v.node for v in vantages if v.node is not None] or sorted(
        n.name for n in cluster.nodes
    )
    owner = {port: nodes[i % len(nodes)] for i, port in enumerate(ports)} if nodes else {}

    def keep(vantage: Vantage, vip: _Vip) -> bool:
        dealt = owner.get(vip.service)
        if vantage.node is not None and vantage.node != dealt:
            return False
        return vip.only_node is None or vip.only_node == dealt

    return keep


def _within(targets: list[ProbeTarget], limit: int) -> list[ProbeTarget]:
    """A vantage point's targets with attempts scaled down to its connection limit, at least one
    each: every VIP is still proven once, and the round's time cap grows to fit (probe_settings)."""
    total = sum(t.attempts for t in targets)
    if total <= limit:
        return targets
    return [replace(t, attempts=max(1, t.attempts * limit // total)) for t in targets]


def round_settings(
    targets: Sequence[ProbeTarget], settings: ProbeSettings, total_cap_s: int = TOTAL_CAP_S
) -> ProbeSettings:
    """The settings the VIP round runs with: as given, unless a vantage point's share needs more
    time than its cap (a large cluster): then every vantage point runs at once, each capped by
    what the largest share needs, within the total cap less one ordinary round (attribution's)."""
    per_vantage: Counter[str] = Counter()
    for target in targets:
        per_vantage[target.vantage] += target.attempts
    if not per_vantage or max(per_vantage.values()) <= connection_limit(settings):
        return settings
    parallel = max(settings.parallel, min(len(per_vantage), MAX_PARALLEL))
    waves = math.ceil(len(per_vantage) / parallel)
    needed = math.ceil(max(per_vantage.values()) * (settings.delay_s + CONNECT_S))
    return replace(
        settings,
        budget_s=max(settings.budget_s, min(needed, (total_cap_s - settings.budget_s) // waves)),
        parallel=parallel,
    )


def plan_real_servers(
    facts: Facts,
    vantages: Sequence[Vantage],
    failed: Iterable[ProbeTarget],
) -> list[ProbeTarget]:
    """Round 2: real servers behind failed VIP targets, from there and from the backend's node."""
    cluster = facts.cluster.cluster
    vips = {vip.address: vip for vip in _vips(facts)}  # NodePorts are on distinct addresses
    by_name = {v.name: v for v in vantages}
    planned: dict[tuple[str, HostPort], ProbeTarget] = {}
    for target in failed:
        vantage = by_name[target.vantage]
        vip = vips.get(target.address)
        if vip is None:
            continue
        directors = _directors(vip, vantage)
        expected = frozenset().union(*(vip.expected.get(n, frozenset()) for n in directors))
        observed = frozenset().union(
            *(_observed_real_servers(facts, n, vip.address) for n in directors)
        )
        for server in sorted(expected | observed, key=str):
            origin = (
                RealServerOrigin.BOTH
                if server in expected and server in observed
                else RealServerOrigin.ENDPOINT
                if server in expected
                else RealServerOrigin.IPVS
            )
            backend = endpoint_node(cluster.endpoint_slices, server.address)
            for name in dict.fromkeys((vantage.name, backend)):
                if name is None or name not in by_name:
                    continue
                planned.setdefault(
                    (name, server),
                    ProbeTarget(
                        ProbeRound.REAL_SERVER,
                        name,
                        server,
                        MIN_ATTEMPTS,
                        target.service,
                        TargetKind.REAL_SERVER,
                        via=target.address,
                        backend_node=backend,
                        origin=origin,
                    ),
                )
    return list(planned.values())


def run_probes(
    facts: Facts,
    points: Sequence[VantagePoint],
    settings: ProbeSettings,
    progress: Progress,
    *,
    runner: NodeRunner = HOST_SPEC_RUNNER,
    total_cap_s: int = TOTAL_CAP_S,
) -> dict[str, str]:
    """Probe the VIPs, then real servers behind failures, then re-read connection tables."""
    started = time.monotonic()
    vantages = [point.vantage for point in points]
    reach = {point.vantage.name: point.target for point in points}
    files: dict[str, str] = {}
    vip_targets = plan_vips(facts, vantages, settings)
    vip_settings = round_settings(vip_targets, settings, total_cap_s)
    files.update(
        run_round(ProbeRound.VIP, vip_targets, reach, vip_settings, progress, runner=runner)
    )
    failed = failed_vip_targets(vip_targets, files)
    rs_targets = plan_real_servers(facts, vantages, failed)
    if rs_targets:
        files.update(
            run_round(ProbeRound.REAL_SERVER, rs_targets, reach, settings, progress, runner=runner)
        )
    if failed:
        nodes = [point.target for point in points if point.vantage.node is not None]
        files.update(reread_connections(nodes, settings, progress, runner=runner))
    elapsed = round(time.monotonic() - started, 1)
    plan = ProbePlan(tuple(vantages), (*vip_targets, *rs_targets), vip_settings, elapsed)
    files[PROBE_PLAN] = plan_as_json(plan)
    made = sum(
        line.startswith("ATTEMPT ") for name, text in files.items() if not name.startswith("after/")
        for line in text.splitlines()
    )  # fmt: skip
    progress(
        f"probed {len(vip_targets)} VIP and {len(rs_targets)} real-server targets from "
        f"{len(vantages)} vantage points: {made} connections in {elapsed:.1f} s"
    )
    return files


def failed_vip_targets(
    targets: Iterable[ProbeTarget], files: Mapping[str, str]
) -> list[ProbeTarget]:
    """VIP targets with an attempt that did not connect (or was not made) from a vantage point."""
    failed = []
    for target in targets:
        text = files.get(f"{target.vantage}/{ProbeRound.VIP.value}.txt")
        if text is None:
            continue
        try:
            output = parse_probe_output(text, target.vantage)
        except ParseError:
            continue
        mine = [a for a in output.attempts if a.address == target.address]
        if any(a.outcome is not ConnectOutcome.CONNECTED for a in mine):
            failed.append(target)
    return failed
