"""The gate end to end with pytester: waivers, --vipcheck-fail-on, the baseline, exit codes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from vipcheck.cli import SUITES_DIR

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parents[2]
RECORDED = ROOT / "fixtures" / "recorded" / "seed-incidents"
RP_FILTER_ID = "test_rp_filter_not_strict[node-2/tunl0]"


def run_suites(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(RECORDED), *args
    )


def write_waivers(pytester: pytest.Pytester, *entries: dict[str, str]) -> Path:
    path = pytester.path / "waivers.yaml"
    lines = ["waivers:"]
    for entry in entries:
        lines += [
            f"  - {k}: {v}" if i == 0 else f"    {k}: {v}" for i, (k, v) in enumerate(entry.items())
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def summary(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "summary.json").read_text())
    return data


def record(data: dict[str, Any], check: str, subject: str) -> dict[str, Any]:
    return next(r for r in data["results"] if r["check"] == check and r["subject"] == subject)


RP_WAIVER = {
    "check": "rp-filter-not-strict",
    "node": "node-2",
    "reason": "tunnel replaced in Q1",
    "owner": "alice@example.com",
    "expires": "2999-01-31",
}


def test_a_live_waiver_reports_the_failure_as_waived_everywhere(pytester: pytest.Pytester) -> None:
    waivers = write_waivers(pytester, RP_WAIVER)
    result = run_suites(
        pytester, "-k", "rp_filter", "--vipcheck-waivers", str(waivers),
        "--vipcheck-json", "summary.json", "--junitxml", "junit.xml", "-v",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes["waived"] == 1
    assert "failed" not in outcomes
    assert "skipped" not in outcomes
    result.stdout.fnmatch_lines(["*test_rp_filter_not_strict[[]node-2/tunl0[]] WAIVED*"])
    result.stdout.fnmatch_lines(
        ["vipcheck: waived: rp-filter-not-strict node-2/tunl0: tunnel replaced in Q1 "
         "(alice@example.com, until 2999-01-31)"]
    )  # fmt: skip
    waived = record(summary(pytester), "rp-filter-not-strict", "node-2/tunl0")
    assert waived["outcome"] == "waived"
    assert waived["waiver"]["reason"] == "tunnel replaced in Q1"
    assert waived["waiver"]["owner"] == "alice@example.com"
    assert waived["waiver"]["expires"] == "2999-01-31"
    assert waived["violations"], "the waived violations stay in the record"
    assert summary(pytester)["totals"]["waived"] == 1
    case = next(
        c for c in ET.parse(pytester.path / "junit.xml").iter("testcase")  # noqa: S314 (ours)
        if c.get("name") == RP_FILTER_ID
    )  # fmt: skip
    assert case.find("skipped") is not None
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["vipcheck_outcome"] == "waived"
    assert properties["vipcheck_waiver_owner"] == "alice@example.com"
    assert properties["vipcheck_waiver_expires"] == "2999-01-31"
    assert properties["vipcheck_waiver_reason"] == "tunnel replaced in Q1"


def test_an_expired_waiver_fails_naming_its_date_and_owner(pytester: pytest.Pytester) -> None:
    waivers = write_waivers(pytester, {**RP_WAIVER, "expires": "2020-06-30"})
    result = run_suites(
        pytester, "-k", "rp_filter", "--vipcheck-waivers", str(waivers),
        "--vipcheck-json", "summary.json",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["*waiver expired on 2020-06-30 (alice@example.com)*"])
    failed = record(summary(pytester), "rp-filter-not-strict", "node-2/tunl0")
    assert failed["outcome"] == "failed"
    assert failed["waiver"]["expired"] is True


def test_waivers_that_match_nothing_are_listed_at_the_end(pytester: pytest.Pytester) -> None:
    stray = {**RP_WAIVER, "node": "node-9", "owner": "bob"}
    waivers = write_waivers(pytester, RP_WAIVER, stray)
    result = run_suites(pytester, "-k", "rp_filter", "--vipcheck-waivers", str(waivers))
    result.stdout.fnmatch_lines(
        ["vipcheck: waiver matched nothing in this run (remove it?): rp-filter-not-strict "
         "node=node-9 (bob, *) [[]*waivers.yaml:7[]]"]
    )  # fmt: skip
    assert "node=node-2 (alice" not in result.stdout.str().split("matched nothing")[-1]


def test_a_waiver_whose_items_k_deselected_is_listed_apart(pytester: pytest.Pytester) -> None:
    tcpfin = {**RP_WAIVER, "check": "ipvs-tcpfin-timeout", "owner": "carol"}
    stray = {**RP_WAIVER, "node": "node-9", "owner": "bob"}
    waivers = write_waivers(pytester, tcpfin, stray)
    result = run_suites(pytester, "-k", "rp_filter", "--vipcheck-waivers", str(waivers))
    result.stdout.fnmatch_lines(
        ["vipcheck: waiver not judged in this run (its items were deselected, -k or -m): "
         "ipvs-tcpfin-timeout node=node-2 (carol, *) [[]*waivers.yaml:2[]]",
         "vipcheck: waiver matched nothing in this run (remove it?): rp-filter-not-strict "
         "node=node-9 (bob, *) [[]*waivers.yaml:7[]]"]
    )  # fmt: skip
    assert "remove it?): ipvs-tcpfin-timeout" not in result.stdout.str()


def test_the_waivers_file_can_come_from_the_ini_file(pytester: pytest.Pytester) -> None:
    write_waivers(pytester, RP_WAIVER)
    pytester.makeini("[pytest]\nvipcheck_waivers = waivers.yaml\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pyargs", "vipcheck.suites", "--from-snapshot", str(RECORDED),
        "-k", "rp_filter",
    )  # fmt: skip
    assert result.parseoutcomes().get("waived") == 1, result.stdout.str()


def test_a_malformed_waivers_file_is_a_usage_error_naming_line_and_field(
    pytester: pytest.Pytester,
) -> None:
    waivers = write_waivers(pytester, {**RP_WAIVER, "expires": "next year"})
    result = run_suites(pytester, "--vipcheck-waivers", str(waivers))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: {waivers}:6: field 'expires': expected a date YYYY-MM-DD, got 'next year'"]
    )
    missing = run_suites(pytester, "--vipcheck-waivers", str(pytester.path / "nope.yaml"))
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["ERROR: *nope.yaml: cannot read*"])
    for run in (result, missing):
        assert "Traceback" not in run.stdout.str() + run.stderr.str()


@pytest.mark.parametrize(
    ("keyword", "fail_on", "code"),
    [
        ("tcpfin", "warning", pytest.ExitCode.TESTS_FAILED),  # warning fails at the default
        ("tcpfin", "critical", pytest.ExitCode.OK),  # shown and counted, not failing
        ("rp_filter", "critical", pytest.ExitCode.TESTS_FAILED),
        ("tcpfin", "info", pytest.ExitCode.TESTS_FAILED),
    ],
)
def test_fail_on_sets_the_lowest_severity_that_fails_the_run(
    pytester: pytest.Pytester, keyword: str, fail_on: str, code: pytest.ExitCode
) -> None:
    result = run_suites(pytester, "-k", keyword, "--vipcheck-fail-on", fail_on)
    assert result.ret == code, result.stdout.str()
    assert result.parseoutcomes()["failed"] >= 1  # failures are shown and counted either way
    if code == pytest.ExitCode.OK:
        result.stdout.fnmatch_lines(
            ["vipcheck: 3 failure(s) below --vipcheck-fail-on=critical (3 warning): shown and "
             "counted, not failing the run"]
        )  # fmt: skip


def test_an_error_fails_the_run_whatever_the_severity_level(pytester: pytest.Pytester) -> None:
    snapshot = pytester.path / "snap"
    shutil.copytree(RECORDED, snapshot)
    (snapshot / "nodes" / "node-3" / "error.txt").write_text("ssh: connect to host: refused\n")
    # The unseen node is one ERROR, its node-observed item; its tcpfin item skips pointing there.
    result = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(snapshot),
        "-k", "tcpfin or node_observed", "--vipcheck-fail-on", "critical",
    )  # fmt: skip
    assert result.parseoutcomes()["errors"] == 1
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # Without its node-observed item, the unseen node still keeps the run from exiting 0.
    result = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(snapshot),
        "-k", "tcpfin", "--vipcheck-fail-on", "critical",
    )  # fmt: skip
    assert "errors" not in result.parseoutcomes()
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_bad_fail_on_level_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_suites(pytester, "--vipcheck-fail-on", "fatal")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vipcheck-fail-on*invalid choice*fatal*"])


def test_a_baseline_fails_only_what_is_new_and_counts_what_it_carried(
    pytester: pytest.Pytester,
) -> None:
    before = run_suites(pytester, "--vipcheck-json", "before.json", "--no-probe")
    failed_before = before.parseoutcomes()["failed"]
    same = run_suites(pytester, "--vipcheck-baseline", "before.json", "--no-probe")
    assert same.ret == pytest.ExitCode.OK, same.stdout.str()
    assert same.parseoutcomes()["known"] == failed_before
    same.stdout.fnmatch_lines(
        [f"vipcheck: baseline before.json: carried {failed_before} known failure(s)*"]
    )
    # Something new: node-3 turns strict (conf/all), so its tunnel is (eth0 says 2 itself).
    snapshot = pytester.path / "snap"
    shutil.copytree(RECORDED, snapshot)
    sysctl = snapshot / "nodes" / "node-3" / "sysctl.txt"
    sysctl.write_text(
        sysctl.read_text().replace(
            "net.ipv4.conf.all.rp_filter = 2", "net.ipv4.conf.all.rp_filter = 1"
        )
    )
    new = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(snapshot), "--no-probe",
        "--vipcheck-baseline", "before.json", "-rf",
    )  # fmt: skip
    assert new.ret == pytest.ExitCode.TESTS_FAILED
    assert new.parseoutcomes()["failed"] == 1, new.stdout.str()
    assert new.parseoutcomes()["known"] == failed_before
    new.stdout.fnmatch_lines(["FAILED *test_rp_filter_not_strict[[]node-3/tunl0[]]*"])


def test_a_baseline_that_is_no_summary_is_a_usage_error(pytester: pytest.Pytester) -> None:
    (pytester.path / "nope.json").write_text('{"totals": {}}')
    result = run_suites(pytester, "--vipcheck-baseline", "nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: nope.json: not a vipcheck JSON summary*"])
