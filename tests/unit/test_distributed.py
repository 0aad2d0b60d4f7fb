"""`vipcheck -n 2` (pytest-xdist, vipcheck.distributed, issue 22): the same JSON summary as a
run without -n, gate included; the cluster read once, not once per worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.synth import Mode, Shape, generate
from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api

TOKEN = "distributed-token-5d1e0b7a"  # noqa: S105 (a test token for a throwaway server)
SHAPE = Shape(nodes=6, services=25, connections=10, node_port_share=0.3, mode=Mode.NFTABLES)


def _vipcheck(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    env["HOME"] = str(out)
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", *args, "-q", "-p", "no:cacheprovider",
         "--vipcheck-json", str(out / "summary.json"), "--vipcheck-html", str(out / "report.html")],
        capture_output=True, text=True, timeout=300, check=False, cwd=out, env=env,
    )  # fmt: skip


def _summary(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return document


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SHAPE, tmp_path_factory.mktemp("snapshot"))


@pytest.mark.parametrize(
    "selection",
    [(), ("-k", "node-002 or default"), ("-m", "not probe")],
    ids=["all", "-k", "-m"],
)
def test_a_replay_with_workers_writes_the_same_summary(
    snapshot: Path, tmp_path: Path, selection: tuple[str, ...]
) -> None:
    # A waiver that matches, and one that could match only a deselected item: the gate is the
    # controller's, judging every worker's results in collection order.
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(
        "- check: nft-trace-reaches-endpoints\n  subject: '*'\n  reason: known\n"
        "  owner: sre\n  expires: 2099-01-01\n"
        "- check: node-observed\n  node: node-005\n  reason: unused\n"
        "  owner: sre\n  expires: 2099-01-01\n"
    )
    common = ("--from-snapshot", str(snapshot), "--vipcheck-waivers", str(waivers), *selection)
    alone = _vipcheck(tmp_path / "alone", *common)
    split = _vipcheck(tmp_path / "split", *common, "-n", "2")
    assert alone.returncode == split.returncode == 1, split.stdout + split.stderr
    assert _summary(tmp_path / "split") == _summary(tmp_path / "alone")
    assert "bringing up nodes" in split.stdout  # xdist ran it
    assert "Traceback" not in split.stdout + split.stderr
    # The terminal's closing lines (the gate's, the totals) are the same; progress is the
    # workers', which xdist does not show.
    closing = [
        line.replace("/alone/", "/split/")
        for line in alone.stdout.splitlines()
        if line.startswith("vipcheck: ") and not line.startswith("vipcheck: replaying")
    ]
    assert closing
    assert set(closing) <= set(split.stdout.splitlines()), split.stdout


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects = api_objects(load_scenario("healthy"))
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN) as running:
        yield running


def test_a_live_cluster_is_read_once_by_the_workers(api: ServedApi, tmp_path: Path) -> None:
    live = ("--kubeconfig", str(api.kubeconfig), "--hosts", "local://", "--no-probe")
    before = len(api.requests())
    alone = _vipcheck(tmp_path / "alone", *live)
    once = len(api.requests()) - before
    split = _vipcheck(tmp_path / "split", *live, "-n", "2")
    assert split.returncode == alone.returncode, split.stdout + split.stderr
    assert len(api.requests()) - before - once == once  # not once per worker
    shown = [
        [(r["check"], r["subject"], r["outcome"]) for r in _summary(tmp_path / run)["results"]]
        for run in ("alone", "split")
    ]
    assert shown[0]
    assert shown[0] == shown[1]
