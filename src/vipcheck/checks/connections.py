"""IPVS connections stuck in SYN_RECV: replies never came back through this node."""

from __future__ import annotations

import shlex
from collections import defaultdict

from vipcheck.checks.base import Check, FindingKind, NodeSubject, Severity, Violation
from vipcheck.checks.kube_proxy import IPVS_MODE
from vipcheck.checks.scopes import NODES
from vipcheck.expected import endpoint_node
from vipcheck.facts import (
    ENDPOINT_SLICES,
    IPVS_CONNECTIONS,
    KUBE_PROXY,
    Facts,
    MissingInput,
)
from vipcheck.model.node import Connection, HostPort, InvalidValue
from vipcheck.settings import Settings

EVIDENCE_ROWS = 5


def check_no_stuck_syn_recv(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per (VIP, destination) with more SYN_RECV entries than tolerated.

    A table with more SYN_RECV rows than vipcheck keeps is judged on its first ones: a pair over
    the limit there is over it in the table ("at least"); none over it is no pass, as the rows
    not read may hold one, so the item errors naming the count.
    """
    node = facts.nodes[subject.node]
    cut = node.syn_recv_cut
    at_least = "at least " if cut else ""
    stuck: defaultdict[tuple[HostPort, HostPort], list[Connection]] = defaultdict(list)
    for connection in node.syn_recv_connections:
        stuck[connection.virtual, connection.destination].append(connection)
    violations = []
    for (virtual, destination), rows in sorted(stuck.items(), key=lambda item: str(item[0])):
        if len(rows) <= settings.syn_recv_max:
            continue
        violations.append(
            Violation(
                kind=FindingKind.STUCK_SYN_RECV,
                subject=f"TCP {virtual} -> {destination}",
                node=node.name,
                observed=f"{at_least}{len(rows)} connection(s) in SYN_RECV: the real server's "
                f"reply never came back through {node.name}",
                expected=f"at most {settings.syn_recv_max} in SYN_RECV",
                fix=f"{_where(facts, destination)} may drop the SYN (strict rp_filter on "
                "its tunnel: sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.tunl0.rp_filter), "
                f"or {destination} does not answer: from {node.name} try "
                f"`{_try_connect(destination)}`; also check that "
                "FORWARD accepts the traffic and the route back is symmetric",
                evidence=(*(row.raw for row in rows[:EVIDENCE_ROWS]), *([cut] if cut else [])),
            )
        )
    if cut and not violations:
        raise InvalidValue(
            f"{cut}, and none of those is over vipcheck_syn_recv_max "
            f"({settings.syn_recv_max}) for one VIP and destination: the rest were not judged"
        )
    return violations


def _try_connect(destination: HostPort) -> str:
    """The nc command that tries a TCP connection to the destination, as a person pastes it."""
    return shlex.join(("nc", "-vz", "-w", "2", str(destination.address), str(destination.port)))


def _where(facts: Facts, destination: HostPort) -> str:
    """The node running the destination pod, per the EndpointSlices, for the fix text."""
    try:
        node = endpoint_node(facts.cluster.endpoint_slices, destination.address)
    except MissingInput:
        node = None
    return f"{node}, which runs {destination.address}," if node else "the destination's node"


NO_STUCK_SYN_RECV = Check(
    id="ipvs-no-stuck-syn-recv",
    title="No IPVS connections stuck in SYN_RECV",
    why=(
        "IPVS NAT moves an entry to ESTABLISHED when it sees the real server's reply "
        "(ip_vs_proto_tcp.c), so SYN_RECV entries mean replies are lost: the third founding "
        "incident's strict rp_filter on tunl0, or a FORWARD DROP (kubernetes/kubernetes#59656, "
        "projectcalico/calico#4851)."
    ),
    fix=(
        "Make rp_filter loose or off on the destination node's tunnel (rp-filter-not-strict), "
        "allow FORWARD, check masquerade rules, and that the backend answers."
    ),
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(KUBE_PROXY, IPVS_CONNECTIONS, ENDPOINT_SLICES),
    run=check_no_stuck_syn_recv,
    modes=IPVS_MODE,
)
