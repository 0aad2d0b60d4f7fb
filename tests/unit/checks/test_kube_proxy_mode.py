"""kube-proxy-mode: each node's observed mode against the ConfigMap's, on the recorded IPVS
snapshot with kube-proxy's nftables tables (recorded from the kernel) added or taken away."""

from __future__ import annotations

import pytest

from tests.nft_kernel import DATA
from tests.unit.checks.test_checks import NODE_1, kube_proxy_config, only, put, seed
from vipcheck.cases import Case, Outcome, run_case
from vipcheck.checks import check_by_id
from vipcheck.checks.base import FindingKind, NodeSubject, NotApplicable
from vipcheck.facts import Facts, MissingInput
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import NFT_NOT_INSTALLED, Snapshot

CHECK = "kube-proxy-mode"
TABLES = "table ip kube-proxy\ntable inet firewalld\n"


def with_nft(snapshot: Snapshot, node: str = "node-1", *, table: bool = True) -> Snapshot:
    """The node's nft files as a live run gathers them: kube-proxy's ip table, or none."""
    path = f"nodes/{node}"
    snapshot = put(snapshot, f"{path}/nft-tables.txt", TABLES if table else "table inet filter\n")
    if table:
        snapshot = put(
            snapshot, f"{path}/nft-ip-kube-proxy.json", (DATA / "endpoint-chains.json").read_text()
        )
    return snapshot


EMPTY_IPVS = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"


def without_ipvs(snapshot: Snapshot, node: str = "node-1") -> Snapshot:
    """IPVS cleaned up: no virtual server left, kube-ipvs0 deleted."""
    path = f"nodes/{node}"
    snapshot = put(snapshot, f"{path}/ipvsadm-Ln.txt", EMPTY_IPVS)
    for name in ("ip-link.json", "ip-addr.json"):
        text = snapshot.nodes[node].files[name]
        snapshot = put(snapshot, f"{path}/{name}", text.replace('"kube-ipvs0"', '"was-ipvs0"'))
    return snapshot


def nftables_mode(snapshot: Snapshot) -> Snapshot:
    return kube_proxy_config(snapshot, "mode: ipvs", "mode: nftables")


def test_config_nftables_node_still_on_ipvs_fails_naming_what_it_runs() -> None:
    [violation] = only(nftables_mode(with_nft(seed(), table=False)), CHECK, "node-1")
    assert violation.kind is FindingKind.WRONG_PROXY_MODE
    assert violation.observed.startswith("config says nftables, node-1 runs IPVS (")
    assert violation.observed.endswith(" virtual servers, kube-ipvs0)")
    assert "kubectl -n kube-system delete pod -l k8s-app=kube-proxy" in violation.fix
    assert violation.cluster_commands[0][-1] == "spec.nodeName=node-1"


def test_both_modes_at_once_fail() -> None:
    [violation] = only(nftables_mode(with_nft(seed())), CHECK, "node-1")
    assert violation.observed.startswith(
        "config says nftables, node-1 runs both nftables (table ip kube-proxy) and IPVS ("
    )
    assert violation.evidence[0] == "nftables: table ip kube-proxy"


def test_switched_node_passes_and_an_unswitched_one_fails() -> None:
    snapshot = nftables_mode(without_ipvs(with_nft(seed())))
    assert only(snapshot, CHECK, "node-1") == []
    # node-2 was not restarted: still IPVS, and no kube-proxy table
    [violation] = only(with_nft(snapshot, "node-2", table=False), CHECK, "node-2")
    assert "node-2 runs IPVS" in violation.observed


def test_config_ipvs_with_a_kube_proxy_table_left_fails() -> None:
    [violation] = only(with_nft(seed()), CHECK, "node-1")
    assert violation.observed.startswith("config says ipvs, node-1 runs both")


def test_config_ipvs_node_on_ipvs_passes_once_nft_was_read() -> None:
    assert only(with_nft(seed(), table=False), CHECK, "node-1") == []


def test_a_node_showing_no_mode_fails() -> None:
    snapshot = nftables_mode(without_ipvs(with_nft(seed(), table=False)))
    [violation] = only(snapshot, CHECK, "node-1")
    assert "node-1 shows no kube-proxy mode" in violation.observed


def test_an_ipvs_node_showing_no_mode_is_left_to_ipvs_present() -> None:
    """Config ipvs, no virtual server, no kube-ipvs0 and no table: no other mode runs, and the
    missing IPVS state is the IPVS checks' (ipvs-present where ip_vs is not loaded, as the lab's
    faulty-nodes no-ipvs node shows: one problem there); nftables mode has no such check."""
    snapshot = without_ipvs(with_nft(seed(), table=False))
    assert only(snapshot, CHECK, "node-1") == []


def test_a_mode_not_looked_for_is_never_called_absent() -> None:
    """The recorded snapshot predates the nft files: IPVS is seen, nftables unknown."""
    with pytest.raises(
        NotApplicable, match=r"whether it also runs another mode is unknown.*nft-tables\.txt"
    ):
        only(seed(), CHECK, "node-1")
    snapshot = put(seed(), f"{NODE_1}/nft-tables.txt", None, NFT_NOT_INSTALLED)
    with pytest.raises(NotApplicable, match="nft not installed"):
        only(snapshot, CHECK, "node-1")


def test_skips_without_the_config_or_for_iptables() -> None:
    with pytest.raises(MissingInput, match=r"kube-proxy\.json"):
        only(put(with_nft(seed()), "cluster/kube-proxy.json", None), CHECK, "node-1")
    iptables = kube_proxy_config(with_nft(seed()), "mode: ipvs", "mode: iptables")
    with pytest.raises(NotApplicable, match="kube-proxy mode is iptables"):
        only(iptables, CHECK, "node-1")


def test_nft_failing_on_the_node_errors_the_item_saying_cannot_read() -> None:
    snapshot = put(seed(), f"{NODE_1}/nft-tables.txt", None, "Segmentation fault")
    case = Case(check_by_id(CHECK), NodeSubject("node-1"))
    result = run_case(case, Facts.from_snapshot(nftables_mode(snapshot)), DEFAULTS)
    assert result.outcome is Outcome.ERROR
    assert "nodes/node-1/nft-tables.txt: cannot read: Segmentation fault" in result.reason
