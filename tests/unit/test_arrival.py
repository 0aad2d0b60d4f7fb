"""A live run's nodes judged as they arrive (vipcheck.arrival, issue 22): while the others are
still being gathered, with the results of a replay judged item by item; a node the judge did not
reach, failed on, or that the run kept another node's files under, judged after collection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.arrival import DelayedNodes
from bench.synth import Mode, Shape, generate
from vipcheck import arrival, judging
from vipcheck.arrival import ArrivalJudge
from vipcheck.cases import Case, Result, cases_for, run_case
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS, SYSCTL_KEYS
from vipcheck.facts import Facts
from vipcheck.gather.live import gather
from vipcheck.judging import Judgements, judge_nodes, reads_probes
from vipcheck.options import GatherOptions
from vipcheck.settings import Settings
from vipcheck.snapshot import NodeSnapshot, NodeSpool, Snapshot, load_snapshot

SHAPES = {
    "ipvs": Shape(nodes=6, services=25, connections=10, node_port_share=0.3),
    "nftables": Shape(
        nodes=6, services=25, connections=10, node_port_share=0.3, mode=Mode.NFTABLES
    ),
}
JUDGED_ON_ARRIVAL = [c for c in CATALOGUE if c not in MIGRATION_CHECKS and not reads_probes(c)]
WAIT_S = 60.0


@pytest.fixture(scope="module", params=sorted(SHAPES))
def snapshot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SHAPES[request.param], tmp_path_factory.mktemp(request.param))


def _gathered(
    replayed: Snapshot, judge: ArrivalJudge, runner: DelayedNodes
) -> tuple[Snapshot, Facts]:
    """Gather the replayed snapshot's nodes live, as observe does with a judge."""
    spool = NodeSpool()
    try:
        gathered = gather(
            GatherOptions(hosts=tuple(f"ssh://{name}" for name in replayed.nodes), parallel=2),
            lambda _line: None,
            runner=runner,
            read_cluster=lambda *_args: dict(replayed.cluster),
            sysctl_keys=SYSCTL_KEYS,
            keep=lambda node: judge.arrived(spool.keep(node)),
            cluster_read=judge.cluster_read,
        )
    finally:
        cluster = judge.gathered()
    facts = Facts.from_snapshot(gathered, sysctl_keys=SYSCTL_KEYS, cluster=cluster)
    judge.adopt(gathered, facts)
    return gathered, facts


def _cases(facts: Facts) -> list[Case[Any]]:
    return [case for check in CATALOGUE for case in cases_for(check, facts)]


def _shown(result: Result) -> tuple[object, ...]:
    return (result.case.check.id, result.case.id, result.outcome, result.violations, result.reason)


def _replayed(snapshot: Snapshot) -> list[tuple[object, ...]]:
    """Every case's result, item by item, on the snapshot replayed."""
    facts = Facts.from_snapshot(snapshot, sysctl_keys=SYSCTL_KEYS)
    return [_shown(run_case(case, facts, Settings())) for case in _cases(facts)]


def _judged(facts: Facts, judgements: Judgements) -> list[tuple[object, ...]]:
    """Every case's result as the plugin gives it: the pass after collection, then items."""
    cases = _cases(facts)
    judged = judge_nodes(cases, facts, Settings(), 1, print, judgements=judgements)
    return [_shown(judged.result(case) or run_case(case, facts, Settings())) for case in cases]


def _judge(lines: list[str]) -> ArrivalJudge:
    return ArrivalJudge(JUDGED_ON_ARRIVAL, Settings(), SYSCTL_KEYS, lines.append)


@pytest.fixture
def judged_nodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The nodes the judge judged, in order, as it judged them."""
    judged: list[str] = []
    judge_node = judging.judge_node

    def recorded(work: Any, name: str) -> Any:
        found = judge_node(work, name)
        judged.append(name)
        return found

    monkeypatch.setattr(arrival, "judge_node", recorded)
    return judged


def _waits_for(judged: list[str], names: set[str]) -> Callable[[], None]:
    """What a node's runner waits for: these nodes judged (a judge that waits for the gather
    to end never sees them judged, and the test fails)."""

    def wait() -> None:
        for _ in range(int(WAIT_S * 20)):
            if names <= set(judged):
                return
            time.sleep(0.05)
        raise AssertionError(f"{sorted(names - set(judged))} not judged while gathering")

    return wait


def test_nodes_are_judged_while_the_last_is_gathered_with_a_replay_s_results(
    snapshot: Path, judged_nodes: list[str]
) -> None:
    replayed = load_snapshot(snapshot)
    expected = _replayed(replayed)
    runner = DelayedNodes(replayed)
    *first, last = replayed.nodes
    runner.before[last] = _waits_for(judged_nodes, set(first))
    lines: list[str] = []
    judge = _judge(lines)

    gathered, facts = _gathered(replayed, judge, runner)

    assert set(first) <= judge.judgements.nodes  # judged before the last node was gathered
    assert _judged(facts, judge.judgements) == expected
    assert lines == [f"judged {len(judge.judgements.nodes)} of 6 nodes as they arrived"]
    assert gathered.nodes.keys() == replayed.nodes.keys()


def test_a_node_not_observed_is_left_to_its_items(snapshot: Path, judged_nodes: list[str]) -> None:
    replayed = load_snapshot(snapshot)
    down = "node-003"
    runner = DelayedNodes(replayed, down=frozenset({down}))
    *first, last = replayed.nodes
    runner.before[last] = _waits_for(judged_nodes, set(first) - {down})
    judge = _judge([])

    gathered, facts = _gathered(replayed, judge, runner)

    assert down not in judged_nodes
    assert down not in judge.judgements.nodes
    results = _judged(facts, judge.judgements)
    expected = _replayed(Snapshot(gathered.cluster, gathered.nodes, gathered.meta))
    assert results == expected
    assert any(check == "node-observed" and outcome == "error" for check, _, outcome, *_ in results)


def test_nodes_the_judge_did_not_reach_are_judged_after_collection(
    snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judging the first node lasts until gathering ends (which waits for it to begin): the
    judge stops after it, and the pass after collection judges the others."""
    replayed = load_snapshot(snapshot)
    judge = _judge([])
    judge_node = judging.judge_node
    begun = threading.Event()

    def slow(work: Any, name: str) -> Any:
        begun.set()
        assert judge._stopping.wait(WAIT_S)  # the end of gathering
        return judge_node(work, name)

    monkeypatch.setattr(arrival, "judge_node", slow)
    runner = DelayedNodes(replayed)
    *_first, last = replayed.nodes
    runner.before[last] = lambda: None if begun.wait(WAIT_S) else pytest.fail("never judged")

    _gathered_snapshot, facts = _gathered(replayed, judge, runner)

    assert len(judge.judgements.nodes) == 1
    assert _judged(facts, judge.judgements) == _replayed(replayed)


def test_a_node_judging_fails_on_is_judged_after_collection(
    snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node-002's judging raises once it made its verdicts (the gather waits for it)."""
    replayed = load_snapshot(snapshot)
    judge_node = judging.judge_node
    failed = threading.Event()

    def failing(work: Any, name: str) -> Any:
        found = judge_node(work, name)
        if name == "node-002":
            failed.set()
            raise RuntimeError("a bug")
        return found

    monkeypatch.setattr(arrival, "judge_node", failing)
    judge = _judge([])
    runner = DelayedNodes(replayed)
    *_first, last = replayed.nodes
    runner.before[last] = lambda: None if failed.wait(WAIT_S) else pytest.fail("never judged")

    _gathered_snapshot, facts = _gathered(replayed, judge, runner)

    assert "node-002" not in judge.judgements.nodes
    assert _judged(facts, judge.judgements) == _replayed(replayed)


def test_a_node_kept_under_another_s_name_is_judged_again(snapshot: Path) -> None:
    """A --hosts spec is named by its host until paired with the API's nodes: the node judged
    under a name is adopted only if the run kept that very node under it."""
    replayed = load_snapshot(snapshot)
    judge = _judge([])
    judge.cluster_read(dict(replayed.cluster))
    spool = NodeSpool()
    kept = {name: judge.arrived(spool.keep(node)) for name, node in replayed.nodes.items()}
    # Let it judge every node before gathering ends.
    for _ in range(int(WAIT_S * 20)):
        if len(judge._judged) == len(kept):  # how far it got
            break
        time.sleep(0.05)
    cluster = judge.gathered()
    swapped = dict(kept)
    swapped["node-001"], swapped["node-002"] = (
        NodeSnapshot("node-001", kept["node-002"].files),
        NodeSnapshot("node-002", kept["node-001"].files),
    )
    run = Snapshot(replayed.cluster, swapped, replayed.meta)
    facts = Facts.from_snapshot(run, sysctl_keys=SYSCTL_KEYS, cluster=cluster)
    judge.adopt(run, facts)
    assert judge.judgements.nodes == set(replayed.nodes) - {"node-001", "node-002"}
    assert _judged(facts, judge.judgements) == _replayed(run)
