"""Cases that span nodes: what the observed nodes show still fails; a pass needs every node."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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
