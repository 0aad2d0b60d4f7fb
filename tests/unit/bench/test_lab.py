"""The bench's lab mode (bench/lab.py): ABBA rounds, a raw gather that runs vipcheck's script,
pytest alone on as many no-op items."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import lab
from vipcheck.gather.node_script import build_node_script


def test_rounds_alternate_which_runs_first() -> None:
    assert lab.order(4) == [
        ("vipcheck", "raw", "pytest", "collect"),
        ("collect", "pytest", "raw", "vipcheck"),
        ("vipcheck", "raw", "pytest", "collect"),
        ("collect", "pytest", "raw", "vipcheck"),
    ]


def test_vipcheck_runs_in_full_without_probes(tmp_path: Path) -> None:
    argv = lab.vipcheck_argv(tmp_path, tmp_path / "s.json")
    assert Path(argv[0]).name == "vipcheck"
    assert argv[argv.index("--kubeconfig") + 1] == str(tmp_path / "kubeconfig")
    assert argv[argv.index("--ssh-config") + 1] == str(tmp_path / "ssh_config")
    assert "--no-probe" in argv
    assert not any(option in argv for option in ("-k", "-m", "--from-snapshot"))


def test_raw_gather_runs_the_node_script_once_per_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in ssh: records the host, then runs the remote command here (the script only reads).
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$3" >> {tmp_path}/hosts\nexec sh -c "$4"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert lab.raw_argv(tmp_path / "cfg", "node-1", "echo hi") == [
        "ssh",
        "-F",
        str(tmp_path / "cfg"),
        "node-1",
        "sh -c 'echo hi'",
    ]
    seconds, problems = lab.raw_gather(tmp_path / "cfg", ["node-1", "node-2"], build_node_script())
    assert problems == []
    assert seconds > 0
    assert sorted((tmp_path / "hosts").read_text().split()) == ["node-1", "node-2"]
    _, problems = lab.raw_gather(tmp_path / "cfg", ["node-3"], "exit 3")
    assert problems == ["raw gather of node-3: exit 3: no frames"]


def test_rounds_are_timed_after_an_uncounted_warm_up() -> None:
    calls: list[str] = []
    times = iter([9.0, 9.0, 9.0, 3.0, 2.0, 1.0, 0.4, 0.5, 1.2, 2.0, 3.0, 3.3, 2.2, 1.1, 0.6])

    def run_vipcheck(index: int) -> tuple[float, list[str]]:
        calls.append(f"vipcheck{index}")
        return next(times), []

    def run_raw() -> tuple[float, list[str]]:
        calls.append("raw")
        return next(times), []

    def run_pytest(index: int, collect_only: bool) -> tuple[float, list[str]]:
        calls.append(f"{'collect' if collect_only else 'pytest'}{index}")
        return next(times), [] if index != 1 or collect_only else ["pytest alone: exit 1"]

    result = lab.timed_rounds(3, run_vipcheck, run_raw, run_pytest, lambda _: None)
    warm_up, rounds = calls[:3], [calls[i : i + 4] for i in range(3, len(calls), 4)]
    assert warm_up == ["vipcheck-1", "raw", "pytest-1"]
    assert rounds == [
        ["vipcheck0", "raw", "pytest0", "collect0"],
        ["collect1", "pytest1", "raw", "vipcheck1"],
        ["vipcheck2", "raw", "pytest2", "collect2"],
    ]
    assert result.vipcheck == [3.0, 3.0, 3.3]
    assert result.raw == [2.0, 2.0, 2.2]
    assert result.pytest_alone == [1.0, 1.2, 1.1]
    assert result.collect_only == [0.4, 0.5, 0.6]
    assert result.ratio == pytest.approx(1.5)
    assert result.items_s == pytest.approx(0.6)
    assert result.bound_ratio == pytest.approx(1.3)
    assert result.problems == ["pytest alone: exit 1"]


def test_report_says_met_only_within_the_target_and_without_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    booted = lab.Boot(70.0, 38.5)
    good = lab.LabBench(
        [2.5, 2.6, 2.4], [2.0, 2.0, 2.0], pytest_alone=[0.5, 0.6, 0.5], collect_only=[0.3], items=60
    )
    assert lab.report(good, booted, "big", 1.3)
    output = capsys.readouterr().out
    assert "lab big: up in 70.0 s (VM setup, programming IPVS: 38.5 s)" in output
    assert "vipcheck --no-probe <= 1.3x a raw gather: 1.25x: met" in output
    assert "pytest alone runs 60 no-op items in 0.2 s beyond start-up and collection; " in output
    assert "after a gather of 2.0 s, no run of these items is under 1.10x\n" in output
    assert not lab.report(lab.LabBench([3.0], [2.0]), booted, "big", 1.3)
    assert "1.50x: MISSED" in capsys.readouterr().out
    broken = lab.LabBench([2.0], [2.0], ["vipcheck exited 1"])
    assert not lab.report(broken, booted, "big", 1.3)
    assert "problem: vipcheck exited 1" in capsys.readouterr().out


def test_report_says_when_pytest_alone_puts_the_target_out_of_reach(
    capsys: pytest.CaptureFixture[str],
) -> None:
    slow = lab.LabBench([10.0], [5.0], pytest_alone=[4.5], collect_only=[1.5], items=5954)
    assert not lab.report(slow, lab.Boot(30.0, None), "big", 1.3)
    output = capsys.readouterr().out
    assert "pytest alone runs 5,954 no-op items in 3.0 s beyond start-up and collection" in output
    assert "no run of these items is under 1.60x, so 1.3x is out of reach" in output
    assert "vipcheck beyond the gather and pytest alone (start-up, collection and items " in output
    assert "included): +0.5 s, its own listing, judging and reports" in output
    assert "within 1.5 s of the gather plus pytest alone (issue 22): +0.5 s: met" in output


def test_report_misses_a_run_far_beyond_the_gather_and_pytest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Within 1.3x of a long gather, yet 2.0 s beyond it and pytest's own cost for the items.
    slow = lab.LabBench([12.5], [10.0], pytest_alone=[0.5], collect_only=[0.3], items=60)
    assert slow.ratio <= 1.3
    assert not lab.report(slow, lab.Boot(30.0, None), "big", 1.3)
    output = capsys.readouterr().out
    assert "1.25x: met" in output
    assert "within 1.5 s of the gather plus pytest alone (issue 22): +2.0 s: MISSED" in output


def test_pytest_alone_runs_its_no_op_items_and_counts_them(tmp_path: Path) -> None:
    module = lab.write_noop_module(tmp_path / "test_noop.py", 7)
    log = tmp_path / "pytest.log"
    seconds, rc = lab.timed_run(lab.pytest_alone_argv(module, False), log, tmp_path)
    assert rc == 0
    assert seconds > 0
    assert lab.pytest_alone_problems(rc, 7, log) == []
    assert lab.pytest_alone_problems(rc, 8, log) == [
        f"pytest alone: exit 0, not 8 passed or collected (log: {log})"
    ]
    _, rc = lab.timed_run(lab.pytest_alone_argv(module, True), log, tmp_path)
    assert "7 tests collected" in log.read_text()
    assert lab.pytest_alone_problems(rc, 7, log) == []
    assert lab.pytest_alone_problems(None, 7, log)[0].startswith("pytest alone: exit None")


def test_items_are_counted_from_the_summary_totals(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text('{"totals": {"passed": 4051, "skipped": 1903}, "results": []}')
    assert lab.summary_items(summary) == 5954
    assert lab.summary_items(tmp_path / "missing.json") == 0


def test_bench_lab_option_runs_the_lab_mode_instead_of_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Path, int]] = []

    def fake_main(workdir: Path, rounds: int) -> int:
        seen.append((workdir, rounds))
        return 7

    monkeypatch.setattr(lab, "main", fake_main)
    argv = ["--lab", "--lab-rounds", "3", "--workdir", str(tmp_path)]
    assert bench_main.main(argv) == 7
    assert seen == [(tmp_path, 3)]
