"""The lab bench's reader line (issue 21): on one node of the booted lab, the netlink reader
(`vipcheck-node`, run by the guest's python3 from this checkout: fixtures/lab/reader.py)
against the node script, one ssh each, alternating (ABBA) after an uncounted warm-up of each,
so the ratio of their medians is measured in one run under one load."""

from __future__ import annotations

import shlex
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fixtures.lab.reader import READER_COMMAND
from vipcheck.gather.node_script import END

NODE = "node-1"  # the director: the IPVS table, and the connection entries the client left
ROUNDS = 3  # the reader takes about a minute a read on big under software emulation
READ_TIMEOUT_S = 300.0

Timed = tuple[float, list[str]]


@dataclass
class ReaderBench:
    """The timed reads of one node, each way, in the order they ran."""

    reader: list[float] = field(default_factory=list)
    script: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """The reader's median over the script's."""
        return statistics.median(self.reader) / statistics.median(self.script)


def read_once(ssh_config: Path, node: str, command: str, what: str) -> Timed:
    """One ssh running command on the node: wall time, and why its output does not count."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["ssh", "-F", str(ssh_config), node, command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=READ_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return time.monotonic() - started, [f"{what} on {node}: no answer in {READ_TIMEOUT_S:g} s"]
    seconds = time.monotonic() - started
    if result.returncode != 0 or not result.stdout.endswith(f"{END}\n".encode()):
        why = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no end marker"]
        return seconds, [f"{what} on {node}: exit {result.returncode}: {why[0]}"]
    return seconds, []


def reader_rounds(
    rounds: int,
    run_reader: Callable[[], Timed],
    run_script: Callable[[], Timed],
    progress: Callable[[str], None],
) -> ReaderBench:
    """A warm-up of each (not counted), then `rounds` pairs, the reader first in even ones."""
    bench = ReaderBench()
    bench.problems += run_reader()[1] + run_script()[1]
    runs = {"reader": (run_reader, bench.reader), "script": (run_script, bench.script)}
    for index in range(rounds):
        for kind in ("reader", "script") if index % 2 == 0 else ("script", "reader"):
            run, times = runs[kind]
            seconds, problems = run()
            times.append(seconds)
            bench.problems += problems
        progress(
            f"reader round {index + 1}/{rounds}: reader {bench.reader[-1]:.1f} s, "
            f"node script {bench.script[-1]:.1f} s"
        )
    return bench


def measure(ssh_config: Path, script: str, progress: Callable[[str], None]) -> ReaderBench:
    """ROUNDS on NODE: the reader as pushed, the node script as the raw gather runs it."""
    return reader_rounds(
        ROUNDS,
        lambda: read_once(ssh_config, NODE, READER_COMMAND, "the reader"),
        lambda: read_once(ssh_config, NODE, f"sh -c {shlex.quote(script)}", "the node script"),
        progress,
    )


def report(bench: ReaderBench) -> list[str]:
    """The lines the lab table prints for it."""
    lines = []
    for name, values in (("reader", bench.reader), ("node script", bench.script)):
        each = " ".join(f"{value:.1f}" for value in values)
        lines.append(f"{name:>12} {statistics.median(values):7.1f}s  {each}")
    lines.append(
        f"reader on {NODE}: vipcheck-node (netlink) {bench.ratio:.2f}x the node script "
        "(medians, one ssh each, alternating)"
    )
    lines += [f"  problem: {problem}" for problem in bench.problems]
    return lines
