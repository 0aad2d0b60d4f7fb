"""The readiness checks for the switch from IPVS to nftables mode (issue 20), on the recorded lab
snapshot with each finding planted in the text: each fails exactly where planted, passes where
the cluster is healthy, and skips on an nftables cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.checks.test_checks import (
    NODE_1,
    NODE_2,
    NODE_3,
    edit,
    edit_json,
    healthy,
    kube_proxy_config,
    only,
    put,
    run_catalogue,
    seed,
)
from vipcheck.cases import OTHER_MODE, Case, Outcome, cases_for, run_case
from vipcheck.checks import MIGRATION_CHECKS, check_by_id
from vipcheck.checks.base import (
    ClusterSubject,
    FindingKind,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.facts import Facts, MissingInput
from vipcheck.parse import ParseError
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import Snapshot, load_snapshot

PROBED = Path(__file__).resolve().parents[3] / "fixtures" / "snapshots" / "seed-incidents-probed"
READINESS = MIGRATION_CHECKS
NODES = ("node-1", "node-2", "node-3")


def failing(snapshot: Snapshot, check_id: str) -> dict[str, list[str]]:
    """Each node (or the cluster) the check fails on, with its violations' subjects."""
    found: dict[str, list[str]] = {}
    for check, subject, outcome in run_catalogue(Facts.from_snapshot(snapshot)):
        if check == check_id and not isinstance(outcome, str):
            for violation in outcome:
                found.setdefault(violation.node or subject, []).append(violation.subject)
    return found


# --- kernel -------------------------------------------------------------------------------------


def test_a_kernel_before_5_13_fails_its_node_alone() -> None:
    snapshot = put(healthy(), f"{NODE_2}/uname.txt", "4.18.0-553.el8_10.x86_64\n")
    assert failing(snapshot, "migration-kernel-version") == {"node-2": ["kernel"]}
    [violation] = only(snapshot, "migration-kernel-version", "node-2")
    assert violation.kind is FindingKind.KERNEL_TOO_OLD_FOR_NFTABLES
    assert violation.observed.startswith("kernel 4.18: kube-proxy in nftables mode exits")
    assert violation.expected == "kernel 5.13 or later"
    assert violation.evidence == ("4.18.0-553.el8_10.x86_64",)


@pytest.mark.parametrize(("release", "fails"), [("5.12.19", True), ("5.13.0", False)])
def test_the_kernel_floor_is_5_13(release: str, fails: bool) -> None:
    snapshot = put(healthy(), f"{NODE_1}/uname.txt", f"{release}\n")
    assert bool(only(snapshot, "migration-kernel-version", "node-1")) is fails


def test_an_unreadable_kernel_release_names_the_file() -> None:
    snapshot = put(healthy(), f"{NODE_1}/uname.txt", "not a kernel\n")
    with pytest.raises(ParseError, match=r"nodes/node-1/uname.txt:1: expected a kernel release"):
        only(snapshot, "migration-kernel-version", "node-1")


# --- nft ----------------------------------------------------------------------------------------


def test_an_nft_before_1_0_1_fails_its_node_alone() -> None:
    snapshot = put(healthy(), f"{NODE_3}/nft-version.txt", "nftables v0.9.8 (E.D.S.)\n")
    snapshot = put(snapshot, f"{NODE_1}/nft-version.txt", "nftables v1.0.1 (Fearless Fosdick)\n")
    assert failing(snapshot, "migration-nft-version") == {"node-3": ["nft"]}
    [violation] = only(snapshot, "migration-nft-version", "node-3")
    assert violation.kind is FindingKind.NFT_TOO_OLD
    assert violation.observed.startswith("nft 0.9.8: an nft before 1.0.1 reads the whole ruleset")


def test_nft_not_installed_skips_naming_why() -> None:
    snapshot = put(healthy(), f"{NODE_2}/nft-version.txt", None, "nft not installed")
    with pytest.raises(MissingInput, match=r"nft-version\.txt .*: nft not installed"):
        only(snapshot, "migration-nft-version", "node-2")


# --- foreign virtual servers --------------------------------------------------------------------

KEEPALIVED = (
    "TCP  192.168.58.100:443 wlc\n"
    "  -> 192.168.58.21:443             Route   1      3          1         \n"
    "FWM  42 rr\n"
    "  -> 192.168.58.22:0               Route   1      0          0         \n"
)


def with_keepalived(snapshot: Snapshot) -> Snapshot:
    """node-3 with keepalived's services beside kube-proxy's: one by address, one by mark."""
    path = f"{NODE_3}/ipvsadm-Ln.txt"
    return edit(
        snapshot, path, "TCP  10.96.0.20:6379 rr\n", KEEPALIVED + "TCP  10.96.0.20:6379 rr\n"
    )


def test_foreign_virtual_servers_are_named_where_they_are() -> None:
    snapshot = with_keepalived(healthy())
    assert failing(snapshot, "migration-foreign-virtual-servers") == {
        "node-3": ["TCP 192.168.58.100:443", "FWM 42"]
    }
    by_address, by_mark = only(snapshot, "migration-foreign-virtual-servers", "node-3")
    assert by_address.kind is FindingKind.FOREIGN_VIRTUAL_SERVICE
    assert "no Service's address or nodePort" in by_address.observed
    assert "flushes every IPVS virtual server at each start" in by_address.observed
    assert "ipvsadm -D -t 192.168.58.100:443" in by_address.fix
    assert by_address.commands == ()  # never deleted for the operator: it may be keepalived's
    assert "firewall-mark service" in by_mark.observed
    assert "ipvsadm -D -f 42" in by_mark.fix
    assert check_by_id("migration-foreign-virtual-servers").severity is Severity.CRITICAL


def test_a_virtual_server_excluded_from_kube_proxy_is_still_flushed() -> None:
    """excludeCIDRs keeps kube-proxy in IPVS mode off it, and the orphan check leaves marks
    alone: nothing is wrong in IPVS mode, yet the cleanup flushes both."""
    snapshot = kube_proxy_config(
        with_keepalived(healthy()), "excludeCIDRs: null", "excludeCIDRs:\\n  - 192.168.58.100/32"
    )
    assert only(snapshot, "ipvs-no-orphan-virtual-servers", "node-3") == []
    [by_address, _] = only(snapshot, "migration-foreign-virtual-servers", "node-3")
    assert "inside ipvs.excludeCIDRs 192.168.58.100/32: another agent's" in by_address.observed


# --- NodePort addresses -------------------------------------------------------------------------

SECOND = (
    "TCP  10.10.0.1:30080 rr\n  -> 10.244.1.10:8080             Masq    1      {conns}          0\n"
)
LOOPBACK = (
    "TCP  127.0.0.1:30080 rr\n  -> 10.244.1.10:8080             Masq    1      0          0\n"
)
ROW = "TCP 0A0A0024 9C40 0A0A0001 7580 0AF4010A 1F90 ESTABLISHED      899\n"


def with_node_ports(snapshot: Snapshot, conns: int, row: bool) -> Snapshot:
    """node-1 serving default/web's NodePort on eth1's 10.10.0.1 and on loopback too (as IPVS
    mode may), with `conns` counted on the first, and a client's row in the table or not."""
    table = f"{NODE_1}/ipvsadm-Ln.txt"
    added = SECOND.format(conns=conns) + LOOPBACK
    snapshot = edit(
        snapshot, table, "TCP  10.96.0.20:6379 rr\n", added + "TCP  10.96.0.20:6379 rr\n"
    )
    if row:
        snapshot = edit(snapshot, f"{NODE_1}/ip_vs_conn.txt", "PEData\n", "PEData\n" + ROW)
    return snapshot


def test_a_nodeport_reached_on_an_address_outside_node_port_addresses_fails() -> None:
    snapshot = with_node_ports(healthy(), conns=1, row=True)
    assert failing(snapshot, "migration-nodeport-addresses") == {"node-1": ["10.10.0.1:30080"]}
    [violation] = only(snapshot, "migration-nodeport-addresses", "node-1")
    assert violation.kind is FindingKind.NODE_PORT_ADDRESS_DROPPED
    assert violation.observed == (
        "NodePort 10.10.0.1:30080 of default/web:80/TCP is reached today (1 connection(s) "
        "counted on it by IPVS; 1 in the connection table, from 10.10.0.36); 10.10.0.1 is not "
        "among the addresses nftables mode's nodePortAddresses selects (192.168.58.11)"
    )
    assert "10.10.0.1/32, beside 192.168.58.0/24" in violation.fix
    assert violation.evidence[1] == ROW.rstrip("\n")


def test_a_nodeport_address_nobody_reaches_passes() -> None:
    assert (
        only(
            with_node_ports(healthy(), conns=0, row=False), "migration-nodeport-addresses", "node-1"
        )
        == []
    )


def test_the_counters_alone_show_a_client_where_the_table_is_missing() -> None:
    snapshot = put(with_node_ports(healthy(), conns=2, row=False), f"{NODE_1}/ip_vs_conn.txt", None)
    [violation] = only(snapshot, "migration-nodeport-addresses", "node-1")
    assert "(2 connection(s) counted on it by IPVS)" in violation.observed


def test_without_node_port_addresses_nftables_keeps_only_the_primary_ip() -> None:
    """Unset, nodePortAddresses is `primary` in nftables mode: the Node's InternalIP."""
    snapshot = kube_proxy_config(
        with_node_ports(healthy(), conns=1, row=True),
        "nodePortAddresses:\\n- 192.168.58.0/24\\n",
        "nodePortAddresses: null\\n",
    )
    [violation] = only(snapshot, "migration-nodeport-addresses", "node-1")
    assert "selects (192.168.58.11)" in violation.observed
    assert "beside primary" in violation.fix


def test_a_reached_loopback_nodeport_fails_saying_nftables_never_answers_there() -> None:
    snapshot = with_node_ports(healthy(), conns=0, row=False)
    snapshot = edit(
        snapshot,
        f"{NODE_1}/ipvsadm-Ln.txt",
        LOOPBACK,
        LOOPBACK.replace("Masq    1      0", "Masq    1      4"),
    )
    [violation] = only(snapshot, "migration-nodeport-addresses", "node-1")
    assert violation.subject == "127.0.0.1:30080"
    assert "loopback: nftables mode never answers NodePorts there" in violation.observed
    assert "must use the Service's ClusterIP" in violation.fix


def test_without_the_node_object_a_primary_default_is_not_judged() -> None:
    def drop_node_1(document: Any) -> None:
        document["items"] = [i for i in document["items"] if i["metadata"]["name"] != "node-1"]

    snapshot = kube_proxy_config(
        edit_json(healthy(), "cluster/nodes.json", drop_node_1),
        "nodePortAddresses:\\n- 192.168.58.0/24\\n",
        "nodePortAddresses: null\\n",
    )
    with pytest.raises(NotApplicable, match=r"node-1 is not in nodes\.json"):
        only(snapshot, "migration-nodeport-addresses", "node-1")


def test_the_probe_is_evidence_only_once_this_run_probed() -> None:
    """The recorded probes reached 192.168.58.11:30080 from the client; with the node's table
    showing that address outside nodePortAddresses, the finding names the probe, but only
    where the probe files were read already: the check never starts the probes itself."""
    snapshot = kube_proxy_config(
        load_snapshot(PROBED),
        "nodePortAddresses:\\n- 192.168.58.0/24\\n",
        "nodePortAddresses:\\n- 10.10.0.0/24\\n",
    )
    check = check_by_id("migration-nodeport-addresses")
    fresh = Facts.from_snapshot(snapshot)
    [case] = [c for c in cases_for(check, fresh) if c.id == "node-1"]
    assert run_case(case, fresh, DEFAULTS).violations == ()
    read = Facts.from_snapshot(snapshot)
    assert read.probes.plan.targets  # as the handshake items read them, before this one
    [violation] = run_case(case, read, DEFAULTS).violations
    assert "the handshake probe connected from client" in violation.observed


# --- IPVS-only settings -------------------------------------------------------------------------


def test_ipvs_only_settings_are_each_one_violation_of_the_cluster_item() -> None:
    snapshot = kube_proxy_config(healthy(), "scheduler: rr", "scheduler: sh")
    snapshot = kube_proxy_config(snapshot, "strictARP: false", "strictARP: true")
    snapshot = kube_proxy_config(snapshot, "tcpTimeout: 0s", "tcpTimeout: 900s")
    observed = [v.observed for v in only_cluster(snapshot, "migration-ipvs-only-settings")]
    assert [text.split(":")[0] for text in observed] == [
        "ipvs.scheduler",
        "ipvs tcpTimeout 900s, tcpFinTimeout 30s",
        "ipvs.strictARP",
    ]
    assert "numgen random" in observed[0]
    assert "conntrack section" in observed[1]
    assert "arp_ignore=1 and arp_announce=2" in observed[2]
    assert check_by_id("migration-ipvs-only-settings").severity is Severity.INFO


def test_a_hand_set_scheduler_is_named_on_its_node() -> None:
    path = f"{NODE_2}/ipvsadm-Ln.txt"
    snapshot = edit(seed(), path, "TCP  10.96.0.30:80 rr", "TCP  10.96.0.30:80 wlc")
    [violation] = only_cluster(snapshot, "migration-ipvs-only-settings")
    assert (violation.node, violation.subject) == ("node-2", "IPVS schedulers")
    assert "TCP 10.96.0.30:80 wlc" in violation.observed


def test_an_ipvs_config_without_ipvs_only_settings_passes() -> None:
    assert only_cluster(seed(), "migration-ipvs-only-settings") == []


def only_cluster(snapshot: Snapshot, check_id: str) -> list[Violation]:
    return Case(check_by_id(check_id), ClusterSubject()).run(
        Facts.from_snapshot(snapshot), DEFAULTS
    )


# --- Calico -------------------------------------------------------------------------------------


def without_calico(snapshot: Snapshot, node: str) -> Snapshot:
    """The node's Calico veths renamed as another CNI's (cni0 bridge ports, veth*)."""
    for name in ("ip-link.json", "ip-addr.json"):
        text = snapshot.nodes[node].files[name]
        snapshot = put(snapshot, f"nodes/{node}/{name}", text.replace('"cali', '"veth'))
    return snapshot


def test_calico_nodes_are_told_the_kube_ipvs0_step_and_others_skip() -> None:
    snapshot = without_calico(healthy(), "node-3")
    assert failing(snapshot, "migration-calico-kube-ipvs0") == {
        "node-1": ["Calico Felix"],
        "node-2": ["Calico Felix"],
    }
    [violation] = only(snapshot, "migration-calico-kube-ipvs0", "node-2")
    assert violation.kind is FindingKind.CALICO_READS_KUBE_IPVS0
    assert violation.observed.startswith(
        "Calico runs here (cali20863694302, cali35d680fda22) and kube-ipvs0 is present"
    )
    assert "ip link del kube-ipvs0" in violation.fix
    with pytest.raises(NotApplicable, match="node-3 has no Calico interface"):
        only(snapshot, "migration-calico-kube-ipvs0", "node-3")


# --- the whole set ------------------------------------------------------------------------------


def test_a_healthy_ipvs_cluster_blocks_no_gate() -> None:
    """What blocks (critical, warning) passes on the healthy variant; only info is said."""
    facts = Facts.from_snapshot(healthy())
    for check in READINESS:
        for case in cases_for(check, facts):
            result = run_case(case, facts, DEFAULTS)
            if check.severity is not Severity.INFO:
                assert result.outcome is Outcome.PASSED, (check.id, case.id, result.reason)


def test_every_readiness_check_is_one_skipped_item_on_an_nftables_cluster() -> None:
    snapshot = kube_proxy_config(healthy(), "mode: ipvs", "mode: nftables")
    facts = Facts.from_snapshot(snapshot)
    for check in READINESS:
        [case] = cases_for(check, facts)
        result = run_case(case, facts, DEFAULTS)
        assert (case.id, result.outcome, result.other_mode) == (OTHER_MODE, Outcome.SKIPPED, True)
        assert result.reason == "kube-proxy mode is nftables: IPVS checks do not apply"
