"""Which agent pod reads which node, and why a node has none that is ready (`--via-agents`).

The agents are the DaemonSet `vipcheck manifests` prints: pods labelled
app.kubernetes.io/name=vipcheck-agent in vipcheck's own namespace, container `agent`, one per
node (tests/unit/test_via_agents_pairing.py holds these names to the manifests'). One LIST of
those pods pairs each node with its pod: the pod's spec.nodeName, or, for a DaemonSet pod not yet
scheduled, the node its required node affinity names. Pure: pod JSON in, a pod name or the reason
out. Every string of a pod is hostile API input, shown escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vipcheck.untrusted import printable

DEFAULT_NAMESPACE = "vipcheck"
SELECTOR = "app.kubernetes.io/name=vipcheck-agent"
CONTAINER = "agent"
READER = "vipcheck-node"  # what the agent runs, and all it runs
# A DNS-1123 label, as Kubernetes validates namespace names.
_DNS_1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def check_agents_namespace(namespace: str) -> str | None:
    """Why `namespace` cannot be the agents' namespace, or None if it can."""
    if _DNS_1123_LABEL.fullmatch(namespace):
        return None
    return (
        f"--via-agents {printable(namespace, one_line=True)!r}: not a namespace (a DNS-1123 "
        "label); write --via-agents=NAMESPACE, or put --via-agents after any test path"
    )


@dataclass(frozen=True, slots=True)
class AgentPods:
    """The listed agent pods by the node each reads; namespace and selector, to say where."""

    namespace: str
    by_node: Mapping[str, Sequence[Mapping[str, Any]]]

    def pod_for(self, node: str) -> str:
        """The name of the node's ready agent pod; NotReady naming why there is none."""
        pods = self.by_node.get(node, ())
        if not pods:
            raise NotReady(
                f"no agent pod on this node: no pod in namespace {self.namespace} labelled "
                f"{SELECTOR} is on it (is DaemonSet vipcheck-agent installed there, with "
                "`vipcheck manifests | kubectl apply -f -`, and does its nodeSelector, "
                "kubernetes.io/os=linux, match the node?)"
            )
        reasons = []
        for pod in sorted(pods, key=_deleting):
            why = not_ready(pod)
            if why is None:
                return _name(pod)
            shown = printable(_name(pod), one_line=True)
            reasons.append(f"agent pod {self.namespace}/{shown}: {why}")
        raise NotReady(reasons[0])


class NotReady(Exception):
    """A node without a ready agent pod, and why (one line, already escaped)."""


def agent_pods(namespace: str, pod_list: Mapping[str, Any]) -> AgentPods:
    """Pair the pods of a PodList with the nodes they read."""
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for pod in _items(pod_list.get("items")):
        node = _node_of(pod)
        if node is not None:
            by_node.setdefault(node, []).append(pod)
    return AgentPods(namespace, by_node)


def not_ready(pod: Mapping[str, Any]) -> str | None:
    """Why the pod cannot be exec'd into now, from its status; None when it is Ready."""
    metadata, status = _map(pod.get("metadata")), _map(pod.get("status"))
    if metadata.get("deletionTimestamp"):
        return "terminating (being deleted)"
    return _containers_not_running(status) or _phase_not_ready(status)


def _containers_not_running(status: Mapping[str, Any]) -> str | None:
    """A container waiting (an image not pulled, a crash loop) or ended, with its reason."""
    for container in _items(status.get("containerStatuses")):
        state = _map(container.get("state"))
        name = _text(container.get("name"))
        if "waiting" in state:
            return f"container {name} waiting: {_reason(_map(state['waiting']))}"
        if "terminated" in state:
            ended = _map(state["terminated"])
            code = _text(ended.get("exitCode"))
            return f"container {name} terminated (exit {code}): {_reason(ended)}"
    return None


def _phase_not_ready(status: Mapping[str, Any]) -> str | None:
    """Not scheduled, not started, not Running or not Ready; None when Ready."""
    phase = _text(status.get("phase")) or "without a phase"
    conditions = {_text(c.get("type")): c for c in _items(status.get("conditions"))}
    if phase == "Pending":
        scheduled = conditions.get("PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            return f"Pending, not scheduled: {_reason(scheduled)}"
        return "Pending: no container has started yet"
    if phase != "Running":
        return f"{phase}, not Running"
    ready = conditions.get("Ready")
    if ready is None or ready.get("status") != "True":
        return f"Running but not Ready: {_reason(ready or {})}"
    return None


def _node_of(pod: Mapping[str, Any]) -> str | None:
    """The node a pod runs on, or the one a DaemonSet pod awaiting the scheduler is bound for."""
    spec = _map(pod.get("spec"))
    if isinstance(spec.get("nodeName"), str) and spec["nodeName"]:
        return str(spec["nodeName"])
    required = _map(
        _map(_map(spec.get("affinity")).get("nodeAffinity")).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
    )
    for term in _items(required.get("nodeSelectorTerms")):
        for field in _items(term.get("matchFields")):
            values = field.get("values")
            if field.get("key") != "metadata.name" or not isinstance(values, list):
                continue
            if len(values) == 1:
                return str(values[0])
    return None


def _deleting(pod: Mapping[str, Any]) -> bool:
    """Pods being deleted last: during a rollout a node has the old pod and the new."""
    return bool(_map(pod.get("metadata")).get("deletionTimestamp"))


def _reason(part: Mapping[str, Any]) -> str:
    """`Reason: message` of a container state or a condition, escaped, on one line."""
    reason, message = _text(part.get("reason")), _text(part.get("message"))
    said = ": ".join(text for text in (reason, message) if text)
    return said or "no reason given"


def _name(pod: Mapping[str, Any]) -> str:
    return str(_map(pod.get("metadata")).get("name") or "")


def _text(value: Any) -> str:
    return "" if value is None else printable(str(value), one_line=True)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
