"""IPVS timeouts: tcpfin short (second founding incident), and as kube-proxy configured them."""

from __future__ import annotations

import shlex

from vipcheck.checks.base import (
    Argv,
    Check,
    FindingKind,
    NodeSubject,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import (
    IPVS_MODE,
    restart_kube_proxy,
    restart_kube_proxy_text,
)
from vipcheck.checks.scopes import NODES
from vipcheck.facts import (
    IPVS_CONNECTIONS,
    IPVS_TIMEOUTS,
    KUBE_PROXY,
    ClusterFacts,
    Facts,
    MissingInput,
    NodeFacts,
)
from vipcheck.model.node import ConnState, IpvsTimeouts
from vipcheck.settings import Settings

EDIT_CONFIG: Argv = ("kubectl", "-n", "kube-system", "edit", "configmap", "kube-proxy")
# The kernel's FIN_WAIT timer: tcp_timeouts[IP_VS_TCP_S_FIN_WAIT] = 2*60*HZ in ip_vs_proto_tcp.c.
KERNEL_TCPFIN_S = 120
FIN_WAIT = ConnState.FIN_WAIT.value


def check_tcpfin_timeout(subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """The IPVS FIN_WAIT timer is at most the configured maximum."""
    node, cluster = facts.nodes[subject.node], facts.cluster
    limit = settings.tcpfin_timeout_max_s
    try:
        timeouts = node.timeouts
    except MissingInput as unread:
        return _judge_unread_tcpfin(node, cluster, limit, unread)
    if timeouts.tcp_fin <= limit:
        return []
    return [
        _tcpfin_too_long(
            node,
            limit,
            observed=f"tcpfin {timeouts.tcp_fin} s: closing connections hold an IPVS entry in "
            f"FIN_WAIT for {timeouts.tcp_fin} s",
            evidence=(_timeout_line(timeouts),),
            node_command=True,
        )
    ]


def _judge_unread_tcpfin(
    node: NodeFacts, cluster: ClusterFacts, limit: int, unread: MissingInput
) -> list[Violation]:
    """tcpfin where the node's timeouts cannot be read (no ipvsadm; no /proc file holds them).

    First what the node shows: an entry's FIN_WAIT timer starts at tcpfin, so one that expires
    later than the limit proves tcpfin above it. Then what kube-proxy leaves there: it sets
    tcpFinTimeout at start only when non-zero, "a value of 0 indicates the current system timeout
    should be preserved" (pkg/proxy/ipvs/proxier.go), and the kernel's is 120 s
    (ip_vs_proto_tcp.c). A configured value within the limit is not confirmed, so not passed.
    """
    try:
        closing = node.connections_in(FIN_WAIT)
    except MissingInput:
        closing = ()
    longest = max(closing, key=lambda entry: entry.expires_s, default=None)
    if longest is not None and longest.expires_s > limit:
        return [
            _tcpfin_too_long(
                node,
                limit,
                observed=f"tcpfin at least {longest.expires_s} s: an IPVS entry in FIN_WAIT "
                f"expires in {longest.expires_s} s (its timer started at tcpfin)",
                evidence=(longest.raw, f"timeouts not read: {unread}"),
                node_command=False,
            )
        ]
    config = cluster.kube_proxy_or_none
    if config is None:
        raise unread
    configured = config.tcp_fin_timeout
    if 0 < configured <= limit:
        raise NotApplicable(
            f"{unread}; kube-proxy's config sets tcpFinTimeout {configured}s at its start, "
            f"which {node.name} cannot confirm"
        )
    left = (
        f"kube-proxy's ipvs.tcpFinTimeout {configured}s, which it sets at start"
        if configured
        else "kube-proxy's ipvs.tcpFinTimeout 0s leaves the kernel's timer, "
        f"{KERNEL_TCPFIN_S} s unless something else set it"
    )
    return [
        _tcpfin_too_long(
            node,
            limit,
            observed=f"tcpfin {configured or KERNEL_TCPFIN_S} s, not read on {node.name}: {left}",
            evidence=(
                f"ipvs.tcpFinTimeout: {configured}s (cluster/kube-proxy.json)",
                f"timeouts not read: {unread}",
            ),
            node_command=False,
        )
    ]


def _tcpfin_too_long(
    node: NodeFacts, limit: int, *, observed: str, evidence: tuple[str, ...], node_command: bool
) -> Violation:
    """The finding, with the node's stop-gap command only where ipvsadm showed the timeouts."""
    stop_gap = ("ipvsadm", "--set", "0", str(limit), "0")
    return Violation(
        kind=FindingKind.TCPFIN_TIMEOUT_TOO_LONG,
        subject="IPVS tcpfin timeout",
        node=node.name,
        observed=observed,
        expected=f"at most {limit} s",
        fix=f"set `ipvs.tcpFinTimeout: {limit}s` in the kube-proxy ConfigMap "
        f"({shlex.join(EDIT_CONFIG)}) "
        f"and restart kube-proxy on {node.name}: {restart_kube_proxy_text(node.name)}; stop-gap "
        f"on {node.name}: {shlex.join(stop_gap)} (0 leaves tcp and udp unchanged)",
        evidence=evidence,
        commands=(stop_gap,) if node_command else (),
        cluster_commands=(EDIT_CONFIG, restart_kube_proxy(node.name)),
    )


def check_timeouts_match_kube_proxy_config(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """Each timeout kube-proxy's config sets (non-zero) is what the node's IPVS uses."""
    node, cluster = facts.nodes[subject.node], facts.cluster
    config = cluster.kube_proxy_or_none
    if config is None:
        raise NotApplicable(
            "no kube-proxy ConfigMap (cluster/kube-proxy.json): no configured timeouts to compare"
        )
    timeouts = node.timeouts
    configured = (
        ("tcpTimeout", config.tcp_timeout, timeouts.tcp),
        ("tcpFinTimeout", config.tcp_fin_timeout, timeouts.tcp_fin),
        ("udpTimeout", config.udp_timeout, timeouts.udp),
    )
    wrong = [(field, want, have) for field, want, have in configured if want and want != have]
    if not wrong:
        return []
    wanted = {field: want for field, want, _ in wrong}
    set_timeouts = ("ipvsadm", "--set", *(str(wanted.get(field, 0)) for field, _, _ in configured))
    return [
        Violation(
            kind=FindingKind.TIMEOUTS_DIFFER_FROM_CONFIG,
            subject="IPVS timeouts",
            node=node.name,
            observed=", ".join(f"{field} {have} s" for field, _, have in wrong),
            expected="as kube-proxy's config sets them: "
            + ", ".join(f"ipvs.{field} {want}s" for field, want, _ in wrong),
            fix=f"restart kube-proxy on {node.name}, which applies the configured timeouts at "
            f"start: {restart_kube_proxy_text(node.name)}; or on {node.name}: "
            f"{shlex.join(set_timeouts)} "
            "(0 leaves a value unchanged); then find what changed them (keepalived lvs_timeouts, "
            "a cron ipvsadm --set, a module reload)",
            evidence=(_timeout_line(timeouts),),
            commands=(set_timeouts,),
            cluster_commands=(restart_kube_proxy(node.name),),
        )
    ]


def _timeout_line(timeouts: IpvsTimeouts) -> str:
    """The node's timeouts as `ipvsadm -L --timeout` prints them."""
    return f"Timeout (tcp tcpfin udp): {timeouts.tcp} {timeouts.tcp_fin} {timeouts.udp}"


TCPFIN_TIMEOUT = Check(
    id="ipvs-tcpfin-timeout",
    title="IPVS tcpfin (FIN_WAIT) timeout is short",
    why=(
        "IPVS's tcpfin timer is how long a connection entry stays in FIN_WAIT, so a long one piles "
        "up closing entries under churn (second founding incident: 120 s, fixed with `ipvsadm "
        "--set 900 30 300`). It does not touch IPVS TIME_WAIT, a fixed 120 s, and "
        "net.ipv4.tcp_fin_timeout is about orphaned FIN_WAIT_2 sockets, not TIME_WAIT "
        "(kernel ip-sysctl.rst, ip_vs_proto_tcp.c). Without ipvsadm on a node (no /proc file "
        "holds the timeouts), a FIN_WAIT entry expiring later than the limit proves it long, "
        "else kube-proxy's tcpFinTimeout 0s does (it keeps the kernel's 120 s, proxier.go); a "
        "configured value within the limit is unconfirmed there, so the item skips."
    ),
    fix=(
        "Set `ipvs.tcpFinTimeout: 30s` in the kube-proxy ConfigMap and restart kube-proxy; "
        "`ipvsadm --set 0 30 0` is a stop-gap (0 leaves a value unchanged)."
    ),
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, IPVS_TIMEOUTS, IPVS_CONNECTIONS),
    run=check_tcpfin_timeout,
    modes=IPVS_MODE,
)

TIMEOUTS_MATCH_KUBE_PROXY_CONFIG = Check(
    id="ipvs-timeouts-match-kube-proxy-config",
    title="IPVS timeouts are the ones kube-proxy's config sets",
    why=(
        "kube-proxy applies ipvs.tcpTimeout/tcpFinTimeout/udpTimeout once at start (0 keeps the "
        "kernel's, kubernetes/kubernetes#85517), and they live per netns in memory, so a module "
        "reload or another agent changes them unnoticed (invariants #14, #84041)."
    ),
    fix=(
        "Set the timeouts in the kube-proxy ConfigMap, not by hand, and restart kube-proxy on the "
        "node; find what else runs `ipvsadm --set`."
    ),
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, IPVS_TIMEOUTS),
    run=check_timeouts_match_kube_proxy_config,
    modes=IPVS_MODE,
)
