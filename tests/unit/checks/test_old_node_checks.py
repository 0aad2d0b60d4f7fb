"""Old nodes (issue 9): text interfaces, /proc/net/ip_vs, busybox sysctl, kernel files alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vipcheck.cases import Outcome, Result, cases_for, run_case
from vipcheck.checks import CATALOGUE
from vipcheck.facts import Facts
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import Snapshot, load_snapshot, save_snapshot

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded"
# Both from the lab, scenario seed-incidents; in the second node-2 has busybox's ip and sysctl
# and no ipvsadm.
MODERN = RECORDED / "seed-incidents"
OLD_NODE = RECORDED / "seed-incidents-old-node"


def results(snapshot: Snapshot) -> dict[tuple[str, str], Result]:
    facts = Facts.from_snapshot(snapshot)
    return {
        (check.id, case.id): run_case(case, facts, DEFAULTS)
        for check in CATALOGUE
        for case in cases_for(check, facts)
    }


def with_outcome(found: dict[tuple[str, str], Result], outcome: Outcome) -> set[tuple[str, str]]:
    return {key for key, result in found.items() if result.outcome is outcome}


def without(snapshot: Snapshot, node: str, gone: set[str]) -> Snapshot:
    old = snapshot.nodes[node]
    files = {name: text for name, text in old.files.items() if name not in gone}
    return replace(snapshot, nodes={**snapshot.nodes, node: replace(old, files=files)})


def failed(found: dict[tuple[str, str], Result]) -> set[tuple[str, str]]:
    """Failed items, but SYN_RECV ones: those depend on the traffic before recording (the modern
    recording followed `make demo`, whose connections toward the rp_filter victim left them)."""
    return {
        key for key in with_outcome(found, Outcome.FAILED) if key[0] != "ipvs-no-stuck-syn-recv"
    }


def test_an_old_node_fails_what_a_modern_one_fails() -> None:
    modern, old = results(load_snapshot(MODERN)), results(load_snapshot(OLD_NODE))
    assert failed(old) == failed(modern)
    assert failed(modern) >= {
        ("ipvs-tcpfin-timeout", "node-2"),
        ("rp-filter-not-strict", "node-2/tunl0"),
    }
    # Only ipvsadm shows the timeouts; kube-proxy's tcpFinTimeout 0s says what tcpfin is.
    [violation] = old[("ipvs-tcpfin-timeout", "node-2")].violations
    assert violation.observed == (
        "tcpfin 120 s, not read on node-2: kube-proxy's ipvs.tcpFinTimeout 0s leaves the "
        "kernel's timer, 120 s unless something else set it"
    )
    assert violation.evidence[0] == "ipvs.tcpFinTimeout: 0s (cluster/kube-proxy.json)"
    assert "ipvsadm not installed" in violation.evidence[1]
    assert violation.commands == ()  # no ipvsadm there for the stop-gap
    compared = old[("ipvs-timeouts-match-kube-proxy-config", "node-2")]
    assert compared.outcome is Outcome.SKIPPED
    assert "ipvsadm-timeout.txt" in compared.reason
    assert "ipvsadm not installed" in compared.reason
    assert with_outcome(old, Outcome.ERROR) == set()


def with_kube_proxy(snapshot: Snapshot, old: str, new: str) -> Snapshot:
    config = snapshot.cluster["kube-proxy.json"]
    assert old in config
    return replace(
        snapshot, cluster={**snapshot.cluster, "kube-proxy.json": config.replace(old, new)}
    )


def with_connection(snapshot: Snapshot, node: str, row: str) -> Snapshot:
    files = dict(snapshot.nodes[node].files)
    files["ip_vs_conn.txt"] += row + "\n"
    return replace(
        snapshot, nodes={**snapshot.nodes, node: replace(snapshot.nodes[node], files=files)}
    )


def tcpfin_on_node_2(snapshot: Snapshot) -> Result:
    return results(snapshot)[("ipvs-tcpfin-timeout", "node-2")]


def test_a_long_fin_wait_entry_proves_tcpfin_long_without_ipvsadm() -> None:
    row = "TCP 0A0A0024 9EDC 0A60001E 0050 0AF4010A 1F90 FIN_WAIT        97"
    configured = with_kube_proxy(load_snapshot(OLD_NODE), "tcpFinTimeout: 0s", "tcpFinTimeout: 30s")
    result = tcpfin_on_node_2(with_connection(configured, "node-2", row))
    [violation] = result.violations
    assert violation.observed.startswith("tcpfin at least 97 s: an IPVS entry in FIN_WAIT")
    assert violation.evidence[0] == row


def test_a_short_fin_wait_entry_and_a_short_config_are_not_a_pass_without_ipvsadm() -> None:
    row = "TCP 0A0A0024 9EDC 0A60001E 0050 0AF4010A 1F90 FIN_WAIT        25"
    configured = with_kube_proxy(load_snapshot(OLD_NODE), "tcpFinTimeout: 0s", "tcpFinTimeout: 30s")
    result = tcpfin_on_node_2(with_connection(configured, "node-2", row))
    assert result.outcome is Outcome.SKIPPED
    assert "sets tcpFinTimeout 30s at its start, which node-2 cannot confirm" in result.reason
    assert "ipvsadm not installed" in result.reason


def test_a_configured_tcpfin_above_the_limit_fails_without_ipvsadm() -> None:
    configured = with_kube_proxy(load_snapshot(OLD_NODE), "tcpFinTimeout: 0s", "tcpFinTimeout: 1m")
    [violation] = tcpfin_on_node_2(configured).violations
    assert violation.observed == (
        "tcpfin 60 s, not read on node-2: "
        "kube-proxy's ipvs.tcpFinTimeout 60s, which it sets at start"
    )


def test_without_timeouts_or_kube_proxy_config_tcpfin_skips() -> None:
    snapshot = load_snapshot(OLD_NODE)
    cluster = {k: v for k, v in snapshot.cluster.items() if k != "kube-proxy.json"}
    result = tcpfin_on_node_2(replace(snapshot, cluster=cluster))
    assert result.outcome is Outcome.SKIPPED
    assert "ipvsadm-timeout.txt" in result.reason


def test_strict_rp_filter_on_the_old_node_names_the_text_source() -> None:
    result = results(load_snapshot(OLD_NODE))[("rp-filter-not-strict", "node-2/tunl0")]
    assert result.outcome is Outcome.FAILED
    [violation] = result.violations
    assert violation.observed == "rp_filter effective=1 (all=1, tunl0=1)"
    assert violation.evidence[-1] == "interfaces from nodes/node-2/ip-link.txt"


def test_without_ip_or_sysctl_kernel_files_still_catch_strict_rp_filter() -> None:
    gone = {"ip-addr.txt", "ip-link.txt", "sysctl.txt"}
    found = results(without(load_snapshot(OLD_NODE), "node-2", gone))
    rp_filter = found[("rp-filter-not-strict", "node-2/tunl0")]
    assert rp_filter.outcome is Outcome.FAILED
    assert rp_filter.violations[0].evidence == (
        "net.ipv4.conf.all.rp_filter = 1",
        "net.ipv4.conf.tunl0.rp_filter = 1",
        "interfaces from nodes/node-2/sys-class-net.txt",
    )
    # Without addresses the NIC is every interface up that is no dummy or tunnel: eth0 here, as
    # the InternalIP chooses with addresses (loose: max(all=1, eth0=2) is 2).
    modern = results(load_snapshot(OLD_NODE))
    assert {key for key in found if key[1].startswith("node-2/")} == {
        key for key in modern if key[1].startswith("node-2/")
    }
    assert found[("rp-filter-not-strict", "node-2/eth0")].outcome is Outcome.PASSED
    # /sys/class/net has no IPv4 addresses: the kube-ipvs0 address check cannot judge, and says so.
    kube_ipvs0 = found[("kube-ipvs0-holds-service-ips", "node-2")]
    assert kube_ipvs0.outcome is Outcome.SKIPPED
    assert "nodes/node-2/sys-class-net.txt lists no IPv4 addresses" in kube_ipvs0.reason
    assert found[("ip-forward-enabled", "node-2")].outcome is Outcome.PASSED


def test_a_key_busybox_could_not_read_is_not_applicable_naming_the_note() -> None:
    snapshot = load_snapshot(OLD_NODE)
    node = snapshot.nodes["node-2"]
    text = "".join(
        line
        for line in node.files["sysctl.txt"].splitlines(keepends=True)
        if not line.startswith("net.ipv4.vs.expire_nodest_conn")
    )
    files = {**node.files, "sysctl.txt": text}
    snapshot = replace(snapshot, nodes={**snapshot.nodes, "node-2": replace(node, files=files)})
    result = results(snapshot)[("ipvs-expire-nodest-conn", "node-2")]
    assert result.outcome is Outcome.SKIPPED
    assert result.reason == (
        "net.ipv4.vs.expire_nodest_conn not in nodes/node-2/sysctl.txt (exited 1 after printing "
        "what it could: sysctl: error reading key 'net.ipv6.conf.all.stable_secret': "
        "Input/output error) (module not loaded, or an older kernel?)"
    )


def centos7_node_2() -> Snapshot:
    """node-2 as a CentOS 7 node: kernel 3.10 (no conn_reuse_mode, tcp_tw_recycle still there)."""
    snapshot = load_snapshot(OLD_NODE)
    node = snapshot.nodes["node-2"]
    sysctl = "".join(
        line
        for line in node.files["sysctl.txt"].splitlines(keepends=True)
        if not line.startswith("net.ipv4.vs.conn_reuse_mode")
    )
    files = {
        **node.files,
        "uname.txt": "3.10.0-693.el7.x86_64\n",
        "sysctl.txt": sysctl + "net.ipv4.tcp_tw_recycle = 0\n",
    }
    return replace(snapshot, nodes={**snapshot.nodes, "node-2": replace(node, files=files)})


def test_a_kernel_3_10_node_is_not_applicable_where_its_keys_do_not_exist() -> None:
    found = results(centos7_node_2())
    on_node_2 = {key: result for key, result in found.items() if key[1].startswith("node-2")}
    assert {r.outcome for r in on_node_2.values()} <= {
        Outcome.PASSED,
        Outcome.FAILED,
        Outcome.SKIPPED,
    }
    conn_reuse = on_node_2[("ipvs-conn-reuse-mode", "node-2")]
    assert conn_reuse.outcome is Outcome.SKIPPED
    assert conn_reuse.reason == (
        "kernel 3.10.0-693.el7.x86_64 is older than 4.1: kube-proxy leaves it alone"
    )
    assert on_node_2[("tcp-tw-recycle-off", "node-2")].outcome is Outcome.PASSED
    assert on_node_2[("rp-filter-not-strict", "node-2/tunl0")].outcome is Outcome.FAILED


def test_a_missing_vip_on_kube_ipvs0_read_from_busybox_text_names_that_source() -> None:
    snapshot = load_snapshot(OLD_NODE)
    node = snapshot.nodes["node-2"]
    text = node.files["ip-addr.txt"].replace("    inet 10.96.0.40/32 scope global kube-ipvs0\n", "")
    assert text != node.files["ip-addr.txt"]
    files = {**node.files, "ip-addr.txt": text}
    snapshot = replace(snapshot, nodes={**snapshot.nodes, "node-2": replace(node, files=files)})
    result = results(snapshot)[("kube-ipvs0-holds-service-ips", "node-2")]
    assert result.outcome is Outcome.FAILED
    [violation] = result.violations
    assert violation.observed.startswith("kube-ipvs0 lacks 10.96.0.40,")
    assert violation.evidence == ("interfaces from nodes/node-2/ip-addr.txt",)


def test_notes_survive_a_saved_snapshot(tmp_path: Path) -> None:
    snapshot = load_snapshot(OLD_NODE)
    save_snapshot(snapshot, tmp_path / "snap")
    again = load_snapshot(tmp_path / "snap")
    assert again.nodes["node-2"].notes == snapshot.nodes["node-2"].notes
    assert again.nodes["node-2"].notes["sysctl.txt"].startswith("exited 1 after printing")
    assert again.nodes["node-2"].files == snapshot.nodes["node-2"].files
