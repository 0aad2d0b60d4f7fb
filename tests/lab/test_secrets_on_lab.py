"""Secrets on the lab: vipcheck reads the lab's API with a known bearer token and client key and
its nodes with a known ssh identity file, with -vv, once succeeding and once refused (wrong
token); none of them shows in the snapshot, the JSON, the JUnit XML, the HTML report or the
terminal. Two runs without probes on the pooled healthy lab: no VM of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.lab.running import LabPool
from fixtures.lab.tls import make_tls
from tests.secrets import identity_lines, leaks, vipcheck_vv, with_secrets

WRONG_TOKEN = "wrong-lab-token-3b8e5a0f92"  # noqa: S105 (the lab's API server refuses it)
NODES = ("node-1", "node-2", "node-3")


@pytest.mark.parametrize("auth", ["success", "failed-auth"])
def test_no_secret_of_a_lab_run_reaches_any_output(
    labs: LabPool, tmp_path: Path, auth: str
) -> None:
    lab = labs.get("healthy")
    out = tmp_path / auth
    out.mkdir()
    token = (lab.workdir / "token").read_text().strip()
    client = make_tls(tmp_path / "client")  # a key and certificate of this test's own
    kubeconfig, kube_secrets = with_secrets(
        lab.workdir / "kubeconfig",
        out,
        token if auth == "success" else WRONG_TOKEN,
        client.server_key.read_bytes(),
        client.server_cert.read_bytes(),
    )
    identity = lab.workdir / "id_ed25519"
    secrets = [*kube_secrets, token, *identity_lines(identity)]
    assert len(secrets) > 6
    # Refused by the API, the nodes are still read (named by --hosts), with the identity file.
    hosts = ("--hosts", ",".join(f"ssh://{node}" for node in NODES))
    terminal = vipcheck_vv(
        out,
        *("--kubeconfig", str(kubeconfig), "--ssh-config", str(lab.workdir / "ssh_config")),
        *("--ssh-identity-file", str(identity), "--no-probe"),
        *(hosts if auth == "failed-auth" else ()),
        timeout=300,
    )
    for output in ("summary.json", "junit.xml", "report.html", "snapshot/meta.json"):
        assert (out / output).is_file(), f"{output} not written\n{terminal}"
    gathered = {p.parent.name for p in (out / "snapshot" / "nodes").glob("*/uname.txt")}
    assert gathered == set(NODES), terminal  # the identity file was used on every node
    if auth == "success":
        assert (out / "snapshot" / "cluster" / "services.json").is_file(), terminal
    else:
        assert "401 Unauthorized" in terminal, terminal
        assert not (out / "snapshot" / "cluster").exists(), terminal
    assert leaks(out, terminal, secrets) == {}
