"""Judging node by node (vipcheck.judging, issue 22): the same results as judging item by item,
in one process or in forked workers; a node's tables let go once judged; each node's judging
reads that node's files and the cluster's alone; verdicts cross processes whole."""

from __future__ import annotations

import gc
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.synth import Mode, Shape, generate
from vipcheck import judging
from vipcheck.cases import Case, Result, cases_for, run_case
from vipcheck.checks import CATALOGUE, SYSCTL_KEYS
from vipcheck.datapath.nft_trace import CannotTrace
from vipcheck.facts import Facts, MissingInput, NotProbed, Unobserved
from vipcheck.judging import judge_nodes
from vipcheck.model.nftables import NftFamily
from vipcheck.model.node import InvalidValue
from vipcheck.parse import ParseError
from vipcheck.settings import Settings
from vipcheck.snapshot import SnapshotError, SnapshotLineError, load_snapshot

SHAPES = {
    "ipvs": Shape(nodes=6, services=25, connections=10, node_port_share=0.3),
    "nftables": Shape(
        nodes=6, services=25, connections=10, node_port_share=0.3, mode=Mode.NFTABLES
    ),
}


def _facts(snapshot: Path, observer: Any = None) -> Facts:
    if observer is None:
        return Facts.from_snapshot(load_snapshot(snapshot), sysctl_keys=SYSCTL_KEYS)
    return Facts.from_snapshot(load_snapshot(snapshot), observer=observer, sysctl_keys=SYSCTL_KEYS)


def _cases(facts: Facts) -> list[Case[Any]]:
    return [case for check in CATALOGUE for case in cases_for(check, facts)]


def _shown(result: Result) -> tuple[object, ...]:
    return (result.case.check.id, result.case.id, result.outcome, result.violations, result.reason)


@pytest.fixture(scope="module", params=sorted(SHAPES))
def snapshot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SHAPES[request.param], tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_judged_node_by_node_the_results_are_those_of_item_by_item(
    snapshot: Path, jobs: int
) -> None:
    settings = Settings()
    unjudged = _facts(snapshot)
    expected = [_shown(run_case(case, unjudged, settings)) for case in _cases(unjudged)]
    assert any(outcome == "failed" for _, _, outcome, _, _ in expected)  # the injected faults

    facts = _facts(snapshot)
    cases = _cases(facts)
    lines: list[str] = []
    judgements = judge_nodes(cases, facts, settings, jobs, lines.append)
    found = [_shown(judgements.result(case) or run_case(case, facts, settings)) for case in cases]
    assert found == expected
    node_items = [case for case in cases if case.node is not None]
    assert all(judgements.result(case) is not None for case in node_items)
    assert lines == ([f"judging 6 nodes in {jobs} processes"] if jobs > 1 else [])


def test_fresh_workers_are_forked_every_few_nodes_with_the_same_results(
    snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker judges NODES_PER_FORK nodes, then new ones are forked (what its allocator held
    of the nodes it parsed goes with it); the results stay those of one process."""
    settings = Settings()
    alone = _facts(snapshot)
    expected = [_shown(run_case(case, alone, settings)) for case in _cases(alone)]
    started = tmp_path / "workers"
    start_worker = judging._start_worker

    def counted(work: Any) -> None:
        with started.open("a") as out:
            out.write(f"{os.getpid()}\n")
        start_worker(work)

    monkeypatch.setattr(judging, "NODES_PER_FORK", 1)
    monkeypatch.setattr(judging, "_start_worker", counted)
    facts = _facts(snapshot)
    cases = _cases(facts)
    lines: list[str] = []
    judgements = judging.judge_nodes(cases, facts, settings, 2, lines.append)
    found = [_shown(judgements.result(case) or run_case(case, facts, settings)) for case in cases]
    assert found == expected
    # 5 nodes after the first, 2 workers of 1 node each per fork: 3 forks, 6 workers (5 used).
    assert len(set(started.read_text().split())) == 6


def test_a_judged_nodes_tables_are_let_go(snapshot: Path) -> None:
    facts = _facts(snapshot)
    nft = "nft" in snapshot.name
    tables = [node.nftables(NftFamily.IP) if nft else node.ipvs for node in facts.nodes.values()]
    held = [sys.getrefcount(table) for table in tables]  # by the list and by its node's facts
    gc.disable()  # nor by a reference cycle the collector would have to find
    try:
        judge_nodes(_cases(facts), facts, Settings(), 1, print)
    finally:
        gc.enable()
    assert [sys.getrefcount(table) for table in tables] == [count - 1 for count in held]


def test_judging_one_node_reads_its_files_and_the_clusters_alone(snapshot: Path) -> None:
    """What the pass does for one node (judging._judge): every check that spans nodes run on
    the facts judging only it, and its own items; no other node's file is read."""
    table = "nft-ip-kube-proxy.json" if "nft" in snapshot.name else "ipvsadm-Ln.txt"
    for name in ("node-001", "node-004"):
        read: list[str] = []
        facts = _facts(snapshot, read.append)
        cases = [case for case in _cases(facts) if case.node in (None, name)]
        read.clear()  # from the judging on, not while items are listed
        for case in cases:
            run_case(case, facts.judging_only(name) if case.node is None else facts, Settings())
        others = {path for path in read if not path.startswith(("cluster/", f"nodes/{name}/"))}
        assert f"nodes/{name}/{table}" in read
        assert not others


@pytest.mark.parametrize(
    "error",
    [
        MissingInput("node-1", ("nft-ip-kube-proxy.json", "nft-ip-kube-proxy.txt"), "not listed"),
        NotProbed("probing turned off (--no-probe)"),
        CannotTrace("a rule it cannot read", "services", None),
        SnapshotLineError("nodes/n/ip_vs_conn.txt", "ip_vs_conn.txt", 7, 4096),
        ParseError("nodes/n/ipvsadm-Ln.txt", 3, "not a real server line"),
        SnapshotError("snap/meta.json: gone"),
        Unobserved("node-1 could not be observed: timed out"),
        InvalidValue("nodes/n/sysctl.txt: net.ipv4.vs.conn_reuse_mode = x"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_failed_verdict_crosses_processes_as_it_was(error: Exception) -> None:
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 (made here)
    assert (type(again), str(again)) == (type(error), str(error))
    if isinstance(error, MissingInput):
        assert (again.where, again.files, again.known_reason) == (
            error.where,
            error.files,
            error.known_reason,
        )


def _vipcheck(snapshot: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "vipcheck.cli", "--from-snapshot", str(snapshot), "-q"]
    return subprocess.run(
        [*command, "-p", "no:cacheprovider", "--vipcheck-json", str(out), *args],
        capture_output=True, text=True, timeout=300, check=False, cwd=out.parent,
    )  # fmt: skip


def test_the_command_reports_the_same_with_workers_or_without(
    snapshot: Path, tmp_path: Path
) -> None:
    summaries = {}
    for jobs in ("1", "2", "auto"):
        out = tmp_path / f"jobs-{jobs}.json"
        run = _vipcheck(snapshot, out, "--vipcheck-jobs", jobs)
        assert run.returncode == 1, run.stdout + run.stderr  # the injected faults
        assert ("judging 6 nodes in 2 processes" in run.stdout) is (jobs == "2"), run.stdout
        summary = json.loads(out.read_text())
        summaries[jobs] = (summary["totals"], summary["results"])
    assert summaries["1"] == summaries["2"] == summaries["auto"]


def test_a_bad_jobs_value_is_one_line_and_exit_4(snapshot: Path, tmp_path: Path) -> None:
    run = _vipcheck(snapshot, tmp_path / "summary.json", "--vipcheck-jobs", "0")
    assert run.returncode == 4
    assert "--vipcheck-jobs '0': expected auto or a whole number above 0" in run.stderr
    assert len((run.stdout + run.stderr).strip().splitlines()) == 1, run.stdout + run.stderr
