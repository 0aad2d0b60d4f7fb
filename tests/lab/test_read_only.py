"""Read-only, proven on the lab: a full run with probes changes no node and sends only GETs; ssh
host keys are verified, an unknown or changed one erroring its node with the fix in words."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fixtures.lab.running import LabPool, RunningLab
from fixtures.lab.ssh import make_key

NODES = ("node-1", "node-2", "node-3")
# The node's state, minus the IPVS connection entries and counters: what nothing may change.
SECTIONS = {
    "ipvs rules": "ipvsadm -Sn",
    "ipvs timeouts": "ipvsadm -L --timeout",
    "sysctls": "sysctl -a 2>/dev/null | sort",
    "addresses": "ip -d addr",
    "links": "ip -d link",
    "nft ruleset": "nft list ruleset",
    "modules": "cut -d' ' -f1 /proc/modules | sort",
    "temporary files": "find /tmp /var/tmp -xdev 2>/dev/null | sort",
}
LIFETIME = re.compile(r"(valid|preferred)_lft \d+sec")
COUNTERS = ("kernel.ns_last_pid", "fs.", "kernel.random.", "net.netfilter.nf_conntrack_count")


def run_vipcheck(
    lab: RunningLab, out: Path, ssh_config: Path | None = None
) -> tuple[int, dict[str, Any], str]:
    """A full run (probes included) against the lab; exit code, JSON summary, terminal output."""
    summary = out / "summary.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--ssh-config", str(ssh_config or lab.workdir / "ssh_config"),
            "--vipcheck-json", str(summary),
            "-q", "-rfE",
        ],
        capture_output=True, text=True, timeout=300, check=False, cwd=out,
    )  # fmt: skip
    return result.returncode, json.loads(summary.read_text()), result.stdout + result.stderr


def node_state(lab: RunningLab, node: str) -> dict[str, set[str]]:
    """Each section's lines on the node, lifetimes counting down masked."""
    script = "; ".join(f"echo '=== {name}'; {command}" for name, command in SECTIONS.items())
    state: dict[str, set[str]] = {}
    for block in lab.ssh(node, script).split("=== ")[1:]:
        name, _, body = block.partition("\n")
        state[name] = {LIFETIME.sub(r"\1_lft Nsec", line) for line in body.splitlines()}
    assert sorted(state) == sorted(SECTIONS), state.keys()
    return state


def key(line: str) -> str:
    """A sysctl line's key (its value may move); any other line is its own key."""
    return line.partition(" = ")[0] if " = " in line else line


def changed(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        name: {key(line) for line in before[name] ^ after[name]}
        for name in before
        if before[name] != after[name]
    }


def test_a_full_run_changes_no_node_and_sends_only_gets(labs: LabPool, tmp_path: Path) -> None:
    lab = labs.get("healthy")
    first = {node: node_state(lab, node) for node in NODES}
    time.sleep(2)
    second = {node: node_state(lab, node) for node in NODES}
    # What moves on its own (counters, entropy, pids): learnt from two readings before the run.
    volatile = {node: changed(first[node], second[node]) for node in NODES}
    log = lab.workdir / "apiserver.log"
    requests_before = len(log.read_text().splitlines())
    code, summary, output = run_vipcheck(lab, tmp_path)
    # Handshakes may time out on a loaded machine; what matters here is that they were made.
    assert code in (0, 1), output
    assert "Traceback" not in output
    assert summary["totals"]["passed"] > 20
    probed = [r for r in summary["results"] if r["check"] == "vip-handshake"]
    assert probed, output
    assert {r["outcome"] for r in probed} <= {"passed", "failed"}, output
    after = {node: node_state(lab, node) for node in NODES}
    for node in NODES:
        moved = changed(second[node], after[node])
        moved = {
            name: keys - volatile[node].get(name, set())
            for name, keys in moved.items()
            if keys - volatile[node].get(name, set())
        }
        # The sysctl counters a run's sessions and probes move are not state vipcheck set.
        if "sysctls" in moved:
            moved["sysctls"] = {k for k in moved["sysctls"] if not k.startswith(COUNTERS)}
            moved = {name: keys for name, keys in moved.items() if keys}
        assert moved == {}, f"{node} changed: {moved}"
    made = [line.split()[0] for line in log.read_text().splitlines()[requests_before:]]
    made = [method for method in made if method.isupper() and method.isalpha()]
    assert made, "the run made no API request"
    assert set(made) == {"GET"}, made


def test_an_unknown_or_changed_host_key_errors_its_node_with_the_fix(
    labs: LabPool, tmp_path: Path
) -> None:
    lab = labs.get("healthy")
    ports = json.loads((lab.workdir / "lab.json").read_text())["ssh_ports"]
    known = (lab.workdir / "known_hosts").read_text().splitlines()
    stranger = make_key(tmp_path / "stranger", "not node-2").split()[:2]
    pinned = []
    for line in known:
        if f"]:{ports['node-3']} " in line:
            continue  # node-3's key is unknown
        if f"]:{ports['node-2']} " in line:
            host = line.split()[0]
            line = f"{host} {' '.join(stranger)} node-2"  # noqa: PLW2901 - node-2's key changed
        pinned.append(line)
    (tmp_path / "known_hosts").write_text("\n".join(pinned) + "\n")
    config = (lab.workdir / "ssh_config").read_text()
    broken = tmp_path / "ssh_config"
    broken.write_text(
        config.replace(str(lab.workdir / "known_hosts"), str(tmp_path / "known_hosts"))
    )
    code, summary, output = run_vipcheck(lab, tmp_path, broken)
    assert code == 1, output
    errors = {r["node"]: r["message"] for r in summary["results"] if r["outcome"] == "error"}
    assert sorted(errors) == ["node-2", "node-3"], output
    for message in errors.values():
        assert "Host key verification failed" in message, message
        assert "host key is unknown or changed: verify it out of band" in message, message
    assert [r for r in summary["results"] if r["outcome"] == "failed"] == [], output
