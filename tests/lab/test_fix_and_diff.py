"""The gate on the live lab: the fix script repairs the incident, and the diff says so.

Applying fixes changes the VM, so each test takes its lab from the pool (LabPool.take) and runs
after every other lab test (the lab_changes marker).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.connect import connect_attempts
from fixtures.lab.running import LabPool, RunningLab
from tests.browser import parse, rendered_dom

# What the node commands of the fix script must turn into passes, per scenario.
REPAIRED = {
    "stale-real-server": {
        ("ipvs-real-servers-match-endpoints", "default/redis:6379/TCP"),
        ("vip-handshake", "default/redis:6379/TCP"),
    },
    "rp-filter-strict": {
        ("rp-filter-not-strict", "node-2/tunl0"),
        ("vip-handshake", "default/api:80/TCP"),
    },
}


@pytest.fixture(params=list(REPAIRED))
def own_lab(labs: LabPool, request: pytest.FixtureRequest) -> RunningLab:
    """The scenario's lab, taken from the pool: these tests run last (lab_changes), so the lab
    the other tests used, still as booted, is theirs to repair."""
    return labs.take(request.param)


def vipcheck(lab: RunningLab, out: Path, name: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    summary = out / f"{name}.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--ssh-config", str(lab.workdir / "ssh_config"),
            "--vipcheck-json", str(summary), "--vipcheck-html", str(out / f"{name}.html"),
            "-q", "-rfE", *extra,
        ],
        capture_output=True, text=True, timeout=300, check=False, cwd=out,
    )  # fmt: skip
    return result.returncode, json.loads(summary.read_text()), result.stdout + result.stderr


def failed(summary: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["check"], r["subject"]) for r in summary["results"] if r["outcome"] == "failed"}


def outcome(summary: dict[str, Any], check: str, subject: str) -> str:
    return str(
        next(
            r["outcome"]
            for r in summary["results"]
            if r["check"] == check and r["subject"] == subject
        )
    )


@pytest.mark.lab_changes
def test_the_fix_script_repairs_the_incident_and_the_diff_lists_it_resolved(
    own_lab: RunningLab, tmp_path: Path
) -> None:
    lab, scenario = own_lab, own_lab.scenario.name
    if scenario == "rp-filter-strict":
        # As users saw it: the client's SYNs leave SYN_RECV on the director, in both runs.
        api = lab.scenario.service("default", "api")
        connect_attempts(lab.workdir / "ssh_config", "client", str(api.cluster_ip), 80, count=2)
    started = time.monotonic()
    script = tmp_path / "fix.sh"
    code, before, output = vipcheck(lab, tmp_path, "before", "--vipcheck-fix-script", str(script))
    assert code == 1, output
    assert REPAIRED[scenario] <= failed(before), output
    text = script.read_text()
    # The real OpenSSH and sshd: `--` before the host, the node command one quoted string.
    assert f"run ssh -F {lab.workdir / 'ssh_config'} -- node-" in text
    # The live run's report, as Chromium renders it: a failing cell for each repaired check.
    dom = parse(rendered_dom(tmp_path / "before.html"))
    failing_cells = {c["data-check"] for c in dom.cells if c["data-outcome"] == "failed"}
    assert {check for check, _ in REPAIRED[scenario]} <= failing_cells

    dry = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would run: ssh -F" in dry.stdout
    assert "\n+ " not in dry.stdout

    applied = subprocess.run(
        ["sh", str(script), "--apply"], capture_output=True, text=True, timeout=300, check=False
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "+ ssh -F " in applied.stdout
    assert "+ kubectl" not in applied.stdout  # cluster changes are printed, never run
    assert text.count("\nreview '") == applied.stdout.count("review, then run yourself: ")

    _, after, output = vipcheck(lab, tmp_path, "after")
    for check, subject in REPAIRED[scenario]:
        assert outcome(after, check, subject) == "passed", (check, subject, output)

    diff = subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", "diff", str(tmp_path / "before.json"),
         str(tmp_path / "after.json"), "--json", str(tmp_path / "diff.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert diff.returncode == 0, diff.stdout + diff.stderr
    result = json.loads((tmp_path / "diff.json").read_text())
    assert result["new"] == [], diff.stdout
    resolved = {(f["check"], f["subject"]) for f in result["resolved"]}
    assert resolved >= REPAIRED[scenario], diff.stdout
    print(f"{scenario}: two runs, the fix and the diff in {time.monotonic() - started:.0f} s")
