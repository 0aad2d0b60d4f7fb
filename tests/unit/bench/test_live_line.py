"""make bench's live line (bench.arrival, issue 22): both sides run as the bench runs them,
each in a process of its own, on a small generated fleet; the same results, the walls quoted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import arrival
from bench.__main__ import measure
from bench.arrival import run_arrivals
from bench.synth import Shape, generate

ROOT = Path(__file__).resolve().parents[3]


def test_both_sides_judge_every_case_the_same_and_the_line_says_so(tmp_path: Path) -> None:
    """(Whether the judge reaches a node before 8 nodes answering at once are all in is the
    machine's to say: tests/unit/test_arrival.py shows it judging while nodes are gathered.)"""
    snapshot = generate(Shape(nodes=8, services=20, connections=5), tmp_path / "8x20")
    found = run_arrivals(snapshot, tmp_path, shown="8 x 20", measure=measure, timeout_s=300)
    assert found.same, found.sides
    assert found.missed() == []
    assert not any("as they arrived" in said for said in found.sides[False]["said"])
    line = found.line()
    assert line.startswith(
        f"live 8 x 20 (stand-in nodes answering after {arrival.ROUND_TRIP_S:.0f} s, 32 at a time): "
        "judged as they arrive "
    ), line
    assert line.endswith("; the same results: met"), line


def test_a_side_that_does_not_finish_is_said(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.arrival", str(tmp_path / "none"), "0", "arrival",
         str(tmp_path / "out.json")],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    usage = subprocess.run(
        [sys.executable, "-m", "bench.arrival", str(tmp_path), "0", "before", "out.json"],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert usage.returncode == 2
    assert usage.stderr == "usage: python -m bench.arrival DIR DELAY_S arrival|after OUT\n"
    found = arrival.Arrivals("8 x 20", {}, {})
    assert found.line() == "live 8 x 20: a side did not finish"
    assert found.missed() == ["live 8 x 20: judged as they arrive, other results"]
