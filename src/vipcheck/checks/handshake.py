"""End to end: a TCP handshake through every Service VIP completes, and when not, why not."""

from __future__ import annotations

import shlex
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from vipcheck.checks.base import (
    Check,
    FindingKind,
    InterfaceSubject,
    NotApplicable,
    PartlyJudged,
    Severity,
    Violation,
)
from vipcheck.checks.connections import NO_STUCK_SYN_RECV
from vipcheck.checks.kube_proxy import require_mode, restart_kube_proxy_text
from vipcheck.checks.nftables import CHAINS_REACH_ENDPOINTS
from vipcheck.checks.real_servers import REAL_SERVERS_MATCH_ENDPOINTS
from vipcheck.checks.rp_filter import RP_FILTER_NOT_STRICT, check_rp_filter, rp_filter_interfaces
from vipcheck.checks.scopes import TCP_SERVICE_PORTS
from vipcheck.facts import (
    CONNECTIONS_AFTER_PROBES,
    PROBE_PLAN_INPUT,
    PROBE_REAL_SERVER_OUTPUT,
    PROBE_VIP_OUTPUT,
    Facts,
    MissingInput,
    Unobserved,
)
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.handshakes import (
    Attempt,
    ConnectOutcome,
    ProbeOutput,
    ProbeRound,
    ProbeTarget,
    RealServerOrigin,
)
from vipcheck.model.node import Connection, HostPort
from vipcheck.parse import ParseError
from vipcheck.settings import Settings

_READ_ERRORS = (MissingInput, Unobserved, ParseError, NotApplicable)


@dataclass(frozen=True, slots=True)
class _Server:
    """A real server probed directly: from the failing vantage point and from its own node."""

    target: ProbeTarget
    here: tuple[Attempt, ...]
    on_node: tuple[Attempt, ...] | None  # None: not probed from the backend's node

    @property
    def answers_here(self) -> bool:
        return bool(self.here) and _all_connected(self.here)

    @property
    def answers_on_node(self) -> bool | None:
        return None if not self.on_node else _all_connected(self.on_node)


@dataclass(frozen=True, slots=True)
class _Skipped:
    """A target's attempts never made: how many, why in short, and when in a sentence."""

    count: int
    why: str = "time cap"
    when: str = "within the probe's time cap (--probe-total)"


def _not_attempted(output: ProbeOutput, target: ProbeTarget, made: int) -> _Skipped:
    """The attempts the time cap left out (the script's BUDGET line), or, in a round cut off
    before DONE, those of the target's planned attempts that were never read."""
    capped = output.not_attempted.get(target.address, 0)
    if capped or not output.cut:
        return _Skipped(capped)
    return _Skipped(
        max(0, target.attempts - made), "round cut off", "before the probe round was cut off"
    )


@dataclass(frozen=True, slots=True)
class _Cause:
    """The most likely cause of a failure, naming the check that knows more, and its fix."""

    text: str
    fix: str


def check_vip_handshake(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """One violation per vantage point and VIP address whose handshakes do not all complete."""
    plan = facts.probes.plan
    mine = [t for t in plan.targets if t.round is ProbeRound.VIP and t.service == subject]
    if not mine:
        raise NotApplicable(
            f"{subject}: nothing probed (not TCP, no usable endpoints, or no vantage point)"
        )
    violations = []
    unobserved: list[str] = []
    capped: dict[str, str] = {}
    for target in mine:
        output = facts.probes.output(target.vantage, ProbeRound.VIP)
        if output is None or output.error:
            why = output.error if output else "no probe output"
            unobserved.append(f"{target.vantage}: {why}")
            continue
        attempts = tuple(a for a in output.attempts if a.address == target.address)
        skipped = _not_attempted(output, target, len(attempts))
        if attempts and _all_connected(attempts) and not skipped.count:
            continue
        if _all_connected(attempts) and skipped.count:
            # Nothing failed, but the time cap (or the round's end) cut the attempts that would
            # reach every real server: not judged from there, never a pass (nor a failure).
            made = f"{len(attempts)} completed, " if attempts else ""
            capped[f"{target.vantage} {target.address}"] = (
                f"{target.address} from {target.vantage}: {made}{skipped.count} not attempted "
                f"{skipped.when}"
            )
            continue
        violations.append(
            _violation(subject, target, attempts, skipped=skipped, facts=facts, settings=settings)
        )
    if unobserved and not violations:
        raise Unobserved(f"{subject}: could not probe from {'; '.join(sorted(set(unobserved)))}")
    if capped:
        raise PartlyJudged(violations, capped)
    return violations


def _violation(
    subject: ServicePortKey,
    target: ProbeTarget,
    attempts: tuple[Attempt, ...],
    *,
    skipped: _Skipped,
    facts: Facts,
    settings: Settings,
) -> Violation:
    servers = _servers(target, facts)
    syn_recv = _syn_recv(target.address, facts)
    stale = _stale_hints(subject, facts, settings)
    strict = _rp_filter_hints({s.target.backend_node for s in servers} - {None}, facts, settings)
    cause = _cause(target, attempts, servers, syn_recv=syn_recv, stale=stale, strict=strict)
    counts = Counter(a.outcome for a in attempts)
    tally = ", ".join(f"{n} {o.value}" for o, n in sorted(counts.items(), key=lambda i: -i[1]))
    failed = sum(n for o, n in counts.items() if o is not ConnectOutcome.CONNECTED)
    cut = f", {skipped.count} not attempted ({skipped.why})" if skipped.count else ""
    observed = (
        f"{failed} of {len(attempts) + skipped.count} handshakes failed ({tally}{cut}); "
        f"likely cause: {cause.text}"
    )
    evidence = [f"{target.vantage} -> {target.address}: {attempt}" for attempt in attempts]
    evidence += [_server_line(server) for server in servers]
    evidence += [f"[{NO_STUCK_SYN_RECV.id}] {line}" for line in syn_recv]
    evidence += [f"[{stale.check.id}] {v.node}: {v.observed}" for v in stale.violations]
    evidence += [f"[{RP_FILTER_NOT_STRICT.id}] {v.node}/{v.subject}: {v.observed}" for v in strict]
    return Violation(
        kind=FindingKind.HANDSHAKE_FAILURE,
        subject=f"{target.kind.value} {target.address} from {target.vantage}",
        node=target.vantage,
        observed=observed,
        expected=f"all {len(attempts) + skipped.count} handshakes complete",
        fix=cause.fix,
        evidence=tuple(evidence),
    )


def _cause(
    target: ProbeTarget,
    attempts: tuple[Attempt, ...],
    servers: list[_Server],
    *,
    syn_recv: list[str],
    stale: _StaleHints,
    strict: list[Violation],
) -> _Cause:
    """The first explanation that fits, strongest evidence first; says so when none does."""
    for server in servers:
        if server.target.origin is RealServerOrigin.IPVS and not server.answers_here:
            return _stale_cause(target, server, stale)
    for server in servers:
        if server.answers_here or server.target.origin is RealServerOrigin.IPVS:
            continue
        cause = _backend_cause(target.vantage, server, strict)
        if cause is not None:
            return cause
    return _unexplained(target, attempts, servers, syn_recv)


def _stale_cause(target: ProbeTarget, server: _Server, stale: _StaleHints) -> _Cause:
    address = server.target.address
    # The director is the vantage node itself; from outside, any node may be: fix them all.
    fixes = [v.fix for v in stale.violations if v.node == target.vantage] or [
        v.fix for v in stale.violations
    ]
    how = (
        f"{_dominant(server.here)} directly from {target.vantage} "
        "(nothing listens on the old targetPort)"
    )
    if stale.check is CHAINS_REACH_ENDPOINTS:
        return _Cause(
            f"stale endpoint {address} in the nftables rules for {target.address} is no endpoint "
            f"and {how}: the random pick sends it its share of connections "
            f"[{CHAINS_REACH_ENDPOINTS.id}]",
            " | ".join(fixes) or restart_kube_proxy_text(target.vantage),
        )
    fix = " | ".join(fixes) or shlex.join(
        ("ipvsadm", "-d", "-t", str(target.address), "-r", str(address))
    )
    return _Cause(
        f"stale real server {address} in IPVS for {target.address} is no endpoint and {how}: "
        f"round robin sends it its share of connections [{REAL_SERVERS_MATCH_ENDPOINTS.id}]",
        fix,
    )


def _backend_cause(where: str, server: _Server, strict: list[Violation]) -> _Cause | None:
    """An endpoint that fails directly: refused, dropped on the path, or dead on its node."""
    address, node = server.target.address, server.target.backend_node
    outcome = _dominant(server.here)
    rp = [v for v in strict if v.node == node]
    if outcome is ConnectOutcome.REFUSED:
        return _Cause(
            f"backend {address} refuses directly from {where}: nothing listens on the "
            "endpoint's port",
            f"check that the pod behind {address} listens on port {address.port} (the "
            "Service's targetPort) and is really ready",
        )
    local = f"while it answers on {node} itself " if server.answers_on_node else ""
    if rp:
        return _Cause(
            f"path: backend {address} on {node} {outcome} from {where} {local}and {node} has "
            f"strict rp_filter ({', '.join(v.subject for v in rp)}), which drops SYNs that "
            "arrive through the tunnel while the route back leaves another interface "
            f"[{RP_FILTER_NOT_STRICT.id}]",
            rp[0].fix,
        )
    if server.answers_on_node:
        return _Cause(
            f"path: backend {address} {outcome} from {where} {local}: packets are lost between "
            f"{where} and {node}",
            f"check the route back from {node} to {where}'s address, FORWARD rules and "
            f"rp_filter on {node}; `ipvsadm -Lnc` on the director shows SYN_RECV if replies "
            "are lost",
        )
    if server.answers_on_node is False:
        return _Cause(
            f"backend {address} does not answer even on {node}: the pod is hung or a policy "
            "drops the traffic",
            f"on {node}: check the pod behind {address} and NetworkPolicies",
        )
    return None


def _unexplained(
    target: ProbeTarget, attempts: tuple[Attempt, ...], servers: list[_Server], syn_recv: list[str]
) -> _Cause:
    where = target.vantage
    if syn_recv and any(a.outcome is ConnectOutcome.TIMEOUT for a in attempts):
        return _Cause(
            "replies from the real server never come back through the director (SYN_RECV "
            f"entries for this VIP) [{NO_STUCK_SYN_RECV.id}]",
            "make rp_filter loose on the real server's node, allow FORWARD and check the route "
            "back to the client goes through the director",
        )
    if not servers:
        return _Cause(
            "no explanation: the real servers behind it were not probed",
            f"probe the real servers from {where} (`--probe-from {where}`) and compare",
        )
    return _Cause(
        f"no explanation: every real server answers directly from {where}, and no other "
        "check points at this VIP",
        f"capture on the director (`tcpdump -ni any host {target.address.address}`) while "
        f"connecting from {where}, and compare `ipvsadm -Ln` with the Service",
    )


def _servers(target: ProbeTarget, facts: Facts) -> list[_Server]:
    """The real servers probed for this VIP target, with outcomes here and on their node."""
    servers = []
    for server in facts.probes.plan.targets:
        if (
            server.round is not ProbeRound.REAL_SERVER
            or server.via != target.address
            or server.vantage != target.vantage
        ):
            continue
        here = _attempts(facts, server.vantage, server.address)
        node = server.backend_node
        on_node = (
            _attempts(facts, node, server.address)
            if node is not None and node != server.vantage
            else None
        )
        servers.append(_Server(server, here, on_node or None))
    return servers


def _attempts(facts: Facts, vantage: str, address: HostPort) -> tuple[Attempt, ...]:
    output = facts.probes.output(vantage, ProbeRound.REAL_SERVER)
    if output is None or output.error:
        return ()
    return tuple(a for a in output.attempts if a.address == address)


def _server_line(server: _Server) -> str:
    origin = {
        RealServerOrigin.IPVS: "IPVS real server, not an endpoint",
        RealServerOrigin.ENDPOINT: "endpoint, not in IPVS",
        RealServerOrigin.BOTH: "endpoint",
    }[server.target.origin or RealServerOrigin.BOTH]
    node = server.target.backend_node or "an unknown node"
    here = _outcomes(server.here) or "not probed"
    line = f"{server.target.vantage} -> {server.target.address} ({origin}, on {node}): {here}"
    if server.on_node:
        line += f"; from {node}: {_outcomes(server.on_node)}"
    return line


def _syn_recv(vip: HostPort, facts: Facts) -> list[str]:
    """TCP SYN_RECV entries for this VIP on each node, after the probes when re-read, else
    before; of a table cut at MAX_KEPT_ROWS, those among its kept rows ("at least")."""
    lines = []
    for name, node in facts.nodes.items():
        try:
            after = facts.probes.connections_after(name)
            table: Iterable[Connection] = after if after is not None else node.syn_recv_connections
            when = "after probing" if after is not None else "when gathered"
            at_least = "at least " if after is None and node.syn_recv_cut else ""
            stuck = [c for c in table if c.virtual == vip]
        except _READ_ERRORS:
            continue
        by_destination: defaultdict[HostPort, int] = defaultdict(int)
        for connection in stuck:
            by_destination[connection.destination] += 1
        lines += [
            f"{name}: {at_least}{n} SYN_RECV TCP {vip} -> {destination} ({when})"
            for destination, n in sorted(by_destination.items(), key=str)
        ]
    return lines


@dataclass(frozen=True, slots=True)
class _StaleHints:
    """What the stale-endpoint check of the cluster's mode says about one Service port."""

    check: Check[ServicePortKey]
    violations: list[Violation]


# Each mode's check that names a stale real server or endpoint, and the finding it names it by.
_STALE_FINDINGS = (
    (REAL_SERVERS_MATCH_ENDPOINTS, FindingKind.STALE_REAL_SERVER),
    (CHAINS_REACH_ENDPOINTS, FindingKind.NFT_STALE_DNAT),
)


def _stale_hints(subject: ServicePortKey, facts: Facts, settings: Settings) -> _StaleHints:
    """What IPVS's real-server check, or nftables' chain check, says about this Service port:
    the one of the cluster's mode (none where neither applies or its input is missing)."""
    for check, kind in _STALE_FINDINGS:
        try:
            require_mode(check.modes, facts.cluster)
            found = check.run(subject, facts, settings)
        except _READ_ERRORS:
            continue
        return _StaleHints(check, [v for v in found if v.kind is kind])
    return _StaleHints(REAL_SERVERS_MATCH_ENDPOINTS, [])


def _rp_filter_hints(
    nodes: Iterable[str | None], facts: Facts, settings: Settings
) -> list[Violation]:
    """What RP_FILTER_NOT_STRICT says about the nodes running the probed real servers."""
    hints = []
    for name in sorted(n for n in nodes if n is not None):
        node = facts.nodes.get(name)
        if node is None:
            continue
        try:
            for interface in rp_filter_interfaces(node, facts.cluster):
                hints += check_rp_filter(InterfaceSubject(name, interface), facts, settings)
        except _READ_ERRORS:
            continue
    return [v for v in hints if v.kind is FindingKind.STRICT_RP_FILTER]


def _all_connected(attempts: Iterable[Attempt]) -> bool:
    return all(a.outcome is ConnectOutcome.CONNECTED for a in attempts)


def _dominant(attempts: Iterable[Attempt]) -> ConnectOutcome:
    """The most frequent failure outcome (TIMEOUT when nothing was attempted)."""
    failures = Counter(a.outcome for a in attempts if a.outcome is not ConnectOutcome.CONNECTED)
    return failures.most_common(1)[0][0] if failures else ConnectOutcome.TIMEOUT


def _outcomes(attempts: Iterable[Attempt]) -> str:
    return ", ".join(
        f"{a.outcome.value}" + ("" if a.ms is None else f" {a.ms} ms") for a in attempts
    )


VIP_HANDSHAKE = Check(
    id="vip-handshake",
    title="A TCP handshake through every Service VIP completes from every vantage point",
    why=(
        "The end-to-end proof a Service works: the founding incidents showed as connections to a "
        "VIP failing sometimes (a stale real server takes its round-robin share) or always from "
        "outside (strict rp_filter on the backend's node drops SYNs from the tunnel, while a probe "
        "on the director can pass); the probe tries enough times to reach every real server."
    ),
    fix=(
        "Follow the likely cause named in the failure: delete the stale real server and restart "
        "kube-proxy, make rp_filter loose on the backend's node, or fix the backend; the evidence "
        "lists every attempt and each real server probed directly."
    ),
    severity=Severity.CRITICAL,
    scope=TCP_SERVICE_PORTS,
    # Besides the probes, the hints it joins: stale real servers, strict rp_filter, SYN_RECV.
    inputs=tuple(
        dict.fromkeys(
            (
                PROBE_PLAN_INPUT,
                PROBE_VIP_OUTPUT,
                PROBE_REAL_SERVER_OUTPUT,
                *REAL_SERVERS_MATCH_ENDPOINTS.inputs,
                *CHAINS_REACH_ENDPOINTS.inputs,
                *RP_FILTER_NOT_STRICT.inputs,
                CONNECTIONS_AFTER_PROBES,
            )
        )
    ),
    run=check_vip_handshake,
    sysctls=RP_FILTER_NOT_STRICT.sysctls,
)
