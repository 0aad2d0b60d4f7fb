"""The lab's stand-in API server, driven through its CLI by the kubernetes client and kubectl."""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from fixtures.lab.apiserver import write_kubeconfig
from fixtures.lab.lifetime import dies_with_this_process
from fixtures.lab.tls import TlsFiles, make_tls
from tests.kubectl import kubectl

REPO = Path(__file__).resolve().parents[3]
SYS_TGKILL = 234  # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl)
TOKEN = "lab-token-0123456789abcdef"  # noqa: S105 (a test token for a throwaway server)


def _meta(name: str, namespace: str | None, rv: str, **extra: Any) -> dict[str, Any]:
    metadata = {
        "name": name,
        "resourceVersion": rv,
        "uid": f"00000000-0000-4000-8000-{int(rv):012d}",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        **extra,
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return metadata


def _service(name: str, namespace: str, rv: str, cluster_ip: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, rv, labels={"app": name}),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "main", "port": port, "protocol": "TCP", "targetPort": port}],
            "selector": {"app": name},
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def _slice(service: str, namespace: str, rv: str, ips: list[str], port: int) -> dict[str, Any]:
    labels = {
        "kubernetes.io/service-name": service,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(f"{service}-x7k2p", namespace, rv, labels=labels),
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{index + 1}",
            }
            for index, ip in enumerate(ips)
        ],
        "ports": [{"name": "main", "port": port, "protocol": "TCP"}],
    }


def _node(name: str, rv: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta(name, None, rv, labels={"kubernetes.io/hostname": name}),
        "spec": {"podCIDR": f"10.244.{name[-1]}.0/24"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            # client 37 validates with pydantic: every required nodeInfo field must be present
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": f"boot-{name}",
                "containerRuntimeVersion": "containerd://1.7.20",
                "kernelVersion": "6.1.0-25-amd64",
                "kubeProxyVersion": "v1.31.0",
                "kubeletVersion": "v1.31.0",
                "machineID": f"machine-{name}",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": f"uuid-{name}",
            },
        },
    }


KUBE_PROXY_CONFIG = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
ipvs:
  scheduler: rr
  tcpTimeout: 0s
  tcpFinTimeout: 0s
  udpTimeout: 0s
  strictARP: true
"""

OBJECTS: dict[str, list[dict[str, Any]]] = {
    "services": [
        _service("redis", "default", "1201", "10.96.12.34", 6379),
        _service("kube-dns", "kube-system", "310", "10.96.0.10", 53),
        _service("kubernetes", "default", "12", "10.96.0.1", 443),
        _service("frontend", "web", "1502", "10.96.80.80", 80),
    ],
    "endpointslices": [
        _slice("redis", "default", "1210", ["10.244.1.5", "10.244.2.7"], 6379),
        _slice("kube-dns", "kube-system", "320", ["10.244.1.2"], 53),
        _slice("frontend", "web", "1510", ["10.244.2.9"], 80),
    ],
    "nodes": [_node("node-1", "900", "192.168.50.11"), _node("node-2", "901", "192.168.50.12")],
    "configmaps": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("kube-proxy", "kube-system", "250", labels={"app": "kube-proxy"}),
            "data": {"config.conf": KUBE_PROXY_CONFIG},
        }
    ],
}


@dataclass(frozen=True, slots=True)
class Lab:
    url: str
    kubeconfig: Path
    ca_cert: Path
    directory: Path


def _server_command(directory: Path, tls: TlsFiles, *options: str) -> list[str]:
    return [
        *(
            sys.executable,
            "-m",
            "fixtures.lab.apiserver",
            "--objects",
            str(directory / "objects.json"),
        ),
        *("--cert", str(tls.server_cert), "--key", str(tls.server_key)),
        *("--token-file", str(directory / "token"), "--ready-file", str(directory / "ready")),
        *options,
    ]


def _client(kubeconfig: Path) -> client.ApiClient:
    api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api_client


def _names(items: list[Any]) -> list[str]:
    return [item.metadata.name for item in items]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("apiserver")
    tls = make_tls(directory / "tls")
    (directory / "objects.json").write_text(json.dumps(OBJECTS))
    (directory / "token").write_text(TOKEN + "\n")
    ready = directory / "ready"
    stderr = (directory / "stderr").open("w+")
    server = subprocess.Popen(
        _server_command(directory, tls, "--port", "0"),
        cwd=REPO,
        stderr=stderr,
        preexec_fn=dies_with_this_process(),  # noqa: PLW1509 (takes no lock: lifetime.py)
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                stderr.seek(0)
                pytest.fail(f"apiserver did not get ready: {stderr.read()}")
            time.sleep(0.05)
        url = ready.read_text().strip()
        kubeconfig = directory / "kubeconfig"
        write_kubeconfig(kubeconfig, url, tls.ca_cert, TOKEN)
        yield Lab(url, kubeconfig, tls.ca_cert, directory)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=10)
        stderr.seek(0)
        log = stderr.read()
        stderr.close()
    assert code == 0, log
    assert "Traceback" not in log, log


@pytest.fixture
def api(lab: Lab) -> Iterator[client.ApiClient]:
    with _client(lab.kubeconfig) as api_client:
        yield api_client


def _kubectl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "--kubeconfig", str(lab.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ready_file_names_the_https_url(lab: Lab) -> None:
    assert lab.url.startswith("https://127.0.0.1:")
    assert int(lab.url.rsplit(":", 1)[1]) > 0


def test_kubeconfig_is_private_and_complete(lab: Lab) -> None:
    assert lab.kubeconfig.stat().st_mode & 0o777 == 0o600
    kubeconfig = yaml.safe_load(lab.kubeconfig.read_text())
    assert kubeconfig["current-context"] == "vipcheck-lab"
    assert kubeconfig["users"][0]["user"] == {"token": TOKEN}
    assert kubeconfig["clusters"][0]["cluster"]["server"] == lab.url


def test_list_services_in_pages_of_one(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    names: list[str] = []
    token, pages = None, 0
    while True:
        page = core.list_service_for_all_namespaces(limit=1, _continue=token)
        pages += 1
        names += [f"{s.metadata.namespace}/{s.metadata.name}" for s in page.items if s.metadata]
        assert page.metadata is not None
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == len(OBJECTS["services"]) - len(names)
    assert pages == 4
    assert names == ["default/kubernetes", "default/redis", "kube-system/kube-dns", "web/frontend"]


def test_list_endpointslices_by_service_label(api: client.ApiClient) -> None:
    slices = client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces(
        label_selector="kubernetes.io/service-name=redis"
    )
    assert _names(slices.items) == ["redis-x7k2p"]
    endpoints = slices.items[0].endpoints or []
    assert [e.addresses[0] for e in endpoints] == ["10.244.1.5", "10.244.2.7"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=redis", ["redis"]),
        ("app==redis", ["redis"]),
        ("app!=redis", ["kubernetes", "kube-dns", "frontend"]),
        ("app, app!=kube-dns,app!=frontend", ["kubernetes", "redis"]),
        ("!app", []),
        ("nolabel!=x", ["kubernetes", "redis", "kube-dns", "frontend"]),
    ],
)
def test_label_selectors(api: client.ApiClient, selector: str, expected: list[str]) -> None:
    services = client.CoreV1Api(api).list_service_for_all_namespaces(label_selector=selector)
    assert sorted(_names(services.items)) == sorted(expected)


def test_field_selector_and_namespaced_list(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    in_default = core.list_namespaced_service("default", field_selector="metadata.name!=redis")
    assert _names(in_default.items) == ["kubernetes"]
    web = core.list_service_for_all_namespaces(field_selector="metadata.namespace=web")
    assert _names(web.items) == ["frontend"]


def test_read_kube_proxy_configmap(api: client.ApiClient) -> None:
    cm = client.CoreV1Api(api).read_namespaced_config_map("kube-proxy", "kube-system")
    assert cm.data is not None
    assert yaml.safe_load(cm.data["config.conf"])["mode"] == "ipvs"


def test_read_node(api: client.ApiClient) -> None:
    node = client.CoreV1Api(api).read_node("node-2")
    assert node.metadata is not None
    assert node.status is not None
    assert (node.metadata.name, node.metadata.resource_version) == ("node-2", "901")
    addresses = [(a.type, a.address) for a in node.status.addresses or []]
    assert addresses == [("InternalIP", "192.168.50.12"), ("Hostname", "node-2")]


def test_missing_service_is_404(api: client.ApiClient) -> None:
    with pytest.raises(ApiException) as raised:
        client.CoreV1Api(api).read_namespaced_service("redis", "web")
    assert raised.value.status == 404
    status = json.loads(raised.value.body or "")
    assert status["kind"] == "Status"
    assert status["reason"] == "NotFound"
    assert status["details"] == {"name": "redis", "kind": "services"}


def test_wrong_token_is_401(lab: Lab, tmp_path: Path) -> None:
    write_kubeconfig(tmp_path / "kubeconfig", lab.url, lab.ca_cert, "not-the-token")
    with _client(tmp_path / "kubeconfig") as api_client, pytest.raises(ApiException) as raised:
        client.CoreV1Api(api_client).list_node()
    assert raised.value.status == 401
    assert json.loads(raised.value.body or "")["reason"] == "Unauthorized"


def test_tls_is_verified(lab: Lab, tmp_path: Path) -> None:
    other = make_tls(tmp_path / "other")
    write_kubeconfig(tmp_path / "kubeconfig", lab.url, other.ca_cert, TOKEN)
    api_client = _client(tmp_path / "kubeconfig")
    api_client.configuration.retries = 0
    with api_client, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        client.CoreV1Api(api_client).list_node()


def _raw(lab: Lab, method: str, path: str, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    host, port = lab.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=lab.ca_cert)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, json.load(response)
    finally:
        connection.close()


def test_post_is_refused_as_read_only(lab: Lab) -> None:
    code, status = _raw(lab, "POST", "/api/v1/namespaces/default/services")
    assert code == 405
    assert status["reason"] == "MethodNotAllowed"
    assert "read-only" in status["message"]


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/api/v1/services?watch=true", 405, "MethodNotAllowed"),
        ("/api/v1/secrets", 404, "NotFound"),
        ("/api/v1/namespaces/default/nodes", 404, "NotFound"),
        ("/api/v1/services/redis", 404, "NotFound"),
        ("/apis/batch/v1", 404, "NotFound"),
        ("/api/v1/services?limit=1&continue=bm9wZQ", 400, "BadRequest"),
        ("/api/v1/services?labelSelector=app+in+(a,b)", 400, "BadRequest"),
        ("/api/v1/services?fieldSelector=spec.type%3DNodePort", 400, "BadRequest"),
    ],
)
def test_unsupported_requests_get_a_status(lab: Lab, path: str, code: int, reason: str) -> None:
    got_code, status = _raw(lab, "GET", path)
    assert (got_code, status["kind"], status["reason"]) == (code, "Status", reason)


def test_discovery(lab: Lab) -> None:
    assert _raw(lab, "GET", "/version")[1]["gitVersion"] == "v1.31.0-lab"
    assert _raw(lab, "GET", "/api")[1]["versions"] == ["v1"]
    groups = _raw(lab, "GET", "/apis")[1]["groups"]
    assert [g["preferredVersion"]["groupVersion"] for g in groups] == [
        "apps/v1",
        "discovery.k8s.io/v1",
    ]
    core = {r["name"]: r for r in _raw(lab, "GET", "/api/v1")[1]["resources"]}
    assert sorted(core) == ["configmaps", "nodes", "pods", "services"]
    assert core["services"]["shortNames"] == ["svc"]
    assert core["nodes"]["namespaced"] is False


def test_kubectl_gets_all_kinds(lab: Lab) -> None:
    result = _kubectl(lab, "get", "services,endpointslices,nodes", "-A")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    names = {row[1] for row in rows if len(row) == 3 and row[0] != "NAMESPACE"}
    names |= {row[0] for row in rows if len(row) == 2 and row[0] != "NAME"}  # nodes: no namespace
    expected = {f"service/{s['metadata']['name']}" for s in OBJECTS["services"]}
    expected |= {
        f"endpointslice.discovery.k8s.io/{s['metadata']['name']}" for s in OBJECTS["endpointslices"]
    }
    expected |= {f"node/{n['metadata']['name']}" for n in OBJECTS["nodes"]}
    assert names == expected, result.stdout


def test_kubectl_service_json_round_trips(lab: Lab) -> None:
    result = _kubectl(lab, "get", "svc", "redis", "-n", "default", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == OBJECTS["services"][0]


def test_kubectl_reads_kube_proxy_configmap_as_yaml(lab: Lab) -> None:
    result = _kubectl(lab, "get", "cm", "-n", "kube-system", "kube-proxy", "-o", "yaml")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["data"]["config.conf"] == KUBE_PROXY_CONFIG


@pytest.mark.parametrize(
    ("objects", "complaint"),
    [
        (None, "cannot read objects file"),
        ('{"services": [', "cannot read objects file"),
        ('{"secrets": []}', "unknown resource keys"),
        ('{"services": [{"metadata": {"name": "x"}}]}', "services[0] has no metadata.namespace"),
    ],
)
def test_bad_objects_file_is_one_line_and_exit_2(
    tmp_path: Path, objects: str | None, complaint: str
) -> None:
    tls = make_tls(tmp_path / "tls")
    (tmp_path / "token").write_text(TOKEN)
    if objects is not None:
        (tmp_path / "objects.json").write_text(objects)
    result = subprocess.run(
        _server_command(tmp_path, tls),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert complaint in result.stderr
    assert not (tmp_path / "ready").exists()


def _signal_a_thread_but_the_main_one(pid: int, signum: int) -> None:
    """tgkill(2) to a thread of pid other than its main one, as the kernel may deliver a
    process's signal: Python runs the handler in the main thread only, when it next wakes."""
    tids = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    other = next(tid for tid in tids if tid != pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(SYS_TGKILL, pid, other, signum) == 0, os.strerror(ctypes.get_errno())


def test_sighup_serves_the_objects_and_exec_files_as_they_now_read(tmp_path: Path) -> None:
    """How the lab's `migrate` edits the kube-proxy ConfigMap and its agents add their pods and
    exec (fixtures/lab/agents.py); a broken file keeps the old objects and exec map."""
    tls = make_tls(tmp_path / "tls")
    objects = tmp_path / "objects.json"
    agent = {"metadata": _meta("agent-1", "vipcheck", "5"), "spec": {"nodeName": "node-1"}}
    objects.write_text(json.dumps({**OBJECTS, "pods": [agent]}))
    exec_file = tmp_path / "exec.json"
    exec_file.write_text("{}")
    (tmp_path / "token").write_text(TOKEN + "\n")
    server = subprocess.Popen(
        _server_command(tmp_path, tls, "--port", "0", "--exec", str(exec_file)),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=dies_with_this_process(),  # noqa: PLW1509 (takes no lock: lifetime.py)
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "ready").exists():
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.05)
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, (tmp_path / "ready").read_text().strip(), tls.ca_cert, TOKEN)

        def services() -> list[str]:
            with _client(kubeconfig) as api_client:
                listed = client.CoreV1Api(api_client).list_service_for_all_namespaces()
                return _names(listed.items)

        lab = Lab((tmp_path / "ready").read_text().strip(), kubeconfig, tls.ca_cert, tmp_path)
        exec_path = "/api/v1/namespaces/vipcheck/pods/agent-1/exec?command=true"
        assert _raw(lab, "GET", exec_path)[0] == 403  # in no exec map yet
        before = services()
        edited = json.loads(json.dumps(OBJECTS)) | {"pods": [agent]}
        edited["services"] = edited["services"][:1]
        objects.write_text(json.dumps(edited))
        exec_file.write_text(json.dumps({"vipcheck/agent-1": ["env"]}))
        _signal_a_thread_but_the_main_one(server.pid, signal.SIGHUP)
        while services() == before:
            assert time.monotonic() < deadline, "the edit was never served"
            time.sleep(0.05)
        kept = [edited["services"][0]["metadata"]["name"]]
        assert services() == kept
        # Allowed now: past the exec map, only a plain GET is refused, for not being a WebSocket.
        code, status = _raw(lab, "GET", exec_path)
        assert (code, status["message"]) == (400, "the lab stand-in's exec is WebSocket only")
        objects.write_text("{not json")
        exec_file.write_text("{}")
        server.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert services() == kept
        assert _raw(lab, "GET", exec_path)[0] == 400
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=10)
    assert "reload refused, old objects kept" in log
    assert "Traceback" not in log
