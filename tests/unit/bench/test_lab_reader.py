"""The lab bench's reader line (bench/lab_reader.py): alternating reads of one node, each way,
after a warm-up; a read counts only when it ends with the frames' end marker."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench import lab_reader
from vipcheck.gather.node_script import END


def test_rounds_alternate_after_an_uncounted_warm_up() -> None:
    calls: list[str] = []
    times = iter([9.0, 9.0, 4.0, 2.0, 2.2, 4.4, 3.8, 1.8])

    def run(kind: str) -> lab_reader.Timed:
        calls.append(kind)
        return next(times), ["script: exit 1"] if len(calls) == 6 else []

    bench = lab_reader.reader_rounds(3, lambda: run("reader"), lambda: run("script"), print)
    assert calls == ["reader", "script", "reader", "script", "script", "reader", "reader", "script"]
    assert bench.reader == [4.0, 4.4, 3.8]
    assert bench.script == [2.0, 2.2, 1.8]
    assert bench.ratio == pytest.approx(2.0)
    assert bench.problems == ["script: exit 1"]
    lines = lab_reader.report(bench)
    assert lines[0] == "      reader     4.0s  4.0 4.4 3.8"
    assert "vipcheck-node (netlink) 2.00x the node script" in lines[2]
    assert lines[3] == "  problem: script: exit 1"


def test_a_read_counts_only_when_its_frames_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in ssh: runs the remote command here.
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nexec sh -c "$4"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "cfg"
    seconds, problems = lab_reader.read_once(config, "node-1", f"echo '{END}'", "the reader")
    assert seconds > 0
    assert problems == []
    _, problems = lab_reader.read_once(config, "node-1", "echo half", "the reader")
    assert problems == ["the reader on node-1: exit 0: no end marker"]
    _, problems = lab_reader.read_once(config, "node-1", "echo gone >&2; exit 3", "the script")
    assert problems == ["the script on node-1: exit 3: gone"]
