"""Real servers against endpoints: the first founding incident (a stale :80 beside :6379)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from vipcheck.checks.base import Argv, Check, FindingKind, Severity, Violation
from vipcheck.checks.kube_proxy import (
    IPVS_MODE,
    NotShown,
    ipvsadm_service_option,
    judge_port_on_each_node,
    not_in_paste,
    restart_kube_proxy,
    restart_kube_proxy_text,
)
from vipcheck.checks.scopes import SERVICE_PORTS
from vipcheck.expected import ExpectedVirtualService
from vipcheck.facts import (
    ENDPOINT_SLICES,
    IP_ADDR,
    IP_LINK,
    IPVS_TABLE,
    KUBE_PROXY,
    KUBE_PROXY_DAEMONSET,
    NODE_OBJECTS,
    SERVICES,
    Facts,
    NodeFacts,
)
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import HostPort, IpvsTable, L4Protocol, RealServer, VirtualService
from vipcheck.settings import Settings


@dataclass(frozen=True, slots=True)
class _Mismatch:
    """One real server wrong in one VS, and the ipvsadm command that repairs it."""

    kind: FindingKind
    text: str
    command: Argv


def check_real_servers_match_endpoints(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per node, VS and real server at weight > 0 that is not a usable endpoint."""
    return judge_port_on_each_node(facts, subject, "real-servers-judged", _judge)


def _judge(
    name: str,
    node: NodeFacts,
    table: IpvsTable,
    subject: ServicePortKey,
    expected_vss: tuple[ExpectedVirtualService, ...],
) -> list[Violation | NotShown]:
    """One node's verdict on one Service port: its VSs' real servers against the endpoints."""
    violations: list[Violation | NotShown] = []
    for expected in expected_vss:
        observed = table.get(expected.key)
        if observed is None:
            if table.partial:
                vs = f"{expected.protocol.value} {_address(expected)}"
                violations.append(not_in_paste(node, vs))
            continue  # ipvs-virtual-servers-complete reports a missing VS
        mismatches = _compare(expected, observed)
        if not table.real_servers_complete:
            # The paste may have cut real-server lines: judge those shown, claim none missing.
            mismatches = [m for m in mismatches if m.kind is not FindingKind.MISSING_REAL_SERVER]
            violations.append(
                NotShown(f"{observed.name}: real servers may be cut ({table.partial})")
            )
        violations += [
            Violation(
                kind=mismatch.kind,
                subject=str(subject),
                node=name,
                observed=f"{observed.name}: {mismatch.text}",
                expected=_expected_text(expected),
                fix=f"on {name}: {shlex.join(mismatch.command)}; then restart kube-proxy there: "
                f"{restart_kube_proxy_text(name)}",
                evidence=tuple(_raw_lines(observed)),
                commands=(mismatch.command,),
                cluster_commands=(restart_kube_proxy(name),),
            )
            for mismatch in mismatches
        ]
    return violations


def _compare(expected: ExpectedVirtualService, observed: VirtualService) -> list[_Mismatch]:
    """What is wrong with one VS's real servers, each with the command that repairs it."""
    present = observed.real_server_keys
    if present == expected.real_servers and all(rs.weight for rs in observed.real_servers):
        return []  # the common case, decided before any message is formatted
    mismatches: list[_Mismatch] = []
    service = (ipvsadm_service_option(expected.protocol), str(_address(expected)))
    for rs in observed.real_servers:
        endpoint = HostPort(*rs.key)
        if endpoint in expected.real_servers:
            if rs.weight == 0:
                mismatches.append(
                    _Mismatch(
                        FindingKind.READY_REAL_SERVER_AT_WEIGHT_ZERO,
                        f"{rs.name} has weight 0 but its endpoint is ready "
                        "(graceful-termination state lost by a kube-proxy restart, #92019)",
                        ("ipvsadm", "-e", *service, "-r", rs.name, "-m", "-w", "1"),
                    )
                )
        elif not _gracefully_terminating(rs, expected.protocol):
            mismatches.append(
                _Mismatch(
                    FindingKind.STALE_REAL_SERVER,
                    _stale_text(rs, expected),
                    ("ipvsadm", "-d", *service, "-r", rs.name),
                )
            )
    mismatches += [
        _Mismatch(
            FindingKind.MISSING_REAL_SERVER,
            f"missing: {endpoint} is a ready endpoint but no real server",
            ("ipvsadm", "-a", *service, "-r", str(endpoint), "-m", "-w", "1"),
        )
        for endpoint in sorted(expected.real_servers - present, key=str)
    ]
    return mismatches


def _gracefully_terminating(rs: RealServer, protocol: L4Protocol) -> bool:
    """kube-proxy keeps a TCP real server at weight 0 while its connections drain (not UDP/SCTP)."""
    return rs.weight == 0 and protocol is L4Protocol.TCP


def _stale_text(rs: RealServer, expected: ExpectedVirtualService) -> str:
    """Name the stale server, and the right port when the same pod is an endpoint elsewhere."""
    ports = sorted(e.port for e in expected.real_servers if e.address == rs.address)
    weight = f" (weight {rs.weight})" if rs.weight == 0 else ""
    text = f"stale: {rs.name}{weight} is not an endpoint"
    if HostPort(*rs.key) in expected.endpoints:
        text = (
            f"stale: {rs.name}{weight} is an endpoint, but not one kube-proxy uses for this VS "
            "(unready, on another node under a Local policy, or left out by a rule the expected "
            "state names)"
        )
    elif ports:
        text += f" (the EndpointSlice port is {', '.join(map(str, ports))})"
    if rs.weight == 0:
        text += f"; kube-proxy deletes {expected.protocol.value} real servers at once (#76664)"
    return text


def _expected_text(vs: ExpectedVirtualService) -> str:
    """The VS with the real servers it should have at weight > 0, and the rule behind them."""
    servers = ", ".join(sorted(map(str, vs.real_servers))) or (
        "none" if vs.because else "none (no usable endpoint)"
    )
    text = f"{vs.protocol.value} {_address(vs)}: weight > 0 on exactly {servers}"
    return f"{text}, because {vs.why}" if vs.why else text


def _address(vs: ExpectedVirtualService) -> HostPort:
    """The VS's address and port, printed as ipvsadm takes them."""
    return HostPort(vs.address, vs.port)


def _raw_lines(observed: VirtualService) -> list[str]:
    """The VS line and its real-server lines as the node printed them."""
    return [observed.raw, *(rs.raw for rs in observed.real_servers)]


REAL_SERVERS_MATCH_ENDPOINTS = Check(
    id="ipvs-real-servers-match-endpoints",
    title="IPVS real servers with weight > 0 equal the Service's usable endpoints",
    why=(
        "A real server that is not an endpoint gets its share of new connections, so clients hit "
        "a closed port or a dead pod; the first founding incident left pod:80 beside pod:6379 "
        "after a Service port edit (kubernetes/kubernetes#72270, #90188, "
        "cloudnativelabs/kube-router#716). "
        "A weight-0 real server whose endpoint is ready was orphaned by a kube-proxy restart "
        "(#92019, #108319)."
    ),
    fix=(
        "Restart kube-proxy on the node so it resyncs; as a stop-gap delete the stale real server "
        "with `ipvsadm -d -t|-u VIP:PORT -r RIP:RPORT`, and upgrade kube-proxy."
    ),
    severity=Severity.CRITICAL,
    scope=SERVICE_PORTS,
    inputs=(
        SERVICES,
        ENDPOINT_SLICES,
        NODE_OBJECTS,
        KUBE_PROXY,
        KUBE_PROXY_DAEMONSET,
        IPVS_TABLE,
        IP_ADDR,
        IP_LINK,
    ),
    run=check_real_servers_match_endpoints,
    modes=IPVS_MODE,
)
