"""Known secrets put into a kubeconfig, and a scan of every output for them (unit and lab tests)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import yaml

EXEC_SECRET = "exec-plugin-secret-4f18b2"  # noqa: S105 (a test value, in no real credential)
# Files a test writes beside the outputs to hand vipcheck its secrets: not outputs, not scanned.
INPUTS = frozenset({"kubeconfig", "id_ed25519", "id_ed25519.pub"})


def with_secrets(
    kubeconfig: Path, out: Path, token: str, key_pem: bytes, cert_pem: bytes
) -> tuple[Path, list[str]]:
    """out/kubeconfig: a copy of kubeconfig whose first user has this token and client key, plus
    an unused exec-plugin user; and the secrets (token, exec secret, key data and its lines)."""
    config = yaml.safe_load(kubeconfig.read_text())
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
    path = out / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    key_lines = [line for line in key_pem.decode().splitlines() if "-----" not in line]
    return path, [token, EXEC_SECRET, user["client-key-data"], *key_lines]


def identity_lines(path: Path) -> list[str]:
    """An ssh identity file's key material: every line but the BEGIN/END ones."""
    return [line for line in path.read_text().splitlines() if "-----" not in line]


def new_identity_file(directory: Path) -> tuple[Path, list[str]]:
    path = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path, identity_lines(path)


def vipcheck_vv(out: Path, *args: str, timeout: float = 120) -> str:
    """Run vipcheck with -vv into out/ (JSON, JUnit XML, HTML, snapshot); its terminal output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    env["HOME"] = str(out)
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli", *args, "-vv", "-rA",
            "--vipcheck-json", str(out / "summary.json"),
            "--junitxml", str(out / "junit.xml"),
            "--vipcheck-html", str(out / "report.html"),
            "--save-snapshot", str(out / "snapshot"),
        ],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=out, env=env,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout + result.stderr


def leaks(out: Path, terminal: str, secrets: list[str]) -> dict[str, list[str]]:
    """Where each secret shows: every file under out/ and the terminal."""
    texts = {"terminal": terminal}
    texts |= {
        str(p.relative_to(out)): p.read_bytes().decode("utf-8", "replace")
        for p in out.rglob("*")
        if p.is_file() and p.name not in INPUTS
    }
    return {
        name: [s[:12] for s in secrets if s in text]
        for name, text in texts.items()
        if any(s in text for s in secrets)
    }
