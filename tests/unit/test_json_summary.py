"""The JSON summary, streamed, and the end-of-run summary grouped by check."""

from __future__ import annotations

import json
from pathlib import Path

from vipcheck.cases import Case, Outcome, Result
from vipcheck.checks.base import FindingKind, NodeSubject, Violation
from vipcheck.checks.handshake import VIP_HANDSHAKE
from vipcheck.checks.kube_ipvs0 import KUBE_IPVS0_HOLDS_SERVICE_IPS
from vipcheck.checks.real_servers import REAL_SERVERS_MATCH_ENDPOINTS
from vipcheck.checks.timeouts import TCPFIN_TIMEOUT
from vipcheck.json_summary import Summary, grouped_by_check, unjudged_critical
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import L4Protocol


def _violation(node: str) -> Violation:
    return Violation(FindingKind.STALE_REAL_SERVER, "s", node, "observed", "expected", "fix")


def _port(index: int) -> Case[ServicePortKey]:
    return Case(REAL_SERVERS_MATCH_ENDPOINTS, ServicePortKey(f"ns/svc-{index}", 80, L4Protocol.TCP))


def _results() -> list[Result]:
    results = [Result(_port(i), Outcome.FAILED, (_violation(f"node-{i % 3}"),)) for i in range(8)]
    results += [Result(_port(i), Outcome.PASSED) for i in range(8, 20)]
    results += [
        Result(Case(TCPFIN_TIMEOUT, NodeSubject("node-1")), Outcome.ERROR, reason="unreadable"),
        Result(Case(TCPFIN_TIMEOUT, NodeSubject("node-2")), Outcome.PASSED),
        Result(Case(KUBE_IPVS0_HOLDS_SERVICE_IPS, NodeSubject("node-1")), Outcome.PASSED),
    ]
    return results


def test_grouped_summary_counts_failing_subjects_and_nodes_naming_the_first() -> None:
    lines = grouped_by_check(_results(), first=3)
    assert lines == [
        "ipvs-real-servers-match-endpoints [critical]: 8 failed of 20 service port item(s), "
        "on 3 nodes (node-0, node-1, node-2)",
        "    failed: ns/svc-0:80/TCP, ns/svc-1:80/TCP, ns/svc-2:80/TCP and 5 more",
        "ipvs-tcpfin-timeout [warning]: 1 error of 2 node item(s)",
        "    error: node-1",
    ]


def test_a_clean_run_has_no_grouped_summary() -> None:
    passed = [r for r in _results() if r.outcome is Outcome.PASSED]
    assert grouped_by_check(passed) == []


def test_the_streamed_json_is_the_summary(tmp_path: Path) -> None:
    summary = Summary()
    for result in _results():
        summary.add(result)
    path = tmp_path / "deeper" / "summary.json"
    summary.write(path)
    assert json.loads(path.read_text()) == summary.as_json()
    assert json.loads(path.read_text())["totals"] == {
        "passed": 14,
        "failed": 8,
        "error": 1,
        "skipped": 0,
        "waived": 0,
        "known": 0,
    }
    empty = tmp_path / "empty.json"
    Summary().write(empty)
    assert json.loads(empty.read_text()) == {"totals": Summary().totals(), "results": []}


def test_critical_items_not_judged_are_counted_naming_the_first_reason() -> None:
    def vip(index: int, outcome: Outcome, reason: str = "") -> Result:
        key = ServicePortKey(f"ns/svc-{index}", 80, L4Protocol.TCP)
        return Result(Case(VIP_HANDSHAKE, key), outcome, reason=reason)

    cut = "10.96.0.1:80 from client: 1 not attempted within the probe's time cap (--probe-total)"
    results = [vip(0, Outcome.PASSED), vip(1, Outcome.SKIPPED, cut), vip(2, Outcome.SKIPPED, "x")]
    # A skipped warning (tcpfin's, unconfirmed without ipvsadm) is not listed: not critical.
    results.append(Result(Case(TCPFIN_TIMEOUT, NodeSubject("node-2")), Outcome.SKIPPED))
    # Nor a critical check of another kube-proxy mode: nothing it would prove is missing.
    other = "kube-proxy mode is nftables: IPVS checks do not apply"
    ipvs_port = Case(REAL_SERVERS_MATCH_ENDPOINTS, ServicePortKey("ns/svc-0", 80, L4Protocol.TCP))
    results.append(Result(ipvs_port, Outcome.SKIPPED, reason=other, other_mode=True))
    assert unjudged_critical(results) == [
        "vip-handshake [critical]: 2 of 3 TCP Service port, probed item(s) not judged (skipped)",
        f"    first: ns/svc-1:80/TCP: {cut}",
    ]
    assert unjudged_critical(_results()) == []
