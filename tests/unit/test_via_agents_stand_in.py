"""The lab API stand-in's pods and exec (fixtures.lab.exec_stream): RFC 6455 framing, the v4
channel protocol, and every request but a read or an exec into a pod it names still refused."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.lab.exec_stream import accept_key, frame, status
from fixtures.lab.serve_api import ServedApi, serve_api

TOKEN = "stand-in-token-71aa"  # noqa: S105 (a test token for a throwaway server)
LABELS = {"app.kubernetes.io/name": "vipcheck-agent"}


def pod(name: str, node: str) -> dict[str, Any]:
    metadata = {"name": name, "namespace": "vipcheck", "labels": LABELS}
    return {"metadata": metadata, "spec": {"nodeName": node}, "status": {"phase": "Running"}}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects = {"pods": [pod("agent-1", "node-1"), pod("agent-2", "node-2")]}
    prefixes = {"vipcheck/agent-1": ["env"]}
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN, prefixes) as running:
        yield running


def request(
    api: ServedApi, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    host, port = api.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(api.tls.ca_cert))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.request(
        method, path, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    )
    response = connection.getresponse()
    body = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, body


def test_the_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_are_final_unmasked_binary_with_rfc_lengths(size: int) -> None:
    data = frame(b"\x01" + b"x" * size)
    length = size + 1
    assert data[0] == 0x82
    if length < 126:
        assert data[1] == length
        assert data[2:] == b"\x01" + b"x" * size
    elif length < 1 << 16:
        assert (data[1], struct.unpack("!H", data[2:4])[0]) == (126, length)
    else:
        assert (data[1], struct.unpack("!Q", data[2:10])[0]) == (127, length)


def test_the_status_is_kube_apiservers() -> None:
    assert status(0) == {"metadata": {}, "status": "Success"}
    failed = status(3)
    assert (failed["status"], failed["reason"]) == ("Failure", "NonZeroExitCode")
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_pods_are_listed_by_label_in_their_namespace(api: ServedApi) -> None:
    selector = "app.kubernetes.io/name%3Dvipcheck-agent"
    code, body = request(api, "GET", f"/api/v1/namespaces/vipcheck/pods?labelSelector={selector}")
    assert code == 200
    assert [item["metadata"]["name"] for item in body["items"]] == ["agent-1", "agent-2"]
    code, body = request(api, "GET", f"/api/v1/namespaces/other/pods?labelSelector={selector}")
    assert (code, body["items"]) == (200, [])


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Protocol": "v4.channel.k8s.io",
}
EXEC = "exec?command=vipcheck-node&stdout=true&stderr=true"


@pytest.mark.parametrize(
    ("method", "path", "headers", "code"),
    [
        ("POST", "/api/v1/namespaces/vipcheck/pods", UPGRADE, 405),
        ("DELETE", "/api/v1/namespaces/vipcheck/pods/agent-1", {}, 405),
        ("POST", "/api/v1/namespaces/vipcheck/pods/agent-1/eviction", UPGRADE, 405),
        ("GET", f"/api/v1/namespaces/vipcheck/pods/agent-9/{EXEC}", UPGRADE, 404),
        ("GET", f"/api/v1/namespaces/vipcheck/pods/agent-2/{EXEC}", UPGRADE, 403),
        ("GET", f"/api/v1/namespaces/vipcheck/pods/agent-1/{EXEC}", {}, 400),
        ("GET", f"/api/v1/namespaces/vipcheck/pods/agent-1/{EXEC}&stdin=true", UPGRADE, 400),
        ("GET", "/api/v1/namespaces/vipcheck/pods/agent-1/exec?stdout=true", UPGRADE, 400),
        (
            "GET",
            f"/api/v1/namespaces/vipcheck/pods/agent-1/{EXEC}",
            {**UPGRADE, "Sec-WebSocket-Protocol": "channel.k8s.io"},
            400,
        ),
    ],
    ids=["create", "delete", "evict", "unknown-pod", "not-granted", "no-upgrade", "stdin",
         "no-command", "old-protocol"],
)  # fmt: skip
def test_anything_but_an_exec_into_a_named_pod_is_refused(
    api: ServedApi, method: str, path: str, headers: dict[str, str], code: int
) -> None:
    answered, body = request(api, method, path, headers)
    assert (answered, body["kind"], body["code"]) == (code, "Status", code)


def test_without_the_token_even_an_exec_is_unauthorized(api: ServedApi) -> None:
    host, port = api.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(api.tls.ca_cert))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.request("GET", f"/api/v1/namespaces/vipcheck/pods/agent-1/{EXEC}", headers=UPGRADE)
    assert connection.getresponse().status == 401
    connection.close()
