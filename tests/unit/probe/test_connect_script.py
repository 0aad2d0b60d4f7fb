"""The probe script: valid POSIX sh, and run here against a listening and a closed port."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from vipcheck.gather.connect_script import TOOLS, build_probe_script
from vipcheck.model.handshakes import ConnectOutcome, ProbeSettings
from vipcheck.model.node import HostPort
from vipcheck.parse.handshakes import parse_probe_output

LOCAL = ip_address("127.0.0.1")
SHELLS = [shell for shell in ("sh", "dash", "bash") if shutil.which(shell)]


@pytest.fixture
def listening() -> Iterator[HostPort]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield HostPort(LOCAL, server.getsockname()[1])
    server.close()


@pytest.fixture
def closed() -> HostPort:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return HostPort(LOCAL, port)


def run(script: str, shell: str = "sh") -> str:
    result = subprocess.run(
        [shell, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("tools", [TOOLS, ("python3",), ("nc",)])
def test_script_is_valid_sh(shell: str, tools: tuple[str, ...]) -> None:
    script = build_probe_script([(HostPort(LOCAL, 80), 2)], ProbeSettings(), tools)
    subprocess.run([shell, "-n", "-c", script], check=True, timeout=10)


def test_script_writes_nothing_and_sends_nothing() -> None:
    script = build_probe_script([(HostPort(LOCAL, 80), 2)], ProbeSettings())
    redirects = set(re.findall(r"(?<!<)\d?>\s*[^\s;)'\"]*", script))
    assert redirects <= {">/dev/null", "2>&1", "3>&-", "2>/dev/null"}, redirects
    assert re.findall(r"\d?<>\S*", script) == ['3<>"/dev/tcp/$0/$1";']
    assert "printf" not in script.split("vp_bash=")[1].split("vp_now_ms")[0]  # no payload


@pytest.mark.parametrize("tool", ["bash", "python3"])
def test_connected_and_refused_here(tool: str, listening: HostPort, closed: HostPort) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed here")
    script = build_probe_script([(listening, 2), (closed, 3)], ProbeSettings(), (tool,))
    output = parse_probe_output(run(script), "test")
    assert output.tool == tool
    assert output.error is None
    outcomes = [(a.address, a.seq, a.outcome) for a in output.attempts]
    assert outcomes == [
        (listening, 1, ConnectOutcome.CONNECTED),
        (listening, 2, ConnectOutcome.CONNECTED),
        (closed, 1, ConnectOutcome.REFUSED),
        (closed, 2, ConnectOutcome.REFUSED),
        (closed, 3, ConnectOutcome.REFUSED),
    ]
    assert all(a.ms is not None and a.ms < 2000 for a in output.attempts)


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox not installed here")
def test_busybox_nc_connects_and_is_refused(
    listening: HostPort, closed: HostPort, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    busybox = shutil.which("busybox")
    assert busybox is not None
    for applet in ("nc", "timeout", "date", "sleep", "tr", "cut", "tail", "grep"):
        (bin_dir / applet).symlink_to(busybox)
    script = build_probe_script([(listening, 1), (closed, 1)], ProbeSettings(), ("nc",))
    text = run(f"PATH={bin_dir}\n{script}", shutil.which("dash") or "sh")
    output = parse_probe_output(text, "test")
    assert output.tool == "nc"
    assert [a.outcome for a in output.attempts] == [
        ConnectOutcome.CONNECTED,
        ConnectOutcome.REFUSED,
    ], text


def test_a_host_without_tools_says_so() -> None:
    script = build_probe_script([(HostPort(LOCAL, 80), 1)], ProbeSettings(), ("nc",))
    text = run(
        f"PATH=/nonexistent\n{script}".replace('PATH="$PATH:/usr/bin:/bin:/usr/sbin:/sbin"', "")
    )
    output = parse_probe_output(text, "test")
    assert output.tool is None
    assert output.attempts == ()
    assert output.error is not None
    assert "none of" in output.error


def test_time_cap_stops_attempts_that_could_end_past_it(closed: HostPort) -> None:
    settings = ProbeSettings(timeout_s=2, budget_s=1)
    output = parse_probe_output(run(build_probe_script([(closed, 3)], settings)), "test")
    assert output.attempts == ()
    assert output.not_attempted == {closed: 3}


def test_past_the_cap_the_rest_is_listed_without_a_clock_read_per_target(
    closed: HostPort, tmp_path: Path
) -> None:
    # bench --lab's big scenario: thousands of targets on a slow host ran `date` once each after
    # the cap, past the caller's slack, and the killed round lost all it had probed.
    calls = tmp_path / "date-calls"
    (tmp_path / "date").write_text(f'#!/bin/sh\necho >> {calls}\nexec /bin/date "$@"\n')
    (tmp_path / "date").chmod(0o755)
    targets = [(HostPort(LOCAL, port), 2) for port in range(1, 3001)]
    script = build_probe_script(targets, ProbeSettings(timeout_s=2, budget_s=1))
    output = parse_probe_output(run(f'PATH="{tmp_path}:$PATH"\n{script}'), "test")
    assert output.error is None
    assert output.attempts == ()
    assert output.not_attempted == {address: 2 for address, _ in targets}
    assert len(calls.read_text().splitlines()) == 2  # the start, and the first target's check


def test_unknown_tool_is_refused() -> None:
    with pytest.raises(ValueError, match="probe tools"):
        build_probe_script([], ProbeSettings(), ("perl",))
