"""The bench's lab mode (bench/lab.py): ABBA rounds, a raw gather that runs vipcheck's script."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import lab
from vipcheck.gather.node_script import NODE_SCRIPT


def test_rounds_alternate_which_runs_first() -> None:
    assert lab.order(4) == [
        ("vipcheck", "raw"),
        ("raw", "vipcheck"),
        ("vipcheck", "raw"),
        ("raw", "vipcheck"),
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
    seconds, problems = lab.raw_gather(tmp_path / "cfg", ["node-1", "node-2"], NODE_SCRIPT)
    assert problems == []
    assert seconds > 0
    assert sorted((tmp_path / "hosts").read_text().split()) == ["node-1", "node-2"]
    _, problems = lab.raw_gather(tmp_path / "cfg", ["node-3"], "exit 3")
    assert problems == ["raw gather of node-3: exit 3: no frames"]


def test_rounds_are_timed_after_an_uncounted_warm_up() -> None:
    calls: list[str] = []
    times = iter([9.0, 9.0, 3.0, 2.0, 2.0, 3.0, 3.3, 2.2])

    def run_vipcheck(index: int) -> tuple[float, list[str]]:
        calls.append(f"vipcheck{index}")
        return next(times), []

    def run_raw() -> tuple[float, list[str]]:
        calls.append("raw")
        return next(times), []

    result = lab.timed_rounds(3, run_vipcheck, run_raw, lambda _: None)
    warm_up, *rounds = [calls[i : i + 2] for i in range(0, len(calls), 2)]
    assert warm_up == ["vipcheck-1", "raw"]
    assert rounds == [["vipcheck0", "raw"], ["raw", "vipcheck1"], ["vipcheck2", "raw"]]
    assert result.vipcheck == [3.0, 3.0, 3.3]
    assert result.raw == [2.0, 2.0, 2.2]
    assert result.ratio == pytest.approx(1.5)


def test_report_says_met_only_within_the_target_and_without_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    booted = lab.Boot(70.0, 38.5)
    good = lab.LabBench([2.5, 2.6, 2.4], [2.0, 2.0, 2.0])
    assert lab.report(good, booted, "big", 1.3)
    output = capsys.readouterr().out
    assert "lab big: up in 70.0 s (VM setup, programming IPVS: 38.5 s)" in output
    assert "vipcheck --no-probe <= 1.3x a raw gather: 1.25x: met" in output
    assert not lab.report(lab.LabBench([3.0], [2.0]), booted, "big", 1.3)
    assert "1.50x: MISSED" in capsys.readouterr().out
    broken = lab.LabBench([2.0], [2.0], ["vipcheck exited 1"])
    assert not lab.report(broken, booted, "big", 1.3)
    assert "problem: vipcheck exited 1" in capsys.readouterr().out


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
