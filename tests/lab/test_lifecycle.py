"""The lab's lifecycle: a busy directory is refused, two labs run at once, down leaves nothing,
`up`'s lab outlives the command, and a killed test run's lab dies with it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.lab import control
from fixtures.lab.__main__ import main
from fixtures.lab.running import LabPool
from tests.kubectl import kubectl
from tests.unit.lab.test_lifetime import REPO, children, owner, still_running


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


def ssh_ports(workdir: Path) -> set[int]:
    return set(json.loads((workdir / "lab.json").read_text())["ssh_ports"].values())


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
    up = subprocess.run(
        [sys.executable, "-m", "fixtures.lab", "up", "--scenario", "healthy",
         "--workdir", str(workdir)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        # `up` has exited, as it does for a person (make demo): its lab runs on until `down`.
        assert main(["status", "--workdir", str(workdir)]) == 0
        assert ssh_ports(workdir).isdisjoint(ssh_ports(first.workdir))
        assert processes_mentioning(str(workdir))
    finally:
        if (workdir / "lab.json").exists():
            control.down(workdir, print)
    assert processes_mentioning(str(workdir)) == []
    assert not (workdir / "lab.json").exists()
    assert host_netns() == netns_before
    assert main(["status", "--workdir", str(first.workdir)]) == 0


# A test run in small: it boots a lab as the pool does (control.start, tied to its caller).
BOOTING_OWNER = """
import sys
from pathlib import Path
from fixtures.lab import control
control.start("healthy", Path(sys.argv[1]), lambda line: print(line, file=sys.stderr)).ready()
"""


def lab_processes(owner_pid: int, timeout_s: float) -> list[int]:
    """The owner's children once qemu is among them (the API server starts first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = children(owner_pid)
        if any(command_name(pid).startswith("qemu") for pid in started):
            return started
        time.sleep(0.2)
    pytest.fail(f"no qemu started within {timeout_s:.0f} s")


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_a_killed_runner_takes_its_lab_with_it(tmp_path: Path) -> None:
    workdir = tmp_path / "owned"
    with owner(BOOTING_OWNER, workdir) as process:
        started = lab_processes(process.pid, timeout_s=900)  # the image may still be building
        assert len(started) == 2  # the API server and qemu
        process.kill()
        process.wait()
        assert still_running(started, within_s=5) == []
        assert processes_mentioning(str(workdir)) == []
