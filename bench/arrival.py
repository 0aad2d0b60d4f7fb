"""`make bench`'s live line (issue 22): a live run's nodes judged as they arrive
(vipcheck.arrival), beside the same run judging them only after the gather.

No 200-node cluster runs here, so the fleet is a stand-in: `DelayedNodes`, a NodeRunner whose
every node answers after a fixed round trip with a generated snapshot's files in the node
script's frames. The rest is vipcheck's own: the gather (32 nodes at a time), the spool, the
judge, the pass after collection. `python -m bench.arrival DIR DELAY arrival|after OUT` runs
one side and writes its times and a digest of every case's result to OUT; the bench runs both
sides as processes of their own, so each side's memory is its own. The times are quoted; the
target is that both sides judged every case the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measuring import Measure, Measured
from vipcheck.arrival import ArrivalJudge
from vipcheck.cases import cases_for, run_case
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS, SYSCTL_KEYS
from vipcheck.facts import Facts
from vipcheck.gather.live import gather
from vipcheck.gather.node_script import END
from vipcheck.judging import judge_nodes, reads_probes
from vipcheck.node_reader.frames import FrameWriter
from vipcheck.options import GatherOptions
from vipcheck.settings import Settings
from vipcheck.snapshot import NodeSpool, Snapshot, load_snapshot
from vipcheck.transport import NodeTarget, RunResult, TransportError

ROUND_TRIP_S = 2.0  # each node's, about a busy node's over SSH
PARALLEL = 32  # the gather's default
CHECKS = [check for check in CATALOGUE if check not in MIGRATION_CHECKS]


class DelayedNodes:
    """A NodeRunner whose nodes print a snapshot's files in the node script's frames, each
    after `before[node]` (a wait); a node named in `down` cannot be reached."""

    def __init__(self, snapshot: Snapshot, down: frozenset[str] = frozenset()) -> None:
        self.snapshot = snapshot
        self.down = down
        self.before: dict[str, Callable[[], None]] = {}

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        self.before.get(target.node, lambda: None)()
        if target.node in self.down:
            raise TransportError(f"{target.node}: ssh: connect to host: Connection refused")
        node = self.snapshot.nodes[target.node]
        out = io.BytesIO()
        frames = FrameWriter(out)
        for name, text in node.files.items():
            frames.file(name, lambda text=text: [text])  # type: ignore[misc]
        for name, why in node.missing.items():
            frames.missing(name, why)
        return RunResult(0, out.getvalue().decode() + END + "\n", "")


def run_side(directory: Path, delay_s: float, on_arrival: bool) -> dict[str, Any]:
    """Gather the snapshot's nodes through DelayedNodes and judge every case: the times, what
    the progress said, and a digest of the results."""
    replayed = load_snapshot(directory)
    runner = DelayedNodes(replayed)
    for name in replayed.nodes:
        runner.before[name] = lambda: time.sleep(delay_s)
    said: list[str] = []
    # After the gather, the judge is told of nothing: it judges nothing, adopts nothing.
    judge = ArrivalJudge(
        [check for check in CHECKS if not reads_probes(check)], Settings(), SYSCTL_KEYS, said.append
    )
    spool = NodeSpool()
    started = time.monotonic()
    snapshot = gather(
        GatherOptions(hosts=tuple(f"ssh://{name}" for name in replayed.nodes), parallel=PARALLEL),
        lambda _line: None,
        runner=runner,
        read_cluster=lambda *_args: dict(replayed.cluster),
        sysctl_keys=SYSCTL_KEYS,
        keep=(lambda node: judge.arrived(spool.keep(node))) if on_arrival else spool.keep,
        cluster_read=judge.cluster_read if on_arrival else lambda _files: None,
    )
    cluster = judge.gathered()
    gathered_s = time.monotonic() - started
    facts = Facts.from_snapshot(snapshot, sysctl_keys=SYSCTL_KEYS, cluster=cluster)
    judge.adopt(snapshot, facts)
    cases = [case for check in CHECKS for case in cases_for(check, facts)]
    judged = judge_nodes(cases, facts, Settings(), None, said.append, judgements=judge.judgements)
    results = [judged.result(case) or run_case(case, facts, Settings()) for case in cases]
    wall_s = time.monotonic() - started
    shown = [(r.case.check.id, r.case.id, r.outcome, r.violations, r.reason) for r in results]
    return {
        "gathered_s": round(gathered_s, 2),
        "wall_s": round(wall_s, 2),
        "said": said,
        "digest": hashlib.sha256(repr(shown).encode()).hexdigest(),
    }


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Both sides' figures, and whether they judged every case the same."""

    shown: str  # the size
    sides: Mapping[bool, Mapping[str, Any]]  # on arrival or not: run_side's figures
    measured: Mapping[bool, Measured]

    @property
    def same(self) -> bool:
        digests = {side["digest"] for side in self.sides.values()}
        return len(digests) == 1 and len(self.sides) == 2

    def line(self) -> str:
        if len(self.sides) < 2:
            return f"live {self.shown}: a side did not finish"
        arriving, after = self.sides[True], self.sides[False]
        judged = next(
            (said for said in arriving["said"] if "as they arrived" in said),
            "no node judged as it arrived",
        )
        verdict = "met" if self.same else "MISSED"
        return (
            f"live {self.shown} (stand-in nodes answering after {ROUND_TRIP_S:.0f} s, "
            f"{PARALLEL} at a time): judged as they arrive {arriving['wall_s']:.1f} s "
            f"(gather {arriving['gathered_s']:.1f} s, {judged}), {_mib(self.measured[True])}; "
            f"after the gather {after['wall_s']:.1f} s (gather {after['gathered_s']:.1f} s), "
            f"{_mib(self.measured[False])}; "
            f"{arriving['wall_s'] / after['wall_s']:.2f}x; the same results: {verdict}"
        )

    def missed(self) -> list[str]:
        return [] if self.same else [f"live {self.shown}: judged as they arrive, other results"]


def _mib(measured: Measured) -> str:
    return f"{measured.peak_rss / (1 << 20):.0f} MiB"


def run_arrivals(
    directory: Path, workdir: Path, *, shown: str, measure: Measure, timeout_s: float
) -> Arrivals:
    """Both sides, each in a process of its own (after the gather first)."""
    sides: dict[bool, Mapping[str, Any]] = {}
    measured: dict[bool, Measured] = {}
    for on_arrival in (False, True):
        name = "arrival" if on_arrival else "after"
        out = workdir / f"{directory.name}-live-{name}.json"
        out.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "bench.arrival", str(directory), str(ROUND_TRIP_S), name]
        measured[on_arrival] = measure([*argv, str(out)], out.with_suffix(".log"), timeout_s)
        if out.exists():
            sides[on_arrival] = json.loads(out.read_text())
    return Arrivals(shown, sides, measured)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[2] not in ("arrival", "after"):
        print("usage: python -m bench.arrival DIR DELAY_S arrival|after OUT", file=sys.stderr)
        return 2
    directory, delay_s, side, out = Path(argv[0]), float(argv[1]), argv[2], Path(argv[3])
    figures = run_side(directory, delay_s, on_arrival=side == "arrival")
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
