"""Probing end to end against a fake runner: rounds planned from facts, run, and written down."""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path

from vipcheck.facts import Facts
from vipcheck.gather.vantage_points import AFTER_SCRIPT, VantagePoint
from vipcheck.handshake_rounds import run_probes
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.handshakes import ProbeRound, ProbeSettings, Vantage
from vipcheck.model.node import L4Protocol
from vipcheck.parse.handshakes import parse_probe_plan
from vipcheck.snapshot import load_snapshot
from vipcheck.transport import NodeTarget, RunResult, TransportError

SEED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded" / "seed-incidents"
REDIS = ServicePortKey("default/redis", 6379, L4Protocol.TCP)
REFUSING = "10.96.0.20 6379"  # the redis ClusterIP: its stale real server refuses
PROBE_LINE = re.compile(r"^vp_probe (\S+) (\d+) (\d+)$", re.MULTILINE)
CONN_TABLE = "===vipcheck:file=ip_vs_conn.txt\nTCP 0A600014 18EB SYN_RECV\n\n===vipcheck:rc=0\n"


class FakeVantagePoints:
    """A NodeRunner that answers probe scripts line by line and connection-table reads."""

    def __init__(
        self,
        refusing: str | None = REFUSING,
        unreachable: frozenset[str] = frozenset(),
        killed: frozenset[str] = frozenset(),
    ) -> None:
        self.refusing = refusing
        self.unreachable = unreachable
        self.killed = killed  # their VIP round hangs after two lines and is killed
        self.scripts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        with self.lock:
            self.scripts[target.node] += 1
        if target.node in self.unreachable:
            raise TransportError(f"{target.describe()}: ssh failed (exit 255): refused")
        if script == AFTER_SCRIPT:
            return RunResult(0, CONN_TABLE, "")
        lines = ["TOOL bash"]
        for address, port, attempts in PROBE_LINE.findall(script):
            outcome = "REFUSED 1 refused" if f"{address} {port}" == self.refusing else "CONNECTED 3"
            lines += [
                f"ATTEMPT {address} {port} {i} {outcome}" for i in range(1, int(attempts) + 1)
            ]
        if target.node in self.killed:
            partial = "\n".join(lines[:2]) + "\nATTEMPT 10.9"
            raise TransportError(f"{target.describe()}: no answer within 40 s", partial=partial)
        return RunResult(0, "\n".join([*lines, "DONE"]) + "\n", "")


def point(name: str, *, node: bool = True) -> VantagePoint:
    spec = f"ssh://{name}"
    return VantagePoint(Vantage(name, name if node else None, spec), NodeTarget(name, spec))


POINTS = (point("node-1"), point("node-2"), point("node-3"), point("client", node=False))


def test_failures_get_a_real_server_round_and_a_connection_table_reread() -> None:
    facts = Facts.from_snapshot(load_snapshot(SEED))
    runner = FakeVantagePoints()
    lines: list[str] = []
    files = run_probes(facts, POINTS, ProbeSettings(), lines.append, runner=runner)
    plan = parse_probe_plan(files["plan.json"], "probes/plan.json")
    assert {t.vantage for t in plan.targets if t.round is ProbeRound.VIP} == {
        "node-1", "node-2", "node-3", "client"
    }  # fmt: skip
    attribution = [t for t in plan.targets if t.round is ProbeRound.REAL_SERVER]
    assert attribution
    assert {t.service for t in attribution} == {REDIS}
    assert "client/real-server.txt" in files
    assert files["after/node-1/ip_vs_conn.txt"].startswith("TCP 0A600014")
    assert "after/client/ip_vs_conn.txt" not in files  # outside hosts have no IPVS to re-read
    # Each vantage point: its VIP round, maybe a real-server round; each node: one re-read.
    assert all(1 <= runner.scripts[p.vantage.name] <= 3 for p in POINTS)
    assert runner.scripts["client"] == 2
    assert lines[-1].startswith(f"probed {len(plan.targets) - len(attribution)} VIP and ")


def test_an_unreachable_vantage_point_is_written_down_not_raised() -> None:
    facts = Facts.from_snapshot(load_snapshot(SEED))
    runner = FakeVantagePoints(unreachable=frozenset({"node-2"}))
    lines: list[str] = []
    files = run_probes(facts, POINTS, ProbeSettings(parallel=2), lines.append, runner=runner)
    assert (
        files["node-2/vip.error.txt"] == "node-2 (ssh://node-2): ssh failed (exit 255): refused\n"
    )
    assert "node-2/vip.txt" not in files
    assert "node-2: vip probes not run: node-2 (ssh://node-2)" in "\n".join(lines)
    assert "node-2: connection table not re-read: " in "\n".join(lines)
    assert "after/node-2/ip_vs_conn.txt" not in files


def test_nothing_failing_opens_no_second_round() -> None:
    facts = Facts.from_snapshot(load_snapshot(SEED))
    runner = FakeVantagePoints(refusing=None)
    files = run_probes(facts, POINTS, ProbeSettings(), lambda _line: None, runner=runner)
    assert runner.scripts == dict.fromkeys(("node-1", "node-2", "node-3", "client"), 1)
    assert not any(name.startswith("after/") or "real-server" in name for name in files)


def test_a_round_killed_at_its_deadline_keeps_what_it_printed() -> None:
    facts = Facts.from_snapshot(load_snapshot(SEED))
    runner = FakeVantagePoints(refusing=None, killed=frozenset({"node-2"}))
    lines: list[str] = []
    files = run_probes(facts, POINTS, ProbeSettings(), lines.append, runner=runner)
    kept = files["node-2/vip.txt"]
    assert kept.startswith("TOOL bash\nATTEMPT ")
    assert kept.endswith("\nATTEMPT 10.9")  # as printed; the parser drops the cut line
    assert "node-2/vip.error.txt" not in files
    assert (
        "node-2: vip probes cut off (node-2 (ssh://node-2): no answer within 40 s); the "
        "attempts made are judged, the others are not"
    ) in lines
