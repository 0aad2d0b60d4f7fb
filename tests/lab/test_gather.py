"""Gathering the lab as a user would: only its kubeconfig and ssh_config, read-only, one trip."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.lab.running import LabPool, RunningLab
from vipcheck.checks import SYSCTL_KEYS
from vipcheck.gather.live import gather
from vipcheck.gather.node_script import FALLBACK_FILES
from vipcheck.options import GatherOptions
from vipcheck.snapshot import CLUSTER_FILES, NODE_FILES, Snapshot
from vipcheck.transport import HOST_SPEC_RUNNER, NodeTarget, RunResult

NODES = ("node-1", "node-2", "node-3")
MODERN_FILES = sorted(set(NODE_FILES) - FALLBACK_FILES)


@dataclass(frozen=True, slots=True)
class Gathered:
    snapshot: Snapshot
    round_trips: Counter[str]
    progress: list[str]
    before: dict[str, str]
    after: dict[str, str]
    volatile: dict[str, set[str]]


def node_state(lab: RunningLab, node: str) -> str:
    return lab.ssh(node, "ipvsadm -Ln; echo ===; sysctl -a 2>/dev/null")


def sysctl_values(state: str) -> dict[str, str]:
    values = {}
    for line in state.partition("===\n")[2].splitlines():
        key, _, value = line.partition(" = ")
        values[key] = value
    return values


def changed_keys(first: str, second: str) -> set[str]:
    a, b = sysctl_values(first), sysctl_values(second)
    return {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}


@pytest.fixture(scope="module")
def lab(labs: LabPool) -> RunningLab:
    return labs.get("healthy")


@pytest.fixture(scope="module")
def gathered(lab: RunningLab) -> Gathered:
    # Keys that change by themselves (pid counters, entropy, inode counts) between two looks.
    first = {node: node_state(lab, node) for node in NODES}
    before = {node: node_state(lab, node) for node in NODES}
    volatile = {node: changed_keys(first[node], before[node]) for node in NODES}
    round_trips: Counter[str] = Counter()

    class CountingRunner:
        def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
            round_trips[target.node] += 1
            return HOST_SPEC_RUNNER.run(target, script, timeout_s)

    progress: list[str] = []
    options = GatherOptions(
        kubeconfig=str(lab.workdir / "kubeconfig"), ssh_config=str(lab.workdir / "ssh_config")
    )
    snapshot = gather(options, progress.append, runner=CountingRunner(), sysctl_keys=SYSCTL_KEYS)
    after = {node: node_state(lab, node) for node in NODES}
    print("\n".join(progress))
    return Gathered(snapshot, round_trips, progress, before, after, volatile)


def test_cluster_files_are_the_api_lists(gathered: Gathered, lab: RunningLab) -> None:
    snapshot = gathered.snapshot
    assert snapshot.cluster_error is None
    assert sorted(snapshot.cluster) == sorted(CLUSTER_FILES)
    services = json.loads(snapshot.cluster["services.json"])
    assert services["kind"] == "ServiceList"
    api = lab.api_get("/api/v1/services")
    assert [s["metadata"]["name"] for s in services["items"]] == [
        s["metadata"]["name"] for s in api["items"]
    ]
    assert json.loads(snapshot.cluster["kube-proxy.json"])["metadata"]["name"] == "kube-proxy"
    nodes = json.loads(snapshot.cluster["nodes.json"])
    assert [n["metadata"]["name"] for n in nodes["items"]] == list(NODES)


def test_every_node_gives_every_file(gathered: Gathered) -> None:
    snapshot = gathered.snapshot
    assert sorted(snapshot.nodes) == list(NODES)
    for node in NODES:
        observed = snapshot.nodes[node]
        assert observed.error is None, observed.error
        assert observed.missing == {}
        # A modern node needs no fallback: it gives every file the node script asks first.
        assert sorted(observed.files) == sorted(MODERN_FILES)
        assert "TCP" in observed.files["ipvsadm-Ln.txt"]
        assert "proc-ip_vs.txt" not in observed.files  # the table ipvsadm listed, not read again
        assert "net.ipv4.vs.conntrack" in observed.files["sysctl.txt"]
        assert json.loads(observed.files["ip-addr.json"])
    assert snapshot.meta["target"].startswith("kubeconfig ")


def test_one_round_trip_per_node(gathered: Gathered) -> None:
    assert gathered.round_trips == dict.fromkeys(NODES, 1)
    gathered_lines = [line for line in gathered.progress if ": gathered " in line]
    assert len(gathered_lines) == len(NODES)
    assert all(f"gathered {len(MODERN_FILES)} files in " in line for line in gathered_lines)


def test_gathering_changes_nothing_on_the_node(gathered: Gathered) -> None:
    for node in NODES:
        before, after = gathered.before[node], gathered.after[node]
        assert before.partition("===")[0] == after.partition("===")[0], node
        changed = changed_keys(before, after) - gathered.volatile[node]
        # Counters the gather's own ssh session moves (pids, open files) are not state we changed.
        changed = {k for k in changed if not k.startswith(("kernel.ns_last_pid", "fs."))}
        assert changed == set(), f"{node}: sysctls changed: {sorted(changed)}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_node_on_a_closed_port_is_an_error_naming_it(lab: RunningLab, tmp_path: Path) -> None:
    # ssh takes the first value it reads, so an entry ahead of the lab's redirects node-3.
    ssh_config = tmp_path / "ssh_config"
    extra = f"Host node-3\n    Port {closed_port()}\n\n"
    ssh_config.write_text(extra + (lab.workdir / "ssh_config").read_text())
    options = GatherOptions(
        kubeconfig=str(lab.workdir / "kubeconfig"), ssh_config=str(ssh_config), timeout_s=30
    )
    started = time.monotonic()
    snapshot = gather(options, lambda _line: None, sysctl_keys=SYSCTL_KEYS)
    assert time.monotonic() - started < 15
    broken = snapshot.nodes["node-3"]
    assert broken.files == {}
    assert broken.error is not None
    assert broken.error.startswith("node-3 (ssh://node-3): ssh failed (exit 255): ")
    assert "refused" in broken.error
    assert snapshot.nodes["node-1"].error is None
