"""The fleet sizes' verdicts (bench.__main__.report_fleet): issue 22's memory and floor targets."""

from __future__ import annotations

import pytest

from bench.__main__ import GIB, FleetTargets, Measured, Row, report_fleet
from bench.synth import Shape


def _row(nodes: int, wall_s: float, peak: int, floor_s: float = 10.0) -> Row:
    return Row(
        Shape(nodes, 10_000),
        12_500,
        replay=Measured(wall_s, peak, 1, wall_s),
        floor=Measured(floor_s, 50 << 20, 0, floor_s),
    )


def test_memory_that_grows_little_with_nodes_is_met(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [_row(100, 30.0, GIB), _row(1000, 200.0, GIB + (200 << 20), floor_s=20.0)]
    assert report_fleet(rows, FleetTargets()) == []
    assert "memory <= 1.3x 100 x 10000's (1.20x): met" in capsys.readouterr().out


def test_memory_past_its_bounds_and_a_slow_size_are_missed() -> None:
    rows = [_row(100, 30.0, 1 << 30), _row(1000, 600.0, 2 * GIB, floor_s=20.0)]
    missed = report_fleet(rows, FleetTargets())
    assert missed == [
        "1000 x 10000: 30.0x the floor",
        "1000 x 10000: memory <= 1536 MiB (2048 MiB)",
        "1000 x 10000: memory <= 1.3x 100 x 10000's (2.00x)",
    ]
