"""`vipcheck manifests`: the objects that let vipcheck read nodes from inside the cluster.

A namespace labelled for Pod Security, vipcheck's own ServiceAccount with the least RBAC its
reading needs, and a DaemonSet of idle agent pods on every node's network namespace, for vipcheck
to exec into ([docs/agents.md](../../docs/agents.md) says why each field is what it is). Only
plain data is built here; the YAML is written by yaml.safe_dump, so an option's value is a
quoted scalar, never structure.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

import vipcheck

DEFAULT_NAMESPACE = "vipcheck"
DEFAULT_IMAGE = f"vipcheck-agent:{vipcheck.__version__}"
AGENT = "vipcheck-agent"
RUNNER = "vipcheck"  # the ServiceAccount vipcheck itself runs as (a CI job's identity)
KUBE_SYSTEM = "kube-system"
KUBE_PROXY = "kube-proxy"  # the ConfigMap and DaemonSet vipcheck reads there, by name
RBAC = "rbac.authorization.k8s.io"

# The agent idles until exec'd. `sh`, `trap` and `sleep` are in every Debian-based image
# (python:3.12-slim included) and write nothing; the trap makes the pod stop at once on SIGTERM,
# which a bare `sleep` as PID 1 would ignore until the grace period ran out.
IDLE_COMMAND = ("sh", "-c", "trap 'exit 0' TERM INT; sleep infinity & wait")

# A DNS-1123 label, as Kubernetes validates namespace names.
_DNS_1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
# An image reference as the distribution/reference grammar reads one: [host[:port]/]path[:tag]
# [@digest], ASCII only, path components in lower case.
_IMAGE = re.compile(
    r"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?"
    r"(?:@[a-zA-Z][a-zA-Z0-9]*(?:[-_+.][a-zA-Z][a-zA-Z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)
_IMAGE_MAX = 512


class ManifestError(ValueError):
    """An option the manifests cannot be made with; the message is one line."""


def check_namespace(namespace: str) -> str:
    """The namespace, if it is a DNS-1123 label of a namespace of vipcheck's own."""
    if not _DNS_1123_LABEL.fullmatch(namespace):
        raise ManifestError(
            f"--namespace {namespace!r}: not a DNS-1123 label (at most 63 characters: lower-case "
            "letters, digits and '-', starting and ending with a letter or digit)"
        )
    if namespace == "default" or namespace.startswith("kube-"):
        raise ManifestError(
            f"--namespace {namespace!r}: the manifests label their namespace privileged for Pod "
            "Security; give vipcheck a namespace of its own"
        )
    return namespace


def check_image(image: str) -> str:
    """The image reference, if it is one (name, optional registry, tag and digest)."""
    if len(image) > _IMAGE_MAX or not _IMAGE.fullmatch(image):
        raise ManifestError(
            f"--image {image!r}: not an image reference such as "
            f"registry.example.com/{DEFAULT_IMAGE} or {AGENT}@sha256:<digest>"
        )
    return image


def manifests(namespace: str, image: str) -> list[dict[str, Any]]:
    """The objects to apply, in the order they can be created: namespace first."""
    namespace, image = check_namespace(namespace), check_image(image)
    labels = {"app.kubernetes.io/name": AGENT, "app.kubernetes.io/part-of": RUNNER}
    cluster_scoped = f"{RUNNER}:{namespace}"  # one per namespace vipcheck is installed in
    return [
        _namespace(namespace),
        _object("v1", "ServiceAccount", RUNNER, namespace),
        _object(
            f"{RBAC}/v1",
            "ClusterRole",
            cluster_scoped,
            rules=[
                _rule("", ["nodes", "services"], ["list"]),
                _rule("discovery.k8s.io", ["endpointslices"], ["list"]),
            ],
        ),
        _binding("ClusterRoleBinding", cluster_scoped, None, "ClusterRole", namespace),
        _object(
            f"{RBAC}/v1",
            "Role",
            cluster_scoped,
            KUBE_SYSTEM,
            rules=[
                _rule("", ["configmaps"], ["get"], names=[KUBE_PROXY]),
                _rule("apps", ["daemonsets"], ["get"], names=[KUBE_PROXY]),
            ],
        ),
        _binding("RoleBinding", cluster_scoped, KUBE_SYSTEM, "Role", namespace),
        _object(
            f"{RBAC}/v1",
            "Role",
            RUNNER,
            namespace,
            rules=[
                _rule("", ["pods"], ["list"]),
                # A WebSocket exec (the Python client's stream) is a GET: `get` before
                # Kubernetes 1.35, `get` and `create` from 1.35 on (kubernetes#134577).
                _rule("", ["pods/exec"], ["get", "create"]),
            ],
        ),
        _binding("RoleBinding", RUNNER, namespace, "Role", namespace),
        _object("v1", "ServiceAccount", AGENT, namespace, automountServiceAccountToken=False),
        _daemon_set(namespace, image, labels),
    ]


def render(namespace: str, image: str) -> str:
    """The manifests as one multi-document YAML stream, after a comment saying how to apply it."""
    documents = yaml.safe_dump_all(manifests(namespace, image), sort_keys=False)
    return (
        f"# vipcheck {vipcheck.__version__}: the in-cluster agents and vipcheck's least RBAC "
        f"(docs/agents.md).\n# Apply with: vipcheck manifests | kubectl apply -f -\n---\n"
        f"{documents}"
    )


def _namespace(namespace: str) -> dict[str, Any]:
    # hostNetwork and NET_ADMIN break "baseline", so only "privileged" admits the agents; audit
    # and warn stay at baseline, so the exception shows on every apply and in the audit log.
    pod_security = {
        f"pod-security.kubernetes.io/{mode}": level
        for mode, level in (("enforce", "privileged"), ("audit", "baseline"), ("warn", "baseline"))
    }
    return _object("v1", "Namespace", namespace, labels=pod_security)


def _object(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = labels or {"app.kubernetes.io/part-of": RUNNER}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **fields}


def _rule(
    group: str, resources: list[str], verbs: list[str], names: list[str] | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": [group], "resources": resources, "verbs": verbs}
    if names is not None:
        rule["resourceNames"] = names
    return rule


def _binding(
    kind: str, name: str, namespace: str | None, role_kind: str, subject_namespace: str
) -> dict[str, Any]:
    return _object(
        f"{RBAC}/v1",
        kind,
        name,
        namespace,
        roleRef={"apiGroup": RBAC, "kind": role_kind, "name": name},
        subjects=[{"kind": "ServiceAccount", "name": RUNNER, "namespace": subject_namespace}],
    )


def _daemon_set(namespace: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    container = {
        "name": "agent",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(IDLE_COMMAND),
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {
            # Root in the node's network namespace, yet with one capability: NET_ADMIN, which
            # nfnetlink (nft) and IPVS's generic-netlink dumps require.
            "runAsUser": 0,
            "runAsGroup": 0,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec = {
        "serviceAccountName": AGENT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"operator": "Exists"}],
        "containers": [container],
    }
    # Each place its own copy: a dict shared between places would be dumped as a YAML alias.
    return _object(
        "apps/v1",
        "DaemonSet",
        AGENT,
        namespace,
        dict(labels),
        spec={
            "selector": {"matchLabels": dict(labels)},
            # Nothing is served: replace every agent at once, so a new image is in use quickly.
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "100%"},
            },
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    )
