"""Real servers against endpoints: the first founding incident (a stale :80 beside :6379)."""

from __future__ import annotations

from vipcheck.checks.base import Check, Scope, Severity, Violation
from vipcheck.checks.kube_proxy import ipvsadm_service_option, require_ipvs_mode, restart_kube_proxy
from vipcheck.checks.subjects import expected_for_port
from vipcheck.expected import ExpectedVirtualService
from vipcheck.facts import Facts
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import HostPort, Protocol, RealServer, VirtualService
from vipcheck.settings import Settings


def check_real_servers_match_endpoints(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """One violation per node whose real servers at weight > 0 differ from the usable endpoints."""
    require_ipvs_mode(facts.cluster)
    cluster = facts.cluster.cluster
    violations = []
    for name, node in facts.nodes.items():
        findings: list[str] = []
        commands: list[str] = []
        evidence: list[str] = []
        expected_here = expected_for_port(cluster, node, subject)
        for expected in expected_here:
            observed = node.ipvs.get(expected.key)
            if observed is None:
                continue  # ipvs-virtual-servers-complete reports a missing VS
            vs_findings, vs_commands = _compare(expected, observed)
            if vs_findings:
                findings.append(f"{observed.name}: {'; '.join(vs_findings)}")
                commands.extend(vs_commands)
                evidence.extend(_raw_lines(observed))
        if findings:
            violations.append(
                Violation(
                    subject=str(subject),
                    node=name,
                    observed=" | ".join(findings),
                    expected=_expected_text(expected_here),
                    fix=f"on {name}: {'; '.join(commands)}; then restart kube-proxy there: "
                    f"{restart_kube_proxy(name)}",
                    evidence=tuple(evidence),
                )
            )
    return violations


def _compare(
    expected: ExpectedVirtualService, observed: VirtualService
) -> tuple[list[str], list[str]]:
    """What is wrong with one VS's real servers, and the ipvsadm commands that repair it."""
    findings: list[str] = []
    commands: list[str] = []
    service = f"{ipvsadm_service_option(expected.protocol)} {_address(expected)}"
    present = {HostPort(*rs.key) for rs in observed.real_servers}
    for rs in observed.real_servers:
        endpoint = HostPort(*rs.key)
        if endpoint in expected.real_servers:
            if rs.weight == 0:
                findings.append(
                    f"{rs.name} has weight 0 but its endpoint is ready "
                    "(graceful-termination state lost by a kube-proxy restart, #92019)"
                )
                commands.append(f"ipvsadm -e {service} -r {rs.name} -m -w 1")
        elif not _gracefully_terminating(rs, expected.protocol):
            findings.append(_stale_text(rs, expected))
            commands.append(f"ipvsadm -d {service} -r {rs.name}")
    for endpoint in sorted(expected.real_servers - present, key=str):
        findings.append(f"missing: {endpoint} is a ready endpoint but no real server")
        commands.append(f"ipvsadm -a {service} -r {endpoint} -m -w 1")
    return findings, commands


def _gracefully_terminating(rs: RealServer, protocol: Protocol) -> bool:
    """kube-proxy keeps a TCP real server at weight 0 while its connections drain (not UDP/SCTP)."""
    return rs.weight == 0 and protocol is Protocol.TCP


def _stale_text(rs: RealServer, expected: ExpectedVirtualService) -> str:
    """Name the stale server, and the right port when the same pod is an endpoint elsewhere."""
    ports = sorted(e.port for e in expected.real_servers if e.address == rs.address)
    weight = f" (weight {rs.weight})" if rs.weight == 0 else ""
    text = f"stale: {rs.name}{weight} is not an endpoint"
    if ports:
        text += f" (the EndpointSlice port is {', '.join(map(str, ports))})"
    if rs.weight == 0:
        text += f"; kube-proxy deletes {expected.protocol.value} real servers at once (#76664)"
    return text


def _expected_text(expected: list[ExpectedVirtualService]) -> str:
    """Each VS with the real servers it should have at weight > 0."""
    return " | ".join(
        f"{vs.protocol.value} {_address(vs)}: weight > 0 on exactly "
        + (", ".join(sorted(map(str, vs.real_servers))) or "none (no usable endpoint)")
        for vs in expected
    )


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
    scope=Scope.SERVICE_PORT,
    inputs=(
        "services.json",
        "endpointslices.json",
        "nodes.json",
        "kube-proxy.json",
        "ipvsadm-Ln.txt",
        "proc-ip_vs.txt",
        "ip-addr.json",
    ),
    run=check_real_servers_match_endpoints,
)
