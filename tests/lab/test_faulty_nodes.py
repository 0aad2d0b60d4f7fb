"""Five broken nodes at once (faulty-nodes): the run ends within the per-node timeout, each broken
node is one problem with its cause in words, and the healthy nodes are judged as on healthy."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fixtures.lab.running import LabPool, RunningLab

# Seven sessions at once in a software-emulated VM take ~10-20 s each: room for them, not more
# (the hung node costs the run this much, and CI all of it).
TIMEOUT_S = 35
HEALTHY = ("node-1", "node-2", "node-3")
# Each unobservable node's node-observed error: what it must say.
CAUSES = {
    "node-4": (f"no answer within {TIMEOUT_S} s", "did not answer in time"),  # sshd hangs
    "node-5": ("Connection refused", "nothing listens on the node's ssh port"),  # port closed
    "node-6": ("output truncated", "dropped mid-output"),  # output cut off
    "node-8": (
        "sudo: a terminal is required to read the password",
        "sudo asks for a password",
    ),  # sudo wants a password
}
NO_IPVS = "node-7"


def run_vipcheck(lab: RunningLab, out: Path, *extra: str) -> tuple[int, dict[str, Any], str, float]:
    summary = out / "summary.json"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--ssh-config", str(lab.workdir / "ssh_config"),
            "--vipcheck-json", str(summary), "--no-probe", "-q", "-rfE", *extra,
        ],
        capture_output=True, text=True, timeout=300, check=False, cwd=out,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    return result.returncode, json.loads(summary.read_text()), output, elapsed


def node_items(summary: dict[str, Any], nodes: tuple[str, ...]) -> set[tuple[str, str, str]]:
    return {
        (r["check"], r["subject"], r["outcome"]) for r in summary["results"] if r["node"] in nodes
    }


def test_faulty_nodes_are_one_problem_each_within_the_timeout(
    labs: LabPool, tmp_path: Path
) -> None:
    lab = labs.get("faulty-nodes")
    timeout = ("--vipcheck-timeout", str(TIMEOUT_S))
    code, summary, output, elapsed = run_vipcheck(lab, tmp_path, "--sudo", *timeout)
    assert "Traceback" not in output
    assert code == 1, output
    # Bounded: the hung node costs the timeout, in parallel with the others; a few seconds more
    # for the rest of the run under software emulation.
    assert elapsed < TIMEOUT_S + 25, f"{elapsed:.1f} s\n{output}"
    problems = [r for r in summary["results"] if r["outcome"] in ("error", "failed")]
    by_node: dict[str | None, list[dict[str, Any]]] = {}
    for result in problems:
        by_node.setdefault(result["node"], []).append(result)
    assert sorted(by_node, key=str) == sorted([*CAUSES, NO_IPVS]), output
    for node, (cause, fix) in CAUSES.items():
        [reported] = by_node[node]
        assert (reported["check"], reported["outcome"]) == ("node-observed", "error"), reported
        assert cause in reported["message"], reported["message"]
        assert fix in reported["message"], reported["message"]
    [no_ipvs] = by_node[NO_IPVS]
    assert (no_ipvs["check"], no_ipvs["outcome"]) == ("ipvs-present", "failed"), no_ipvs
    assert "no IPVS (ip_vs not loaded?)" in no_ipvs["message"], no_ipvs["message"]
    # Service-port items name the unseen nodes (the handshakes are off: --no-probe).
    # (The nftables checks' items skip before judging any node: this cluster runs IPVS.)
    spanning = [
        r
        for r in summary["results"]
        if r["node"] is None
        and r["check"] != "vip-handshake"
        and "checks do not apply" not in r["message"]
    ]
    assert spanning
    assert all(r["unseen_nodes"] == sorted(CAUSES) for r in spanning), spanning
    # The healthy nodes are judged exactly as on the healthy scenario (no sudo there, none needed).
    healthy = labs.get("healthy")
    out = tmp_path / "healthy"
    out.mkdir()
    base_code, base, base_output, _ = run_vipcheck(healthy, out)
    assert base_code == 0, base_output
    assert node_items(summary, HEALTHY) == node_items(base, HEALTHY)
    assert {outcome for _, _, outcome in node_items(summary, HEALTHY)} <= {"passed", "skipped"}
