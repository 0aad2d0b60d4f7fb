"""Two snapshots judged in one process (as `vipcheck diff` does) share nothing: each gets its own
answer, in whatever order their items run, and nothing of one outlives its Facts."""

from __future__ import annotations

import gc
import json
import shutil
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

from vipcheck.cases import Case, cases_for, run_case
from vipcheck.checks import CATALOGUE
from vipcheck.facts import Facts
from vipcheck.json_summary import Summary
from vipcheck.model.cluster import Cluster
from vipcheck.model.node import VirtualService
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import load_snapshot

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded"
SEED = RECORDED / "seed-incidents"
OLD_NODE = RECORDED / "seed-incidents-old-node"


def _facts(directory: Path) -> Facts:
    return Facts.from_snapshot(load_snapshot(directory))


def _cases(facts: Facts) -> Iterator[Case[Any]]:
    for check in CATALOGUE:
        yield from cases_for(check, facts)


def _alone(directory: Path) -> dict[str, Any]:
    """The snapshot's summary, judged on its own."""
    facts = _facts(directory)
    summary = Summary()
    for case in _cases(facts):
        summary.add(run_case(case, facts, DEFAULTS))
    return summary.as_json()


def _interleaved(*directories: Path) -> list[dict[str, Any]]:
    """Each snapshot's summary, their items run in turn: one of the first, one of the second..."""
    every = [_facts(directory) for directory in directories]
    summaries = [Summary() for _ in every]
    for cases in zip_longest(*(list(_cases(facts)) for facts in every)):
        for case, facts, summary in zip(cases, every, summaries, strict=True):
            if case is not None:
                summary.add(run_case(case, facts, DEFAULTS))
    return [summary.as_json() for summary in summaries]


def _one_service_changed(tmp_path: Path) -> Path:
    """seed-incidents with its first Service's ClusterIPs moved, so every node expects other VSs."""
    copy = tmp_path / "changed"
    shutil.copytree(SEED, copy)
    path = copy / "cluster" / "services.json"
    services = json.loads(path.read_text())
    spec = services["items"][0]["spec"]
    spec["clusterIP"] = spec["clusterIPs"][0] = "10.96.250.250"
    path.write_text(json.dumps(services))
    return copy


def test_snapshots_judged_in_turn_each_get_their_own_answer(tmp_path: Path) -> None:
    changed = _one_service_changed(tmp_path)
    alone = [_alone(directory) for directory in (SEED, OLD_NODE, changed)]
    assert alone[0] != alone[1]
    assert alone[0] != alone[2]
    # Judge A, B, C in turn, then A again beside B: each keeps its own answer.
    assert _interleaved(SEED, OLD_NODE, changed) == alone
    assert _interleaved(OLD_NODE, SEED) == [alone[1], alone[0]]


def _holding(address: str) -> list[object]:
    """The live clusters and IPVS services naming this address."""
    gc.collect()
    found: list[object] = []
    for item in gc.get_objects():
        if type(item) is Cluster:
            found += [s for s in item.services if address in map(str, s.cluster_ips)]
        elif type(item) is VirtualService and str(item.address) == address:
            found.append(item)
    return found


def test_nothing_of_a_judged_snapshot_outlives_its_facts(tmp_path: Path) -> None:
    """No process-wide cache keeps a snapshot's cluster or IPVS services once it is judged."""
    changed = _one_service_changed(tmp_path)
    (changed / "nodes" / "node-1" / "ipvsadm-Ln.txt").write_text(
        "TCP  10.96.250.250:80 rr\n  -> 10.244.1.10:8080            Masq    1      0          0\n"
    )
    facts = _facts(changed)
    assert facts.nodes["node-1"].ipvs.services  # parsed, with its table's service
    assert _alone(changed)["totals"]["failed"]
    del facts
    assert _holding("10.96.250.250") == []
