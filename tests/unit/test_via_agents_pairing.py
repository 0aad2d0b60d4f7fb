"""--via-agents pairs each node with its agent pod, and says from the pod's status why a node has
none that is ready (vipcheck.gather.agents): pure, pod JSON in."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from vipcheck.fix_script import node_argv
from vipcheck.gather.agents import (
    CONTAINER,
    DEFAULT_NAMESPACE,
    SELECTOR,
    NotReady,
    agent_pods,
    check_agents_namespace,
)
from vipcheck.manifests import render
from vipcheck.options import GatherOptions
from vipcheck.transport import resolve_targets

OOM = {"name": "agent", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
UNREADY = {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}
READY: dict[str, Any] = {
    "phase": "Running",
    "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
    "containerStatuses": [{"name": "agent", "state": {"running": {}}}],
}


def agent(name: str, node: str | None, status: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """An agent pod as the API lists it: on `node`, or (None) pending for node-9 by affinity."""
    spec: dict[str, Any] = {"containers": [{"name": "agent"}]}
    if node is not None:
        spec["nodeName"] = node
    else:
        field = {"key": "metadata.name", "operator": "In", "values": ["node-9"]}
        terms = {"nodeSelectorTerms": [{"matchFields": [field]}]}
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}
        }
    labels = {"app.kubernetes.io/name": "vipcheck-agent"}
    return {
        "metadata": {"name": name, "namespace": "vipcheck", "labels": labels, **metadata},
        "spec": spec,
        "status": status,
    }


def waiting(reason: str, message: str) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": message}}
    return {"phase": "Pending", "containerStatuses": [{"name": "agent", "state": state}]}


def why(*pods: dict[str, Any], node: str = "node-1") -> str:
    with pytest.raises(NotReady) as raised:
        agent_pods("vipcheck", {"items": list(pods)}).pod_for(node)
    return str(raised.value)


def test_the_names_are_the_manifests() -> None:
    """The label selector, the container and the namespace are those `vipcheck manifests` prints."""
    documents = list(yaml.safe_load_all(render(DEFAULT_NAMESPACE, "vipcheck-agent:1")))
    daemon_set = next(d for d in documents if d["kind"] == "DaemonSet")
    key, _, value = SELECTOR.partition("=")
    assert daemon_set["metadata"]["namespace"] == DEFAULT_NAMESPACE
    assert daemon_set["spec"]["template"]["metadata"]["labels"][key] == value
    assert [c["name"] for c in daemon_set["spec"]["template"]["spec"]["containers"]] == [CONTAINER]


def test_each_node_gets_its_ready_pod() -> None:
    pods = agent_pods(
        "vipcheck", {"items": [agent("a1", "node-1", READY), agent("a2", "node-2", READY)]}
    )
    assert (pods.pod_for("node-1"), pods.pod_for("node-2")) == ("a1", "a2")


def test_a_rollout_takes_the_ready_pod_not_the_one_being_deleted() -> None:
    old = agent("old", "node-1", READY, deletionTimestamp="2026-01-01T00:00:00Z")
    new = agent("new", "node-1", waiting("ContainerCreating", ""))
    assert (
        agent_pods("vipcheck", {"items": [old, agent("new2", "node-1", READY)]}).pod_for("node-1")
        == "new2"
    )
    assert why(old, new) == "agent pod vipcheck/new: container agent waiting: ContainerCreating"


def test_no_pod_on_the_node_names_where_it_was_looked_for() -> None:
    said = why(agent("a2", "node-2", READY))
    assert said.startswith("no agent pod on this node: no pod in namespace vipcheck labelled ")
    assert SELECTOR in said
    assert "DaemonSet vipcheck-agent" in said


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (
            waiting("ImagePullBackOff", 'Back-off pulling image "vipcheck-agent:9"'),
            'container agent waiting: ImagePullBackOff: Back-off pulling image "vipcheck-agent:9"',
        ),
        (
            waiting("ErrImagePull", "rpc error: not found"),
            "container agent waiting: ErrImagePull: rpc error: not found",
        ),
        (
            {**waiting("CrashLoopBackOff", "back-off 5m0s"), "phase": "Running"},
            "container agent waiting: CrashLoopBackOff: back-off 5m0s",
        ),
        (
            {"phase": "Running", "containerStatuses": [OOM]},
            "container agent terminated (exit 137): OOMKilled",
        ),
        (
            {"phase": "Running", "conditions": [UNREADY]},
            "Running but not Ready: ContainersNotReady",
        ),
        ({"phase": "Pending"}, "Pending: no container has started yet"),
        ({"phase": "Failed"}, "Failed, not Running"),
        ({}, "without a phase, not Running"),
    ],
    ids=["image-pull-backoff", "err-image-pull", "crash-loop", "terminated", "not-ready",
         "pending", "failed", "no-status"],
)  # fmt: skip
def test_a_pod_that_is_not_ready_says_why(status: dict[str, Any], said: str) -> None:
    assert why(agent("a1", "node-1", status)) == f"agent pod vipcheck/a1: {said}"


def test_a_pod_the_scheduler_cannot_place_is_found_by_its_affinity() -> None:
    """A DaemonSet pod not yet bound has no nodeName; its affinity names the node it is for."""
    status = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 1 Insufficient memory.",
            }
        ],
    }
    said = why(agent("a9", None, status), node="node-9")
    assert said == (
        "agent pod vipcheck/a9: Pending, not scheduled: Unschedulable: "
        "0/3 nodes are available: 1 Insufficient memory."
    )


def test_hostile_status_text_is_shown_escaped_on_one_line() -> None:
    status = waiting("ImagePullBackOff\x1b[2J", "line one\nline two \x1b]0;owned\x07\u202e")
    said = why(agent("a1\x1b[31m", "node-1", status))
    assert "\x1b" not in said
    assert "\n" not in said
    assert "\u202e" not in said
    assert "a1\\x1b[31m" in said
    assert "ImagePullBackOff\\x1b[2J: line one\\nline two" in said


def test_malformed_pods_are_not_paired_and_do_not_raise() -> None:
    items: list[Any] = [None, "x", {"spec": []}, {"spec": {"nodeName": 5}}, {"status": []}]
    assert "no agent pod" in why(*items)


@pytest.mark.parametrize("namespace", ["vipcheck", "ci-vipcheck", "a"])
def test_an_agents_namespace_is_a_dns_label(namespace: str) -> None:
    assert check_agents_namespace(namespace) is None


@pytest.mark.parametrize("namespace", ["suites/test_x.py", "Vipcheck", "-x", "a" * 64, "a\x1b"])
def test_anything_else_is_refused_naming_the_way_out(namespace: str) -> None:
    said = check_agents_namespace(namespace)
    assert said is not None
    assert "--via-agents=NAMESPACE" in said
    assert "\x1b" not in said


def test_every_api_node_is_an_agent_target_and_its_fixes_are_left_to_a_person() -> None:
    """The agents never change a node: the fix script says where to run its commands by hand."""
    options = GatherOptions(via_agents="ci-vipcheck")
    resolution = resolve_targets(options, ["node-1", "node-2"], {})
    assert [(t.node, t.spec) for t in resolution.targets] == [
        ("node-1", "agent://ci-vipcheck/node-1"),
        ("node-2", "agent://ci-vipcheck/node-2"),
    ]
    assert (resolution.not_given, resolution.unknown) == ((), ())
    argv = node_argv("node-1", resolution.targets[0], ("sysctl", "-w", "a.b=1"))
    assert argv == [
        "echo",
        "run on node-1 (agent://ci-vipcheck/node-1) yourself: sysctl -w a.b=1",
    ]
