"""Waivers and the baseline, without pytest: what a failure becomes, and what a bad file says."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from vipcheck.cases import Case, Outcome, Result, run_case
from vipcheck.checks import CHECKS_BY_ID, check_by_id
from vipcheck.checks.base import InterfaceSubject, NodeSubject, Severity
from vipcheck.facts import Facts
from vipcheck.gate import Gate, blocks, finding_keys
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import L4Protocol
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import load_snapshot
from vipcheck.waivers import Waiver, WaiverError, parse_waivers

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded" / "seed-incidents"
TODAY = date(2026, 11, 30)
KNOWN = tuple(CHECKS_BY_ID)


@pytest.fixture(scope="module")
def facts() -> Facts:
    return Facts.from_snapshot(load_snapshot(RECORDED))


def rp_filter_failure(facts: Facts) -> Result:
    case = Case(check_by_id("rp-filter-not-strict"), InterfaceSubject("node-2", "tunl0"))
    return run_case(case, facts, DEFAULTS)


def stale_failure(facts: Facts) -> Result:
    key = ServicePortKey("default/redis", 6379, L4Protocol.TCP)
    return run_case(Case(check_by_id("ipvs-real-servers-match-endpoints"), key), facts, DEFAULTS)


def waiver(**fields: str) -> Waiver:
    text = "".join(f"  {k}: {v}\n" for k, v in fields.items())
    return parse_waivers("- " + text.lstrip(), "w.yaml", KNOWN)[0]


BASE = {"reason": "tunnel goes away", "owner": "alice", "expires": "2026-12-31"}


def test_a_live_waiver_waives_and_says_who_and_until_when(facts: Facts) -> None:
    failure = rp_filter_failure(facts)
    assert failure.outcome is Outcome.FAILED
    gate = Gate((waiver(check="rp-filter-not-strict", node="node-*", **BASE),), today=TODAY)
    judged = gate.judge(failure)
    assert judged.outcome is Outcome.WAIVED
    assert judged.waiver is not None
    assert judged.waiver.owner == "alice"
    assert judged.notes == ("waived by alice until 2026-12-31: tunnel goes away",)
    assert judged.violations == failure.violations
    assert gate.unmatched() == []


def test_the_waiver_holds_on_its_expiry_date_and_not_the_day_after(facts: Facts) -> None:
    only = waiver(check="rp-filter-not-strict", subject="node-2/tunl0", **BASE)
    on_the_day = Gate((only,), today=date(2026, 12, 31)).judge(rp_filter_failure(facts))
    assert on_the_day.outcome is Outcome.WAIVED
    after = Gate((only,), today=date(2027, 1, 1)).judge(rp_filter_failure(facts))
    assert after.outcome is Outcome.FAILED
    assert after.notes == ("waiver expired on 2026-12-31 (alice): tunnel goes away [w.yaml:1]",)


@pytest.mark.parametrize(
    ("selector", "waived"),
    [
        ({"subject": "node-2/tunl0"}, True),
        ({"subject": "node-2/*"}, True),
        ({"subject": "node-1/*"}, False),
        ({"node": "node-2"}, True),
        ({"node": "node-3"}, False),
        ({"subject": "node-2/eth0", "node": "node-2"}, False),
    ],
)
def test_subject_and_node_select_exactly_or_by_glob(
    facts: Facts, selector: dict[str, str], waived: bool
) -> None:
    gate = Gate((waiver(check="rp-filter-not-strict", **selector, **BASE),), today=TODAY)
    assert (gate.judge(rp_filter_failure(facts)).outcome is Outcome.WAIVED) == waived
    assert (gate.unmatched() == []) == waived


def test_a_service_port_is_waived_by_node_only_when_every_node_it_names_matches(
    facts: Facts,
) -> None:
    failure = stale_failure(facts)
    nodes = {v.node for v in failure.violations}
    assert nodes == {"node-1", "node-2", "node-3"}
    check = "ipvs-real-servers-match-endpoints"
    one = Gate((waiver(check=check, node="node-2", **BASE),), today=TODAY)
    assert one.judge(failure).outcome is Outcome.FAILED
    every = Gate((waiver(check=check, node="node-[123]", **BASE),), today=TODAY)
    assert every.judge(failure).outcome is Outcome.WAIVED


def test_passes_are_never_touched_and_another_check_is_not_waived(facts: Facts) -> None:
    gate = Gate((waiver(check="ipvs-tcpfin-timeout", node="node-2", **BASE),), today=TODAY)
    assert gate.judge(rp_filter_failure(facts)).outcome is Outcome.FAILED
    passed = run_case(
        Case(check_by_id("ip-forward-enabled"), NodeSubject("node-2")), facts, DEFAULTS
    )
    assert gate.judge(passed) is passed
    assert [w.check for w in gate.unmatched()] == ["ipvs-tcpfin-timeout"]


def test_a_waiver_whose_items_were_deselected_is_not_called_unused(facts: Facts) -> None:
    """-k left its items out: it is not judged in this run, which says nothing of its use."""
    tunl0 = Case(check_by_id("rp-filter-not-strict"), InterfaceSubject("node-2", "tunl0"))
    redis = Case(
        check_by_id("ipvs-real-servers-match-endpoints"),
        ServicePortKey("default/redis", 6379, L4Protocol.TCP),
    )
    on_node_2 = waiver(check="rp-filter-not-strict", node="node-2", **BASE)
    on_node_9 = waiver(check="rp-filter-not-strict", node="node-9", **BASE)
    # A Service port's nodes are known only once judged: a node-only waiver could match it.
    on_a_port = waiver(check="ipvs-real-servers-match-endpoints", node="node-2", **BASE)
    other_port = waiver(check="ipvs-real-servers-match-endpoints", subject="default/web:*", **BASE)
    gate = Gate((on_node_2, on_node_9, on_a_port, other_port), today=TODAY)
    gate.deselect((tunl0, redis))
    assert gate.deselected() == [on_node_2, on_a_port]
    assert gate.unmatched() == [on_node_9, other_port]


def test_a_waiver_that_matched_is_neither_unused_nor_deselected(facts: Facts) -> None:
    only = waiver(check="rp-filter-not-strict", node="node-2", **BASE)
    gate = Gate((only,), today=TODAY)
    gate.judge(rp_filter_failure(facts))
    gate.deselect((Case(check_by_id("rp-filter-not-strict"), NodeSubject("node-2")),))
    assert (gate.unmatched(), gate.deselected()) == ([], [])


def test_the_baseline_carries_known_failures_and_counts_them(facts: Facts) -> None:
    failure = rp_filter_failure(facts)
    gate = Gate(baseline=finding_keys(failure), baseline_source="before.json", today=TODAY)
    judged = gate.judge(failure)
    assert judged.outcome is Outcome.KNOWN
    assert judged.notes == ("known failure: already in the baseline before.json",)
    assert gate.judge(stale_failure(facts)).outcome is Outcome.FAILED
    assert gate.carried == 1


def test_a_baseline_does_not_carry_a_failure_whose_waiver_expired(facts: Facts) -> None:
    failure = rp_filter_failure(facts)
    expired = waiver(
        check="rp-filter-not-strict", node="node-2", **{**BASE, "expires": "2020-01-01"}
    )
    gate = Gate((expired,), baseline=finding_keys(failure), today=TODAY)
    assert gate.judge(failure).outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("severity", "fail_on", "fails"),
    [
        (Severity.CRITICAL, Severity.WARNING, True),
        (Severity.WARNING, Severity.WARNING, True),
        (Severity.INFO, Severity.WARNING, False),
        (Severity.WARNING, Severity.CRITICAL, False),
        (Severity.INFO, Severity.INFO, True),
    ],
)
def test_severity_below_fail_on_does_not_fail_the_run(
    severity: Severity, fail_on: Severity, fails: bool
) -> None:
    assert blocks(severity, fail_on) is fails


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- check: rp-filter-not-strict\n  node: node-2\n  owner: a\n  expires: 2027-01-01\n",
         "w.yaml:1: field 'reason': missing"),
        ("- check: rp-filter-not-strict\n  node: node-2\n  reason: r\n  owner: a\n"
         "  expires: soon\n", "w.yaml:5: field 'expires': expected a date YYYY-MM-DD, got 'soon'"),
        ("waivers:\n  - check: rp-filter\n    node: n\n    reason: r\n    owner: a\n"
         "    expires: 2027-01-01\n", "w.yaml:2: field 'check': no check 'rp-filter'; known: "),
        ("- check: rp-filter-not-strict\n  reason: r\n  owner: a\n  expires: 2027-01-01\n",
         "w.yaml:1: field 'subject': give a subject and/or a node"),
        ("- check: rp-filter-not-strict\n  node: n\n  reason: r\n  owner: a\n"
         "  expires: 2027-01-01\n  until: x\n", "w.yaml:6: field 'until': unknown"),
        ("- check: rp-filter-not-strict\n  node: [a, b]\n", "w.yaml:2: field 'node': expected"),
        ("waivers: [\n", "w.yaml:2: not YAML"),
        ("check: x\n", "w.yaml:1: expected a list of waivers"),
    ],
)  # fmt: skip
def test_a_malformed_waivers_file_names_line_and_field(text: str, message: str) -> None:
    with pytest.raises(WaiverError) as error:
        parse_waivers(text, "w.yaml", KNOWN)
    assert str(error.value).startswith(message), str(error.value)
