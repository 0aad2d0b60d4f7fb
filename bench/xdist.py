"""`make bench`'s pytest-xdist line (issue 22): the largest IPVS size replayed again with
`vipcheck -n auto`, beside the replay without it measured in the same run.

The wall times are quoted, not judged (on 2 cores the workers' own collection and startup may
cost more than they save); the target is that both runs wrote the same JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measuring import Measure, Measured


@dataclass(frozen=True, slots=True)
class Distributed:
    """One replay with and one without -n auto, and whether their summaries are the same."""

    shown: str  # the size, as the table names it
    alone: Measured
    split: Measured
    workers: int
    same_summary: bool

    def line(self) -> str:
        if self.split.rc is None:
            return f"xdist {self.shown}: vipcheck -n auto did not finish"
        ratio = self.split.wall_s / self.alone.wall_s
        verdict = "met" if self.same_summary else "MISSED"
        return (
            f"xdist {self.shown}: vipcheck -n auto ({self.workers} workers) "
            f"{self.split.wall_s:.1f} s, {self.split.peak_rss / (1 << 20):.0f} MiB; without "
            f"{self.alone.wall_s:.1f} s ({ratio:.2f}x); the same JSON summary: {verdict}"
        )

    def missed(self) -> list[str]:
        if self.same_summary:
            return []
        return [f"xdist {self.shown}: vipcheck -n auto wrote another JSON summary"]


def run_distributed(
    directory: Path,
    alone: tuple[Measured, Path],
    *,
    shown: str,
    measure: Measure,
    timeout_s: float,
) -> Distributed:
    """Replay directory with -n auto; compare its summary with alone's (its measure and summary
    file), writing beside it."""
    summary = alone[1].with_name(f"{directory.name}-xdist.json")
    summary.unlink(missing_ok=True)
    vipcheck = Path(sys.executable).with_name("vipcheck")
    argv = [str(vipcheck), "--from-snapshot", str(directory), "-p", "no:cacheprovider", "-q"]
    argv += ["-n", "auto", "--vipcheck-json", str(summary)]
    split = measure(argv, summary.with_suffix(".log"), timeout_s)
    same = summary.exists() and _summary(summary) == _summary(alone[1])
    return Distributed(shown, alone[0], split, len(os.sched_getaffinity(0)), same)


def _summary(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
