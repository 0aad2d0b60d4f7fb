"""Reading the cluster from the lab's stand-in API server (no VM): raw lists, pages, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.apiserver import write_kubeconfig
from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api
from vipcheck.gather import cluster
from vipcheck.gather.cluster import ClusterConfigError, ClusterError, gather_cluster

TOKEN = "gather-token-0123456789abcdef"  # noqa: S105 (a test token for a throwaway server)
LISTS = {
    "services.json": ("services", "ServiceList", "v1"),
    "endpointslices.json": ("endpointslices", "EndpointSliceList", "discovery.k8s.io/v1"),
    "nodes.json": ("nodes", "NodeList", "v1"),
}


def healthy_objects() -> dict[str, list[dict[str, Any]]]:
    return api_objects(load_scenario("healthy"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    with serve_api(tmp_path_factory.mktemp("apiserver"), healthy_objects(), TOKEN) as running:
        yield running


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees only the kubeconfig it names, never the machine's."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def sorted_items(items: list[dict[str, Any]]) -> list[str]:
    return [f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in items]


def test_lists_are_raw_and_complete(api: ServedApi) -> None:
    lines: list[str] = []
    files = gather_cluster(str(api.kubeconfig), None, lines.append)
    assert sorted(files) == sorted([*LISTS, "kube-proxy.json", "kube-proxy-daemonset.json"])
    for name, (plural, kind, api_version) in LISTS.items():
        document = json.loads(files[name])
        assert (document["kind"], document["apiVersion"]) == (kind, api_version)
        assert "continue" not in document["metadata"]
        served = sorted(healthy_objects()[plural], key=lambda i: sorted_items([i]))
        assert sorted_items(document["items"]) == sorted_items(served)
        assert document["items"] == [
            {**item, "apiVersion": api_version, "kind": kind.removesuffix("List")}
            for item in served
        ]
    daemon_set = json.loads(files["kube-proxy-daemonset.json"])
    assert daemon_set["kind"] == "DaemonSet"
    assert daemon_set["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.30.4")
    config_map = json.loads(files["kube-proxy.json"])
    assert config_map["metadata"]["name"] == "kube-proxy"
    assert "mode: ipvs" in config_map["data"]["config.conf"]
    assert lines[0] == f"cluster: reading {api.url} (kubeconfig {api.kubeconfig})"


def test_nothing_but_gets(api: ServedApi) -> None:
    gather_cluster(str(api.kubeconfig), None, lambda _line: None)
    requests = api.requests()
    assert len(requests) >= len(LISTS) + 1
    assert all(line.startswith("GET ") for line in requests), requests


def test_lists_are_read_in_pages(api: ServedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "PAGE_SIZE", 2)
    seen = len(api.requests())
    files = gather_cluster(str(api.kubeconfig), None, lambda _line: None)
    services = json.loads(files["services.json"])
    assert len(services["items"]) == len(healthy_objects()["services"]) > 2
    assert "remainingItemCount" not in services["metadata"]
    service_requests = [r for r in api.requests()[seen:] if r.startswith("GET /api/v1/services?")]
    assert len(service_requests) == -(-len(healthy_objects()["services"]) // 2)
    assert all("limit=2" in r for r in service_requests)
    assert sum("continue=" in r for r in service_requests) == len(service_requests) - 1


def test_kubeconfig_from_the_environment(api: ServedApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", f"/nonexistent/kubeconfig:{api.kubeconfig}")
    files = gather_cluster(None, "vipcheck-lab", lambda _line: None)
    assert "nodes.json" in files


def test_unknown_context_names_the_available_ones(api: ServedApi) -> None:
    with pytest.raises(ClusterConfigError) as raised:
        gather_cluster(str(api.kubeconfig), "prod", lambda _line: None)
    assert str(raised.value) == (
        f"kubeconfig {api.kubeconfig}: no context 'prod'; contexts: vipcheck-lab"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no such file"),
        ("clusters: [unclosed\n", "while parsing a flow sequence"),
        ("just a string\n", "not a kubeconfig (expected a mapping)"),
        ("apiVersion: v1\nkind: Config\n", "no contexts"),
    ],
)
def test_unreadable_kubeconfig_is_one_line(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "kubeconfig"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ClusterConfigError) as raised:
        gather_cluster(str(path), None, lambda _line: None)
    assert str(raised.value).startswith(f"kubeconfig {path}")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_no_kubeconfig_anywhere() -> None:
    with pytest.raises(ClusterConfigError, match=r"^no kubeconfig: give --kubeconfig"):
        gather_cluster(None, None, lambda _line: None)


def test_in_cluster_without_a_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ClusterConfigError, match=r"^in-cluster configuration: "):
        gather_cluster(None, None, lambda _line: None)


def test_wrong_token_is_401_naming_the_server(api: ServedApi, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, api.url, api.tls.ca_cert, "not-the-token")
    with pytest.raises(ClusterError) as raised:
        gather_cluster(str(kubeconfig), None, lambda _line: None)
    assert str(raised.value) == f"{api.url}: nodes.json: 401 Unauthorized: Unauthorized"
    assert raised.value.status == 401


def test_refused_connection_names_the_server(api: ServedApi, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, "https://127.0.0.1:1", api.tls.ca_cert, TOKEN)
    with pytest.raises(ClusterError) as raised:
        gather_cluster(str(kubeconfig), None, lambda _line: None)
    message = str(raised.value)
    assert message.startswith("https://127.0.0.1:1: cannot connect for nodes.json: ")
    assert "refused" in message
    assert "\n" not in message


def test_missing_kube_proxy_config_map_is_not_an_error(tmp_path: Path) -> None:
    objects = healthy_objects()
    objects["configmaps"] = []
    lines: list[str] = []
    with serve_api(tmp_path / "api", objects, TOKEN) as running:
        files = gather_cluster(str(running.kubeconfig), None, lines.append)
    assert "kube-proxy.json" not in files
    assert "nodes.json" in files
    assert (
        "cluster: no ConfigMap kube-system/kube-proxy (404): kube-proxy configuration not gathered"
    ) in lines


def test_missing_kube_proxy_daemon_set_is_not_an_error(tmp_path: Path) -> None:
    objects = healthy_objects()
    objects["daemonsets"] = []
    lines: list[str] = []
    with serve_api(tmp_path / "api", objects, TOKEN) as running:
        files = gather_cluster(str(running.kubeconfig), None, lines.append)
    assert "kube-proxy-daemonset.json" not in files
    assert "kube-proxy.json" in files
    assert (
        "cluster: no DaemonSet kube-system/kube-proxy (404): the kube-proxy version comes from "
        "the Nodes' kubeProxyVersion, if set"
    ) in lines


def test_an_answer_nested_100k_deep_is_one_line_naming_what_was_asked() -> None:
    class Answer:
        data = b"[" * 100_000 + b"]" * 100_000

    with pytest.raises(ClusterError) as raised:
        cluster._get_json("https://api:6443", "nodes.json", lambda **_: Answer())
    assert str(raised.value) == (
        "https://api:6443: nodes.json: the answer is JSON nested too deeply to read"
    )
