"""The lab's lifecycle: a busy directory is refused, two labs run at once, down leaves nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fixtures.lab import control
from fixtures.lab.__main__ import main
from fixtures.lab.running import LabPool
from tests.kubectl import kubectl


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(f"{cmdline.parent.name}: {args}")
    return found


def host_netns() -> str:
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return result.stdout


def test_up_refuses_a_directory_where_a_lab_runs(
    labs: LabPool, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = labs.get("healthy")
    assert main(["up", "--scenario", "healthy", "--workdir", str(lab.workdir)]) == 1
    err = capsys.readouterr().err
    assert "a lab already runs in" in err
    assert "down --workdir" in err
    assert main(["status", "--workdir", str(lab.workdir)]) == 0


def test_kubectl_reads_the_lab_cluster(labs: LabPool) -> None:
    lab = labs.get("healthy")
    result = subprocess.run(
        [kubectl(), "--kubeconfig", str(lab.workdir / "kubeconfig"), "get",
         "services,endpointslices,nodes", "-A"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("service/redis", "service/web", "node/node-1", "node/node-3"):
        assert name in result.stdout


def test_a_second_lab_runs_beside_the_first_and_down_leaves_nothing(
    labs: LabPool, tmp_path: Path
) -> None:
    first = labs.get("healthy")
    netns_before = host_netns()
    workdir = tmp_path / "second"
    state = control.up("healthy", workdir, print)
    assert set(state.ssh_ports.values()).isdisjoint(
        json.loads((first.workdir / "lab.json").read_text())["ssh_ports"].values()
    )
    assert processes_mentioning(str(workdir))
    control.down(workdir, print)
    assert processes_mentioning(str(workdir)) == []
    assert not (workdir / "lab.json").exists()
    assert host_netns() == netns_before
    assert main(["status", "--workdir", str(first.workdir)]) == 0
