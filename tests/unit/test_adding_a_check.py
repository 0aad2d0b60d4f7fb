"""docs/architecture.md's "Adding a check", followed for real on a copy of the checkout.

The new files are the code blocks of that section as written there, so the page cannot drift from
what adding a check takes: the check's items run, land in the JSON summary and in docs/checks.md,
and the sysctl key it declares, one no check read before, reaches a live run's node script and
docs/snapshot.md; a node without the key skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.gather.test_node_script import live_run_node_script

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "fixtures" / "recorded" / "seed-incidents"
# live_run_node_script, run in the copy: the node script its observe sends.
LIVE_SCRIPT = (
    f"import sys; sys.path.append({str(ROOT)!r}); "
    "from tests.unit.gather.test_node_script import live_run_node_script; "
    "print(live_run_node_script())"
)
SYNCOOKIES_FILE = "/proc/sys/net/ipv4/tcp_syncookies"
COPIED = ("src", "suites", "docs", "conftest.py", "pyproject.toml")
# A fenced block whose first line is a comment naming the file it is.
FILE_BLOCK = re.compile(r"^( *)```python\n\1# (\S+)\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)


def documented_files() -> dict[str, str]:
    """The section's code blocks by the path each names in its first line."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## Adding a check", 1)[1].split("\n## ", 1)[0]
    return {
        path: textwrap.dedent(textwrap.indent(body, indent))
        for indent, path, body in FILE_BLOCK.findall(section)
    }


def run(command: list[str], checkout: Path) -> subprocess.CompletedProcess[str]:
    """A command in the copy, importing vipcheck from the copy's src/ first."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    return subprocess.run(
        command, cwd=checkout, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def add_to_catalogue(catalogue: Path, module: str, name: str) -> None:
    """Step 2: import the check and add it to the CATALOGUE tuple."""
    text = catalogue.read_text()
    opening = "CATALOGUE: tuple[Check[Any], ...] = (\n"
    assert opening in text
    text = text.replace(opening, f"from vipcheck.checks.{module} import {name}\n\n{opening}")
    text = text.replace("    VIP_HANDSHAKE,\n)", f"    VIP_HANDSHAKE,\n    {name},\n)")
    catalogue.write_text(text)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    return copy


def test_the_documented_steps_add_a_check_with_items_json_and_docs(
    checkout: Path, tmp_path: Path
) -> None:
    files = documented_files()
    assert set(files) == {"src/vipcheck/checks/syncookies.py", "suites/test_syncookies.py"}
    # The key is new: before the check, nothing reads it.
    assert SYNCOOKIES_FILE not in live_run_node_script()
    assert SYNCOOKIES_FILE not in (checkout / "docs" / "snapshot.md").read_text()
    for path, text in files.items():
        (checkout / path).write_text(text)
    add_to_catalogue(
        checkout / "src/vipcheck/checks/__init__.py", "syncookies", "TCP_SYNCOOKIES_ON"
    )
    lint = run([sys.executable, "-m", "ruff", "check", *files], checkout)
    assert lint.returncode == 0, lint.stdout

    snapshot = tmp_path / "snapshot"
    shutil.copytree(RECORDED, snapshot)
    sysctl = snapshot / "nodes" / "node-3" / "sysctl.txt"
    sysctl.write_text(sysctl.read_text().replace("tcp_syncookies = 1", "tcp_syncookies = 0"))
    # node-2's kernel lacks the key: nothing is wrong there that vipcheck can see.
    sysctl = snapshot / "nodes" / "node-2" / "sysctl.txt"
    sysctl.write_text(sysctl.read_text().replace("net.ipv4.tcp_syncookies = 1\n", ""))
    summary = tmp_path / "summary.json"
    result = run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "syncookies",
         "--from-snapshot", str(snapshot), "--vipcheck-json", str(summary)],
        checkout,
    )  # fmt: skip
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "FAILED suites/test_syncookies.py::test_tcp_syncookies_on[node-3]" in result.stdout
    assert "1 passed, 1 skipped" in result.stdout
    records = json.loads(summary.read_text())["results"]
    assert {(r["check"], r["subject"], r["outcome"]) for r in records} == {
        ("tcp-syncookies-on", "node-1", "passed"),
        ("tcp-syncookies-on", "node-2", "skipped"),
        ("tcp-syncookies-on", "node-3", "failed"),
    }
    [failed] = [r for r in records if r["outcome"] == "failed"]
    assert failed["violations"][0]["kind"] == "wrong-sysctl-value"
    [skipped] = [r for r in records if r["outcome"] == "skipped"]
    assert skipped["message"] == "net.ipv4.tcp_syncookies not in nodes/node-2/sysctl.txt"

    live = run([sys.executable, "-c", LIVE_SCRIPT], checkout)
    assert SYNCOOKIES_FILE in live.stdout, live.stderr or "not in the live run's node script"

    stale = run([sys.executable, "-m", "vipcheck.checks.docs", "--check"], checkout)
    assert stale.returncode == 1, "step 4 is needed: the page must be stale before it"
    assert run([sys.executable, "-m", "vipcheck.checks.docs"], checkout).returncode == 0
    page = (checkout / "docs" / "checks.md").read_text()
    assert "## `tcp-syncookies-on`" in page
    section = page.split("## `tcp-syncookies-on`")[1]
    assert "`nodes/<node>/sysctl.txt`" in section
    assert f"`nodes/<node>/proc-sys.txt` (`grep -H . {SYNCOOKIES_FILE}` on the node)" in section
    assert SYNCOOKIES_FILE in (checkout / "docs" / "snapshot.md").read_text()
