"""Cases that span nodes: what the observed nodes show still fails; a dead node is one error."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from vipcheck.cases import Case, Outcome, cases_for, render, run_case
from vipcheck.checks import CATALOGUE, check_by_id
from vipcheck.checks.base import NodeSubject
from vipcheck.checks.observed import NODE_OBSERVED
from vipcheck.facts import Facts
from vipcheck.model.cluster import ProxyMode, ServicePortKey
from vipcheck.model.node import L4Protocol
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import load_snapshot

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded" / "seed-incidents"
REAL_SERVERS = check_by_id("ipvs-real-servers-match-endpoints")


def facts_without_node_3() -> Facts:
    snapshot = load_snapshot(RECORDED)
    nodes = dict(snapshot.nodes)
    nodes["node-3"] = replace(nodes["node-3"], error="ssh: connect to host: Connection refused")
    return Facts.from_snapshot(replace(snapshot, nodes=nodes))


def test_violations_on_observed_nodes_fail_and_name_the_unobserved_one() -> None:
    case = Case(REAL_SERVERS, ServicePortKey("default/redis", 6379, L4Protocol.TCP))
    result = run_case(case, facts_without_node_3(), DEFAULTS)
    assert result.outcome is Outcome.FAILED
    assert {v.node for v in result.violations} == {"node-1", "node-2"}
    assert "also not observed: node-3 could not be observed: ssh: connect" in render(result)


def test_no_violation_on_observed_nodes_passes_there_only_naming_the_unseen_node() -> None:
    case = Case(REAL_SERVERS, ServicePortKey("default/web", 80, L4Protocol.TCP))
    result = run_case(case, facts_without_node_3(), DEFAULTS)
    assert result.outcome is Outcome.PASSED
    assert result.unseen == ("node-3",)
    assert result.reason == (
        "passed on the nodes seen (node-1, node-2); not judged: "
        "node-3 could not be observed: ssh: connect to host: Connection refused"
    )


def test_violations_on_observed_nodes_record_the_unseen_node() -> None:
    case = Case(REAL_SERVERS, ServicePortKey("default/redis", 6379, L4Protocol.TCP))
    assert run_case(case, facts_without_node_3(), DEFAULTS).unseen == ("node-3",)


def test_the_unobserved_node_errors_once_in_node_observed_with_the_cause_and_fix() -> None:
    facts = facts_without_node_3()
    results = {
        node: run_case(Case(NODE_OBSERVED, NodeSubject(node)), facts, DEFAULTS)
        for node in ("node-1", "node-2", "node-3")
    }
    assert {n: r.outcome for n, r in results.items()} == {
        "node-1": Outcome.PASSED,
        "node-2": Outcome.PASSED,
        "node-3": Outcome.ERROR,
    }
    assert results["node-3"].reason.startswith(
        "node-3 could not be observed: ssh: connect to host: Connection refused; fix: nothing "
        "listens on the node's ssh port"
    )


def test_reporting_an_unobserved_node_is_a_property_of_the_check_not_its_identity() -> None:
    """A check declaring reports_node_observation runs for the unobserved node (an equal copy
    of node-observed, as a second catalogue would hold); one that does not skips there."""
    facts = facts_without_node_3()
    reporter = replace(NODE_OBSERVED, id="node-reachable")
    assert run_case(Case(reporter, NodeSubject("node-3")), facts, DEFAULTS).outcome is (
        Outcome.ERROR
    )
    silent = replace(NODE_OBSERVED, reports_node_observation=False)
    assert run_case(Case(silent, NodeSubject("node-3")), facts, DEFAULTS).outcome is (
        Outcome.SKIPPED
    )


def test_other_node_cases_of_the_unobserved_node_skip_pointing_at_node_observed() -> None:
    case = Case(check_by_id("ipvs-tcpfin-timeout"), NodeSubject("node-3"))
    result = run_case(case, facts_without_node_3(), DEFAULTS)
    assert result.outcome is Outcome.SKIPPED
    assert result.reason == (
        "node-3 could not be observed: ssh: connect to host: Connection refused "
        "(see node-observed[node-3])"
    )


def test_one_unobserved_node_is_exactly_one_error_and_no_failure_goes_missing() -> None:
    whole = Facts.from_snapshot(load_snapshot(RECORDED))
    facts = facts_without_node_3()
    outcomes: dict[Outcome, set[str]] = {outcome: set() for outcome in Outcome}
    failed_whole: set[str] = set()
    for check in CATALOGUE:
        for case in cases_for(check, facts):
            outcomes[run_case(case, facts, DEFAULTS).outcome].add(f"{check.id}[{case.id}]")
        for case in cases_for(check, whole):
            if run_case(case, whole, DEFAULTS).outcome is Outcome.FAILED:
                failed_whole.add(f"{check.id}[{case.id}]")
    assert outcomes[Outcome.ERROR] == {"node-observed[node-3]"}
    # Every failure the whole fleet shows still fails, except those only node-3 showed.
    only_node_3 = {f for f in failed_whole if f.endswith("[node-3]") or "[node-3/" in f}
    assert failed_whole - only_node_3 <= outcomes[Outcome.FAILED]
    assert only_node_3, "the recorded seed-incidents has findings on node-3"


def test_a_malformed_sysctl_value_errors_the_case_naming_the_file() -> None:
    snapshot = load_snapshot(RECORDED)
    node = snapshot.nodes["node-1"]
    sysctl = node.files["sysctl.txt"].replace(
        "net.ipv4.ip_forward = 1", "net.ipv4.ip_forward = yes"
    )
    nodes = {**snapshot.nodes, "node-1": replace(node, files={**node.files, "sysctl.txt": sysctl})}
    facts = Facts.from_snapshot(replace(snapshot, nodes=nodes))
    case = Case(check_by_id("ip-forward-enabled"), NodeSubject("node-1"))
    result = run_case(case, facts, DEFAULTS)
    assert result.outcome is Outcome.ERROR
    assert result.reason == (
        "cannot read nodes/node-1/sysctl.txt: net.ipv4.ip_forward = 'yes' is not an integer"
    )


def facts_without_ipvs_table_on_node_3() -> Facts:
    snapshot = load_snapshot(RECORDED)
    node = snapshot.nodes["node-3"]
    table = ("ipvsadm-Ln.txt", "proc-ip_vs.txt")
    files = {name: text for name, text in node.files.items() if name not in table}
    missing = {"ipvsadm-Ln.txt": "ipvsadm not installed"}
    nodes = {**snapshot.nodes, "node-3": replace(node, files=files, missing=missing)}
    return Facts.from_snapshot(replace(snapshot, nodes=nodes))


def test_a_node_without_its_ipvs_table_is_named_and_the_others_still_fail() -> None:
    case = Case(REAL_SERVERS, ServicePortKey("default/redis", 6379, L4Protocol.TCP))
    result = run_case(case, facts_without_ipvs_table_on_node_3(), DEFAULTS)
    assert result.outcome is Outcome.FAILED
    assert {v.node for v in result.violations} == {"node-1", "node-2"}
    assert result.reason.startswith("node-3: no ipvsadm-Ln.txt (`ipvsadm -Ln --exact`) or ")
    assert result.reason.endswith(": ipvsadm not installed")


@pytest.mark.parametrize(
    "check", ["ipvs-real-servers-match-endpoints", "ipvs-virtual-servers-complete"]
)
def test_no_violation_on_the_judged_nodes_skips_naming_the_unjudged_one(check: str) -> None:
    case = Case(check_by_id(check), ServicePortKey("default/web", 80, L4Protocol.TCP))
    result = run_case(case, facts_without_ipvs_table_on_node_3(), DEFAULTS)
    assert result.outcome is Outcome.SKIPPED
    assert result.violations == ()
    assert result.reason.startswith("node-3: no ipvsadm-Ln.txt")


def test_a_node_missing_its_table_beside_an_unobserved_one_names_both() -> None:
    snapshot = load_snapshot(RECORDED)
    nodes = dict(snapshot.nodes)
    nodes["node-1"] = replace(nodes["node-1"], error="ssh: connect to host: Connection refused")
    node_3 = nodes["node-3"]
    nodes["node-3"] = replace(
        node_3, files={k: v for k, v in node_3.files.items() if "ip_vs" not in k and "Ln" not in k}
    )
    facts = Facts.from_snapshot(replace(snapshot, nodes=nodes))
    case = Case(REAL_SERVERS, ServicePortKey("default/redis", 6379, L4Protocol.TCP))
    result = run_case(case, facts, DEFAULTS)
    assert result.outcome is Outcome.FAILED
    assert {v.node for v in result.violations} == {"node-2"}
    assert result.reason.startswith("node-1 could not be observed: ssh: connect")
    assert "; node-3: no ipvsadm-Ln.txt" in result.reason


def test_with_no_node_observed_a_service_port_item_skips_never_passes() -> None:
    snapshot = load_snapshot(RECORDED)
    nodes = {name: replace(node, error="ssh: refused") for name, node in snapshot.nodes.items()}
    facts = Facts.from_snapshot(replace(snapshot, nodes=nodes))
    case = Case(REAL_SERVERS, ServicePortKey("default/web", 80, L4Protocol.TCP))
    result = run_case(case, facts, DEFAULTS)
    assert result.outcome is Outcome.SKIPPED
    assert result.unseen == ("node-1", "node-2", "node-3")


def test_a_node_without_ipvs_is_one_failure_not_also_a_missing_kube_ipvs0() -> None:
    snapshot = load_snapshot(RECORDED)
    node = snapshot.nodes["node-3"]
    gone = ("ipvsadm-Ln.txt", "proc-ip_vs.txt", "ipvsadm-timeout.txt", "ip_vs_conn.txt")
    files = {k: v for k, v in node.files.items() if k not in gone}
    for name in ("ip-addr.json", "ip-link.json"):  # kube-proxy in iptables mode: no kube-ipvs0
        interfaces = [i for i in json.loads(files[name]) if i["ifname"] != "kube-ipvs0"]
        files[name] = json.dumps(interfaces)
    absent = "/proc/net/ip_vs absent: ip_vs module not loaded"
    missing = dict.fromkeys(gone, absent)
    nodes = {**snapshot.nodes, "node-3": replace(node, files=files, missing=missing)}
    facts = Facts.from_snapshot(replace(snapshot, nodes=nodes))
    present = run_case(Case(check_by_id("ipvs-present"), NodeSubject("node-3")), facts, DEFAULTS)
    assert present.outcome is Outcome.FAILED
    holds = check_by_id("kube-ipvs0-holds-service-ips")
    result = run_case(Case(holds, NodeSubject("node-3")), facts, DEFAULTS)
    assert result.outcome is Outcome.SKIPPED
    assert result.reason == f"node-3: no IPVS here, so no kube-ipvs0: {absent}"


def _in_mode(mode: str | None) -> Facts:
    """The recorded IPVS snapshot with its ConfigMap saying another mode, or without one."""
    snapshot = load_snapshot(RECORDED)
    cluster = dict(snapshot.cluster)
    if mode is None:
        del cluster["kube-proxy.json"]
    else:
        config = json.loads(cluster["kube-proxy.json"])
        text = config["data"]["config.conf"]
        config["data"]["config.conf"] = text.replace("mode: ipvs", f"mode: {mode}")
        cluster["kube-proxy.json"] = json.dumps(config)
    return Facts.from_snapshot(replace(snapshot, cluster=cluster))


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs", None])
def test_a_check_of_other_modes_skips_saying_so_before_it_reads_anything(mode: str | None) -> None:
    """Each check's declared modes decide, in one place, where its items run (issue 19)."""
    facts = _in_mode(mode)
    for check in CATALOGUE:
        if check.modes is None:
            continue
        applies = ProxyMode(mode) in check.modes if mode else ProxyMode.IPVS in check.modes
        for case in itertools.islice(cases_for(check, facts), 3):
            result = run_case(case, facts, DEFAULTS)
            skipped_for_mode = result.outcome is Outcome.SKIPPED and result.other_mode
            assert skipped_for_mode is (
                "checks do not apply" in result.reason or "checks need mode" in result.reason
            )
            assert skipped_for_mode is not applies, (check.id, mode, result.reason)


def test_a_check_of_another_mode_is_one_item_not_one_per_subject() -> None:
    """On an IPVS cluster each nftables check is one skipped item (6,250 ports would make
    31,000 of them otherwise, a third of a big IPVS replay's time), and each IPVS check keeps
    its item per subject."""
    facts = _in_mode("ipvs")
    for check in CATALOGUE:
        cases = list(cases_for(check, facts))
        if check.modes is not None and ProxyMode.IPVS not in check.modes:
            assert [case.id for case in cases] == ["other kube-proxy mode"], check.id
            assert run_case(cases[0], facts, DEFAULTS).other_mode, check.id
        else:
            assert len(cases) == len(list(check.scope.subjects(facts))), check.id
