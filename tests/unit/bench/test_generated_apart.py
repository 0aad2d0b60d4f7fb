"""The bench generates each snapshot once, in a process of its own (bench.__main__.snapshot):
what generating took would otherwise count in the peak memory of every replay started after."""

from __future__ import annotations

import resource
from pathlib import Path

from bench.__main__ import snapshot
from bench.synth import Shape
from vipcheck.snapshot import load_snapshot

SHAPE = Shape(nodes=30, services=400, connections=2000)


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def test_a_snapshot_is_generated_apart_and_once(tmp_path: Path) -> None:
    mine, children = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN)
    directory = snapshot(SHAPE, tmp_path, progress=False)
    generating_here = _cpu_s(resource.RUSAGE_SELF) - mine
    generating_apart = _cpu_s(resource.RUSAGE_CHILDREN) - children
    assert generating_apart > generating_here, (generating_here, generating_apart)
    assert len(load_snapshot(directory).nodes) == SHAPE.nodes
    made = (directory / "meta.json").stat().st_mtime_ns
    assert snapshot(SHAPE, tmp_path, progress=False) == directory
    assert (directory / "meta.json").stat().st_mtime_ns == made  # kept, not generated again
