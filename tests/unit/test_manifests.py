"""`vipcheck manifests`: the least-privilege promises, the options refused, the command line."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import yaml

from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api
from vipcheck.cli import main
from vipcheck.gather.cluster import gather_cluster
from vipcheck.manifests import (
    AGENT,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    ManifestError,
    check_image,
    check_namespace,
    manifests,
    render,
)

USAGE = 4  # as every vipcheck command's bad arguments


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


class Grant(NamedTuple):
    """One verb on one resource, as a binding gives it to a subject."""

    scope: str  # "cluster", or the namespace a Role grants in
    group: str
    resource: str
    verb: str
    names: tuple[str, ...]  # resourceNames; () is every name


def grants(documents: list[dict[str, Any]], subject: str) -> set[Grant]:
    """What the objects let ServiceAccount `subject` (namespace/name) do, binding by binding."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in documents
        if d["kind"] in ("Role", "ClusterRole")
    }
    found = set()
    for binding in documents:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        names = {f"{s['namespace']}/{s['name']}" for s in binding["subjects"]}
        if subject not in names:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        scope = namespace or "cluster"
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        names_ = tuple(rule.get("resourceNames", ()))
                        found.add(Grant(scope, group, resource, verb, names_))
    return found


def runner_grants(namespace: str = DEFAULT_NAMESPACE) -> set[Grant]:
    return grants(manifests(namespace, DEFAULT_IMAGE), f"{namespace}/vipcheck")


def test_the_runner_may_do_exactly_this() -> None:
    # list (never get, never watch) where vipcheck lists; get by name where it reads one object;
    # pods/exec only in its own namespace: get (a WebSocket exec is a GET) and create (1.35+).
    assert runner_grants("ci-vipcheck") == {
        Grant("cluster", "", "nodes", "list", ()),
        Grant("cluster", "", "services", "list", ()),
        Grant("cluster", "discovery.k8s.io", "endpointslices", "list", ()),
        Grant("kube-system", "", "configmaps", "get", ("kube-proxy",)),
        Grant("kube-system", "apps", "daemonsets", "get", ("kube-proxy",)),
        Grant("ci-vipcheck", "", "pods", "list", ()),
        Grant("ci-vipcheck", "", "pods/exec", "get", ()),
        Grant("ci-vipcheck", "", "pods/exec", "create", ()),
    }


def test_no_verb_beyond_get_and_list_but_create_on_pods_exec_in_its_own_namespace() -> None:
    for grant in runner_grants("elsewhere"):
        if grant.verb not in ("get", "list"):
            assert (grant.scope, grant.resource, grant.verb) == ("elsewhere", "pods/exec", "create")
        if grant.resource == "pods/exec":
            assert grant.scope == "elsewhere"


def test_no_wildcards_no_urls_and_pods_exec_in_no_cluster_role() -> None:
    documents = manifests(DEFAULT_NAMESPACE, DEFAULT_IMAGE)
    for role in of_kind(documents, "ClusterRole") + of_kind(documents, "Role"):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    for role in of_kind(documents, "ClusterRole"):
        assert all("pods/exec" not in rule["resources"] for rule in role["rules"])


def test_the_agents_have_no_identity_in_the_api() -> None:
    documents = manifests(DEFAULT_NAMESPACE, DEFAULT_IMAGE)
    assert grants(documents, f"{DEFAULT_NAMESPACE}/{AGENT}") == set()
    [account] = [d for d in of_kind(documents, "ServiceAccount") if d["metadata"]["name"] == AGENT]
    assert account["automountServiceAccountToken"] is False
    pod = of_kind(documents, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (AGENT, False)


# The stand-in API server of the lab logs each request; Kubernetes authorizes it as a verb on a
# resource (k8s.io/apiserver request info): GET of a collection is list, of a named object get.
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/[^/]+)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?$"
)


def authorized(request: str, granted: set[Grant]) -> Grant | None:
    method, target = request.split()[:2]
    match = PATH.match(urlsplit(target).path)
    assert method == "GET", request
    assert match, request
    verb = "get" if match["name"] else "list"
    group = "" if match["core"] else match["group"]
    namespace = match["namespace"]
    for grant in granted:
        in_scope = grant.scope in ("cluster", namespace)
        named = not grant.names or match["name"] in grant.names
        if (grant.group, grant.resource, grant.verb) == (group, match["resource"], verb) and (
            in_scope and named
        ):
            return grant
    return None


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects = api_objects(load_scenario("healthy"))
    token = "manifests-token-0123456789abcdef"  # noqa: S105 (a throwaway server's)
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, token) as running:
        yield running


def test_the_rbac_allows_every_request_of_a_cluster_gathering_and_is_all_used(
    api: ServedApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    files = gather_cluster(str(api.kubeconfig), None, lambda _line: None)
    assert {"kube-proxy.json", "kube-proxy-daemonset.json"} <= set(files)
    granted = runner_grants()
    used = set()
    for request in api.requests():
        grant = authorized(request, granted)
        assert grant is not None, f"the manifests' RBAC refuses {request}"
        used.add(grant)
    # All but the agents' transport (pods, pods/exec), which is not a gathering's.
    assert {g for g in granted - used if not g.resource.startswith("pods")} == set()


def test_the_daemon_set_keeps_to_least_privilege() -> None:
    [daemon_set] = of_kind(manifests("agents", "example.com/agent:1"), "DaemonSet")
    pod = daemon_set["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not pod.get("hostPID")
    assert not pod.get("hostIPC")
    assert "volumes" not in pod
    assert "volumeMounts" not in container
    assert "hostPath" not in yaml.safe_dump(daemon_set)
    assert pod["tolerations"] == [{"operator": "Exists"}]  # every taint, every effect
    assert "initContainers" not in pod
    assert "ports" not in container
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["image"] == "example.com/agent:1"
    assert daemon_set["spec"]["selector"]["matchLabels"].items() <= (
        daemon_set["spec"]["template"]["metadata"]["labels"].items()
    )
    assert daemon_set["metadata"]["labels"]["app.kubernetes.io/name"] == AGENT


def test_the_namespace_admits_the_agents_and_everything_lands_there() -> None:
    documents = manifests("agents", DEFAULT_IMAGE)
    [namespace] = of_kind(documents, "Namespace")
    assert namespace["metadata"]["name"] == "agents"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    placed = {(d["kind"], d["metadata"].get("namespace")) for d in documents}
    assert {ns for _kind, ns in placed} == {None, "agents", "kube-system"}
    assert {kind for kind, ns in placed if ns == "kube-system"} == {"Role", "RoleBinding"}


def test_two_namespaces_do_not_share_a_cluster_scoped_object() -> None:
    def cluster_scoped(namespace: str) -> set[str]:
        documents = manifests(namespace, DEFAULT_IMAGE)
        return {d["metadata"]["name"] for d in documents if "namespace" not in d["metadata"]}

    assert cluster_scoped("one").isdisjoint(cluster_scoped("two"))


@pytest.mark.parametrize("name", ["vipcheck", "a", "ci-2", "x" * 63])
def test_namespaces_accepted(name: str) -> None:
    assert check_namespace(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "A", "-a", "a-", "a_b", "a.b", "x" * 64, "a\n", "é", "kube-system", "kube-x", "default"],
)
def test_namespaces_refused(name: str) -> None:
    with pytest.raises(ManifestError, match=r"^--namespace ") as refused:
        check_namespace(name)
    assert "\n" not in str(refused.value)


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    [
        DEFAULT_IMAGE,
        "vipcheck-agent",
        "registry.example.com:5000/team/vipcheck-agent:v1.2_3",
        "localhost/vipcheck-agent",
        f"ghcr.io/org/vipcheck-agent@{DIGEST}",
        f"vipcheck-agent:0.1.0@{DIGEST}",
    ],
)
def test_images_accepted(image: str) -> None:
    assert check_image(image) == image


@pytest.mark.parametrize(
    "image",
    [
        "",
        "team/Agent",
        "agent:",
        "agent:a:b",
        "-agent",
        "agent\n",
        "agent name",
        "agent@sha256:abc",
        "agent:" + "t" * 129,
        "a" * 600,
        "agent:1\nkind: Pod",
        "{agent}",
    ],
)
def test_images_refused(image: str) -> None:
    with pytest.raises(ManifestError, match=r"^--image "):
        check_image(image)


def test_the_output_is_a_commented_yaml_stream_of_these_objects() -> None:
    text = render("agents", DEFAULT_IMAGE)
    first = text.splitlines()[0]
    assert first.startswith("# vipcheck ")
    assert "# Apply with: vipcheck manifests | kubectl apply -f -" in text.splitlines()[1]
    assert list(yaml.safe_load_all(text)) == manifests("agents", DEFAULT_IMAGE)
    # Plain YAML for every tool that reads it: no anchors and aliases.
    assert not any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text))


def test_the_command_prints_the_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifests", "--namespace", "ci", "--image", "example.com/a:1"]) == 0
    out, err = capsys.readouterr()
    assert out == render("ci", "example.com/a:1")
    assert err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--namespace", "Bad_Name"], "--namespace 'Bad_Name': not a DNS-1123 label"),
        (["--image", "a\nb: c"], "--image 'a\\nb: c': not an image reference"),
        (["--namespace", "kube-system"], "give vipcheck a namespace of its own"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_are_one_line_and_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["manifests", *argv])
    assert exited.value.code == USAGE
    out, err = capsys.readouterr()
    assert out == ""
    usage, error = err.splitlines()
    assert usage.startswith("usage: vipcheck manifests")
    assert error.startswith("vipcheck manifests: error: ")
    assert message in error


def test_help_says_what_it_prints_and_how_to_apply_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", "manifests", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(done.stdout.split())
    assert "vipcheck manifests | kubectl apply -f -" in text
    assert f"(default {DEFAULT_NAMESPACE})" in text
    assert f"(default {DEFAULT_IMAGE})" in text
    assert "Traceback" not in done.stderr
