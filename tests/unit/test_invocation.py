"""Running the suites must not depend on luck: where pytest is started, how, with which plugins.

Each test starts pytest or the `vipcheck` command as a user would, in a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vipcheck
from vipcheck.cases import cases_for
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS
from vipcheck.facts import Facts
from vipcheck.snapshot import load_snapshot

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "fixtures" / "recorded" / "seed-incidents"
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
VIPCHECK = [sys.executable, "-m", "vipcheck.cli"]


def item_count(snapshot: Path) -> int:
    """How many items the suites make of a snapshot: one per case of every catalogued check but
    the readiness ones, which run only when -m names them (issue 20)."""
    facts = Facts.from_snapshot(load_snapshot(snapshot))
    judged = [check for check in CATALOGUE if check not in MIGRATION_CHECKS]
    return sum(len(list(cases_for(check, facts))) for check in judged)


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def collected(output: str) -> list[str]:
    return [line for line in output.splitlines() if "::" in line]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A snapshot in a directory outside the checkout."""
    snapshot = tmp_path / "evidence" / "seed-incidents"
    shutil.copytree(RECORDED, snapshot)
    return snapshot


def test_pytest_in_a_checkout_with_a_snapshot_outside_collects_the_suites(outside: Path) -> None:
    result = run([*PYTEST, "--co", "-q", "--from-snapshot", str(outside)], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    items = collected(result.stdout)
    assert items, result.stdout
    assert all(item.startswith("suites/test_") for item in items), items
    assert len(items) == item_count(outside)


def test_collect_only_writes_no_json_summary(outside: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = run(
        [*PYTEST, "--co", "-q", "--from-snapshot", str(outside), "--vipcheck-json", str(summary)],
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not summary.exists()


def test_vipcheck_command_pins_rootdir_and_config_against_the_directory_it_runs_in(
    outside: Path, tmp_path: Path
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    # Another project's configuration, which must not reach vipcheck's run.
    (work / "pytest.ini").write_text(
        "[pytest]\naddopts = -k nothing_matches\ntestpaths = nowhere\n"
    )
    summary = tmp_path / "summary.json"
    result = run(
        [*VIPCHECK, "--from-snapshot", str(outside), "--vipcheck-json", str(summary), "-q"],
        cwd=work,
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    totals = json.loads(summary.read_text())["totals"]
    assert sum(totals.values()) == item_count(outside)
    assert "Traceback" not in result.stdout + result.stderr


def test_vipcheck_command_takes_testinfra_options_with_autoload_off(tmp_path: Path) -> None:
    result = run(
        [*VIPCHECK, "--hosts", "ssh://127.0.0.1:9", "--co", "-q", "--no-probe", "--kubeconfig",
         str(tmp_path / "none")],
        cwd=tmp_path,
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
    )  # fmt: skip
    # --hosts is testinfra's: it parses, and the missing kubeconfig is the one problem named.
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert str(tmp_path / "none") in result.stderr


def test_pyargs_runs_the_installed_suites(outside: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = run(
        [*PYTEST, "--pyargs", "vipcheck.suites", "--from-snapshot", str(outside),
         "--vipcheck-json", str(summary), "-q"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert sum(json.loads(summary.read_text())["totals"].values()) == item_count(outside)


def test_a_suite_naming_an_unknown_check_is_a_usage_error_listing_the_known_ones(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_mine="""
        import pytest

        @pytest.mark.vipcheck_check("rp-filter")
        def test_rp(vipcheck_result):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--from-snapshot", RECORDED)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_mine.py::test_rp: @pytest.mark.vipcheck_check: no check 'rp-filter'; known: *"]
    )
    assert "rp-filter-not-strict" in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_snapshot_that_cannot_be_read_is_a_usage_error_in_one_line(
    pytester: pytest.Pytester,
) -> None:
    empty = pytester.mkdir("empty")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pyargs", "vipcheck.suites", "--from-snapshot", empty
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {empty}: no cluster/*.json and no nodes/<node>/ files*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_the_header_names_target_thresholds_and_probes_for_suite_runs_only(
    outside: Path, tmp_path: Path
) -> None:
    suites = run([*PYTEST, "--co", "--from-snapshot", str(outside)], cwd=ROOT)
    assert f"vipcheck target: snapshot {outside} (replay: nothing is contacted)" in suites.stdout
    assert "vipcheck thresholds: tcpfin_timeout_max_s=30, syn_recv_max=0" in suites.stdout
    assert "vipcheck probes: replayed from the snapshot's probes/" in suites.stdout
    command = run([*VIPCHECK, "--co", "--from-snapshot", str(outside), "--no-probe"], tmp_path)
    assert "vipcheck probes: off (--no-probe)" in command.stdout
    own_tests = run([*PYTEST, "--co", "-m", "lab", "tests/lab"], cwd=ROOT)
    assert "vipcheck target" not in own_tests.stdout


def test_version_names_vipcheck_first_and_pytest_beside_it(tmp_path: Path) -> None:
    """`vipcheck --version` is vipcheck's version; pytest's follows, as pytest prints it."""
    result = run([*VIPCHECK, "--version"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"vipcheck {vipcheck.__version__}",
        f"pytest {pytest.__version__}",
    ]
