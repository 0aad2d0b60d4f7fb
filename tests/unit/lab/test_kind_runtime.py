"""The docker runtime's setup: kind's node names everywhere, one labelled container per node."""

from __future__ import annotations

import re
import subprocess

from fixtures.lab.guest_script import Runtime, kind_node_names, setup_script
from fixtures.lab.objects import api_objects
from fixtures.lab.runtimes import kind_scenario
from fixtures.lab.scenario import load_scenario


def test_kind_names_its_nodes_control_plane_then_workers() -> None:
    assert kind_node_names("dev", 4) == [
        "dev-control-plane",
        "dev-worker",
        "dev-worker2",
        "dev-worker3",
    ]


def test_a_kind_scenario_names_its_nodes_everywhere() -> None:
    scenario = kind_scenario(load_scenario("seed-incidents"), "lab")
    names = {"lab-control-plane", "lab-worker", "lab-worker2"}
    assert {node.name for node in scenario.nodes} == names
    assert {pod.node for pod in scenario.pods} <= names
    assert scenario.client.gateway == "lab-control-plane"
    assert {getattr(f, "node", "lab-worker") for f in scenario.faults} == {"lab-worker"}
    text = str(api_objects(scenario))
    assert "node-1" not in text
    assert "node-2" not in text


def test_docker_setup_starts_a_labelled_container_per_node_and_no_node_sshd() -> None:
    scenario = kind_scenario(load_scenario("healthy"), "lab")
    script = setup_script(scenario, Runtime.DOCKER, "lab")
    for node, role in (
        ("lab-control-plane", "control-plane"),
        ("lab-worker", "worker"),
        ("lab-worker2", "worker"),
    ):
        assert f"start_kind_node {node} lab {role} &" in script
        assert f"attach_kind_node {node}\n" in script
        # Its netns is the container's, attached by name: never created, and no sshd in it.
        assert not re.search(rf"^netns add {node}$", script, re.MULTILINE)
        assert f"start_sshd {node}" not in script
    assert "start_sshd client client" in script
    assert "io.x-k8s.kind.cluster=$2" in script
    assert "ipvsadm -R" in script  # programmed from the VM side, into the container's netns
    assert script.index("run_dockerd") < script.index("start_kind_node lab-control-plane")


def test_docker_setup_is_valid_bash() -> None:
    script = setup_script(kind_scenario(load_scenario("seed-incidents"), "lab"), Runtime.DOCKER)
    result = subprocess.run(
        ["bash", "-n"], input=script, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_ssh_setup_is_unchanged_by_the_docker_runtime() -> None:
    scenario = load_scenario("healthy")
    assert setup_script(scenario) == setup_script(scenario, Runtime.SSH, "lab")
    assert "dockerd" not in setup_script(scenario)
