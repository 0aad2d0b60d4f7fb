"""IPVS is there when kube-proxy is configured for it (older kube-proxy silently fell back)."""

from __future__ import annotations

import shlex

from vipcheck.checks.base import (
    Check,
    FindingKind,
    NodeSubject,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import IPVS_MODE, restart_kube_proxy_text
from vipcheck.checks.scopes import NODES
from vipcheck.facts import IPVS_TABLE, KUBE_PROXY, Facts, MissingInput
from vipcheck.settings import Settings


def check_ipvs_present(subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """With mode ipvs the node has an IPVS table; a file merely not gathered skips, not fails."""
    node, cluster = facts.nodes[subject.node], facts.cluster
    config = cluster.kube_proxy
    try:
        node.ipvs  # noqa: B018 - reading the fact is the check
    except MissingInput as missing:
        if missing.known_reason is None:
            raise
        schedulers = ("rr", "wrr", "sh", config.scheduler)
        modules = dict.fromkeys(("ip_vs", *(f"ip_vs_{name}" for name in schedulers)))
        return [
            Violation(
                kind=FindingKind.IPVS_ABSENT,
                subject="IPVS",
                node=node.name,
                observed="kube-proxy mode is ipvs but the node has no IPVS (ip_vs not loaded?); "
                f"kube-proxy may have fallen back to iptables (#70304): {missing.known_reason}",
                expected="an IPVS table in /proc/net/ip_vs",
                fix=f"on {node.name}: {shlex.join(('modprobe', '-a', *modules, 'nf_conntrack'))}, "
                "list them in "
                f"/etc/modules-load.d/ipvs.conf, then restart kube-proxy there: "
                f"{restart_kube_proxy_text(node.name)}",
                evidence=(str(missing),),
            )
        ]
    return []


IPVS_PRESENT = Check(
    id="ipvs-present",
    title="Nodes have IPVS when kube-proxy is configured for ipvs mode",
    why=(
        "Older kube-proxy silently fell back to iptables when the IPVS modules were missing "
        "(kubernetes/kubernetes#70304, coreos/bugs#2518), so every IPVS expectation is then void."
    ),
    fix="`modprobe -a ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack`, persist them in "
    "/etc/modules-load.d/ipvs.conf, and restart kube-proxy.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(KUBE_PROXY, IPVS_TABLE),
    run=check_ipvs_present,
    modes=IPVS_MODE,
)
