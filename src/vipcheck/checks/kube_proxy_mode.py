"""Each node runs the mode kube-proxy's config names: a switch half rolled out is a finding.

Moving a cluster from IPVS to nftables (IPVS is deprecated, KEP-5495) changes the ConfigMap's
`mode` for every node at once, but each node changes only when its kube-proxy restarts: started
in nftables mode, kube-proxy flushes the IPVS virtual servers and deletes kube-ipvs0
(cmd/kube-proxy/app/server_linux.go platformCleanup, pkg/proxy/ipvs/cleanup.go at
kubernetes/kubernetes@531be81208e2). Until then the node serves Services the old way, and every
check of the configured mode would report its whole state missing: this check names the cause
once, per node.
"""

from __future__ import annotations

from vipcheck.checks.base import (
    Check,
    FindingKind,
    NodeSubject,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import restart_kube_proxy, restart_kube_proxy_text
from vipcheck.checks.scopes import NODES
from vipcheck.facts import (
    IP_ADDR,
    IP_LINK,
    IPVS_TABLE,
    KUBE_PROXY,
    NFT_IP,
    NFT_IP6,
    NFT_TABLES,
    Facts,
)
from vipcheck.model.cluster import ProxyMode
from vipcheck.model.modes import ObservedMode
from vipcheck.settings import Settings

# The modes a node's kernel state shows (iptables mode's chains are not read).
OBSERVABLE = (ProxyMode.NFTABLES, ProxyMode.IPVS)
_SHOWN = {ProxyMode.NFTABLES: "nftables", ProxyMode.IPVS: "IPVS"}


def check_kube_proxy_mode(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """The node shows the configured mode and no other; a mode not looked for is never absent."""
    configured = facts.cluster.kube_proxy.mode
    if configured not in OBSERVABLE:
        raise NotApplicable(
            f"kube-proxy mode is {configured}: vipcheck does not read what that mode programs"
        )
    node = facts.nodes[subject.node]
    observed = node.observed_mode
    others = [mode for mode in OBSERVABLE if mode is not configured and mode in observed.seen]
    if not others:
        if configured in observed.seen and not observed.unknown:
            return []
        if configured in observed.seen:
            raise NotApplicable(
                f"{node.name} runs {_seen(observed)}; whether it also runs another mode is "
                f"unknown: {'; '.join(observed.unknown.values())}"
            )
        if observed.unknown:
            raise NotApplicable("; ".join(observed.unknown.values()))
        if configured is ProxyMode.IPVS:
            return []  # no other mode; IPVS missing is ipvs-present's one finding (modprobe)
        runs = (
            "shows no kube-proxy mode: no kube-proxy nftables table, no IPVS virtual server, "
            "no kube-ipvs0"
        )
    elif configured in observed.seen:
        runs = f"runs both {_seen(observed)}"
    else:
        runs = f"runs {_seen(observed)}"
    return [
        Violation(
            kind=FindingKind.WRONG_PROXY_MODE,
            subject="kube-proxy mode",
            node=node.name,
            observed=f"config says {configured}, {node.name} {runs}",
            expected=f"{node.name} runs {_SHOWN[configured]} alone, as kube-proxy's ConfigMap says",
            fix=f"restart kube-proxy on {node.name}, so it programs {configured} mode and clears "
            f"the other: {restart_kube_proxy_text(node.name)}" + _LEFTOVERS_FIX.get(configured, ""),
            evidence=tuple(f"{_SHOWN[mode]}: {shown}" for mode, shown in observed.seen.items()),
            cluster_commands=(restart_kube_proxy(node.name),),
        )
    ]


# Restarting clears IPVS only where kube-proxy's IPVS cleanup runs: it returns where `modprobe
# ip_vs` fails in kube-proxy's container (pkg/proxy/ipvs/cleanup.go, kubernetes PR 131243).
_LEFTOVERS_FIX = {
    ProxyMode.NFTABLES: "; if the IPVS state outlives the restart (its cleanup is skipped where "
    "`modprobe ip_vs` fails in kube-proxy's container, kubernetes PR 131243), delete it by hand: "
    "the ipvs-leftover-* and iptables-leftover-chains checks give each command"
}


def _seen(observed: ObservedMode) -> str:
    """`nftables (table ip kube-proxy) and IPVS (62 virtual servers, kube-ipvs0)`."""
    return " and ".join(
        f"{_SHOWN[mode]} ({observed.seen[mode]})" for mode in OBSERVABLE if mode in observed.seen
    )


KUBE_PROXY_MODE = Check(
    id="kube-proxy-mode",
    title="Each node runs the proxy mode kube-proxy's config names",
    why=(
        "A node switches modes only when its kube-proxy restarts (started in nftables mode it "
        "removes IPVS: cmd/kube-proxy/app/server_linux.go platformCleanup); until then it serves "
        "Services the old way, and both at once means two datapaths answering for one VIP."
    ),
    fix="Restart kube-proxy on the node (delete its pod); it programs the configured mode and, "
    "in nftables mode, flushes IPVS and deletes kube-ipvs0.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(KUBE_PROXY, NFT_TABLES, NFT_IP, NFT_IP6, IPVS_TABLE, IP_ADDR, IP_LINK),
    run=check_kube_proxy_mode,
)
