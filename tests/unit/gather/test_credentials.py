"""A kubeconfig's credentials through the real `vipcheck` command (issue 23).

The client key a kubeconfig holds as data is decoded to a temp file for TLS; none is left once
vipcheck exits. A credential plugin that cannot run is a usage error naming the kubeconfig and
the command, as kubectl reports it, not a traceback or a run without credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api
from tests.secrets import with_secrets

TOKEN = "credentials-token-3e8a1f6b20"  # noqa: S105 (a test token for a throwaway server)
VIPCHECK = [sys.executable, "-m", "vipcheck.cli"]
USAGE = 4


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects = api_objects(load_scenario("healthy"))
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN) as running:
        yield running


def vipcheck(tmp_path: Path, kubeconfig: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Collect only (the cluster and the nodes are read, nothing is judged), in a fresh process
    with only this kubeconfig and no node reachable."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    environment |= {"HOME": str(tmp_path), **env}
    command = [
        *VIPCHECK, "--kubeconfig", str(kubeconfig), "--co", "-q", "--no-probe",
        "--hosts", "ssh://vipcheck@127.0.0.1:1", "--vipcheck-timeout", "10",
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def test_the_decoded_client_key_is_gone_when_vipcheck_exits(api: ServedApi, tmp_path: Path) -> None:
    out, temp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    temp.mkdir()
    key_pem, cert_pem = api.tls.server_key.read_bytes(), api.tls.server_cert.read_bytes()
    kubeconfig, _ = with_secrets(api.kubeconfig, out, TOKEN, key_pem, cert_pem)
    started = time.time()
    result = vipcheck(out, kubeconfig, TMPDIR=str(temp))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cluster: nodes.json: " in result.stdout + result.stderr
    assert any(r.endswith(" 200") for r in api.requests()), "the API was not read"
    left = {p.name: p.read_bytes() for p in temp.rglob("*") if p.is_file()}
    assert [name for name, data in left.items() if key_pem.strip() in data] == []
    assert list(temp.iterdir()) == [], sorted(left)
    assert time.time() - started < 60


def credential_plugin_kubeconfig(directory: Path, user: dict[str, object]) -> Path:
    """A kubeconfig whose one user authenticates with this plugin, for an unused server."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "work", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "work",
    }
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


GCP_CMD_PATH = {
    "auth-provider": {
        "name": "gcp",
        "config": {
            "cmd-path": "/nonexistent/gcloud",
            "cmd-args": "config config-helper --format=json",
            "token-key": "{.credential.access_token}",
            "expiry-key": "{.credential.token_expiry}",
        },
    }
}
EXEC_PLUGIN = {
    "exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "/nonexistent/kubelogin",
        "args": ["get-token"],
    }
}


@pytest.mark.parametrize(
    ("user", "command"),
    [(GCP_CMD_PATH, "/nonexistent/gcloud"), (EXEC_PLUGIN, "/nonexistent/kubelogin")],
    ids=["gcp-cmd-path", "exec"],
)
def test_a_credential_command_that_does_not_exist_is_one_usage_error(
    tmp_path: Path, user: dict[str, object], command: str
) -> None:
    kubeconfig = credential_plugin_kubeconfig(tmp_path, user)
    result = vipcheck(tmp_path, kubeconfig)
    output = result.stdout + result.stderr
    assert result.returncode == USAGE, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"ERROR: kubeconfig {kubeconfig}, its current-context: "), output
    assert command in errors[0]
    assert "No such file or directory" in errors[0]
