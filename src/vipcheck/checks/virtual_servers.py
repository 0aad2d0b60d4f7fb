"""Virtual services against Services: none missing, none left over, right persistence."""

from __future__ import annotations

import shlex

from vipcheck.checks.base import Check, FindingKind, NodeSubject, Severity, Violation
from vipcheck.checks.kube_proxy import (
    IPVS_MODE,
    NotShown,
    ipvsadm_service_option,
    judge_port_on_each_node,
    not_in_paste,
    restart_kube_proxy_text,
)
from vipcheck.checks.scopes import NODES, SERVICE_PORTS
from vipcheck.expected import (
    ExpectedVirtualService,
    Rule,
    VirtualServiceExplanations,
    explain_virtual_services,
)
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
from vipcheck.model.cluster import Cluster, ServicePortKey
from vipcheck.model.node import HostPort, IpvsTable, VirtualService
from vipcheck.settings import Settings


def check_virtual_servers_complete(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per node and VS of the port: missing, or wrong persistence or scheduler."""
    return judge_port_on_each_node(facts, subject, "virtual-servers-judged", _judge)


def _judge(
    name: str,
    node: NodeFacts,
    table: IpvsTable,
    subject: ServicePortKey,
    expected_vss: tuple[ExpectedVirtualService, ...],
) -> list[Violation | NotShown]:
    """One node's verdict on one Service port: its VSs present, with the right attributes."""
    violations: list[Violation | NotShown] = []
    for expected in expected_vss:
        observed = table.get(expected.key)
        wrong = [] if observed is None else _attribute_mismatches(expected, observed)
        if observed is not None and not wrong:
            continue  # the common case, decided before any message is formatted
        if observed is None and table.partial:
            violations.append(not_in_paste(node, _name(expected)))
            continue
        restart = (
            f"restart kube-proxy there and read its log for bind or ipset errors: "
            f"{restart_kube_proxy_text(name)}"
        )
        if observed is None:
            violations.append(
                Violation(
                    kind=FindingKind.MISSING_VIRTUAL_SERVICE,
                    subject=str(subject),
                    node=name,
                    observed=f"missing {_name(expected)} ({expected.kind})",
                    expected=_expected_text(expected),
                    fix=f"on {name}: {restart}",
                )
            )
            continue
        violations.append(  # present, with wrong attributes: the only case left
            Violation(
                kind=FindingKind.WRONG_PERSISTENCE_OR_SCHEDULER,
                subject=str(subject),
                node=name,
                observed=f"{observed.name}: {', '.join(wrong)}",
                expected=_expected_text(expected),
                fix=f"on {name}: {_edit_command(expected)}; or {restart}",
                evidence=(observed.raw,),
            )
        )
    return violations


def _attribute_mismatches(expected: ExpectedVirtualService, observed: VirtualService) -> list[str]:
    """Persistence and scheduler differences, worded as observed vs expected."""
    wrong = []
    if observed.persistent_timeout != expected.persistent_timeout:
        wrong.append(
            f"{_persistence(observed.persistent_timeout)} "
            f"(expected {_persistence(expected.persistent_timeout)})"
        )
    if observed.scheduler != expected.scheduler:
        wrong.append(f"scheduler {observed.scheduler} (expected {expected.scheduler})")
    return wrong


def _persistence(timeout: int | None) -> str:
    """How ipvsadm shows persistence: `persistent 10800`, or nothing."""
    return "not persistent" if timeout is None else f"persistent {timeout}"


def _edit_command(expected: ExpectedVirtualService) -> str:
    """ipvsadm -E restoring the scheduler and persistence (no -p clears persistence)."""
    timeout = expected.persistent_timeout
    persistent = () if timeout is None else ("-p", str(timeout))
    option = ipvsadm_service_option(expected.protocol)
    address = str(HostPort(expected.address, expected.port))
    return shlex.join(("ipvsadm", "-E", option, address, "-s", expected.scheduler, *persistent))


def _name(expected: ExpectedVirtualService) -> str:
    """`TCP 10.96.0.20:6379`, as the node's listing would name it."""
    return f"{expected.protocol.value} {HostPort(expected.address, expected.port)}"


def _expected_text(expected: ExpectedVirtualService) -> str:
    """One expected VS with its scheduler and persistence, in ipvsadm's words."""
    text = f"{_name(expected)} {expected.scheduler} {_persistence(expected.persistent_timeout)}"
    # Only the rules that decide where a VS exists; the others are about its real servers.
    why = "; ".join(b.text for b in expected.because if b.rule in _ADDRESS_RULES)
    return f"{text}, because {why}" if why else text


_ADDRESS_RULES = frozenset(
    {Rule.NODE_PORT_FAMILY_UNLISTED, Rule.NODE_PORT_ON_KUBE_IPVS0, Rule.LB_PROXY_MODE_AS_VIP}
)


def virtual_service_explanations(facts: Facts) -> VirtualServiceExplanations:
    """Why each VS may exist, indexed once per snapshot: Services and kube-proxy's excludeCIDRs
    explain a VS; endpoints and Nodes need not be read. The orphan check and the migration
    readiness check (what the IPVS cleanup flushes) judge VSs by the same index."""
    return facts.cluster.derive(
        "virtual-service-explanations",
        lambda: explain_virtual_services(
            Cluster(services=facts.cluster.services, kube_proxy=facts.cluster.kube_proxy_or_none)
        ),
    )


def check_no_orphan_virtual_servers(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per non-fwmark VS no Service, nodePort or excludeCIDRs entry accounts for."""
    node = facts.nodes[subject.node]
    explanations = virtual_service_explanations(facts)
    violations = []
    for service in node.ipvs.services:
        if service.fwmark is not None:
            continue  # fwmark VSs belong to other agents (keepalived, kube-router DSR)
        assert service.protocol is not None
        assert service.address is not None
        assert service.port is not None
        if explanations.explain(service.protocol, service.address, service.port) is not None:
            continue
        option = ipvsadm_service_option(service.protocol)
        address = HostPort(service.address, service.port)
        violations.append(
            Violation(
                kind=FindingKind.ORPHAN_VIRTUAL_SERVICE,
                subject=service.name,
                node=node.name,
                observed=f"{service.name} with {len(service.real_servers)} real server(s) "
                "matches no Service address, nodePort or ipvs.excludeCIDRs entry",
                expected="every non-fwmark VS belongs to a Service or lies in ipvs.excludeCIDRs",
                fix=f"on {node.name}: if no other agent owns it, "
                f"{shlex.join(('ipvsadm', '-D', option, str(address)))}, "
                f"or restart kube-proxy there: {restart_kube_proxy_text(node.name)}; "
                f"if another agent owns it, add {service.address} to ipvs.excludeCIDRs in the "
                "kube-proxy ConfigMap",
                evidence=(service.raw, *(rs.raw for rs in service.real_servers)),
            )
        )
    return violations


VIRTUAL_SERVERS_COMPLETE = Check(
    id="ipvs-virtual-servers-complete",
    title="Every Service address has its IPVS virtual service, with the right persistence and "
    "scheduler",
    why=(
        "Without the VS the VIP accepts connections nobody forwards, and persistence that does not "
        "mirror sessionAffinity breaks or invents stickiness (kubernetes/kubernetes#55854, "
        "#87604, kubernetes/kubeadm#2205; cloudnativelabs/kube-router#882)."
    ),
    fix=(
        "Restart kube-proxy on the node and read its log for bind or ipset errors; correct the "
        "Service spec or the ipvs.scheduler setting if those are wrong."
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
    run=check_virtual_servers_complete,
    modes=IPVS_MODE,
)

NO_ORPHAN_VIRTUAL_SERVERS = Check(
    id="ipvs-no-orphan-virtual-servers",
    title="Every IPVS virtual service belongs to a Service or to ipvs.excludeCIDRs",
    why=(
        "A VS left from a deleted or edited Service keeps answering an address the cluster no "
        "longer serves (kubernetes/kubernetes#80403, #78421, #134147)."
    ),
    fix=(
        "Restart kube-proxy on the node, or `ipvsadm -D -t|-u VIP:PORT`; put the addresses of "
        "co-resident IPVS users (keepalived, kube-vip) in ipvs.excludeCIDRs."
    ),
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, SERVICES, IPVS_TABLE),
    run=check_no_orphan_virtual_servers,
    modes=IPVS_MODE,
)
