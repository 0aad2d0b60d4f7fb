"""The oversized-input bench: each case's file as described, and its targets judged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import oversized
from bench.synth import Shape, generate

SMALL = Shape(nodes=2, services=10, connections=20)


@dataclass(frozen=True)
class Result:
    wall_s: float
    peak_rss: int
    rc: int | None


def test_each_case_writes_its_file_and_is_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oversized, "MIB", 1024)
    kib = 1024
    cases = (
        oversized.Case("unchanged", "uname.txt", None),
        oversized.Case("table", "ip_vs_conn.txt", oversized._repeat(oversized.CONN_ROW, 8 * kib)),
        oversized.Case("line", "ipvsadm-Ln.txt", oversized._one_line(b"", 4 * kib), rc=4),
    )
    monkeypatch.setattr(oversized, "CASES", cases)
    base = generate(SMALL, tmp_path / "base")
    seen: list[tuple[str, int, bytes]] = []

    def measure(argv: list[str], log: Path, timeout_s: float) -> Result:
        directory = Path(argv[argv.index("--from-snapshot") + 1])
        index = len(seen)
        path = sorted((directory / "nodes").iterdir())[0] / cases[index].file
        data = path.read_bytes()
        seen.append((path.name, len(data), data[:8]))
        peak = 100 << 20 if index < 2 else 300 << 20  # the line's case adds too much
        return Result(1.0, peak, 4 if index == 2 else 1)

    missed = oversized.run_oversized(base, tmp_path / "work", measure, 60)
    assert [name for name, _, _ in seen] == ["uname.txt", "ip_vs_conn.txt", "ipvsadm-Ln.txt"]
    assert 7 * kib < seen[1][1] <= 8 * kib  # whole rows, up to the size
    assert seen[2][1] == 4 * kib + 1  # one line and its newline
    assert seen[1][2] == oversized.CONN_ROW[:8]
    assert seen[2][2] == b"x" * 8
    assert len(missed) == 1
    assert missed[0].startswith("oversized line: exit 4, adds")
    assert not (tmp_path / "work/oversized/case-1").exists()  # big files are not kept
