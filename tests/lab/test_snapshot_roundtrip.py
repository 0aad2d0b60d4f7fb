"""--save-snapshot keeps what a live run saw; --from-snapshot replays it to the same verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fixtures.lab.running import LabPool


def vipcheck(cwd: Path, *args: str) -> dict[str, Any]:
    summary = cwd / f"summary-{len(list(cwd.glob('summary-*')))}.json"
    subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", "-q", "--vipcheck-json", str(summary), *args],
        capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(summary.read_text())
    return result


def verdicts(summary: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(r["check"], r["subject"], r["outcome"]) for r in summary["results"]}


def test_saved_snapshot_replays_to_the_same_verdicts(labs: LabPool, tmp_path: Path) -> None:
    lab = labs.get("stale-real-server")
    snapshot = tmp_path / "snap"
    live = vipcheck(
        tmp_path,
        "--kubeconfig", str(lab.workdir / "kubeconfig"),
        "--ssh-config", str(lab.workdir / "ssh_config"),
        "--save-snapshot", str(snapshot),
        "-m", "not probe",
    )  # fmt: skip
    assert (snapshot / "cluster" / "services.json").exists()
    assert (snapshot / "nodes" / "node-2" / "ipvsadm-Ln.txt").exists()
    assert json.loads((snapshot / "meta.json").read_text())["format"] == 1
    replayed = vipcheck(tmp_path, "--from-snapshot", str(snapshot), "-m", "not probe")
    assert verdicts(replayed) == verdicts(live)
    assert ("ipvs-real-servers-match-endpoints", "default/redis:6379/TCP", "failed") in verdicts(
        live
    )
