"""Kernel settings kube-proxy's IPVS datapath depends on, read from `sysctl -a`."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from vipcheck.checks.base import (
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
from vipcheck.facts import KERNEL_RELEASE, KUBE_PROXY, SYSCTLS, Facts
from vipcheck.model.node import Sysctls
from vipcheck.parse import ParseError
from vipcheck.settings import Settings

TW_RECYCLE = "net.ipv4.tcp_tw_recycle"
TIMESTAMPS = "net.ipv4.tcp_timestamps"
CONN_REUSE_MODE = "net.ipv4.vs.conn_reuse_mode"
CONNTRACK_COUNT = "net.netfilter.nf_conntrack_count"
CONNTRACK_MAX = "net.netfilter.nf_conntrack_max"
IP_FORWARD = "net.ipv4.ip_forward"
EXPIRE_NODEST = "net.ipv4.vs.expire_nodest_conn"
# The IPVS knobs, declared whole: their checks judge one each, and the others beside them
# (vs/conntrack, expire_quiescent_template) are what a person reading a node's snapshot asks next.
IPVS_KNOBS = "net.ipv4.vs.*"
# kube-proxy sets conn_reuse_mode=0 from 4.1; 5.9 fixed the 1 s delay, so it leaves the default 1.
CONN_REUSE_MODE_SINCE = (4, 1)
CONN_REUSE_MODE_FIXED = (5, 9)
_RELEASE = re.compile(r"(\d+)\.(\d+)")


def require_int(sysctls: Sysctls, key: str, why: str = "") -> int:
    """The key's value; a node without the key SKIPS the check (NotApplicable), naming the file.

    why is the reason's tail as written (` (module not loaded?)`): an absent key says nothing
    wrong by itself, where comparing None with a wanted value would FAIL the node.
    """
    value = sysctls.int_value(key)
    if value is None:
        raise NotApplicable(f"{key} not in {sysctls.source}{why}")
    return value


@dataclass(frozen=True, slots=True)
class SysctlEquals:
    """A check that one sysctl has one value; a new such invariant is one catalogue entry."""

    key: str
    value: int

    def __call__(self, subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
        """A violation when the key has another value; skipped when the kernel lacks the key."""
        node = facts.nodes[subject.node]
        why = " (module not loaded, or an older kernel?)"
        observed = require_int(node.sysctls, self.key, why)
        if observed == self.value:
            return []
        command = ("sysctl", "-w", f"{self.key}={self.value}")
        return [
            Violation(
                kind=FindingKind.WRONG_SYSCTL_VALUE,
                subject=self.key,
                node=node.name,
                observed=f"{self.key} = {observed}",
                expected=f"{self.key} = {self.value}",
                fix=f"on {node.name}: {shlex.join(command)}, persist it in /etc/sysctl.d/, "
                f"then restart kube-proxy there: {restart_kube_proxy_text(node.name)}",
                evidence=(f"{self.key} = {observed}",),
                commands=(command,),
                cluster_commands=(restart_kube_proxy(node.name),),
            )
        ]


def check_tcp_tw_recycle_off(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """tcp_tw_recycle is gone (kernel >= 4.12) or 0."""
    node = facts.nodes[subject.node]
    value = node.sysctls.int_value(TW_RECYCLE)
    if not value:
        return []
    timestamps = node.sysctls.get(TIMESTAMPS)
    command = ("sysctl", "-w", f"{TW_RECYCLE}=0")
    return [
        Violation(
            kind=FindingKind.WRONG_SYSCTL_VALUE,
            subject=TW_RECYCLE,
            node=node.name,
            observed=f"{TW_RECYCLE} = {value} (net.ipv4.tcp_timestamps = {timestamps}): SYNs from "
            "clients behind NAT are dropped",
            expected=f"{TW_RECYCLE} = 0, or absent (removed in Linux 4.12)",
            fix=f"on {node.name}: {shlex.join(command)}, and delete it from /etc/sysctl.conf "
            f"and /etc/sysctl.d/*.conf (grep -r tcp_tw_recycle /etc/sysctl.conf /etc/sysctl.d)",
            evidence=(f"{TW_RECYCLE} = {value}",),
            commands=(command,),
        )
    ]


def check_conn_reuse_mode(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """conn_reuse_mode is 0 on kernels 4.1 to 5.8 (kube-proxy's choice) and 1 from 5.9."""
    node = facts.nodes[subject.node]
    release = node.kernel_release
    version = kernel_version(release, f"nodes/{node.name}/uname.txt")
    if version < CONN_REUSE_MODE_SINCE:
        raise NotApplicable(f"kernel {release} is older than 4.1: kube-proxy leaves it alone")
    value = require_int(node.sysctls, CONN_REUSE_MODE, ": ip_vs not loaded?")
    fixed = version >= CONN_REUSE_MODE_FIXED
    wanted = 1 if fixed else 0
    if value == wanted:
        return []
    kernel = f"kernel {'.'.join(map(str, version))}"
    if fixed:
        consequence = "with 0, clients reusing source ports stick to removed real servers (#81775)"
        fix = (
            f"on {node.name}: sysctl -w {CONN_REUSE_MODE}=1, and remove what sets 0 "
            "(an old kube-proxy, /etc/sysctl.d)"
        )
    else:
        consequence = "before 5.9, 1 makes reused source ports wait ~1 s for a retransmit (#70747)"
        fix = (
            f"upgrade {node.name}'s kernel to 5.9 or later; meanwhile sysctl -w "
            f"{CONN_REUSE_MODE}=0 there, as kube-proxy sets it at start"
        )
    return [
        Violation(
            kind=FindingKind.WRONG_SYSCTL_VALUE,
            subject=CONN_REUSE_MODE,
            node=node.name,
            observed=f"{CONN_REUSE_MODE} = {value} on {kernel}: {consequence}",
            expected=f"{CONN_REUSE_MODE} = {wanted} on {kernel}",
            fix=fix,
            evidence=(f"{CONN_REUSE_MODE} = {value}", release),
        )
    ]


def kernel_version(release: str, source: str) -> tuple[int, int]:
    """(major, minor) from `uname -r`, or from `uname -a` (the release is its third word)."""
    words = release.split()
    word = words[2] if len(words) > 2 and words[0] == "Linux" else (words or [""])[0]
    match = _RELEASE.match(word)
    if match is None:
        raise ParseError(source, 1, f"expected a kernel release like 6.1.0, got {release!r}")
    return int(match[1]), int(match[2])


def check_conntrack_headroom(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """The conntrack table is below the configured share of nf_conntrack_max."""
    node = facts.nodes[subject.node]
    count = node.sysctls.int_value(CONNTRACK_COUNT)
    maximum = node.sysctls.int_value(CONNTRACK_MAX)
    if count is None or maximum is None:
        raise NotApplicable(f"nf_conntrack not loaded on {node.name}: no {CONNTRACK_COUNT}")
    limit = settings.conntrack_usage_max_percent
    if maximum > 0 and count * 100 <= limit * maximum:
        return []
    usage = f"{count * 100 / maximum:.0f}%" if maximum > 0 else "a table of size 0"
    return [
        Violation(
            kind=FindingKind.CONNTRACK_NEARLY_FULL,
            subject="nf_conntrack",
            node=node.name,
            observed=f"{count} of {maximum} entries in use ({usage})",
            expected=f"at most {limit}% of {CONNTRACK_MAX}",
            fix=f"raise conntrack.maxPerCore / conntrack.min in the kube-proxy ConfigMap and "
            f"restart kube-proxy on {node.name}: {restart_kube_proxy_text(node.name)}; stop-gap on "
            f"{node.name}: sysctl -w {CONNTRACK_MAX}={max(maximum * 2, count * 2)}",
            evidence=(f"{CONNTRACK_COUNT} = {count}", f"{CONNTRACK_MAX} = {maximum}"),
        )
    ]


TCP_TW_RECYCLE_OFF = Check(
    id="tcp-tw-recycle-off",
    title="tcp_tw_recycle is off",
    why=(
        "tw_recycle drops SYNs from clients behind NAT, and every masqueraded Kubernetes client is "
        "behind NAT, because per-peer timestamps are not monotonic; Linux 4.12 removed it "
        "(commit 4396e46187ca)."
    ),
    fix="`sysctl -w net.ipv4.tcp_tw_recycle=0` and remove it from /etc/sysctl.conf and "
    "/etc/sysctl.d.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(SYSCTLS,),
    run=check_tcp_tw_recycle_off,
    sysctls=(TW_RECYCLE, TIMESTAMPS),
)

CONN_REUSE_MODE_CHECK = Check(
    id="ipvs-conn-reuse-mode",
    title="net.ipv4.vs.conn_reuse_mode suits the kernel",
    why=(
        "Before 5.9, conn_reuse_mode=1 with vs/conntrack=1 delays reused source ports by ~1 s "
        "(kubernetes/kubernetes#70747, #90854), so kube-proxy sets 0; 0 sends reused ports to "
        "removed real servers (#81775), and 5.9 fixed both, so expect 1 there (#93297, "
        "ipvs-sysctl.rst)."
    ),
    fix="On kernel >= 5.9 `sysctl -w net.ipv4.vs.conn_reuse_mode=1`; on older kernels keep 0, "
    "and upgrade the kernel.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, SYSCTLS, KERNEL_RELEASE),
    run=check_conn_reuse_mode,
    sysctls=(IPVS_KNOBS,),
    modes=IPVS_MODE,
)

EXPIRE_NODEST_CONN = Check(
    id="ipvs-expire-nodest-conn",
    title="net.ipv4.vs.expire_nodest_conn is 1",
    why=(
        "With 0, packets of a connection whose real server was deleted are silently dropped until "
        "the entry times out (15 min when ESTABLISHED); 1 expires it on the next packet "
        "(kubernetes/kubernetes#71358, PR #71834, ipvs-sysctl.rst)."
    ),
    fix="`sysctl -w net.ipv4.vs.expire_nodest_conn=1`, persist it, and restart kube-proxy.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, SYSCTLS),
    run=SysctlEquals(EXPIRE_NODEST, 1),
    sysctls=(IPVS_KNOBS,),
    modes=IPVS_MODE,
)

IP_FORWARD_ENABLED = Check(
    id="ip-forward-enabled",
    title="net.ipv4.ip_forward is 1",
    why=(
        "IPVS NAT to pods on other nodes forwards packets, so with forwarding off they are "
        "dropped (kernel ip-sysctl.rst, Kubernetes container runtime prerequisites)."
    ),
    fix="`sysctl -w net.ipv4.ip_forward=1`, persist it in /etc/sysctl.d, and restart kube-proxy; "
    "writing it resets per-interface settings such as rp_filter, so recheck those after.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(SYSCTLS,),
    run=SysctlEquals(IP_FORWARD, 1),
    sysctls=(IP_FORWARD,),
)

CONNTRACK_HEADROOM = Check(
    id="conntrack-headroom",
    title="The conntrack table has headroom",
    why=(
        "Every connection kube-proxy NATs takes a conntrack slot (nftables and iptables DNAT, "
        "IPVS with vs/conntrack=1), and a full table drops new connections "
        "('nf_conntrack: table full', kubernetes/kubernetes#71261)."
    ),
    fix="Raise conntrack.maxPerCore / conntrack.min in the kube-proxy ConfigMap and restart "
    "kube-proxy; check the conntrack timeouts.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(SYSCTLS,),
    run=check_conntrack_headroom,
    sysctls=(CONNTRACK_COUNT, CONNTRACK_MAX),
)
