"""conntrack-timeouts: each conntrack sysctl as kube-proxy's config and release set it, replayed on
the recorded lab snapshots (their sysctl -a, their kube-proxy 1.30) and edits of them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from vipcheck.cases import Case
from vipcheck.checks import check_by_id
from vipcheck.checks.base import NodeSubject, NotApplicable, Violation
from vipcheck.checks.conntrack import (
    CONNTRACK_BUCKETS,
    CONNTRACK_MAX,
    TCP_BE_LIBERAL,
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    UDP_STREAM_TIMEOUT,
    UDP_TIMEOUT,
    Bound,
    kube_proxy_conntrack,
)
from vipcheck.facts import Facts
from vipcheck.model.cluster import KubeProxyConfig, KubeRelease
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import Snapshot, load_snapshot

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded"
SEED = RECORDED / "seed-incidents"
# node-2 with busybox's sysctl; every node also holds proc-sys.txt as gathered then.
OLD_NODE = RECORDED / "seed-incidents-old-node"
CHECK = "conntrack-timeouts"
NODES = ("node-1", "node-2", "node-3")
RESTART_NODE_2 = (
    *("kubectl", "-n", "kube-system", "delete", "pod", "-l", "k8s-app=kube-proxy"),
    *("--field-selector", "spec.nodeName=node-2"),
)


def judge(snapshot: Snapshot, node: str = "node-2") -> list[Violation]:
    return Case(check_by_id(CHECK), NodeSubject(node)).run(Facts.from_snapshot(snapshot), DEFAULTS)


def with_config(snapshot: Snapshot, old: str, new: str) -> Snapshot:
    """config.conf inside the recorded kube-proxy ConfigMap, edited as text."""
    config_map = json.loads(snapshot.cluster["kube-proxy.json"])
    conf = config_map["data"]["config.conf"]
    assert old in conf, old
    config_map["data"]["config.conf"] = conf.replace(old, new)
    return replace(
        snapshot, cluster={**snapshot.cluster, "kube-proxy.json": json.dumps(config_map)}
    )


def with_sysctl(snapshot: Snapshot, node: str, key: str, value: int | None) -> Snapshot:
    """The node's sysctl -a with the key's line set, or removed (None); the line must be there."""
    files = snapshot.nodes[node].files
    text, count = re.subn(
        rf"^{re.escape(key)} = .*\n", "" if value is None else f"{key} = {value}\n",
        files["sysctl.txt"], flags=re.MULTILINE,
    )  # fmt: skip
    assert count == 1, key
    nodes = {
        **snapshot.nodes,
        node: replace(snapshot.nodes[node], files={**files, "sysctl.txt": text}),
    }
    return replace(snapshot, nodes=nodes)


def on_every_node(snapshot: Snapshot, values: dict[str, int]) -> Snapshot:
    for node in NODES:
        for key, value in values.items():
            snapshot = with_sysctl(snapshot, node, key, value)
    return snapshot


def at_release(snapshot: Snapshot, version: str) -> Snapshot:
    """Every Node's status.nodeInfo.kubeProxyVersion ("" is unset: the release is unknown)."""
    recorded = '"kubeProxyVersion": "v1.30.4"'
    nodes = snapshot.cluster["nodes.json"]
    assert nodes.count(recorded) == len(NODES)
    nodes = nodes.replace(recorded, f'"kubeProxyVersion": "{version}"')
    return replace(snapshot, cluster={**snapshot.cluster, "nodes.json": nodes})


# Every conntrack setting kube-proxy 1.29+ writes, and the node values that match it.
EVERY_SETTING = "  tcpBeLiberal: true\n  udpTimeout: 1m\n  udpStreamTimeout: 3m0s\n"
KUBE_PROXYS = {
    CONNTRACK_MAX: 131072,
    CONNTRACK_BUCKETS: 32768,
    TCP_ESTABLISHED: 86400,
    TCP_CLOSE_WAIT: 3600,
    TCP_BE_LIBERAL: 1,
    UDP_TIMEOUT: 60,
    UDP_STREAM_TIMEOUT: 180,
}


def faithful() -> Snapshot:
    """The recorded seed with every conntrack setting configured and each node as kube-proxy
    1.30 leaves it (one CPU's worth of nf_conntrack_max)."""
    snapshot = with_config(load_snapshot(SEED), "conntrack:\n", "conntrack:\n" + EVERY_SETTING)
    return on_every_node(snapshot, KUBE_PROXYS)


# --- the recorded snapshots ---------------------------------------------------------------------


def test_recorded_lab_nodes_keep_the_kernels_values_where_kube_proxy_writes_its_defaults() -> None:
    found = judge(load_snapshot(SEED))
    assert [(v.observed, v.expected) for v in found] == [
        (
            "net.netfilter.nf_conntrack_max = 8192",
            "net.netfilter.nf_conntrack_max >= 131072, as kube-proxy 1.30 sets it from "
            "conntrack.maxPerCore 32768 x CPUs, at least conntrack.min 131072",
        ),
        (
            "net.netfilter.nf_conntrack_buckets = 8192",
            "net.netfilter.nf_conntrack_buckets >= 32768, as kube-proxy 1.30 sets it from "
            "conntrack.maxPerCore (32768 x CPUs, at least conntrack.min 131072) / 4",
        ),
        (
            "net.netfilter.nf_conntrack_tcp_timeout_established = 432000",
            "net.netfilter.nf_conntrack_tcp_timeout_established = 86400, as kube-proxy 1.30 "
            "sets it from conntrack.tcpEstablishedTimeout 86400s",
        ),
        (
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait = 60",
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait = 3600, as kube-proxy 1.30 "
            "sets it from conntrack.tcpCloseWaitTimeout 3600s",
        ),
    ]
    close_wait = found[3]
    assert (close_wait.subject, close_wait.node) == (TCP_CLOSE_WAIT, "node-2")
    assert close_wait.commands == (("sysctl", "-w", f"{TCP_CLOSE_WAIT}=3600"),)
    assert close_wait.cluster_commands == (RESTART_NODE_2,)
    assert close_wait.evidence == (f"{TCP_CLOSE_WAIT} = 60",)
    assert close_wait.fix.startswith(f"on node-2: sysctl -w {TCP_CLOSE_WAIT}=3600, or restart")
    assert "set `conntrack.tcpCloseWaitTimeout: 60s` in the kube-proxy ConfigMap" in close_wait.fix
    # Only a floor is known for nf_conntrack_max (CPUs not gathered): the fix says so.
    assert "(the one-CPU floor; kube-proxy sets it per CPU)" in found[0].fix
    assert "`conntrack.maxPerCore: 0` (kube-proxy then leaves it alone)" in found[0].fix


def test_busybox_sysctl_on_the_old_node_is_judged_alike() -> None:
    old, modern = judge(load_snapshot(OLD_NODE)), judge(load_snapshot(SEED))
    assert [v.subject for v in old] == [v.subject for v in modern]


def test_a_node_read_through_proc_sys_lacking_a_key_skips_naming_it() -> None:
    # The old recording's proc-sys.txt predates this check's keys: absent keys are not judged.
    snapshot = load_snapshot(OLD_NODE)
    node = snapshot.nodes["node-2"]
    files = {name: text for name, text in node.files.items() if name != "sysctl.txt"}
    snapshot = replace(snapshot, nodes={**snapshot.nodes, "node-2": replace(node, files=files)})
    with pytest.raises(NotApplicable) as skipped:
        judge(snapshot)
    assert str(skipped.value) == (
        f"{CONNTRACK_BUCKETS} not in nodes/node-2/proc-sys.txt (nf_conntrack not loaded?)"
    )


# --- each key: a faithful node and its broken twin ----------------------------------------------


def test_faithful_nodes_pass_and_more_than_the_floor_is_faithful_too() -> None:
    snapshot = faithful()
    assert [judge(snapshot, node) for node in NODES] == [[], [], []]
    roomier = on_every_node(snapshot, {CONNTRACK_MAX: 262144, CONNTRACK_BUCKETS: 65536})
    assert judge(roomier) == []


@pytest.mark.parametrize(
    ("key", "broken", "bound", "field"),
    [
        (CONNTRACK_MAX, 131071, ">=", "conntrack.maxPerCore"),
        (CONNTRACK_BUCKETS, 32767, ">=", "conntrack.maxPerCore"),
        (TCP_ESTABLISHED, 86401, "=", "conntrack.tcpEstablishedTimeout"),
        (TCP_CLOSE_WAIT, 60, "=", "conntrack.tcpCloseWaitTimeout"),
        (TCP_BE_LIBERAL, 0, "=", "conntrack.tcpBeLiberal"),
        (UDP_TIMEOUT, 30, "=", "conntrack.udpTimeout"),
        (UDP_STREAM_TIMEOUT, 120, "=", "conntrack.udpStreamTimeout"),
    ],
)
def test_broken_twin_fails_naming_key_value_expected_and_field(
    key: str, broken: int, bound: str, field: str
) -> None:
    snapshot = with_sysctl(faithful(), "node-2", key, broken)
    [violation] = judge(snapshot)
    want = KUBE_PROXYS[key]
    assert (violation.subject, violation.node) == (key, "node-2")
    assert violation.observed == f"{key} = {broken}"
    assert violation.expected.startswith(
        f"{key} {bound} {want}, as kube-proxy 1.30 sets it from {field} "
    )
    assert violation.commands == (("sysctl", "-w", f"{key}={want}"),)
    assert judge(snapshot, "node-1") == []


# --- what kube-proxy writes, by config and release ----------------------------------------------


def test_before_1_29_kube_proxy_only_raised_and_knew_no_udp_timers() -> None:
    # #103174 made it raise-only; #120448 (1.29) reverted that; #120354 (1.29) added the rest.
    higher = with_sysctl(faithful(), "node-2", TCP_ESTABLISHED, 432000)
    udp_unset = with_sysctl(higher, "node-2", UDP_TIMEOUT, 30)
    assert judge(at_release(udp_unset, "v1.28.15")) == []
    assert [v.subject for v in judge(at_release(udp_unset, "v1.29.0"))] == [
        TCP_ESTABLISHED,
        UDP_TIMEOUT,
    ]
    lower = at_release(with_sysctl(faithful(), "node-2", TCP_CLOSE_WAIT, 60), "v1.28.15")
    [violation] = judge(lower)
    assert violation.expected.startswith(f"{TCP_CLOSE_WAIT} >= 3600, as kube-proxy 1.28 sets")


def test_from_1_36_nf_conntrack_max_is_capped_at_a_million() -> None:
    # #137002 (1.36): maxPerCore x CPUs is capped at 1,048,576, even above conntrack.min.
    snapshot = with_config(faithful(), "maxPerCore: 32768", "maxPerCore: 2000000")
    snapshot = on_every_node(snapshot, {CONNTRACK_MAX: 1048576, CONNTRACK_BUCKETS: 262144})
    assert judge(at_release(snapshot, "v1.36.0")) == []
    found = judge(at_release(snapshot, "v1.35.3"))
    assert [(v.subject, v.expected.split(",")[0]) for v in found] == [
        (CONNTRACK_MAX, f"{CONNTRACK_MAX} >= 2000000"),
        (CONNTRACK_BUCKETS, f"{CONNTRACK_BUCKETS} >= 500000"),
    ]


def test_an_unknown_release_is_judged_by_the_newest_rules_and_says_so() -> None:
    snapshot = at_release(with_sysctl(faithful(), "node-2", TCP_ESTABLISHED, 432000), "")
    [violation] = judge(snapshot)
    assert violation.expected == (
        f"{TCP_ESTABLISHED} = 86400, as kube-proxy (version unknown: the newest rules are "
        "assumed) sets it from conntrack.tcpEstablishedTimeout 86400s"
    )


def test_zero_and_false_leave_a_sysctl_alone_so_it_is_not_judged() -> None:
    snapshot = with_config(faithful(), "maxPerCore: 32768", "maxPerCore: 0")
    snapshot = with_config(snapshot, "tcpBeLiberal: true", "tcpBeLiberal: false")
    snapshot = with_config(snapshot, "tcpCloseWaitTimeout: null", "tcpCloseWaitTimeout: 0s")
    snapshot = on_every_node(
        snapshot, {CONNTRACK_MAX: 8, CONNTRACK_BUCKETS: 8, TCP_CLOSE_WAIT: 1, TCP_BE_LIBERAL: 0}
    )
    assert judge(snapshot) == []


def test_v1alpha2_names_the_linux_conntrack_fields() -> None:
    config = KubeProxyConfig(conntrack_section="linux.conntrack", conntrack_max_per_core=0)
    [established, _close_wait] = kube_proxy_conntrack(config, KubeRelease(1, 34))
    assert (established.field, established.says) == (
        "linux.conntrack.tcpEstablishedTimeout",
        "86400s",
    )
    assert established.bound is Bound.EXACTLY


# --- where it applies ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nftables", "ipvs", "iptables"])
def test_every_linux_mode_is_judged(mode: str) -> None:
    snapshot = with_config(
        with_sysctl(faithful(), "node-2", TCP_CLOSE_WAIT, 60), "mode: ipvs", f"mode: {mode}"
    )
    assert [v.subject for v in judge(snapshot)] == [TCP_CLOSE_WAIT]


def without_config_map(snapshot: Snapshot) -> Snapshot:
    cluster = {name: text for name, text in snapshot.cluster.items() if name != "kube-proxy.json"}
    return replace(snapshot, cluster=cluster)


def leaving_all_alone(snapshot: Snapshot) -> Snapshot:
    snapshot = with_config(snapshot, "maxPerCore: 32768", "maxPerCore: 0")
    snapshot = with_config(snapshot, "tcpCloseWaitTimeout: null", "tcpCloseWaitTimeout: 0s")
    return with_config(snapshot, "tcpEstablishedTimeout: null", "tcpEstablishedTimeout: 0s")


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        pytest.param(
            without_config_map,
            "no kube-proxy ConfigMap (cluster/kube-proxy.json): no configured conntrack "
            "settings to compare",
            id="no-config-map",
        ),
        pytest.param(
            lambda snapshot: with_config(snapshot, "mode: ipvs", "mode: kernelspace"),
            "kube-proxy mode is kernelspace (Windows): it sets no conntrack sysctl",
            id="windows",
        ),
        pytest.param(
            leaving_all_alone,
            "kube-proxy's config leaves every conntrack sysctl alone (conntrack.maxPerCore 0 "
            "and no timeout set): nothing to compare",
            id="all-left-alone",
        ),
        pytest.param(
            lambda snapshot: with_sysctl(faithful(), "node-2", UDP_TIMEOUT, None),
            f"{UDP_TIMEOUT} not in nodes/node-2/sysctl.txt (nf_conntrack not loaded?)",
            id="key-absent",
        ),
    ],
)
def test_skips_say_why(edit: Callable[[Snapshot], Snapshot], reason: str) -> None:
    with pytest.raises(NotApplicable) as skipped:
        judge(edit(load_snapshot(SEED)))
    assert str(skipped.value) == reason
