"""Conntrack sysctls as kube-proxy sets them from its config at start, in every proxy mode.

In nftables and iptables mode the second founding incident (closing connections piling up under
churn) is conntrack's: its TCP timers, not IPVS's, hold them. kube-proxy writes its config's
`conntrack` section (`linux.conntrack` in v1alpha2) to the kernel once, in `platformSetup`, before
it creates the proxier of whichever mode (cmd/kube-proxy/app/server_linux.go at
kubernetes/kubernetes@9c98d29, `setupConntrack`; since moved to `setSysctls` in
pkg/proxy/conntrack/sysctls.go, @3520f8d), so IPVS nodes get them too. What it writes, and when:

- `maxPerCore` > 0: nf_conntrack_max = maxPerCore x CPUs, at least `min`, and the hash table
  (nf_conntrack_buckets) raised to a quarter of that when smaller; 0 leaves both alone. From 1.36
  the per-core product is capped at 1,048,576 (#137002). The node's CPU count is not gathered, so
  vipcheck judges the floor kube-proxy reaches with one CPU: below it is wrong in every release
  (and #142035, merged for 1.38, makes kube-proxy leave a larger value in place anyway).
- `tcpEstablishedTimeout`, `tcpCloseWaitTimeout` > 0 (defaults 24h and 1h): the
  nf_conntrack_tcp_timeout_established and _close_wait timers, exactly since 1.29; from #103174
  (2021) until its revert #120448 (1.29) kube-proxy only ever raised a sysctl, so before 1.29 a
  larger value is what it leaves (judged as "at least" for every release before 1.29).
- From 1.29 (#120354): `tcpBeLiberal` true sets nf_conntrack_tcp_be_liberal to 1, `udpTimeout`
  and `udpStreamTimeout` > 0 set nf_conntrack_udp_timeout and _udp_timeout_stream; older
  releases do not know them, so they are not judged there.

Without a known release (no DaemonSet tag, no kubeProxyVersion) the newest rules are assumed, as
for the IPVS expected state (vipcheck.expected).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import StrEnum

from vipcheck.checks.base import (
    Argv,
    Check,
    FindingKind,
    NodeSubject,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import restart_kube_proxy, restart_kube_proxy_text
from vipcheck.checks.scopes import NODES
from vipcheck.checks.sysctls import require_int
from vipcheck.facts import KUBE_PROXY, KUBE_PROXY_DAEMONSET, NODE_OBJECTS, SYSCTLS, Facts
from vipcheck.model.cluster import Cluster, KubeProxyConfig, KubeRelease, ProxyMode
from vipcheck.settings import Settings

CONNTRACK_MAX = "net.netfilter.nf_conntrack_max"
CONNTRACK_BUCKETS = "net.netfilter.nf_conntrack_buckets"
TCP_ESTABLISHED = "net.netfilter.nf_conntrack_tcp_timeout_established"
TCP_CLOSE_WAIT = "net.netfilter.nf_conntrack_tcp_timeout_close_wait"
TCP_BE_LIBERAL = "net.netfilter.nf_conntrack_tcp_be_liberal"
UDP_TIMEOUT = "net.netfilter.nf_conntrack_udp_timeout"
UDP_STREAM_TIMEOUT = "net.netfilter.nf_conntrack_udp_timeout_stream"
CONNTRACK_KEYS = (
    CONNTRACK_MAX,
    CONNTRACK_BUCKETS,
    TCP_ESTABLISHED,
    TCP_CLOSE_WAIT,
    TCP_BE_LIBERAL,
    UDP_TIMEOUT,
    UDP_STREAM_TIMEOUT,
)
# getConntrackMax's cap on maxPerCore x CPUs, from 1.36 (#137002).
CONNTRACK_MAX_CAP = 1048576
CAPPED_SINCE = KubeRelease(1, 36)
# #120448 (1.29) reverted #103174's "only raise a sysctl"; #120354 (1.29) added the UDP timeouts
# and tcpBeLiberal.
EXACT_SINCE = KubeRelease(1, 29)
UDP_AND_LIBERAL_SINCE = KubeRelease(1, 29)
EDIT_CONFIG: Argv = ("kubectl", "-n", "kube-system", "edit", "configmap", "kube-proxy")
_NO_MODULE = " (nf_conntrack not loaded?)"


class Bound(StrEnum):
    """How the node's value must relate to what kube-proxy writes."""

    EXACTLY = "="
    AT_LEAST = ">="


@dataclass(frozen=True, slots=True)
class ConntrackSetting:
    """One sysctl kube-proxy sets at start: its value, how close the node must be, and why."""

    key: str
    value: int
    bound: Bound
    # The config field behind it (`conntrack.tcpEstablishedTimeout`), what it says (`86400s`),
    # and the value that makes kube-proxy leave the sysctl alone.
    field: str
    says: str
    leave_alone: str

    def holds(self, observed: int) -> bool:
        """Whether the node's value is one this kube-proxy would have left in place."""
        return observed == self.value if self.bound is Bound.EXACTLY else observed >= self.value

    @property
    def expected(self) -> str:
        """`key = 86400`, or `key >= 131072` where only a floor is known."""
        return f"{self.key} {self.bound.value} {self.value}"

    def keeping(self, observed: int) -> str:
        """The config change that makes kube-proxy keep the node's value."""
        if self.leave_alone == "0s":
            return f"`{self.field}: {observed}s`"
        return f"`{self.field}: {self.leave_alone}` (kube-proxy then leaves it alone)"


def kube_proxy_conntrack(
    config: KubeProxyConfig, release: KubeRelease | None
) -> tuple[ConntrackSetting, ...]:
    """The conntrack sysctls the config makes this kube-proxy release set (None: the newest)."""
    section = config.conntrack_section
    exact = Bound.EXACTLY if _has(release, EXACT_SINCE) else Bound.AT_LEAST
    settings: list[ConntrackSetting] = []
    if config.conntrack_max_per_core > 0:
        floor = max(config.conntrack_max_per_core, config.conntrack_min)
        if _has(release, CAPPED_SINCE):
            floor = min(floor, CONNTRACK_MAX_CAP)
        per_core = f"{section}.maxPerCore"
        says = (
            f"{config.conntrack_max_per_core} x CPUs, at least {section}.min {config.conntrack_min}"
        )
        settings += [
            ConntrackSetting(CONNTRACK_MAX, floor, Bound.AT_LEAST, per_core, says, "0"),
            ConntrackSetting(
                CONNTRACK_BUCKETS, floor // 4, Bound.AT_LEAST, per_core, f"({says}) / 4", "0"
            ),
        ]
    timeouts = [
        (TCP_ESTABLISHED, "tcpEstablishedTimeout", config.conntrack_tcp_established_timeout),
        (TCP_CLOSE_WAIT, "tcpCloseWaitTimeout", config.conntrack_tcp_close_wait_timeout),
    ]
    if _has(release, UDP_AND_LIBERAL_SINCE):
        timeouts += [
            (UDP_TIMEOUT, "udpTimeout", config.conntrack_udp_timeout),
            (UDP_STREAM_TIMEOUT, "udpStreamTimeout", config.conntrack_udp_stream_timeout),
        ]
        if config.conntrack_tcp_be_liberal:
            field = f"{section}.tcpBeLiberal"
            settings.append(
                ConntrackSetting(TCP_BE_LIBERAL, 1, Bound.EXACTLY, field, "true", "false")
            )
    settings += [
        ConntrackSetting(key, seconds, exact, f"{section}.{name}", f"{seconds}s", "0s")
        for key, name, seconds in timeouts
        if seconds > 0
    ]
    return tuple(sorted(settings, key=lambda setting: CONNTRACK_KEYS.index(setting.key)))


def _has(release: KubeRelease | None, since: KubeRelease) -> bool:
    """Whether kube-proxy of this release (None: the newest) has a behaviour added in `since`."""
    return release is None or release >= since


def check_conntrack_sysctls(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """Each conntrack sysctl kube-proxy's config sets is what the node's kernel has."""
    node, cluster = facts.nodes[subject.node], facts.cluster
    config = cluster.kube_proxy_or_none
    if config is None:
        raise NotApplicable(
            "no kube-proxy ConfigMap (cluster/kube-proxy.json): no configured conntrack settings "
            "to compare"
        )
    api = Cluster(nodes=cluster.nodes, kube_proxy_image=cluster.kube_proxy_image)
    release = api.kube_proxy_release(node.name)
    if config.mode is ProxyMode.KERNELSPACE:
        raise NotApplicable("kube-proxy mode is kernelspace (Windows): it sets no conntrack sysctl")
    wanted = kube_proxy_conntrack(config, release)
    if not wanted:
        raise NotApplicable(
            f"kube-proxy's config leaves every conntrack sysctl alone ({config.conntrack_section}"
            ".maxPerCore 0 and no timeout set): nothing to compare"
        )
    observed = {s.key: require_int(node.sysctls, s.key, _NO_MODULE) for s in wanted}
    who = (
        f"kube-proxy {release}"
        if release is not None
        else "kube-proxy (version unknown: the newest rules are assumed)"
    )
    return [
        _differs(node.name, setting, observed[setting.key], who)
        for setting in wanted
        if not setting.holds(observed[setting.key])
    ]


def _differs(node: str, setting: ConntrackSetting, observed: int, who: str) -> Violation:
    """The finding for one key: the node's value, kube-proxy's, the field, and both ways back."""
    command: Argv = ("sysctl", "-w", f"{setting.key}={setting.value}")
    floor = setting.bound is Bound.AT_LEAST
    return Violation(
        kind=FindingKind.WRONG_SYSCTL_VALUE,
        subject=setting.key,
        node=node,
        observed=f"{setting.key} = {observed}",
        expected=f"{setting.expected}, as {who} sets it from {setting.field} {setting.says}",
        fix=f"on {node}: {shlex.join(command)}"
        + (" (the one-CPU floor; kube-proxy sets it per CPU)" if floor else "")
        + ", or restart kube-proxy there, which sets it at start: "
        f"{restart_kube_proxy_text(node)}; then find what changed it (/etc/sysctl.d, an agent, "
        f"a module reload). If {observed} is intended, set {setting.keeping(observed)} in the "
        f"kube-proxy ConfigMap ({shlex.join(EDIT_CONFIG)})",
        evidence=(f"{setting.key} = {observed}",),
        commands=(command,),
        cluster_commands=(restart_kube_proxy(node),),
    )


CONNTRACK_SYSCTLS = Check(
    id="conntrack-timeouts",
    title="Conntrack sysctls are the ones kube-proxy's config sets",
    why=(
        "In nftables and iptables mode closing connections live in conntrack, so its timers are "
        "the second founding incident's (FIN_WAIT/TIME_WAIT pile-up) there. kube-proxy sets "
        "nf_conntrack_max (maxPerCore x CPUs, at least min; capped at 1,048,576 from 1.36) and "
        "the established and CLOSE_WAIT timers (24h and 1h by default) at start in every mode, "
        "and from 1.29 tcp_be_liberal and the UDP timers (cmd/kube-proxy/app/server_linux.go, "
        "pkg/proxy/conntrack/sysctls.go; #120354, #120448, #137002): a node whose values "
        "differ was changed after it, or kube-proxy could not write them. Releases before 1.29 "
        "only raised a value, so there a larger one passes; the CPU count is not gathered, so "
        "nf_conntrack_max and its buckets are judged against the one-CPU floor."
    ),
    fix=(
        "Restart kube-proxy on the node (it writes them at start), or `sysctl -w` the value it "
        "names and find what changed it; if the node's value is intended, set it in the "
        "kube-proxy ConfigMap's conntrack section."
    ),
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, KUBE_PROXY_DAEMONSET, NODE_OBJECTS, SYSCTLS),
    run=check_conntrack_sysctls,
    sysctls=CONNTRACK_KEYS,
)
