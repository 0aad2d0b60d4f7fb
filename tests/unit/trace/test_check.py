"""nft-trace-reaches-endpoints on the recorded seed cluster, switched to nftables mode.

Each node's table is what the nftables proxier programs for the seed's Services (data/seed-*.nft,
listed by the kernel into data/seed-*.txt); the broken twin keeps a stale `dnat to
10.244.3.10:80` beside :6379 on node-2 (the first founding incident in this mode).

Each node's listing goes into the snapshot as `nft-ip-kube-proxy.txt`, the file an nft without
JSON (or a paste) gives, read through NodeFacts.nftables as a replay reads it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.unit.checks.test_checks import kube_proxy_config, only, put, seed
from tests.unit.trace.test_nft_trace import DATA
from vipcheck.cases import Case, Outcome, run_case
from vipcheck.checks import check_by_id
from vipcheck.checks.base import FindingKind, NodeSubject
from vipcheck.facts import Facts
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import L4Protocol
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import Snapshot

CHECK = "nft-trace-reaches-endpoints"
REDIS = ServicePortKey("default/redis", 6379, L4Protocol.TCP)
WEB = ServicePortKey("default/web", 80, L4Protocol.TCP)
API = ServicePortKey("default/api", 80, L4Protocol.TCP)


def nftables_mode() -> Snapshot:
    return kube_proxy_config(seed(), "mode: ipvs", "mode: nftables")


def with_tables(snapshot: Snapshot, recordings: Mapping[str, str]) -> Snapshot:
    """Each node with its recorded ip table as `nft list table` printed it, and no ip6 table."""
    for node, name in recordings.items():
        listed = (DATA / f"{name}.txt").read_text()
        snapshot = put(snapshot, f"nodes/{node}/nft-tables.txt", "table ip kube-proxy\n")
        snapshot = put(snapshot, f"nodes/{node}/nft-ip-kube-proxy.txt", listed)
    return snapshot


FAITHFUL = {f"node-{n}": f"seed-node-{n}" for n in (1, 2, 3)}


def faithful() -> Snapshot:
    return with_tables(nftables_mode(), FAITHFUL)


def stale_on_node_2() -> Snapshot:
    return with_tables(nftables_mode(), {**FAITHFUL, "node-2": "seed-node-2-stale-redis-port"})


@pytest.mark.parametrize("port", [REDIS, WEB, API], ids=str)
def test_faithful_tables_reach_exactly_the_endpoints(port: ServicePortKey) -> None:
    assert only(faithful(), CHECK, port) == []


def test_a_stale_dnat_to_port_80_is_found_on_its_node_with_the_rule_path() -> None:
    found = only(stale_on_node_2(), CHECK, REDIS)
    assert {(v.node, v.kind) for v in found} == {("node-2", FindingKind.TRACE_MISMATCH)}
    assert len(found) == 2  # from a pod and from outside
    pod = next(v for v in found if "from pod" in v.observed)
    assert pod.observed == (
        "TCP 10.244.2.2 -> 10.96.0.20:6379 from pod: 10.244.3.10:6379, 10.244.3.10:80"
    )
    assert (
        pod.expected
        == "ClusterIP 10.96.0.20:6379: DNAT to exactly 10.244.3.10:6379 (the usable endpoints)"
    )
    assert any(
        "__10.244.3.10/80 line " in line and "dnat to 10.244.3.10:80" in line
        for line in pod.evidence
    )
    assert "kubectl -n kube-system delete pod -l k8s-app=kube-proxy" in pod.fix
    assert only(stale_on_node_2(), CHECK, WEB) == []


def test_nodeports_default_to_the_primary_ip_only() -> None:
    """Without nodePortAddresses IPVS serves NodePorts on every node address (node-1's eth1
    10.10.0.1, tunl0...), nftables mode on the Node's primary IP only (platformApplyDefaults):
    the tables (nodeport-ips { 192.168.58.1N }) are right, so nothing is flagged."""
    snapshot = kube_proxy_config(faithful(), "nodePortAddresses:\\n- 192.168.58.0/24\\n", "")
    assert only(snapshot, CHECK, WEB) == []


def test_a_nodeport_missing_from_nodeport_ips_is_found() -> None:
    """The same tables judged as if nodePortAddresses selected node-1's eth1 too."""
    snapshot = kube_proxy_config(
        faithful(), "- 192.168.58.0/24\\n", "- 192.168.58.0/24\\n- 10.10.0.0/24\\n"
    )
    found = only(snapshot, CHECK, WEB)
    assert {(v.node, v.observed.split(":")[0]) for v in found} == {
        ("node-1", "TCP 10.244.1.2 -> 10.10.0.1"),
        ("node-1", "TCP 203.0.113.2 -> 10.10.0.1"),
    }


def test_a_node_without_the_table_is_left_to_the_mode_check() -> None:
    """node-2 lists no kube-proxy table (kube-proxy runs another mode; the lab's no-ipvs fault
    has none either): kube-proxy-mode's one finding; the trace, like the map and chain checks, skips
    that node rather than fail every Service port on it."""
    snapshot = put(faithful(), "nodes/node-2/nft-tables.txt", "")
    snapshot = put(snapshot, "nodes/node-2/nft-ip-kube-proxy.txt", None)
    facts = Facts.from_snapshot(snapshot)
    for check in (CHECK, "nft-service-maps", "nft-chains-reach-endpoints"):
        result = run_case(Case(check_by_id(check), REDIS), facts, DEFAULTS)
        assert (result.outcome, result.reason) == (
            Outcome.SKIPPED,
            "node-2: node-2 has no ip kube-proxy table (the mode check reports it)",
        ), check
    for check in ("nft-no-stale-chains", "nft-cluster-ips", "nft-nodeport-ips"):
        result = run_case(Case(check_by_id(check), NodeSubject("node-2")), facts, DEFAULTS)
        assert (result.outcome, result.reason) == (
            Outcome.SKIPPED,
            "node-2 has no kube-proxy table (the mode check reports it)",
        ), check
    [mode] = only(snapshot, "kube-proxy-mode", "node-2")  # the recording's IPVS state is there
    assert mode.observed == "config says nftables, node-2 runs IPVS (4 virtual servers, kube-ipvs0)"


def test_a_node_with_the_other_familys_table_only_is_flagged_on_each_port() -> None:
    """node-2 lists `table ip6 kube-proxy` alone: nftables mode runs there (the mode check
    passes it), but its IPv4 proxier programmed nothing, so every IPv4 port is flagged by the
    map and chain checks and the trace alike."""
    snapshot = put(faithful(), "nodes/node-2/nft-tables.txt", "table ip6 kube-proxy\n")
    snapshot = put(snapshot, "nodes/node-2/nft-ip-kube-proxy.txt", None)
    snapshot = put(
        snapshot,
        "nodes/node-2/nft-ip6-kube-proxy.txt",
        'table ip6 kube-proxy {\n\tcomment "rules for kube-proxy"\n}\n',
    )
    for check in (CHECK, "nft-service-maps", "nft-chains-reach-endpoints"):
        found = only(snapshot, check, REDIS)
        assert [(v.node, v.kind, v.observed) for v in found] == [
            ("node-2", FindingKind.NFT_MISSING_TABLE, "nft lists no table ip kube-proxy")
        ], check


def test_without_the_nftables_facts_each_port_skips_saying_so() -> None:
    facts = Facts.from_snapshot(nftables_mode())
    result = run_case(Case(check_by_id(CHECK), REDIS), facts, DEFAULTS)
    assert result.outcome is Outcome.SKIPPED
    assert "nft-tables.txt" in result.reason


def test_other_modes_skip() -> None:
    facts = Facts.from_snapshot(seed())
    result = run_case(Case(check_by_id(CHECK), REDIS), facts, DEFAULTS)
    assert (result.outcome, result.reason) == (
        Outcome.SKIPPED,
        "kube-proxy mode is ipvs: nftables checks do not apply",
    )
