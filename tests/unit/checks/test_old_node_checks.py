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
# What only ipvsadm shows (there is no /proc file for IPVS timeouts).
NEEDS_IPVSADM = {"ipvs-tcpfin-timeout", "ipvs-timeouts-match-kube-proxy-config"}


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
    only_ipvsadm = {("ipvs-tcpfin-timeout", "node-2")}
    assert failed(old) == failed(modern) - only_ipvsadm
    assert failed(modern) >= only_ipvsadm | {("rp-filter-not-strict", "node-2/tunl0")}
    for check in NEEDS_IPVSADM:
        result = old[(check, "node-2")]
        assert result.outcome is Outcome.SKIPPED
        assert "ipvsadm-timeout.txt" in result.reason
        assert "ipvsadm not installed" in result.reason
    assert with_outcome(old, Outcome.ERROR) == set()


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
