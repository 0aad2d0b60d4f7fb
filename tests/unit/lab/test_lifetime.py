"""A test run's lab processes die with it, SIGKILL included (fixtures/lab/lifetime.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fixtures.lab.errors import LabError
from fixtures.lab.lifetime import dies_with_this_process

REPO = Path(__file__).resolve().parents[3]
# A test run in small: it serves the stand-in API server as the unit tests do, then waits.
SERVING_OWNER = """
import sys, time
from pathlib import Path
from fixtures.lab.serve_api import serve_api
with serve_api(Path(sys.argv[1]), {}, "token"):
    print("serving", flush=True)
    time.sleep(300)
"""


def _stat(pid: int | str) -> list[str]:
    """/proc/PID/stat's fields after the command name: state, ppid, ...; [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def running(pid: int) -> bool:
    """Whether pid runs: a zombie has ended, only its parent (maybe init) has not reaped it."""
    stat = _stat(pid)
    return bool(stat) and stat[0] != "Z"


def children(pid: int) -> list[int]:
    """The running processes whose parent is pid."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(entry.name)
        if len(stat) > 1 and stat[0] != "Z" and int(stat[1]) == pid:
            found.append(int(entry.name))
    return found


def still_running(pids: list[int], within_s: float) -> list[int]:
    """Those of pids still running after waiting up to within_s for all to end."""
    deadline = time.monotonic() + within_s
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def mentioning(text: str) -> list[int]:
    """The processes whose command line holds text."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


@contextlib.contextmanager
def owner(code: str, workdir: Path) -> Iterator[subprocess.Popen[str]]:
    """A lab owner: Python running code, with workdir as its argument and stdout piped.

    At the end the owner and whatever still runs naming workdir are killed, by pid, so a failing
    test leaves nothing behind either.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()
        for pid in mentioning(str(workdir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_runner_takes_its_api_server_with_it(tmp_path: Path) -> None:
    with owner(SERVING_OWNER, tmp_path) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "serving\n"
        served = children(process.pid)
        assert len(served) == 1
        process.kill()
        process.wait()
        assert still_running(served, within_s=5) == []


def test_only_the_main_thread_may_start_a_tied_process() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        elsewhere = pool.submit(dies_with_this_process)
        with pytest.raises(LabError, match="from the runner's main thread"):
            elsewhere.result()
