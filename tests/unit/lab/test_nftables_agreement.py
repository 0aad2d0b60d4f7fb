"""The trace agrees with the map and chain checks on every lab scenario (issue 19), offline.

For every scenario and both rule layouts (kube-proxy v1.30: endpoint chains; v1.36: DNAT maps), a
snapshot is built as the booted lab would give it (fixtures/lab/nftables_snapshot.py: the API
stand-in's objects, each node's table loaded into and listed by the host kernel), and vipcheck
replays it as a user runs it. Per Service port and node, nft-trace-reaches-endpoints (what the
rules DO) must flag exactly where the checks reading the rules' spelling flag; a scenario whose
rules hold no fault flags nothing, and the stale-real-server fault is flagged by both on exactly
its port.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.nftables_snapshot import write_snapshot
from fixtures.lab.scenario import (
    NodeFault,
    ProxyMode,
    Scenario,
    StaleRealServerFault,
    load_scenario,
    scenario_names,
)

OLD, NEW = "v1.30.4", "v1.36.2"  # endpoint chains; numgen DNAT maps (nftables_rules.layout_for)
TRACE = "nft-trace-reaches-endpoints"
SPELLING = {
    "nft-service-maps",
    "nft-chains-reach-endpoints",
    "nft-session-affinity",
    "nft-lb-source-ranges",
}
ALWAYS_JUDGED = {TRACE, "nft-service-maps", "nft-chains-reach-endpoints"}
NO_TABLE = "has no ip kube-proxy table (the mode check reports it)"
BULK_NAME = re.compile(r"-[0-9]+$")
RUN_SECONDS = 60  # each replay takes 1-3 s

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nft")),
    reason="needs root, unshare and nft: each node's table is loaded into its own namespace",
)


def in_nftables_mode(scenario: Scenario, version: str) -> Scenario:
    proxy = dataclasses.replace(scenario.kube_proxy, version=version, mode=ProxyMode.NFTABLES)
    return dataclasses.replace(scenario, kube_proxy=proxy)


def bulk_ends(scenario: Scenario) -> Scenario:
    """The scenario with each bulk group (`app-0001`..`app-1800`) cut to its first two and last
    Services: its members differ only in name, ClusterIP and NodePort, so the ends (and the
    ranges' edges) are every shape it has. big's 2,005 Services become 14; a replay of the whole
    of big took 19-38 s per layout here (mostly vipcheck's 10,000 items), of this cut 1-2 s."""
    groups: dict[str, list[str]] = {}
    for service in scenario.services:
        groups.setdefault(BULK_NAME.sub("", service.name), []).append(service.name)
    kept = {name for names in groups.values() for name in (*names[:2], names[-1])}
    return dataclasses.replace(
        scenario, services=tuple(s for s in scenario.services if s.name in kept)
    )


def replay(snapshot: Path, cwd: Path) -> dict[str, Any]:
    """`vipcheck --from-snapshot` as a user runs it; its JSON summary."""
    summary = cwd / "summary.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--from-snapshot", str(snapshot),
            "--vipcheck-json", str(summary),
            "-q", "-p", "no:cacheprovider",
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=cwd,
    )  # fmt: skip
    assert summary.exists(), result.stdout + result.stderr
    document: dict[str, Any] = json.loads(summary.read_text())
    return document


def flagged(results: list[dict[str, Any]], checks: set[str]) -> set[tuple[str, str]]:
    """(Service port, node) of every violation the checks found."""
    return {
        (result["subject"], violation["node"])
        for result in results
        if result["check"] in checks
        for violation in result["violations"]
    }


def stale_ports(scenario: Scenario) -> set[str]:
    return {
        f"{f.service_namespace}/{f.service_name}:{f.port}/{f.protocol}"
        for f in scenario.faults
        if isinstance(f, StaleRealServerFault)
    }


@pytest.mark.parametrize("version", [OLD, NEW], ids=["v1.30-endpoint-chains", "v1.36-maps"])
@pytest.mark.parametrize("name", scenario_names())
def test_the_trace_flags_exactly_where_the_rule_checks_flag(
    name: str, version: str, tmp_path: Path
) -> None:
    scenario = bulk_ends(in_nftables_mode(load_scenario(name), version))
    snapshot = tmp_path / "snapshot"
    write_snapshot(scenario, snapshot)
    started = time.monotonic()
    results = replay(snapshot, tmp_path)["results"]
    elapsed = time.monotonic() - started
    ours = [r for r in results if r["check"] in SPELLING | {TRACE}]
    errors = [(r["check"], r["subject"], r["message"]) for r in ours if r["outcome"] == "error"]
    assert errors == []
    # Every item judged, but where a node has no table (faulty-nodes' node-7, as on a node whose
    # kube-proxy fell back to iptables): kube-proxy-mode's finding, which all of them leave to it.
    unjudged = {
        (r["check"], r["subject"], r["message"])
        for r in ours
        if r["check"] in ALWAYS_JUDGED and r["outcome"] == "skipped"
        and not r["message"].endswith(NO_TABLE)
    }  # fmt: skip
    assert unjudged == set()
    by_trace = flagged(results, {TRACE})
    by_spelling = flagged(results, SPELLING)
    assert by_trace == by_spelling
    with_table = [n.name for n in scenario.nodes if n.fault is not NodeFault.NO_IPVS]
    assert by_trace == {(port, node) for port in stale_ports(scenario) for node in with_table}
    assert elapsed < RUN_SECONDS
