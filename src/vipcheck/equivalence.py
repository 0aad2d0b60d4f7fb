"""Equivalence across the mode switch (issue 20): `vipcheck diff` of an IPVS and an nftables side.

The failures of the two sides are judged by different checks (IPVS's on one side, nftables' on
the other), so comparing them says little about the switch itself. What must not change is where
traffic goes: per TCP Service port and node, the endpoints the node's datapath sends each VIP's
new connections to (`Datapath.reaches`: IPVS real servers of weight > 0 before, the DNAT
targets of a packet traced through the node's kube-proxy table after), and per VIP and vantage
point whether the handshake probe's connections completed (the probes recorded in each snapshot,
docs/probe.md). Each comparison is equivalent, lost, gained or incomparable:

- lost: an endpoint the VIP was sent to before and not after, while the after side's cluster
  still makes it one a correct kube-proxy sends that VIP to on that node; or a handshake that
  completed before and failed after. `vipcheck diff` exits 1 on anything lost;
- gained: an endpoint sent to after and not before (a datapath that missed one before, or a new
  or stale one after: the line says which), or a handshake that failed before and completes;
- incomparable, with why: a Service port or node on one side only, a node not observed or whose
  kernel state does not show the side's mode, a side without probes, a handshake not judged
  (the time cap), an endpoint that left the cluster between the runs, and the VIPs where the two
  modes differ by design (below).

Where kube-proxy's two modes send the same VIP differently by design, a difference is not a
loss: a VIP under a Local traffic policy on a node without a local endpoint (IPVS keeps the
cluster endpoints as real servers so the node's own pods keep access, pkg/proxy/ipvs/proxier.go
syncEndpoint, kubernetes/kubernetes#97081, as vipcheck.expected models it; nftables drops
traffic from outside in the external chain, pkg/proxy/nftables/proxier.go at
kubernetes/kubernetes@b0f823e6ccd8), and a load-balancer IP with loadBalancerSourceRanges
(nftables' firewall chain drops the outside source the trace uses before any DNAT; IPVS filters
sources outside its table, with the KUBE-LOAD-BALANCER-SOURCE-CIDR ipset and iptables).

Only snapshots carry this: a JSON summary holds verdicts, not the endpoints each node sends to
(an index of those would be 100 nodes x 6,250 ports of endpoint lists, larger than the summary
itself). A side's record is computed from its facts right after its checks ran, sharing their
traces (TraceMemo) and expected state, and holds no facts, so two big snapshots are never in
memory at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vipcheck.datapath import Datapath, datapath_for
from vipcheck.datapath.nft_trace import CannotTrace
from vipcheck.expected import ExpectedVirtualService, Rule, VirtualServiceKind
from vipcheck.facts import Facts, MissingInput, NodeFacts, Unobserved
from vipcheck.model.cluster import Cluster, ProxyMode
from vipcheck.model.handshakes import (
    Attempt,
    ConnectOutcome,
    ProbeOutput,
    ProbeRound,
    ProbeTarget,
)
from vipcheck.model.node import HostPort, InvalidValue, L4Protocol
from vipcheck.parse import ParseError
from vipcheck.snapshot import SnapshotError

# What reading a node's or the cluster's facts may raise: the node (or side) is then
# incomparable, with the error as why, never compared as if it sent nowhere.
_READ_ERRORS = (MissingInput, Unobserved, ParseError, InvalidValue, SnapshotError, CannotTrace)

LOCAL_FALLBACK_WHY = (
    "a Local traffic policy without a local endpoint on this node: IPVS keeps the cluster "
    "endpoints as real servers for the node's own traffic, nftables drops traffic from outside "
    "(kube-proxy's design, not a loss; the handshakes compare it)"
)
SOURCE_RANGES_WHY = (
    "loadBalancerSourceRanges: nftables' firewall chain drops the traced outside source before "
    "any DNAT, IPVS filters sources outside its table (kube-proxy's design, not a loss)"
)


class Verdict(StrEnum):
    """What a comparison across the switch found."""

    EQUIVALENT = "equivalent"
    LOST = "lost"
    GAINED = "gained"
    INCOMPARABLE = "incomparable"


@dataclass(frozen=True, slots=True)
class Vip:
    """One VIP of a Service port on one node: where the node's datapath sends it, and where a
    correct kube-proxy would (from the same side's cluster)."""

    name: str  # `ClusterIP 10.96.0.20:6379`, `NodePort 192.168.58.11:30080`
    sends_to: frozenset[HostPort]
    expected: frozenset[HostPort]
    by_design: str = ""  # why the two modes send it differently by design, "" when they do not


@dataclass(frozen=True, slots=True)
class Handshake:
    """One VIP target of the probe from one vantage point: completed, failed or not judged."""

    completed: bool | None  # None: not judged (why says so)
    why: str = ""  # the failure's tally, or why it was not judged


_Vips = tuple[Vip, ...]
HandshakeKey = tuple[str, str, str]  # (Service port, `ClusterIP 10.96.0.20:6379`, vantage)


@dataclass
class SideRecord:
    """What one side's nodes send each VIP to and how its handshakes went, without its facts."""

    mode: ProxyMode
    ports: dict[str, dict[str, _Vips]] = field(default_factory=dict)  # node -> port -> VIPs
    unread: dict[str, str] = field(default_factory=dict)  # node -> why it cannot be compared
    cannot: str = ""  # why no node could be (the cluster's objects did not read)
    handshakes: dict[HandshakeKey, Handshake] = field(default_factory=dict)
    no_probes: str = ""  # why the side has no handshakes to compare
    interned: dict[Vip, Vip] = field(default_factory=dict, repr=False, compare=False)
    # Each expected VS's name by the object's id (a Service the same on every node has one).
    names: dict[int, tuple[ExpectedVirtualService, str]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def of(cls, facts: Facts) -> SideRecord:
        """The record of a snapshot's facts, read through the datapath of its kube-proxy mode."""
        datapath = datapath_for(facts.cluster)
        record = cls(datapath.mode)
        try:
            ranged = _source_ranged(facts.cluster.cluster)  # the cluster's objects, read first
            expected = datapath.expected(facts)
            for name, node in facts.nodes.items():
                why = _unreadable(node, datapath.mode)
                if why:
                    record.unread[name] = why
                    continue
                try:
                    vss = expected.reached_at(name)
                    record.ports[name] = _node_vips(
                        datapath, facts, node, vss, record=record, ranged=ranged
                    )
                except _READ_ERRORS as error:
                    record.unread[name] = str(error)
        except _READ_ERRORS as error:
            record.cannot = str(error)
        record.handshakes, record.no_probes = _handshakes(facts)
        return record

    def name_of(self, vs: ExpectedVirtualService) -> str:
        """`ClusterIP 10.96.0.20:6379`: made once per expected VS object."""
        found = self.names.get(id(vs))
        if found is None or found[0] is not vs:
            found = self.names[id(vs)] = (vs, f"{vs.kind.value} {HostPort(vs.address, vs.port)}")
        return found[1]

    def intern(self, vip: Vip) -> Vip:
        """The one Vip object equal to this one: a ClusterIP sent alike on 100 nodes is kept
        once."""
        return self.interned.setdefault(vip, vip)


def _unreadable(node: NodeFacts, mode: ProxyMode) -> str:
    """Why the node's datapath cannot be compared: not observed, or its kernel state does not
    show the side's mode (a node not yet switched, or left behind: kube-proxy-mode's finding);
    "" when it can."""
    if not node.observed:
        return node.unobserved_reason or f"{node.name} could not be observed"
    try:
        observed = node.observed_mode
    except _READ_ERRORS as error:
        return str(error)
    if mode in observed.unknown:
        return observed.unknown[mode]
    if mode not in observed.seen:
        shows = ", ".join(f"{m} ({why})" for m, why in sorted(observed.seen.items()))
        return (
            f"{node.name} shows {shows or 'no kube-proxy mode'}, not {mode} (kube-proxy-mode): "
            "its traffic is not this mode's to compare"
        )
    return ""


def _node_vips(
    datapath: Datapath,
    facts: Facts,
    node: NodeFacts,
    vss: tuple[ExpectedVirtualService, ...],
    *,
    record: SideRecord,
    ranged: frozenset[str],
) -> dict[str, _Vips]:
    """The node's TCP VIPs per Service port, each with where the datapath sends it (ranged: the
    Services whose load-balancer IPs loadBalancerSourceRanges firewall)."""
    found: dict[str, list[Vip]] = {}
    for vs in vss:
        if vs.protocol is not L4Protocol.TCP:
            continue  # the datapaths say where TCP goes (Datapath.sends_to)
        address = HostPort(vs.address, vs.port)
        by_design = ""
        if vs.follows(Rule.LOCAL_FALLBACK):
            by_design = LOCAL_FALLBACK_WHY
        elif vs.kind is VirtualServiceKind.LOAD_BALANCER and vs.service_key in ranged:
            by_design = SOURCE_RANGES_WHY
        vip = Vip(
            record.name_of(vs),
            datapath.reaches(facts, node, address),
            vs.real_servers,
            by_design,
        )
        found.setdefault(str(vs.port_key), []).append(record.intern(vip))
    return {port: tuple(vips) for port, vips in found.items()}


def _source_ranged(cluster: Cluster) -> frozenset[str]:
    """The Services whose load-balancer IPs are firewalled by loadBalancerSourceRanges."""
    return frozenset(s.key for s in cluster.services if s.load_balancer_source_ranges)


def _handshakes(facts: Facts) -> tuple[dict[HandshakeKey, Handshake], str]:
    """Each VIP target's handshakes from the snapshot's probes, or why there are none."""
    try:
        plan = facts.probes.plan
    except _READ_ERRORS as error:
        return {}, str(error)
    found: dict[HandshakeKey, Handshake] = {}
    outputs: dict[str, _Output | str] = {}
    for target in plan.targets:
        if target.round is not ProbeRound.VIP:
            continue
        if target.vantage not in outputs:
            outputs[target.vantage] = _output(facts, target.vantage)
        key = (str(target.service), f"{target.kind.value} {target.address}", target.vantage)
        found[key] = _handshake(target, outputs[target.vantage])
    return found, ""


@dataclass(frozen=True, slots=True)
class _Output:
    """A vantage point's VIP round, its attempts indexed by address (read once, not per
    target: a vantage point probes thousands of VIPs)."""

    output: ProbeOutput
    attempts: Mapping[HostPort, list[Attempt]]


def _output(facts: Facts, vantage: str) -> _Output | str:
    """The vantage point's VIP round, or why it cannot be read."""
    try:
        output = facts.probes.output(vantage, ProbeRound.VIP)
    except _READ_ERRORS as error:
        return f"could not probe from {vantage}: {error}"
    if output is None or output.error:
        return f"could not probe from {vantage}: {output.error if output else 'no output'}"
    attempts: dict[HostPort, list[Attempt]] = {}
    for attempt in output.attempts:
        attempts.setdefault(attempt.address, []).append(attempt)
    return _Output(output, attempts)


def _handshake(target: ProbeTarget, read: _Output | str) -> Handshake:
    """Completed when every attempt connected and none was left out (the time cap, a round cut
    off), as vip-handshake judges it (checks/handshake.py); failed when one did not connect."""
    if isinstance(read, str):
        return Handshake(None, read)
    attempts = read.attempts.get(target.address, [])
    failed = Counter(a.outcome.value for a in attempts if a.outcome is not ConnectOutcome.CONNECTED)
    if failed:
        tally = ", ".join(f"{n} {outcome}" for outcome, n in failed.most_common())
        return Handshake(False, f"{sum(failed.values())} of {len(attempts)} failed ({tally})")
    left_out = read.output.not_attempted.get(target.address, 0) or (
        max(0, target.attempts - len(attempts)) if read.output.cut else 0
    )
    if left_out or not attempts:
        return Handshake(None, f"{left_out or target.attempts} attempt(s) not made")
    return Handshake(True)


@dataclass(frozen=True, slots=True)
class Compared:
    """One comparison's verdict: its subject (a Service port, a node, `handshakes`), node or
    vantage point, and what differs or why it cannot be compared."""

    verdict: Verdict
    subject: str
    node: str | None
    detail: str = ""

    def text(self) -> str:
        where = f" on {self.node}" if self.node else ""
        return f"{self.subject}{where}: {self.detail}" if self.detail else f"{self.subject}{where}"

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "node": self.node, "detail": self.detail}


@dataclass
class Equivalence:
    """Every comparison across the switch, by verdict; or why none could be made."""

    before_mode: str
    after_mode: str
    found: dict[Verdict, list[Compared]] = field(
        default_factory=lambda: {verdict: [] for verdict in Verdict}
    )
    unavailable: str = ""  # why the sides could not be compared at all (summaries given)

    @property
    def lost(self) -> list[Compared]:
        return self.found[Verdict.LOST]

    def add(self, compared: Compared) -> None:
        self.found[compared.verdict].append(compared)

    def counts(self) -> str:
        """`equivalence: N equivalent, L lost, G gained, I incomparable`."""
        counted = ", ".join(f"{len(self.found[v]):,} {v.value}" for v in Verdict)
        return f"equivalence: {counted}"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"before_mode": self.before_mode, "after_mode": self.after_mode}
        if self.unavailable:
            data["unavailable"] = self.unavailable
            return data
        data["counts"] = {v.value: len(self.found[v]) for v in Verdict}
        for verdict in (Verdict.LOST, Verdict.GAINED, Verdict.INCOMPARABLE):
            data[verdict.value] = [c.as_json() for c in self.found[verdict]]
        return data


def unavailable(before_mode: str, after_mode: str, why: str) -> Equivalence:
    """No comparison across the switch, saying why (a side is a JSON summary)."""
    return Equivalence(before_mode, after_mode, unavailable=why)


def compare_sides(before: SideRecord, after: SideRecord, names: tuple[str, str]) -> Equivalence:
    """Every Service port and node's endpoints, and every handshake, before against after."""
    result = Equivalence(before.mode.value, after.mode.value)
    for compared in _endpoints(before, after, names):
        result.add(compared)
    for compared in _handshakes_compared(before, after, names):
        result.add(compared)
    return result


def _incomparable(subject: str, node: str | None, why: str) -> Compared:
    return Compared(Verdict.INCOMPARABLE, subject, node, why)


def _endpoints(before: SideRecord, after: SideRecord, names: tuple[str, str]) -> Iterator[Compared]:
    for side, name in ((before, names[0]), (after, names[1])):
        if side.cannot:
            yield _incomparable("endpoints", None, f"{name}: {side.cannot}")
    if before.cannot or after.cannot:
        return
    nodes = sorted(
        before.ports.keys() | before.unread.keys() | after.ports.keys() | after.unread.keys()
    )
    ports_before = {port for found in before.ports.values() for port in found}
    ports_after = {port for found in after.ports.values() for port in found}
    for port in sorted(ports_before ^ ports_after):
        only = names[0] if port in ports_before else names[1]
        yield _incomparable(port, None, f"only in {only}")
    for node in nodes:
        why = _node_why(node, before, after, names)
        if why:
            yield _incomparable(node, None, why)
            continue
        old, new = before.ports[node], after.ports[node]
        for port in sorted((old.keys() | new.keys()) & ports_before & ports_after):
            yield _compare_port(port, node, old.get(port, ()), new.get(port, ()), names)


def _node_why(node: str, before: SideRecord, after: SideRecord, names: tuple[str, str]) -> str:
    """Why a node's ports cannot be compared ("" when they can): unread on a side, or on one
    side only."""
    sides = ((before, names[0]), (after, names[1]))
    for side, name in sides:
        if node in side.unread:
            return f"{name}: {side.unread[node]}"
    for side, name in sides:
        if node not in side.ports:
            return f"node {node} is not in {name}"
    return ""


def _compare_port(port: str, node: str, old: _Vips, new: _Vips, names: tuple[str, str]) -> Compared:
    """One Service port on one node: each VIP's endpoints before against after."""
    if old == new:
        return Compared(Verdict.EQUIVALENT, port, node)
    before, after = {v.name: v for v in old}, {v.name: v for v in new}
    lost: list[str] = []
    gained: list[str] = []
    other: list[str] = []
    for name in sorted(before.keys() | after.keys()):
        if name not in after or name not in before:
            other.append(f"{name} only in {names[0] if name in before else names[1]}")
            continue
        was, now = before[name], after[name]
        if was.sends_to == now.sends_to:
            continue
        by_design = was.by_design or now.by_design
        if by_design:
            other.append(
                f"{name}: {_targets(was.sends_to)} -> {_targets(now.sends_to)}: {by_design}"
            )
            continue
        for endpoint in sorted(was.sends_to - now.sends_to, key=str):
            if endpoint in now.expected:
                lost.append(f"{name} no longer sent to {endpoint}")
            else:
                other.append(
                    f"{name}: {endpoint} is no endpoint of it here in {names[1]} (the cluster "
                    f"changed between the runs, or {names[0]} sent to a stale one)"
                )
        for endpoint in sorted(now.sends_to - was.sends_to, key=str):
            stale = "" if endpoint in now.expected else f" (no endpoint of it in {names[1]})"
            gained.append(f"{name} now sent to {endpoint}{stale}")
    if lost:
        return Compared(Verdict.LOST, port, node, "; ".join([*lost, *gained]))
    if gained:
        return Compared(Verdict.GAINED, port, node, "; ".join(gained))
    if other:
        return _incomparable(port, node, "; ".join(other))
    return Compared(Verdict.EQUIVALENT, port, node)


def _targets(endpoints: frozenset[HostPort]) -> str:
    return "{" + ", ".join(sorted(map(str, endpoints))) + "}"


def _handshakes_compared(
    before: SideRecord, after: SideRecord, names: tuple[str, str]
) -> Iterator[Compared]:
    for side, name in ((before, names[0]), (after, names[1])):
        if side.no_probes:
            yield _incomparable("handshakes", None, f"{name}: {side.no_probes}")
    if before.no_probes or after.no_probes:
        return
    for key in sorted(before.handshakes.keys() | after.handshakes.keys()):
        port, vip, vantage = key
        subject = f"{port} {vip}"
        was, now = before.handshakes.get(key), after.handshakes.get(key)
        if was is None or now is None:
            missing = names[1] if was is not None else names[0]
            yield _incomparable(subject, vantage, f"not probed from there in {missing}")
        elif was.completed is None or now.completed is None:
            name, unjudged = (names[0], was) if was.completed is None else (names[1], now)
            yield _incomparable(subject, vantage, f"not judged in {name}: {unjudged.why}")
        elif was.completed and not now.completed:
            yield Compared(Verdict.LOST, subject, vantage, f"handshake {now.why} in {names[1]}")
        elif now.completed and not was.completed:
            yield Compared(Verdict.GAINED, subject, vantage, f"handshake {was.why} in {names[0]}")
        else:
            yield Compared(Verdict.EQUIVALENT, subject, vantage)
