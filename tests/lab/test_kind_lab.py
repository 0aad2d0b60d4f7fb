"""vipcheck --kind on the kind-shaped lab: nodes are containers under dockerd, reached with
docker exec; the failures are the SSH form's, and broken containers error their nodes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from fixtures.lab.connect import connect_attempts
from fixtures.lab.guest_script import Runtime
from fixtures.lab.running import KIND_CLUSTER, LabPool, RunningLab
from tests.lab.test_vipcheck import EXPECTED_FAILURES, outcomes

Failures = set[tuple[str, str, str | None]]
# The docker exec wrapper: logs which container ran what kind of script, then runs the real CLI.
COUNTING_DOCKER = """#!/bin/sh
case "$1 $*" in
exec*uname.txt*) echo "gather $2" >> "$DOCKER_CALLS" ;;
exec*) echo "other $2" >> "$DOCKER_CALLS" ;;
esac
exec {docker} "$@"
"""


def kind_names(lab: RunningLab) -> dict[str, str]:
    """SSH-form node names (node-1, ...) to this lab's kind names, in scenario order."""
    return {f"node-{i}": node.name for i, node in enumerate(lab.scenario.nodes, start=1)}


def run_kind(
    lab: RunningLab, out: Path, docker: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str, list[str]]:
    """vipcheck --kind with the lab's DOCKER_HOST, through a docker that counts its execs."""
    bin_dir = out / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "docker"
    wrapper.write_text(COUNTING_DOCKER.format(docker=docker))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    calls = out / "docker-calls"
    calls.unlink(missing_ok=True)
    summary = out / "summary.json"
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DOCKER_HOST": lab.docker_host,
        "DOCKER_CALLS": str(calls),
        **(env or {}),
    }
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kind", KIND_CLUSTER,
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--vipcheck-json", str(summary),
            "-q", "-rfE", *extra,
        ],
        capture_output=True, text=True, timeout=300, check=False, cwd=out, env=environment,
    )  # fmt: skip
    output = result.stdout + result.stderr
    loaded = json.loads(summary.read_text()) if summary.exists() else {}
    logged = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, loaded, output, logged


@pytest.mark.parametrize("scenario", ["seed-incidents", "healthy"])
def test_kind_nodes_fail_as_ssh_nodes_do(
    labs: LabPool, docker_cli: str, scenario: str, tmp_path: Path
) -> None:
    lab = labs.get(scenario, Runtime.DOCKER)
    names = kind_names(lab)
    api = lab.scenario.service("default", "api")
    # As in the SSH form: the client's handshakes leave SYN_RECV where rp_filter drops them.
    connect_attempts(lab.workdir / "ssh_config", "client", str(api.cluster_ip), 80, count=2)
    code, summary, output, calls = run_kind(
        lab, tmp_path, docker_cli,
        "--hosts", "ssh://client", "--ssh-config", str(lab.workdir / "ssh_config"),
    )  # fmt: skip
    # A kind node image has no ipvsadm, so the IPVS timeouts cannot be read there; tcpfin is
    # judged from kube-proxy's config instead, and every failure is the SSH form's, on the same
    # nodes (healthy's tcpFinTimeout 30s cannot be confirmed there: those items skip).
    expected = {
        (check, subject.replace(node, names[node]) if node else subject, names.get(node or ""))
        for check, subject, node in cast(Failures, EXPECTED_FAILURES[scenario])
    }
    assert outcomes(summary, "failed") == expected, output
    assert outcomes(summary, "error") == set(), output
    tcpfin = [r for r in summary["results"] if r["check"] == "ipvs-tcpfin-timeout"]
    assert len(tcpfin) == len(names), output
    for result in tcpfin:
        assert "ipvsadm not installed" in (
            result["message"] if scenario == "healthy" else result["violations"][0]["evidence"][1]
        ), result
    assert code == (1 if expected else 0), output
    # Gathering is one docker exec per node; probing adds its own rounds.
    assert sorted(line for line in calls if line.startswith("gather ")) == sorted(
        f"gather {node.name}" for node in lab.scenario.nodes
    ), calls


def test_broken_containers_error_their_nodes_and_bad_targets_exit_4(
    labs: LabPool, docker_cli: str, tmp_path: Path
) -> None:
    lab = labs.get("healthy", Runtime.DOCKER)
    control_plane, worker, worker2 = (node.name for node in lab.scenario.nodes)
    env = {**os.environ, "DOCKER_HOST": lab.docker_host}
    # Runs last on this lab (it breaks two of its nodes): one loses /bin/sh, one stops.
    for command in (
        ["exec", worker2, "/usr/bin/dash", "-c", "rm /bin/sh"],
        ["stop", "-t", "1", worker],
    ):
        subprocess.run([docker_cli, *command], env=env, check=True, capture_output=True)
    code, summary, output, _ = run_kind(lab, tmp_path, docker_cli, "--no-probe")
    assert code == 1, output
    errors: dict[str | None, list[str]] = {}
    for result in summary["results"]:
        if result["outcome"] == "error":
            errors.setdefault(result["node"], []).append(result["message"])
    # Each broken node is one problem, its node-observed item, with docker's own reason.
    assert {node: len(messages) for node, messages in errors.items()} == {worker: 1, worker2: 1}
    observed = {r["node"]: r["check"] for r in summary["results"] if r["outcome"] == "error"}
    assert set(observed.values()) == {"node-observed"}, output
    no_shell = "docker exec failed (exit 126): the container has no /bin/sh"
    stopped = "docker exec failed (exit 1): Error response from daemon: Container "
    assert all(no_shell in message for message in errors[worker2]), errors[worker2]
    assert all(stopped in m and "is not running" in m for m in errors[worker]), errors[worker]
    # The Service-port items judge the node that was seen and name the two that were not.
    unseen = [r for r in summary["results"] if r["node"] is None and r.get("unseen_nodes")]
    assert unseen, output
    assert all(set(r["unseen_nodes"]) == {worker, worker2} for r in unseen), output
    assert outcomes(summary, "failed") == set(), output
    assert any(r["node"] == control_plane and r["outcome"] == "passed" for r in summary["results"])
    assert "Traceback" not in output

    unreachable = {"DOCKER_HOST": "tcp://127.0.0.1:9"}
    for extra, docker_env, line in (
        ((), unreachable, "--kind lab: Docker daemon unreachable (DOCKER_HOST=tcp://127.0.0.1:9)"),
        (("--kind", "nope"), {}, "--kind nope: no Docker containers labelled"),
    ):
        code, _, output, _ = run_kind(lab, tmp_path, docker_cli, *extra, env=docker_env)
        assert code == 4, output
        assert line in output, output
