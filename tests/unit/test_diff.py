"""`vipcheck diff`: new, resolved, unchanged, incomparable; handshakes per VIP and vantage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vipcheck.diff import SHOWN, compare, write_json
from vipcheck.saved_summaries import SummaryError, load_summary
from vipcheck.snapshot import MAX_FILE_BYTES

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded" / "seed-incidents"
VIPCHECK = [sys.executable, "-m", "vipcheck.cli"]


def record(check: str, subject: str, node: str | None, outcome: str, *nodes: str) -> Any:
    violations: list[dict[str, Any]] = [
        {"node": n, "subject": subject, "observed": f"bad on {n}"} for n in nodes
    ]
    if outcome == "failed" and not violations:
        violations = [{"node": node, "subject": subject, "observed": "bad"}]
    return {
        "check": check,
        "subject": subject,
        "node": node,
        "outcome": outcome,
        "violations": violations,
    }


def summary(*records: Any) -> dict[str, Any]:
    return {"results": list(records)}


def handshake(outcome: str, *targets: tuple[str, str]) -> Any:
    return {
        "check": "vip-handshake",
        "subject": "default/api:80/TCP",
        "node": None,
        "outcome": outcome,
        "violations": [{"node": v, "subject": t, "observed": "2 TIMEOUT"} for t, v in targets],
    }


RP = "rp-filter-not-strict"
STALE = "ipvs-real-servers-match-endpoints"


def keys(findings: list[Any]) -> set[tuple[str, str, str | None]]:
    return {f.key() for f in findings}


def test_failures_are_new_resolved_or_unchanged_by_check_subject_and_node() -> None:
    before = summary(
        record(RP, "node-2/tunl0", "node-2", "failed"),
        record(RP, "node-3/tunl0", "node-3", "passed"),
        record(STALE, "default/redis:6379/TCP", None, "failed", "node-1", "node-2"),
    )
    after = summary(
        record(RP, "node-2/tunl0", "node-2", "passed"),
        record(RP, "node-3/tunl0", "node-3", "failed"),
        record(STALE, "default/redis:6379/TCP", None, "waived", "node-2", "node-3"),
    )
    diff = compare(before, after, ("before", "after"))
    assert keys(diff.new) == {
        (RP, "node-3/tunl0", "node-3"),
        (STALE, "default/redis:6379/TCP", "node-3"),
    }
    assert keys(diff.resolved) == {
        (RP, "node-2/tunl0", "node-2"),
        (STALE, "default/redis:6379/TCP", "node-1"),
    }
    assert keys(diff.unchanged) == {(STALE, "default/redis:6379/TCP", "node-2")}
    assert diff.incomparable == []
    assert diff.exit_code == 1


def test_subjects_on_one_side_only_are_incomparable_never_fixed_or_broken() -> None:
    before = summary(
        record(RP, "node-3/tunl0", "node-3", "failed"),  # node-3 is gone after
        record(STALE, "default/old:80/TCP", None, "failed", "node-1"),  # Service removed
        record(RP, "node-1/tunl0", "node-1", "failed"),  # cannot be observed after
        record(RP, "node-2/tunl0", "node-2", "passed"),
    )
    after = summary(
        record(RP, "node-1/tunl0", "node-1", "error"),
        record(RP, "node-2/tunl0", "node-2", "passed"),
        record(STALE, "default/new:80/TCP", None, "failed", "node-2"),  # Service added
    )
    diff = compare(before, after, ("before", "after"))
    assert diff.new == []
    assert diff.resolved == []
    why = {f.key(): f.why for f in diff.incomparable}
    assert why == {
        (RP, "node-3/tunl0", "node-3"): "node node-3 is not in after",
        (STALE, "default/old:80/TCP", "node-1"): "default/old:80/TCP is not in after",
        (RP, "node-1/tunl0", "node-1"): "node-1/tunl0 was not judged in after (error)",
        (STALE, "default/new:80/TCP", "node-2"): "default/new:80/TCP is not in before",
    }
    assert diff.only_before == {"Service ports": ["default/old:80/TCP"], "nodes": ["node-3"]}
    assert diff.only_after == {"Service ports": ["default/new:80/TCP"]}
    assert diff.exit_code == 0


def test_handshakes_compare_per_vip_and_vantage_point() -> None:
    before = summary(handshake("failed", ("ClusterIP 10.96.0.40:80 from client", "client")))
    after = summary(handshake("failed", ("NodePort 192.168.58.11:30080 from node-2", "node-2")))
    diff = compare(before, after, ("before", "after"))
    assert diff.became_unreachable == [
        "default/api:80/TCP NodePort 192.168.58.11:30080 from node-2: 2 TIMEOUT"
    ]
    assert diff.became_reachable == [
        "default/api:80/TCP ClusterIP 10.96.0.40:80 from client (was: 2 TIMEOUT)"
    ]
    assert keys(diff.new) == {("vip-handshake", "default/api:80/TCP", "node-2")}
    assert keys(diff.resolved) == {("vip-handshake", "default/api:80/TCP", "client")}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIPCHECK, "diff", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def test_vipcheck_diff_runs_the_checks_on_snapshots_and_exits_1_on_anything_new(
    tmp_path: Path,
) -> None:
    after = tmp_path / "after"
    shutil.copytree(RECORDED, after)
    # node-2's rp_filter fixed; node-3 made strict.
    for node, old, new in (("node-2", "all.rp_filter = 1", "all.rp_filter = 2"),
                           ("node-2", "tunl0.rp_filter = 1", "tunl0.rp_filter = 2"),
                           ("node-3", "all.rp_filter = 2", "all.rp_filter = 1")):  # fmt: skip
        sysctl = after / "nodes" / node / "sysctl.txt"
        text = sysctl.read_text()
        assert f"net.ipv4.conf.{old}" in text
        sysctl.write_text(text.replace(f"net.ipv4.conf.{old}", f"net.ipv4.conf.{new}"))
    result = run(str(RECORDED), str(after), "--json", "diff.json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  rp-filter-not-strict node-3/tunl0 on node-3: rp_filter effective=1" in result.stdout
    data = json.loads((tmp_path / "diff.json").read_text())
    assert [(f["check"], f["subject"]) for f in data["new"]] == [(RP, "node-3/tunl0")]
    assert [(f["check"], f["subject"]) for f in data["resolved"]] == [(RP, "node-2/tunl0")]
    assert len(data["unchanged"]) >= 4

    same = run(str(RECORDED), str(RECORDED), cwd=tmp_path)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "0 new, 0 resolved" in same.stdout


def test_a_json_summary_and_a_snapshot_compare_alike(tmp_path: Path) -> None:
    summary_file = tmp_path / "before.json"
    subprocess.run(
        [*VIPCHECK, "--from-snapshot", str(RECORDED), "--vipcheck-json", str(summary_file), "-q"],
        cwd=tmp_path, capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    result = run(str(summary_file), str(RECORDED), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 new, 0 resolved" in result.stdout
    assert "0 incomparable" in result.stdout


@pytest.mark.parametrize("how", ["-c", "-o"])
def test_a_snapshot_is_judged_with_the_runs_ini_thresholds(tmp_path: Path, how: str) -> None:
    """The seed's 120 s tcpfin timeout fails the default 30 s threshold, not a raised one: the
    snapshot side judges as the run did, with its ini file or -o."""
    (tmp_path / "vipcheck.ini").write_text("[pytest]\nvipcheck_tcpfin_timeout_max_s = 200\n")
    ini = ["-c", "vipcheck.ini"] if how == "-c" else ["-o", "vipcheck_tcpfin_timeout_max_s=200"]
    subprocess.run(
        [*VIPCHECK, "--from-snapshot", str(RECORDED), "--vipcheck-json", "run.json", "-q", *ini],
        cwd=tmp_path, capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    run_json = json.loads((tmp_path / "run.json").read_text())
    tcpfin = [r for r in run_json["results"] if r["check"] == "ipvs-tcpfin-timeout"]
    assert tcpfin
    assert all(r["outcome"] == "passed" for r in tcpfin)
    same = run("run.json", str(RECORDED), *ini, cwd=tmp_path)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "0 new, 0 resolved" in same.stdout
    defaults = run("run.json", str(RECORDED), cwd=tmp_path)
    assert defaults.returncode == 1, defaults.stdout + defaults.stderr
    assert "ipvs-tcpfin-timeout" in defaults.stdout


def test_a_bad_threshold_for_snapshots_is_a_usage_error(tmp_path: Path) -> None:
    result = run(str(RECORDED), str(RECORDED), "-o", "vipcheck_syn_recv_max=many", cwd=tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "ini option vipcheck_syn_recv_max: not an integer: 'many'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.json", "missing.json: cannot read"),
        (lambda d: (d / "x.json").write_text("{nope") and d / "x.json", "x.json:1: not JSON"),
        (lambda d: (d / "y.json").write_text("[]") and d / "y.json", "y.json: not a vipcheck"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty: no cluster/*.json"),
    ],
)  # fmt: skip
def test_bad_input_is_a_usage_error_naming_the_file(
    tmp_path: Path, make: Any, message: str
) -> None:
    bad = make(tmp_path)
    result = run(str(RECORDED), str(bad), cwd=tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_arguments_are_a_usage_error(tmp_path: Path) -> None:
    result = run(str(RECORDED), cwd=tmp_path)
    assert result.returncode == 4
    assert "vipcheck diff: error: the following arguments are required: after" in result.stderr


DEEP = "[" * 100_000 + "]" * 100_000


def side(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DEEP, "JSON nested too deeply to read"),
        ('{"results": [{"check": "a", "subject": "b", "outcome": "failed", "violations": [1]}]}',
         "results[0]: violations: expected a list of objects"),
        ('{"results": [{"check": "a", "subject": ["b"], "outcome": "failed"}]}',
         "results[0]: subject: expected a string"),
        ('{"results": [{"check": "a", "subject": "b", "outcome": {}}]}',
         "results[0]: outcome: expected a string"),
        ('{"results": [{"check": "a", "subject": "b", "node": {}, "outcome": "failed"}]}',
         "results[0]: node: expected a string or null"),
        ('{"results": [{"check": "a", "subject": "b", "outcome": "failed",'
         ' "violations": [{"node": []}]}]}',
         "results[0]: violations: node: expected a string or null"),
        ('{"results": [{"check": "a"}]}',
         "results[0]: expected a record with check, subject and outcome"),
    ],
    ids=["deep", "violation-not-object", "subject-list", "outcome-object", "node-object",
         "violation-node-list", "keys-missing"],
)  # fmt: skip
def test_a_summary_not_shaped_as_vipcheck_writes_is_refused_naming_the_record(
    tmp_path: Path, text: str, message: str
) -> None:
    # Each of these made the diff or the baseline raise (RecursionError, TypeError, ...).
    with pytest.raises(SummaryError) as raised:
        load_summary(side(tmp_path, "side.json", text), MAX_FILE_BYTES)
    assert str(raised.value) == f"{tmp_path}/side.json: {message}"


@pytest.mark.parametrize(
    ("which", "text", "message"),
    [("before", DEEP, "JSON nested too deeply to read"),
     ("after", DEEP, "JSON nested too deeply to read"),
     ("after", '{"results": [{"check": "a", "subject": "b", "node": {}, "outcome": "failed"}]}',
      "results[0]: node: expected a string or null")],
)  # fmt: skip
def test_a_malformed_side_is_exit_4_in_one_line_never_a_traceback_or_exit_1(
    tmp_path: Path, which: str, text: str, message: str
) -> None:
    # Before issue 23: a RecursionError or TypeError traceback, and exit 1 ("something is new").
    good = side(tmp_path, "good.json", json.dumps(summary(record(RP, "n/t", "n", "failed"))))
    bad = side(tmp_path, "side.json", text)
    sides = (bad, good) if which == "before" else (good, bad)
    result = run(*map(str, sides), cwd=tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"vipcheck diff: error: {tmp_path}/side.json: {message}"]
    assert result.stdout == ""


def test_a_side_that_is_a_fifo_or_too_big_is_exit_4_without_blocking(tmp_path: Path) -> None:
    good = side(tmp_path, "good.json", json.dumps(summary()))
    os.mkfifo(tmp_path / "fifo.json")
    fifo = run(str(tmp_path / "fifo.json"), str(good), cwd=tmp_path)
    assert fifo.returncode == 4
    assert f"{tmp_path}/fifo.json: a FIFO, not a summary (a regular file)" in fifo.stderr
    records = [record(RP, f"n/{i}", "n", "passed") for i in range(100)]
    big = side(tmp_path, "big.json", json.dumps(summary(*records)))
    refused = run(str(good), str(big), "--vipcheck-max-file-size", "4K", cwd=tmp_path)
    assert refused.returncode == 4
    assert f"{tmp_path}/big.json: 11 KiB, more than the 4 KiB a summary may hold" in (
        refused.stderr
    )
    assert run(str(good), str(big), "--vipcheck-max-file-size", "1M", cwd=tmp_path).returncode == 0


def test_a_long_diff_prints_a_bounded_number_of_lines_and_json_keeps_all(tmp_path: Path) -> None:
    before = summary(*(record(RP, f"node-{i}/tunl0", f"node-{i}", "passed") for i in range(10_000)))
    after = summary(*(record(RP, f"node-{i}/tunl0", f"node-{i}", "failed") for i in range(10_000)))
    diff = compare(before, after, ("before.json", "after.json"))
    assert len(diff.new) == 10_000
    lines = list(diff.lines(tmp_path / "diff.json"))
    assert len(lines) < 2 * SHOWN
    assert f"  ... and {10_000 - SHOWN:,} more (see {tmp_path}/diff.json)" in lines
    assert "  ... and 9,950 more (--json FILE lists them all)" in diff.lines()
    write_json(diff, tmp_path / "diff.json")
    assert len(json.loads((tmp_path / "diff.json").read_text())["new"]) == 10_000


def test_many_subjects_on_one_side_are_named_up_to_the_bound() -> None:
    before = summary(*(record(STALE, f"default/s{i}:80/TCP", None, "passed") for i in range(500)))
    line = next(
        line for line in compare(before, summary(), ("a", "b")).lines() if "Service ports" in line
    )
    assert line.endswith(", ... and 450 more (--json FILE lists them all)")
    assert line.count(", ") == SHOWN


def test_every_printed_line_shows_control_characters_escaped() -> None:
    hostile = "default/x\x1b]0;owned\x07:80/TCP\n  resolved (0):"
    before = summary(record(STALE, hostile, None, "passed"))
    after = summary(record(STALE, hostile, None, "failed", "node-\x1b[2J1"))
    lines = list(compare(before, after, ("before\x1b[2J", "after")).lines())
    assert not any(ch in line for line in lines for ch in "\x1b\x07\n")
    assert "vipcheck diff: before\\x1b[2J -> after" in lines
    assert any("default/x\\x1b]0;owned\\x07:80/TCP\\n  resolved (0):" in line for line in lines)
