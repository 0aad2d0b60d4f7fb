"""make bench's xdist line (bench.xdist, issue 22): walls quoted, the summaries compared."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import Measured
from bench.measuring import Measure
from bench.xdist import Distributed, run_distributed


def _written(document: object) -> Measure:
    """A stand-in for measure (a replay's process): writes the summary its argv names."""

    def measure(argv: list[str], log: Path, timeout_s: float) -> Measured:
        Path(argv[argv.index("--vipcheck-json") + 1]).write_text(json.dumps(document))
        assert argv[argv.index("-n") + 1] == "auto"
        return Measured(41.0, 900 << 20, 1)

    return measure


def _beside_an_alone_run(tmp_path: Path, written: object) -> Distributed:
    """The xdist run of a replay without -n that took 28 s and wrote {"totals": {"failed": 3}}."""
    alone = tmp_path / "100x5000.json"
    alone.write_text(json.dumps({"totals": {"failed": 3}}))
    return run_distributed(
        tmp_path / "100x5000",
        (Measured(28.0, 342 << 20, 1), alone),
        shown="100 x 5000",
        measure=_written(written),
        timeout_s=60,
    )


def test_the_same_summary_is_met_and_the_walls_are_quoted(tmp_path: Path) -> None:
    split = _beside_an_alone_run(tmp_path, {"totals": {"failed": 3}})
    assert split.missed() == []
    assert split.line() == (
        f"xdist 100 x 5000: vipcheck -n auto ({split.workers} workers) 41.0 s, 900 MiB; "
        "without 28.0 s (1.46x); the same JSON summary: met"
    )


def test_another_summary_is_missed(tmp_path: Path) -> None:
    split = _beside_an_alone_run(tmp_path, {"totals": {"failed": 2}})
    assert split.missed() == ["xdist 100 x 5000: vipcheck -n auto wrote another JSON summary"]
    assert split.line().endswith("the same JSON summary: MISSED")


def test_a_run_that_did_not_finish_says_so() -> None:
    line = Distributed("100 x 5000", Measured(28.0, 1, 1), Measured(60.0, 1, None), 2, False)
    assert line.line() == "xdist 100 x 5000: vipcheck -n auto did not finish"
    assert line.missed()
