"""Promises of docs/reliability.md that need no VM: GET only, no secret in any output, host keys."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api
from vipcheck.transport import NodeTarget, _backend

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "reliability-token-7c3e91d04a2b"  # noqa: S105 (a test token for a throwaway server)
EXEC_SECRET = "exec-plugin-secret-4f18b2"  # noqa: S105
WRONG_TOKEN = "expired-token-0a9d6e17c5"  # noqa: S105
REQUEST = re.compile(r"^([A-Z]+) (\S+) (\d+)$")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects = api_objects(load_scenario("healthy"))
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN) as running:
        yield running


def vipcheck(out: Path, *args: str) -> str:
    """Run vipcheck into out/ (JSON, JUnit XML, snapshot), with -vv; its terminal output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    env["HOME"] = str(out)
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli", *args, "-vv", "-rA",
            "--vipcheck-json", str(out / "summary.json"),
            "--junitxml", str(out / "junit.xml"),
            "--save-snapshot", str(out / "snapshot"),
        ],
        capture_output=True, text=True, timeout=120, check=False, cwd=out, env=env,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout + result.stderr


def test_a_full_run_sends_only_gets(api: ServedApi, tmp_path: Path) -> None:
    before = len(api.requests())
    vipcheck(tmp_path, "--kubeconfig", str(api.kubeconfig), "--hosts", "local://")
    made = [REQUEST.match(line) for line in api.requests()[before:]]
    assert made, "the run made no request at all"
    assert {m.group(1) for m in made if m} == {"GET"}
    assert len(made) >= 5  # Services, EndpointSlices, Nodes, ConfigMap, DaemonSet


def secret_kubeconfig(api: ServedApi, tmp_path: Path, token: str) -> tuple[Path, list[str]]:
    """The served kubeconfig with a client key and an unused exec-plugin user; its secrets."""
    config = yaml.safe_load(api.kubeconfig.read_text())
    key_pem = api.tls.server_key.read_bytes()
    cert_pem = api.tls.server_cert.read_bytes()
    user = config["users"][0]["user"]
    user["token"] = token
    user["client-key-data"] = base64.b64encode(key_pem).decode()
    user["client-certificate-data"] = base64.b64encode(cert_pem).decode()
    exec_user = {
        "command": "true",
        "apiVersion": "client.authentication.k8s.io/v1",
        "env": [{"name": "SECRET", "value": EXEC_SECRET}],
        "args": [EXEC_SECRET],
    }
    config["users"].append({"name": "exec-user", "user": {"exec": exec_user}})
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    key_lines = [line for line in key_pem.decode().splitlines() if "-----" not in line]
    return path, [token, EXEC_SECRET, user["client-key-data"], *key_lines]


def identity_file(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    lines = [line for line in path.read_text().splitlines() if "-----" not in line]
    return path, lines


def leaks(out: Path, terminal: str, secrets: list[str]) -> dict[str, list[str]]:
    """Where each secret shows: every file under out/ (HTML too, when made) and the terminal."""
    texts = {"terminal": terminal}
    texts |= {
        str(p.relative_to(out)): p.read_bytes().decode("utf-8", "replace")
        for p in out.rglob("*")
        if p.is_file() and p.name not in {"kubeconfig", "id_ed25519", "id_ed25519.pub"}
    }
    return {
        name: [s[:12] for s in secrets if s in text]
        for name, text in texts.items()
        if any(s in text for s in secrets)
    }


@pytest.mark.parametrize("token", [TOKEN, WRONG_TOKEN], ids=["success", "failed-auth"])
def test_no_secret_reaches_any_output(api: ServedApi, tmp_path: Path, token: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    kubeconfig, kube_secrets = secret_kubeconfig(api, out, token)
    identity, key_lines = identity_file(out)
    terminal = vipcheck(
        out,
        *("--kubeconfig", str(kubeconfig), "--ssh-identity-file", str(identity)),
        *("--hosts", "local://,ssh://vipcheck@127.0.0.1:1", "--vipcheck-timeout", "10"),
    )
    assert (out / "summary.json").is_file()
    assert (out / "junit.xml").is_file()
    assert (out / "snapshot" / "nodes").is_dir()
    if token == WRONG_TOKEN:
        assert "401 Unauthorized" in terminal, terminal
    else:
        assert (out / "snapshot" / "cluster" / "services.json").is_file()
    assert leaks(out, terminal, [*kube_secrets, *key_lines]) == {}


def test_the_secret_scan_finds_a_secret_that_is_there(tmp_path: Path) -> None:
    (tmp_path / "report.html").write_text(f"<p>{TOKEN}</p>")
    assert leaks(tmp_path, "", [TOKEN]) == {"report.html": [TOKEN[:12]]}


def test_nothing_turns_host_key_checking_off() -> None:
    off = re.compile(
        r"StrictHostKeyChecking\W+(no|off|accept-new)|UserKnownHostsFile\W+/dev/null", re.I
    )
    sources = list((ROOT / "src" / "vipcheck").rglob("*.py"))
    assert [str(p) for p in sources if off.search(p.read_text())] == []
    target = NodeTarget("node-1", "ssh://vipcheck@node-1:2222", None, None, sudo=True)
    command = _backend(target, 30).get_command("true")
    assert not off.search(command), command
    assert "StrictHostKeyChecking" not in command, command
