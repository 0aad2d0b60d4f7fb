"""`python -m bench --lab` (`make bench-lab`): the live path, timed on the lab's `big` scenario.

Boots `big` (python -m fixtures.lab up), then times side by side, alternating (ABBA, so a trend
in the shared machine's load falls on both), rounds of:

  vipcheck  a full run without probes: `vipcheck --kubeconfig DIR/kubeconfig --ssh-config
            DIR/ssh_config --no-probe`, pytest start-up, API listing, gathering, checks, reports;
  raw       a raw gather of the same nodes: one `ssh -F DIR/ssh_config NODE sh -c SCRIPT` per
            node, all at once, SCRIPT being vipcheck's own node script (the least any live run
            must wait for).

It prints the medians and their ratio against the target (issue 8: at most 1.3), then stops the
lab. A warm-up round of each is run first and not counted (cold page cache, first ssh logins).
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "big"
ROUNDS = 5
TARGET_RATIO = 1.3
RAW_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 600.0
CLIENT = "client"
_SETUP_TOOK = re.compile(r"setup took (?P<seconds>[\d.]+) s")


@dataclass(frozen=True, slots=True)
class Boot:
    """How long `fixtures.lab up` took in all, and the VM's setup script (programming) alone."""

    wall_s: float
    setup_s: float | None


@dataclass
class LabBench:
    """The timed rounds: vipcheck's runs and the raw gathers, in the order they ran."""

    vipcheck: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def vipcheck_median(self) -> float:
        return statistics.median(self.vipcheck)

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw)

    @property
    def ratio(self) -> float:
        """The medians' ratio: what the target is about."""
        return self.vipcheck_median / self.raw_median

    def round_ratios(self) -> list[float]:
        """Each round's own ratio (its two runs were next to each other in time)."""
        return [a / b for a, b in zip(self.vipcheck, self.raw, strict=False)]


def order(rounds: int) -> list[tuple[str, str]]:
    """ABBA: vipcheck first in even rounds, raw first in odd ones."""
    return [
        ("vipcheck", "raw") if index % 2 == 0 else ("raw", "vipcheck") for index in range(rounds)
    ]


def vipcheck_argv(lab: Path, summary: Path) -> list[str]:
    """The full run without probes, as a user types it (pytest quiet, no cache in the lab dir)."""
    vipcheck = Path(sys.executable).with_name("vipcheck")
    return [
        str(vipcheck),
        "--kubeconfig", str(lab / "kubeconfig"),
        "--ssh-config", str(lab / "ssh_config"),
        "--no-probe",
        "-q",
        "--vipcheck-json", str(summary),
    ]  # fmt: skip


def raw_argv(ssh_config: Path, node: str, script: str) -> list[str]:
    """One node's raw gather: ssh running the node script under sh, as vipcheck's transport does."""
    return ["ssh", "-F", str(ssh_config), node, f"sh -c {shlex.quote(script)}"]


def raw_gather(ssh_config: Path, nodes: Sequence[str], script: str) -> tuple[float, list[str]]:
    """Every node's script at once; wall time until the last ends, and what went wrong."""
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            raw_argv(ssh_config, node, script),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for node in nodes
    ]
    problems = []
    for node, process in zip(nodes, processes, strict=True):
        try:
            stdout, stderr = process.communicate(timeout=RAW_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            problems.append(f"raw gather of {node}: no answer in {RAW_TIMEOUT_S:g} s")
            continue
        if process.returncode != 0 or b"===vipcheck:file=" not in stdout:
            why = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no frames"]
            problems.append(f"raw gather of {node}: exit {process.returncode}: {why[0]}")
    return time.monotonic() - started, problems


def timed_run(argv: list[str], log: Path, cwd: Path) -> tuple[float, int | None]:
    """Wall time and exit status of one command, its output to log (None: timed out)."""
    started = time.monotonic()
    with log.open("w") as out:
        try:
            result = subprocess.run(
                argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return time.monotonic() - started, None
    return time.monotonic() - started, result.returncode


def run_problems(rc: int | None, summary: Path, log: Path) -> list[str]:
    """Why a vipcheck run does not count: big is healthy, so it must pass with no failure."""
    if rc != 0:
        return [f"vipcheck exited {rc} (log: {log})"]
    totals = json.loads(summary.read_text())["totals"]
    bad = {outcome: totals.get(outcome, 0) for outcome in ("failed", "error")}
    if any(bad.values()):
        return [f"vipcheck on {SCENARIO}: {bad}"]
    return []


def boot(lab: Path, scenario: str, log: Path) -> Boot:
    """`python -m fixtures.lab up`, timed; its setup time read from the VM's own log line."""
    started = time.monotonic()
    command = [sys.executable, "-m", "fixtures.lab", "up", "--scenario", scenario, "--workdir"]
    with log.open("w") as out:
        result = subprocess.run(
            [*command, str(lab)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    wall = time.monotonic() - started
    text = log.read_text()
    if result.returncode != 0:
        raise RuntimeError(f"the lab did not come up (exit {result.returncode}); log: {log}")
    match = _SETUP_TOOK.search(text)
    return Boot(wall, float(match["seconds"]) if match else None)


def down(lab: Path, log: Path) -> None:
    with log.open("a") as out:
        subprocess.run(
            [sys.executable, "-m", "fixtures.lab", "down", "--workdir", str(lab)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip


def lab_nodes(lab: Path) -> list[str]:
    """The nodes the lab forwards ssh to (its lab.json), the client excepted."""
    state: dict[str, Any] = json.loads((lab / "lab.json").read_text())
    return [host for host in state["ssh_ports"] if host != CLIENT]


def timed_rounds(
    rounds: int,
    run_vipcheck: Callable[[int], tuple[float, list[str]]],
    run_raw: Callable[[], tuple[float, list[str]]],
    progress: Callable[[str], None],
) -> LabBench:
    """Warm-up, then `rounds` alternating pairs."""
    bench = LabBench()
    progress("warm-up: one vipcheck run and one raw gather, not counted")
    bench.problems += run_vipcheck(-1)[1] + run_raw()[1]
    for index, pair in enumerate(order(rounds)):
        for kind in pair:
            seconds, problems = run_vipcheck(index) if kind == "vipcheck" else run_raw()
            (bench.vipcheck if kind == "vipcheck" else bench.raw).append(seconds)
            bench.problems += problems
        progress(
            f"round {index + 1}/{rounds}: vipcheck {bench.vipcheck[-1]:.1f} s, "
            f"raw {bench.raw[-1]:.1f} s ({bench.vipcheck[-1] / bench.raw[-1]:.2f}x)"
        )
    return bench


def report(bench: LabBench, booted: Boot, scenario: str, target: float) -> bool:
    """Print the lab table; True when the target is met and every run was valid."""
    setup = f"{booted.setup_s:.1f} s" if booted.setup_s is not None else "?"
    print()
    print(f"lab {scenario}: up in {booted.wall_s:.1f} s (VM setup, programming IPVS: {setup})")
    print(f"{'run':>9} {'median':>8}  each (s, in order)")
    for name, values in (("vipcheck", bench.vipcheck), ("raw", bench.raw)):
        each = " ".join(f"{value:.1f}" for value in values)
        print(f"{name:>9} {statistics.median(values):7.1f}s  {each}")
    ratios = " ".join(f"{ratio:.2f}" for ratio in bench.round_ratios())
    met = bench.ratio <= target and not bench.problems
    print(f"per-round ratios: {ratios}")
    print(
        f"target lab {scenario}: vipcheck --no-probe <= {target}x a raw gather: "
        f"{bench.ratio:.2f}x: {'met' if met else 'MISSED'}"
    )
    for problem in bench.problems:
        print(f"  problem: {problem}")
    return met


def main(workdir: Path, rounds: int = ROUNDS, scenario: str = SCENARIO) -> int:
    """Boot the scenario, time the rounds, print, stop the lab; 1 when the target is missed."""
    from vipcheck.gather.node_script import NODE_SCRIPT  # noqa: PLC0415

    workdir.mkdir(parents=True, exist_ok=True)
    lab, runs = workdir / "lab", workdir / "lab-runs"
    runs.mkdir(exist_ok=True)
    log = workdir / "lab-up.log"

    def progress(line: str) -> None:
        print(f"bench: {line}", flush=True)

    progress(f"booting the lab's {scenario} scenario ({log})")
    booted = boot(lab, scenario, log)
    progress(f"lab up in {booted.wall_s:.1f} s")
    try:
        nodes = lab_nodes(lab)

        def run_vipcheck(index: int) -> tuple[float, list[str]]:
            summary = runs / f"summary-{index}.json"
            log = runs / f"vipcheck-{index}.log"
            seconds, rc = timed_run(vipcheck_argv(lab, summary), log, runs)
            return seconds, run_problems(rc, summary, log)

        def run_raw() -> tuple[float, list[str]]:
            return raw_gather(lab / "ssh_config", nodes, NODE_SCRIPT)

        bench = timed_rounds(rounds, run_vipcheck, run_raw, progress)
    finally:
        down(lab, log)
        progress("lab stopped")
    met = report(bench, booted, scenario, TARGET_RATIO)
    results = {
        "scenario": scenario,
        "boot_s": round(booted.wall_s, 1),
        "setup_s": booted.setup_s,
        "vipcheck_s": [round(value, 2) for value in bench.vipcheck],
        "raw_s": [round(value, 2) for value in bench.raw],
        "ratio": round(bench.ratio, 3),
        "target": TARGET_RATIO,
        "met": met,
        "problems": bench.problems,
    }
    (workdir / "lab-results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if met else 1
