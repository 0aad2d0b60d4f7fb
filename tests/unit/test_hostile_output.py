"""What a snapshot holds cannot steer the terminal: escapes are shown, never sent (issue 23).

A node's error text and an interface name (Linux allows ESC and BEL in one) carry an OSC title,
a screen clear, a C1 CSI and a bidi override. The whole run's terminal output shows them as
`\\x1b` and the like; the JSON summary keeps them raw (JSON escapes controls itself) and the
JUnit XML stays well-formed with the escaped text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vipcheck.untrusted import interface_name_problem

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "fixtures" / "recorded" / "seed-incidents"
VIPCHECK = [sys.executable, "-m", "vipcheck.cli"]
# An interface name Linux accepts: 13 bytes, no '/', ':' or white space.
HOSTILE_INTERFACE = "\x1b]0;t\x07\x1b[2J\u202e"
HOSTILE_ERROR = "ssh: \x1b]0;pwned\x07\x1b[2J boom \u202eevil\nsecond line \x9b2J"
STEERING = ("\x1b", "\x07", "\x9b", "\u202e")


def hostile_snapshot(directory: Path) -> Path:
    """seed-incidents with node-2's tunl0 renamed (strict rp_filter: it fails) and node-3 down."""
    snapshot = directory / "snapshot"
    shutil.copytree(RECORDED, snapshot)
    node_2 = snapshot / "nodes" / "node-2"
    for name in ("ip-link.json", "ip-addr.json"):
        path = node_2 / name
        path.write_text(path.read_text().replace('"tunl0"', json.dumps(HOSTILE_INTERFACE)))
    sysctl = node_2 / "sysctl.txt"
    sysctl.write_text(sysctl.read_text().replace(".tunl0.", f".{HOSTILE_INTERFACE}."))
    (snapshot / "nodes" / "node-3" / "error.txt").write_bytes(
        HOSTILE_ERROR.encode() + b" raw \x9b byte\n"
    )
    return snapshot


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One verbose run of the hostile snapshot: its directory and everything it printed."""
    out = tmp_path_factory.mktemp("hostile")
    command = [
        *VIPCHECK,
        *("--from-snapshot", str(hostile_snapshot(out)), "--color=no", "-rA", "-v"),
        *("--vipcheck-json", str(out / "summary.json"), "--junitxml", str(out / "junit.xml")),
        *("--vipcheck-html", str(out / "report.html")),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    result = subprocess.run(
        command, cwd=out, env=env, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return out, (result.stdout + result.stderr).decode()


def test_the_hostile_name_is_one_linux_allows() -> None:
    assert interface_name_problem(HOSTILE_INTERFACE) is None


def test_nothing_raw_reaches_the_terminal(run: tuple[Path, str]) -> None:
    _, terminal = run
    raw = {char: terminal.count(char) for char in STEERING if char in terminal}
    lines = [line for line in terminal.splitlines() if any(c in line for c in STEERING)]
    assert raw == {}, "\n".join(map(repr, lines[:10]))


def test_the_person_still_sees_what_was_there(run: tuple[Path, str]) -> None:
    _, terminal = run
    shown_error = "ssh: \\x1b]0;pwned\\x07\\x1b[2J boom \\u202eevil"
    shown_interface = "\\x1b]0;t\\x07\\x1b[2J\\u202e"
    assert shown_error in terminal
    assert "second line \\x9b2J" in terminal
    # The failure text names the interface, and its evidence line shows it escaped, once.
    assert f"node-2: {shown_interface}: rp_filter effective=1" in terminal
    assert f"evidence: net.ipv4.conf.{shown_interface}.rp_filter = 1" in terminal
    # pytest's own id escaping stays as pytest made it, not escaped a second time.
    assert "\\\\x1b" not in terminal
    assert f"test_rp_filter_not_strict[node-2/{shown_interface}] FAILED" in terminal


def test_the_json_summary_keeps_the_raw_text(run: tuple[Path, str]) -> None:
    out, _ = run
    summary = json.loads((out / "summary.json").read_text())
    texts = list(strings(summary))
    assert any(HOSTILE_ERROR in text for text in texts)
    assert any(HOSTILE_INTERFACE in text for text in texts)


def test_junit_is_well_formed_and_keeps_the_escaped_text(run: tuple[Path, str]) -> None:
    out, _ = run
    root = ET.parse(out / "junit.xml").getroot()  # noqa: S314 (pytest wrote it)
    texts = [
        value for element in root.iter() for value in (element.text or "", *element.attrib.values())
    ]
    assert any("\\x1b]0;pwned\\x07" in text for text in texts)
    assert any("rp_filter effective=1" in text and "\\x1b]0;t" in text for text in texts)


def test_a_usage_error_quoting_a_hostile_path_is_shown_escaped(tmp_path: Path) -> None:
    """The header, the progress line and the exit-4 error all name the snapshot's path."""
    snapshot = tmp_path / "bundle-\x1b]0;t\x07\x1b[2J\u202e"
    snapshot.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    result = subprocess.run(
        [*VIPCHECK, "--from-snapshot", str(snapshot), "--color=no"],
        cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    terminal = (result.stdout + result.stderr).decode()
    assert result.returncode == 4, terminal
    assert [char for char in STEERING if char in terminal] == [], terminal
    shown = "bundle-\\x1b]0;t\\x07\\x1b[2J\\u202e"
    assert f"vipcheck target: snapshot {tmp_path}/{shown}" in terminal
    assert f"vipcheck: replaying snapshot {tmp_path}/{shown}" in terminal
    assert f"ERROR: {tmp_path}/{shown}: no cluster/*.json" in terminal
