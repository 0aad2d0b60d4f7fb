"""vipcheck on the live lab: each scenario fails exactly its incident; healthy fails nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.connect import Outcome, connect_attempts
from fixtures.lab.running import LabPool, RunningLab

STALE = ("ipvs-real-servers-match-endpoints", "default/redis:6379/TCP", None)
TCPFIN = {("ipvs-tcpfin-timeout", n, n) for n in ("node-1", "node-2", "node-3")}
RP_FILTER = ("rp-filter-not-strict", "node-2/tunl0", "node-2")
SYN_RECV = ("ipvs-no-stuck-syn-recv", "node-1", "node-1")
# The handshake probes: redis refuses about half its connections (the stale pod:80 gets its round
# robin share); api times out from the client (node-2's rp_filter drops SYNs from the tunnel).
REDIS_HANDSHAKE = ("vip-handshake", "default/redis:6379/TCP", None)
API_HANDSHAKE = ("vip-handshake", "default/api:80/TCP", None)
EXPECTED_FAILURES = {
    "healthy": set(),
    "stale-real-server": {STALE, REDIS_HANDSHAKE},
    "tcpfin-default": TCPFIN,
    "rp-filter-strict": {RP_FILTER, SYN_RECV, API_HANDSHAKE},
    "seed-incidents": {STALE, RP_FILTER, SYN_RECV, REDIS_HANDSHAKE, API_HANDSHAKE} | TCPFIN,
}


def run_vipcheck(lab: RunningLab, out: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    summary = out / "summary.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--ssh-config", str(extra[0] if extra else lab.workdir / "ssh_config"),
            "--vipcheck-json", str(summary),
            # The lab runs under software emulation: a 2 s connect timeout flakes on a busy host.
            "--probe-timeout", "5",
            "-q", "-rfE",
        ],
        capture_output=True, text=True, timeout=300, check=False, cwd=out,
    )  # fmt: skip
    return result.returncode, json.loads(summary.read_text()), result.stdout + result.stderr


def outcomes(summary: dict[str, Any], outcome: str) -> set[tuple[str, str, str | None]]:
    return {
        (r["check"], r["subject"], r["node"]) for r in summary["results"] if r["outcome"] == outcome
    }


@pytest.mark.parametrize("scenario", list(EXPECTED_FAILURES))
def test_vipcheck_fails_exactly_the_scenarios_incidents(
    labs: LabPool, scenario: str, tmp_path: Path
) -> None:
    lab = labs.get(scenario)
    api = lab.scenario.service("default", "api")
    # An external client's handshakes leave SYN_RECV on the director where rp_filter drops them.
    attempts = connect_attempts(
        lab.workdir / "ssh_config", "client", str(api.cluster_ip), 80, count=2
    )
    strict = scenario in {"rp-filter-strict", "seed-incidents"}
    assert all((a.outcome is Outcome.TIMEOUT) == strict for a in attempts), attempts
    code, summary, output = run_vipcheck(lab, tmp_path)
    assert outcomes(summary, "failed") == EXPECTED_FAILURES[scenario], output
    assert outcomes(summary, "error") == set(), output
    assert code == (1 if EXPECTED_FAILURES[scenario] else 0), output
    assert summary["totals"]["passed"] > 20


def test_a_node_that_does_not_answer_is_one_error_and_the_others_are_judged(
    labs: LabPool, tmp_path: Path
) -> None:
    lab = labs.get("healthy")
    config = (lab.workdir / "ssh_config").read_text()
    port = json.loads((lab.workdir / "lab.json").read_text())["ssh_ports"]["node-3"]
    broken = tmp_path / "ssh_config"
    broken.write_text(config.replace(f"Port {port}\n", "Port 9\n"))
    code, summary, output = run_vipcheck(lab, tmp_path, str(broken))
    assert code == 1, output
    assert outcomes(summary, "error") == {("node-observed", "node-3", "node-3")}, output
    assert outcomes(summary, "failed") == set(), output
    node_3_items = {r["check"] for r in summary["results"] if r["node"] == "node-3"}
    assert "ipvs-tcpfin-timeout" in node_3_items, node_3_items
    spanning = [r for r in summary["results"] if r["node"] is None and r["outcome"] == "passed"]
    assert spanning, output
    assert all(r["unseen_nodes"] == ["node-3"] for r in spanning), spanning
    assert "node-3" in output
    assert "Traceback" not in output
