"""`make bench`: replay synthetic snapshots of growing size and check the scale targets.

Each size is replayed with kube-proxy in IPVS mode, then (`NFT_SIZES`) in nftables mode
(bench.synth's Mode: each node's kube-proxy 1.36 table, traced for every Service port); each
mode's rows get the same columns and the same target verdicts.

Each replay is the public command in its own process (`vipcheck --from-snapshot DIR`), measured
for wall time and peak memory (its processes' RSS and PSS: `measure`), beside a floor measured in
the same run on the same files (bench.floor: read every file, split every line). Absolute limits
leave headroom for a shared 2-core machine; the ratios are what noise does not move.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import lab
from bench.arrival import Arrivals, run_arrivals
from bench.oversized import run_oversized
from bench.synth import Mode, Shape, expected_failures, generate
from bench.xdist import Distributed, run_distributed

ROOT = Path(__file__).resolve().parent.parent
SIZES = ((5, 300), (20, 1000), (50, 2500), (100, 5000))
NFT_SIZES = ((20, 1000), (100, 5000))
# Big fleets (issue 22): the same Services on more and more nodes; the biggest with --fleet.
FLEET_SIZES = ((100, 10_000), (500, 10_000))
FLEET_BIGGEST = (1000, 10_000)
MILLION = 1_000_000
MILLION_BASE = (20, 1000)
OVERSIZED_BASE = (5, 300)
# The live line (bench.arrival): stand-in nodes, 32 at a time, each answering after 2 s.
LIVE_SIZE = (200, 1000)
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Targets:
    """The issue's targets, for the largest size unless said otherwise."""

    wall_s: float = 60.0
    floor_ratio: float = 25.0
    peak_rss: int = GIB
    exponent: float = 1.15
    million_added_s: float = 10.0


@dataclass(frozen=True, slots=True)
class FleetTargets:
    """Issue 22's: memory grows with Services, not with nodes x Services."""

    peak_rss: int = GIB * 3 // 2  # at the biggest size
    peak_growth: float = 1.3  # the biggest size's peak memory against the first size's
    floor_ratio: float = 25.0  # every size
    exponent: float = 1.1  # wall time's growth in nodes, size after size


@dataclass(frozen=True, slots=True)
class Measured:
    """One process tree: wall and CPU seconds, peak memory in bytes (measure), exit status
    (None: timed out)."""

    wall_s: float
    peak_rss: int
    rc: int | None
    cpu_s: float = 0.0


@dataclass
class Row:
    """One replay beside its floor, and whether exactly the injected faults failed."""

    shape: Shape
    service_ports: int
    replay: Measured
    floor: Measured
    items: int = 0
    failed: set[tuple[str, str]] = field(default_factory=set)
    expected: set[tuple[str, str]] = field(default_factory=set)

    @property
    def work(self) -> int:
        return self.shape.nodes * self.service_ports

    @property
    def ratio(self) -> float:
        return self.replay.wall_s / self.floor.wall_s

    @property
    def cpu_ratio(self) -> float:
        """The same ratio in CPU seconds: what the shared machine's load moves least."""
        return self.replay.cpu_s / max(self.floor.cpu_s, 0.01)

    @property
    def faults_ok(self) -> bool:
        return self.replay.rc == 1 and self.failed == self.expected


def measure(argv: list[str], log: Path, timeout_s: float) -> Measured:
    """Run argv with its output to log; wall time, CPU time and peak memory.

    Peak memory is the larger of the biggest process's peak RSS (os.wait4's rusage) and the
    peak, sampled every TREE_SAMPLE_S, of the whole process group's PSS (each shared page
    counted once): a replay judging nodes in worker processes (vipcheck.judging) uses them all.
    """
    started = time.monotonic()
    tree_peak = 0
    sampled = 0.0
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                wall = time.monotonic() - started
                process.returncode = os.waitstatus_to_exitcode(status)
                # ru_maxrss is in KiB on Linux.
                cpu = usage.ru_utime + usage.ru_stime
                peak = max(usage.ru_maxrss * 1024, tree_peak)
                return Measured(wall, peak, process.returncode, cpu)
            if time.monotonic() - started > timeout_s:
                os.killpg(process.pid, signal.SIGKILL)
                _, _, usage = os.wait4(process.pid, 0)
                process.returncode = -9
                peak = max(usage.ru_maxrss * 1024, tree_peak)
                return Measured(time.monotonic() - started, peak, None)
            if time.monotonic() - sampled >= TREE_SAMPLE_S:
                sampled = time.monotonic()
                tree_peak = max(tree_peak, group_pss(process.pid))
            time.sleep(0.02)


TREE_SAMPLE_S = 0.25


def group_pss(group: int) -> int:
    """The summed proportional set size (bytes) of every process in the process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces: the fields after its ')' are plain.
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) != group:  # the process group id, field 5
                continue
            rollup = (stat.parent / "smaps_rollup").read_text()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024  # kB
                break
    return total


def snapshot(shape: Shape, workdir: Path, progress: bool = True) -> Path:
    """The shape's snapshot, generated once and kept under workdir/snapshots."""
    directory = workdir / "snapshots" / shape.name
    done = directory.with_suffix(".done")
    if not done.exists():
        shutil.rmtree(directory, ignore_errors=True)
        if progress:
            print(f"bench: generating {shape.nodes} x {shape.services} ({directory})", flush=True)
        # In a fresh process: generating 1,000 nodes grows a process by hundreds of MB, and
        # Linux counts a parent's peak RSS in each child's it starts after (os.wait4's
        # ru_maxrss keeps the memory the child had before its exec), so every later row
        # would show at least that much.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(generate, shape, directory).result()
        done.touch()
    return directory


def service_ports(shape: Shape) -> int:
    """Service ports of the shape (every Service one, a two_port_share of them two)."""
    return shape.services + int(shape.services * shape.two_port_share)


def summary_of(shape: Shape, workdir: Path) -> Path:
    """Where the shape's replay writes its JSON summary."""
    return workdir / "summaries" / f"{shape.name}.json"


def run_shape(shape: Shape, workdir: Path, timeout_s: float) -> Row:
    directory = snapshot(shape, workdir)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    floor = measure(
        [sys.executable, "-m", "bench.floor", str(directory)], logs / f"{shape.name}.floor", 600
    )
    summary = summary_of(shape, workdir)
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.unlink(missing_ok=True)
    vipcheck = Path(sys.executable).with_name("vipcheck")
    argv = [
        str(vipcheck),
        "--from-snapshot",
        str(directory),
        "-p",
        "no:cacheprovider",
        "-q",
        "--vipcheck-json",
        str(summary),
    ]
    replay = measure(argv, logs / f"{shape.name}.replay", timeout_s)
    row = Row(shape, service_ports(shape), replay, floor, expected=expected_failures(shape))
    if summary.exists():
        document = json.loads(summary.read_text())
        row.items = sum(document["totals"].values())
        row.failed = {
            (result["check"], result["subject"])
            for result in document["results"]
            if result["outcome"] == "failed"
        }
    return row


SELECTIONS = (
    ("-k node-001", ["-k", "node-001"]),
    ('-m "not probe" -k tcpfin', ["-m", "not probe", "-k", "tcpfin"]),
)


def select(shape: Shape, workdir: Path, timeout_s: float) -> list[tuple[str, Measured]]:
    """Replays of a few items out of the largest size's: what -k and -m cost at 20,000 items."""
    directory = snapshot(shape, workdir)
    vipcheck = Path(sys.executable).with_name("vipcheck")
    measured = []
    for index, (text, options) in enumerate(SELECTIONS):
        argv = [str(vipcheck), "--from-snapshot", str(directory), "-p", "no:cacheprovider", "-q"]
        argv += [*options, "--vipcheck-json", str(workdir / "summaries" / f"select-{index}.json")]
        measured.append((text, measure(argv, workdir / "logs" / f"select-{index}", timeout_s)))
    return measured


def exponent(smaller: Row, larger: Row) -> float:
    """Growth of wall time against nodes x Service ports between two sizes."""
    return math.log(larger.replay.wall_s / smaller.replay.wall_s) / math.log(
        larger.work / smaller.work
    )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB"


def report(
    rows: list[Row],
    million: tuple[Row, Row] | None,
    targets: Targets,
    *,
    largest_targets: bool = True,
) -> list[str]:
    """Print the table and return the targets missed (the largest size's too, if asked)."""
    print()
    if rows:
        print(f"kube-proxy mode {rows[0].shape.mode}")
    header = (
        f"{'nodes x Services':>17} {'ports':>6} {'items':>6} {'wall':>8} {'cpu':>7} "
        f"{'peak mem':>9} {'floor':>7} {'ratio':>6} {'cpu ratio':>9} {'exp':>5}  faults"
    )
    print(header)
    missed = []
    previous = None
    for row in rows:
        shown = _shown(row.shape)
        grow = f"{exponent(previous, row):5.2f}" if previous and row.replay.rc is not None else ""
        wall = f"{row.replay.wall_s:7.1f}s" if row.replay.rc is not None else "timeout"
        faults = "exact" if row.faults_ok else _fault_text(row)
        print(
            f"{shown:>17} {row.service_ports:>6} {row.items:>6} {wall:>8} "
            f"{row.replay.cpu_s:6.1f}s {_mib(row.replay.peak_rss):>9} {row.floor.wall_s:6.1f}s "
            f"{row.ratio:6.1f} {row.cpu_ratio:9.1f} {grow:>5}  {faults}"
        )
        if not row.faults_ok:
            missed.append(f"{shown}: not exactly the injected faults failed ({faults})")
        if previous is not None and row.replay.rc is not None:
            growth = exponent(previous, row)
            if growth > targets.exponent:
                missed.append(f"{shown}: growth exponent {growth:.2f} > {targets.exponent}")
        previous = row
    largest = rows[-1] if rows and largest_targets else None
    if largest is not None:
        shown = _shown(largest.shape)
        checks = (
            (largest.replay.wall_s <= targets.wall_s, f"wall <= {targets.wall_s:.0f} s"),
            (largest.ratio <= targets.floor_ratio, f"<= {targets.floor_ratio:.0f}x the floor"),
            (largest.replay.peak_rss <= targets.peak_rss, f"memory <= {_mib(targets.peak_rss)}"),
        )
        for ok, text in checks:
            print(f"target {shown}: {text}: {'met' if ok else 'MISSED'}")
            if not ok:
                missed.append(f"{shown}: {text}")
    if million is not None:
        base, big = million
        added = big.replay.wall_s - base.replay.wall_s
        ok = big.replay.rc is not None and added <= targets.million_added_s and big.faults_ok
        print(
            f"target one node with {MILLION:,} connection entries ({base.shape.nodes} x "
            f"{base.shape.services}): {big.replay.wall_s:.1f} s against "
            f"{base.replay.wall_s:.1f} s, "
            f"adds {added:.1f} s (<= {targets.million_added_s:.0f} s), peak "
            f"{_mib(big.replay.peak_rss)}: {'met' if ok else 'MISSED'}"
        )
        if not ok:
            missed.append(f"a million connection entries add {added:.1f} s")
    return missed


def report_fleet(rows: list[Row], targets: FleetTargets) -> list[str]:
    """The fleet sizes' verdicts beside report's (the table, faults, growth exponents): the floor
    ratio of every size, the biggest size's memory; return the targets missed."""
    missed = [
        f"{_shown(row.shape)}: {row.ratio:.1f}x the floor"
        for row in rows
        if row.ratio > targets.floor_ratio
    ]
    first, biggest = rows[0], rows[-1]
    growth = biggest.replay.peak_rss / first.replay.peak_rss
    checks = (
        (all(r.ratio <= targets.floor_ratio for r in rows),
         f"every size <= {targets.floor_ratio:.0f}x the floor"),
        (biggest.replay.peak_rss <= targets.peak_rss,
         f"memory <= {_mib(targets.peak_rss)} ({_mib(biggest.replay.peak_rss)})"),
        (growth <= targets.peak_growth,
         f"memory <= {targets.peak_growth}x {_shown(first.shape)}'s ({growth:.2f}x)"),
    )  # fmt: skip
    for ok, text in checks:
        print(f"target {_shown(biggest.shape)}: {text}: {'met' if ok else 'MISSED'}")
        if not ok and "floor" not in text:
            missed.append(f"{_shown(biggest.shape)}: {text}")
    return missed


def _shown(shape: Shape) -> str:
    """A size as the table and the verdicts name it, the mode added where it is not IPVS."""
    mode = "" if shape.mode is Mode.IPVS else f" {shape.mode}"
    return f"{shape.nodes} x {shape.services}{mode}"


def _fault_text(row: Row) -> str:
    if row.replay.rc is None:
        return "not finished"
    extra = sorted(row.failed - row.expected)
    lost = sorted(row.expected - row.failed)
    return f"rc {row.replay.rc}; unexpected {extra[:3]}; not failed {lost[:3]}"


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    pairs = []
    for item in text.split(","):
        nodes, _, services = item.partition("x")
        pairs.append((int(nodes), int(services)))
    return tuple(pairs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=SIZES,
        help="NODESxSERVICES[,...] (default: 5x300,20x1000,50x2500,100x5000)",
    )
    parser.add_argument(
        "--nft-sizes",
        type=_sizes,
        default=NFT_SIZES,
        help="the same in nftables mode (default: 20x1000,100x5000)",
    )
    parser.add_argument(
        "--modes",
        type=lambda text: tuple(Mode(item) for item in text.split(",")),
        default=tuple(Mode),
        help="kube-proxy modes to replay (default: ipvs,nftables)",
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help=f"add the biggest fleet, {FLEET_BIGGEST[0]} x {FLEET_BIGGEST[1]} (minutes, GBs)",
    )
    parser.add_argument(
        "--no-fleet", action="store_true", help="skip the fleet sizes (100 and 500 x 10000)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per replay, seconds")
    parser.add_argument(
        "--no-million", action="store_true", help="skip the million-connection replay"
    )
    parser.add_argument(
        "--no-selection", action="store_true", help="skip the -k/-m replays of the largest size"
    )
    parser.add_argument(
        "--no-xdist", action="store_true", help="skip the -n auto replay of the largest size"
    )
    parser.add_argument(
        "--no-live",
        action="store_true",
        help=f"skip the live line ({LIVE_SIZE[0]} x {LIVE_SIZE[1]}, stand-in nodes: judged as "
        "they arrive, or after the gather)",
    )
    parser.add_argument(
        "--oversized",
        action="store_true",
        help="only the oversized-input replays: 400 MB files, 100 MB lines (bench.oversized)",
    )
    parser.add_argument(
        "--lab",
        action="store_true",
        help="instead: the live path on the lab's big scenario, vipcheck --no-probe against a "
        "raw gather (bench/lab.py; boots and stops a VM)",
    )
    parser.add_argument(
        "--lab-rounds", type=int, default=lab.ROUNDS, help="timed rounds of each (default 5)"
    )
    return parser


def run_fleet(args: argparse.Namespace) -> list[Row]:
    """The fleet sizes, the biggest with --fleet."""
    rows = []
    for nodes, services in (*FLEET_SIZES, *([FLEET_BIGGEST] if args.fleet else [])):
        print(f"bench: replaying the fleet size {nodes} x {services}", flush=True)
        rows.append(run_shape(Shape(nodes, services), args.workdir, args.timeout))
    return rows


def run_xdist(largest: Row, workdir: Path, timeout_s: float) -> Distributed:
    """The largest size again with `vipcheck -n auto` (pytest-xdist), beside its replay."""
    shape = largest.shape
    print(f"bench: replaying {shape.nodes} x {shape.services} with -n auto", flush=True)
    return run_distributed(
        snapshot(shape, workdir),
        (largest.replay, summary_of(shape, workdir)),
        shown=_shown(shape),
        measure=measure,
        timeout_s=timeout_s,
    )


def run_live(workdir: Path, timeout_s: float) -> Arrivals:
    """LIVE_SIZE gathered from stand-in nodes, judged as they arrive and after the gather."""
    shape = Shape(*LIVE_SIZE)
    print(f"bench: gathering {shape.nodes} x {shape.services} from stand-in nodes", flush=True)
    return run_arrivals(
        snapshot(shape, workdir), workdir, shown=_shown(shape), measure=measure, timeout_s=timeout_s
    )


def run_million(args: argparse.Namespace, rows: list[Row]) -> tuple[Row, Row]:
    """MILLION_BASE's replay (run if not among rows), and it with one node of a million entries."""
    base = next((r for r in rows if (r.shape.nodes, r.shape.services) == MILLION_BASE), None)
    if base is None:
        base = run_shape(Shape(*MILLION_BASE), args.workdir, args.timeout)
    shape = replace(base.shape, big_table_node=0, big_table=MILLION)
    print(f"bench: replaying {shape.nodes} x {shape.services}, one node with {MILLION:,} "
          "connection entries", flush=True)  # fmt: skip
    return base, run_shape(shape, args.workdir, args.timeout)


def write_results(workdir: Path, rows: list[Row], missed: list[str]) -> None:
    """results.json: every row's figures and the targets missed, for scripts to read."""
    results: dict[str, Any] = {
        "rows": [
            {
                "mode": str(r.shape.mode),
                "nodes": r.shape.nodes,
                "services": r.shape.services,
                "service_ports": r.service_ports,
                "items": r.items,
                "wall_s": round(r.replay.wall_s, 2),
                "peak_rss": r.replay.peak_rss,
                "floor_s": round(r.floor.wall_s, 2),
                "ratio": round(r.ratio, 2),
                "cpu_s": round(r.replay.cpu_s, 2),
                "floor_cpu_s": round(r.floor.cpu_s, 2),
                "cpu_ratio": round(r.cpu_ratio, 2),
                "faults_exact": r.faults_ok,
            }
            for r in rows
        ],
        "missed": missed,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.oversized:
        small = snapshot(Shape(*OVERSIZED_BASE), args.workdir)
        missed = run_oversized(small, args.workdir, measure, args.timeout)
        print("bench: targets missed:\n  " + "\n  ".join(missed) if missed else "bench: met")
        return 1 if missed else 0
    if args.lab:
        return lab.main(args.workdir, args.lab_rounds)
    targets = Targets()
    rows = []
    ipvs = Mode.IPVS in args.modes
    for nodes, services in args.sizes if ipvs else ():
        shape = Shape(nodes, services)
        print(f"bench: replaying {nodes} x {services}", flush=True)
        rows.append(run_shape(shape, args.workdir, args.timeout))
    nft_rows = []
    for nodes, services in args.nft_sizes if Mode.NFTABLES in args.modes else ():
        shape = Shape(nodes, services, mode=Mode.NFTABLES)
        print(f"bench: replaying {nodes} x {services} in nftables mode", flush=True)
        nft_rows.append(run_shape(shape, args.workdir, args.timeout))
    fleet = run_fleet(args) if ipvs and not args.no_fleet else []
    million = run_million(args, rows) if ipvs and not args.no_million else None
    selection: list[tuple[str, Measured]] = []
    if ipvs and rows and not args.no_selection:
        largest = rows[-1]
        print(f"bench: selecting with -k and -m in {largest.shape.nodes} x "
              f"{largest.shape.services}", flush=True)  # fmt: skip
        selection = select(largest.shape, args.workdir, args.timeout)
    distributed = None
    if ipvs and rows and not args.no_xdist:
        distributed = run_xdist(rows[-1], args.workdir, args.timeout)
    live = run_live(args.workdir, args.timeout) if ipvs and not args.no_live else None
    missed = report(rows, million, targets) if ipvs else []
    if distributed is not None:
        print(distributed.line())
        missed += distributed.missed()
    if live is not None:
        print(live.line())
        missed += live.missed()
    for text, measured in selection:
        print(
            f"selection {text}: {measured.wall_s:.1f} s, {_mib(measured.peak_rss)} "
            f"(the full replay: {rows[-1].replay.wall_s:.1f} s)"
        )
    if nft_rows:
        missed += report(nft_rows, None, targets)
    if fleet:
        print("\nbig fleets: the same Services on more nodes (growth exponent in nodes)")
        fleet_targets = FleetTargets()
        missed += report(
            fleet, None, replace(targets, exponent=fleet_targets.exponent), largest_targets=False
        )
        missed += report_fleet(fleet, fleet_targets)
    write_results(args.workdir, [*rows, *nft_rows, *fleet], missed)
    if missed:
        print("bench: targets missed:\n  " + "\n  ".join(missed))
        return 1
    print("bench: every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
