"""Promises of docs/reliability.md that need no VM: GET only, no secret in any output, host keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api
from tests.secrets import leaks, new_identity_file, with_secrets
from tests.secrets import vipcheck_vv as vipcheck
from vipcheck.transport import NodeTarget, _backend

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "reliability-token-7c3e91d04a2b"  # noqa: S105 (a test token for a throwaway server)
WRONG_TOKEN = "expired-token-0a9d6e17c5"  # noqa: S105
REQUEST = re.compile(r"^([A-Z]+) (\S+) (\d+)$")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects = api_objects(load_scenario("healthy"))
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN) as running:
        yield running


def test_a_full_run_sends_only_gets(api: ServedApi, tmp_path: Path) -> None:
    before = len(api.requests())
    vipcheck(tmp_path, "--kubeconfig", str(api.kubeconfig), "--hosts", "local://")
    made = [REQUEST.match(line) for line in api.requests()[before:]]
    assert made, "the run made no request at all"
    assert {m.group(1) for m in made if m} == {"GET"}
    assert len(made) >= 5  # Services, EndpointSlices, Nodes, ConfigMap, DaemonSet


def secret_kubeconfig(api: ServedApi, out: Path, token: str) -> tuple[Path, list[str]]:
    """The served kubeconfig with a client key and an unused exec-plugin user; its secrets."""
    key_pem = api.tls.server_key.read_bytes()
    cert_pem = api.tls.server_cert.read_bytes()
    return with_secrets(api.kubeconfig, out, token, key_pem, cert_pem)


@pytest.mark.parametrize("token", [TOKEN, WRONG_TOKEN], ids=["success", "failed-auth"])
def test_no_secret_reaches_any_output(api: ServedApi, tmp_path: Path, token: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    kubeconfig, kube_secrets = secret_kubeconfig(api, out, token)
    identity, key_lines = new_identity_file(out)
    terminal = vipcheck(
        out,
        *("--kubeconfig", str(kubeconfig), "--ssh-identity-file", str(identity)),
        *("--hosts", "local://,ssh://vipcheck@127.0.0.1:1", "--vipcheck-timeout", "10"),
    )
    assert (out / "summary.json").is_file()
    assert (out / "junit.xml").is_file()
    assert (out / "report.html").is_file()
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
