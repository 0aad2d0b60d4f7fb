"""Cases that span nodes: what the observed nodes show still fails; a pass needs every node."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vipcheck.cases import Case, Outcome, render, run_case
from vipcheck.checks import check_by_id
from vipcheck.checks.base import NodeSubject
from vipcheck.facts import Facts
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import Protocol
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
    case = Case(REAL_SERVERS, ServicePortKey("default/redis", 6379, Protocol.TCP))
    result = run_case(case, facts_without_node_3(), DEFAULTS)
    assert result.outcome is Outcome.FAILED
    assert {v.node for v in result.violations} == {"node-1", "node-2"}
    assert "also not observed: node-3 could not be observed: ssh: connect" in render(result)


def test_no_violation_on_observed_nodes_is_an_error_not_a_pass() -> None:
    case = Case(REAL_SERVERS, ServicePortKey("default/web", 80, Protocol.TCP))
    result = run_case(case, facts_without_node_3(), DEFAULTS)
    assert result.outcome is Outcome.ERROR
    assert result.reason == "node-3 could not be observed: ssh: connect to host: Connection refused"


def test_node_cases_of_the_unobserved_node_error() -> None:
    case = Case(check_by_id("ipvs-tcpfin-timeout"), NodeSubject("node-3"))
    result = run_case(case, facts_without_node_3(), DEFAULTS)
    assert result.outcome is Outcome.ERROR
    assert "node-3 could not be observed" in result.reason


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
    case = Case(REAL_SERVERS, ServicePortKey("default/redis", 6379, Protocol.TCP))
    result = run_case(case, facts_without_ipvs_table_on_node_3(), DEFAULTS)
    assert result.outcome is Outcome.FAILED
    assert {v.node for v in result.violations} == {"node-1", "node-2"}
    assert result.reason.startswith("node-3: no ipvsadm-Ln.txt (`ipvsadm -Ln --exact`) or ")
    assert result.reason.endswith(": ipvsadm not installed")


@pytest.mark.parametrize(
    "check", ["ipvs-real-servers-match-endpoints", "ipvs-virtual-servers-complete"]
)
def test_no_violation_on_the_judged_nodes_skips_naming_the_unjudged_one(check: str) -> None:
    case = Case(check_by_id(check), ServicePortKey("default/web", 80, Protocol.TCP))
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
    case = Case(REAL_SERVERS, ServicePortKey("default/redis", 6379, Protocol.TCP))
    result = run_case(case, facts, DEFAULTS)
    assert result.outcome is Outcome.FAILED
    assert {v.node for v in result.violations} == {"node-2"}
    assert result.reason.startswith("node-1 could not be observed: ssh: connect")
    assert "; node-3: no ipvsadm-Ln.txt" in result.reason
