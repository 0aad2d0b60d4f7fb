"""The lab's agents are the DaemonSet `vipcheck manifests` prints: its settings become the docker
run of each agent, and the pods the stand-in serves are ones vipcheck pairs with their nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.lab.__main__ import main
from fixtures.lab.agents import Agent, agent_pod, pod_name, run_arguments
from fixtures.lab.errors import LabError
from vipcheck.gather.agents import agent_pods
from vipcheck.manifests import DEFAULT_IMAGE, manifests

[DAEMON_SET] = [m for m in manifests("vipcheck", DEFAULT_IMAGE) if m["kind"] == "DaemonSet"]
AGENT = Agent("lab-worker", pod_name("lab-worker"))
CONTAINER = {"id": "c0ffee", "image": "sha256:feed", "started": "2026-01-01T00:00:00Z"}


def test_the_agent_runs_as_the_daemon_set_says() -> None:
    arguments = run_arguments(DAEMON_SET, AGENT)
    assert arguments == [
        "run", "-d", "--name", AGENT.pod, "--label", "vipcheck.lab/agent-node=lab-worker",
        "--network", "container:lab-worker",  # hostNetwork: a kind node is its pods' host
        "--cap-drop=ALL", "--cap-add=NET_ADMIN",
        "--user", "0:0",
        "--read-only",
        "--security-opt", "no-new-privileges",
        "--cpus", "1", "--memory", "512m",
        "--entrypoint", "sh", DEFAULT_IMAGE, "-c", "trap 'exit 0' TERM INT; sleep infinity & wait",
    ]  # fmt: skip


def test_a_privileged_daemon_set_is_not_run() -> None:
    spec = DAEMON_SET["spec"]["template"]["spec"]
    container = spec["containers"][0] | {"securityContext": {"privileged": True}}
    privileged = DAEMON_SET | {"spec": {"template": {"spec": spec | {"containers": [container]}}}}
    with pytest.raises(LabError, match="unprivileged only"):
        run_arguments(privileged, AGENT)


def test_vipcheck_pairs_each_served_pod_with_its_node_and_finds_it_ready() -> None:
    pods = [agent_pod(DAEMON_SET, Agent(n, pod_name(n)), CONTAINER) for n in ("a", "b")]
    paired = agent_pods("vipcheck", {"items": pods})
    assert [paired.pod_for(node) for node in ("a", "b")] == [pod_name("a"), pod_name("b")]
    assert pod_name("a") != pod_name("b")
    assert pods[0]["metadata"]["labels"] == DAEMON_SET["spec"]["selector"]["matchLabels"]
    assert pods[0]["spec"]["containers"] == DAEMON_SET["spec"]["template"]["spec"]["containers"]


def test_agents_without_a_lab_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agents", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"lab: error: no lab in {tmp_path}: `python -m fixtures.lab up --runtime docker` first\n"
    )
