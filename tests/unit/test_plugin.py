"""The plugin end to end with pytester: replay a recorded snapshot through the installed suites."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import shutil
import tomllib
from pathlib import Path

import pytest

from vipcheck.cases import cases_for
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS
from vipcheck.cli import SUITES_DIR
from vipcheck.facts import Facts
from vipcheck.model.handshakes import ProbeSettings
from vipcheck.options import GatherOptions, ProbeOptions, RunOptions, gate_options
from vipcheck.pytest_options import OPTIONS, PATH_OPTIONS
from vipcheck.pytest_setup import CHECKED_PYTEST
from vipcheck.settings import Settings
from vipcheck.snapshot import load_snapshot

pytest_plugins = ["pytester"]

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded" / "seed-incidents"


def run_suites(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(str(SUITES_DIR), "-p", "no:cacheprovider", *args)


def failed_ids(result: pytest.RunResult) -> set[str]:
    return {
        line.split(" ", 1)[1].split(" - ")[0]
        for line in result.outlines
        if line.startswith("FAILED ")
    }


def test_replay_fails_exactly_the_founding_incidents(pytester: pytest.Pytester) -> None:
    summary = pytester.path / "summary.json"
    result = run_suites(
        pytester, "--from-snapshot", str(RECORDED), "--vipcheck-json", str(summary), "-rf"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    failed = {f.split("::")[1] for f in failed_ids(result)}
    assert "test_real_servers_match_endpoints_no_stale_or_missing[default/redis:6379/TCP]" in failed
    assert {f"test_ipvs_tcpfin_timeout[node-{n}]" for n in (1, 2, 3)} <= failed
    assert "test_rp_filter_not_strict[node-2/tunl0]" in failed
    assert "test_no_stuck_syn_recv[node-1]" in failed
    assert not any("node-1/" in f or "node-3/" in f for f in failed if "rp_filter" in f)
    records = json.loads(summary.read_text())
    assert records["totals"]["failed"] == len(failed)
    stale = next(
        r for r in records["results"]
        if r["check"] == "ipvs-real-servers-match-endpoints" and r["outcome"] == "failed"
    )  # fmt: skip
    assert stale["subject"] == "default/redis:6379/TCP"
    assert stale["node"] is None
    assert any("ipvsadm -d -t 10.96.0.20:6379 -r 10.244.3.10:80" in fix for fix in stale["fix"])
    assert {v["kind"] for v in stale["violations"]} == {"stale-real-server"}


def test_failure_message_reads_subject_first_with_fix_and_evidence(
    pytester: pytest.Pytester,
) -> None:
    result = run_suites(pytester, "--from-snapshot", str(RECORDED), "-k", "tcpfin and node-1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*node-1: *tcpfin*120*", "*expected*30*", "*fix:*", "*why:*"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    ("keyword", "expected_words"),
    [
        ("rp_filter", {"rp_filter"}),
        ("tcpfin", {"tcpfin"}),
        ("stale", {"stale"}),
        ("node-2 and rp_filter", {"node-2", "rp_filter"}),
    ],
)
def test_k_selects_by_topic_words(
    pytester: pytest.Pytester, keyword: str, expected_words: set[str]
) -> None:
    result = run_suites(pytester, "--from-snapshot", str(RECORDED), "-k", keyword, "-q", "-rA")
    # Skips are grouped by location ("SKIPPED [3] suites/test_nftables.py:16: ..."), unnamed.
    ran = [line for line in result.outlines if line.startswith(("PASSED ", "FAILED "))]
    assert ran, result.stdout.str()
    for line in ran:
        for word in expected_words:
            assert word in line, line


def test_missing_snapshot_dir_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_suites(pytester, "--from-snapshot", str(pytester.path / "nope"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--from-snapshot*nope*no such directory*"])
    assert "Traceback" not in result.stderr.str()


def test_malformed_file_errors_its_items_naming_file_and_line(pytester: pytest.Pytester) -> None:
    snapshot = pytester.path / "snap"
    shutil.copytree(RECORDED, snapshot)
    timeout_file = snapshot / "nodes" / "node-2" / "ipvsadm-timeout.txt"
    timeout_file.write_text("Timeout (tcp tcpfin udp): 900 lots 300\n")
    result = run_suites(pytester, "--from-snapshot", str(snapshot), "-k", "tcpfin and node-2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes().get("errors") == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*cannot read nodes/node-2/ipvsadm-timeout.txt:1:*"])


def test_missing_file_skips_naming_file_and_command(pytester: pytest.Pytester) -> None:
    snapshot = pytester.path / "snap"
    shutil.copytree(RECORDED, snapshot)
    (snapshot / "nodes" / "node-3" / "ipvsadm-timeout.txt").unlink()
    result = run_suites(
        pytester, "--from-snapshot", str(snapshot), "-k", "kube_proxy_config and node-3", "-rs"
    )
    result.stdout.fnmatch_lines(["*ipvsadm-timeout.txt*ipvsadm -L --timeout*"])
    assert result.parseoutcomes().get("skipped") == 1


def test_unobserved_node_errors_once_instead_of_failing(pytester: pytest.Pytester) -> None:
    snapshot = pytester.path / "snap"
    shutil.copytree(RECORDED, snapshot)
    (snapshot / "nodes" / "node-3" / "error.txt").write_text("ssh: connect to host: refused\n")
    result = run_suites(pytester, "--from-snapshot", str(snapshot), "-k", "node-3", "-rA")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors") == 1, outcomes
    assert outcomes.get("failed") is None, outcomes
    result.stdout.fnmatch_lines(
        ["*ERROR at setup of test_node_observed?node-3?*", "node-3 could not be observed*refused*"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_an_unobserved_node_fails_the_run_even_when_its_item_is_deselected(
    pytester: pytest.Pytester,
) -> None:
    snapshot = pytester.path / "snap"
    shutil.copytree(RECORDED, snapshot)
    (snapshot / "nodes" / "node-3" / "error.txt").write_text("ssh: connect to host: refused\n")
    result = run_suites(pytester, "--from-snapshot", str(snapshot), "-k", "node-3 and tcpfin")
    assert result.parseoutcomes().get("skipped") == 1
    result.stdout.fnmatch_lines(["*not observed, so not judged: node-3*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_the_plugin_stays_out_of_other_test_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()


def test_unreadable_kubeconfig_is_a_usage_error_naming_the_file(pytester: pytest.Pytester) -> None:
    missing = pytester.path / "no-such-kubeconfig"
    result = run_suites(pytester, "--kubeconfig", str(missing))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{missing}*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_unknown_context_is_a_usage_error_naming_it(pytester: pytest.Pytester) -> None:
    kubeconfig = pytester.path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        "clusters: [{name: lab, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: lab, user: {token: t}}]\n"
        "contexts: [{name: lab, context: {cluster: lab, user: lab}}]\n"
    )
    result = run_suites(pytester, "--kubeconfig", str(kubeconfig), "--context", "prod")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*prod*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


# A --save-snapshot of the live seed-incidents lab, probes included (not a raw recording).
PROBED = Path(__file__).parents[2] / "fixtures" / "snapshots" / "seed-incidents-probed"


def items_of(snapshot: Path, check_id: str) -> tuple[int, int]:
    """How many items a snapshot makes of one check, and of every other check together."""
    facts = Facts.from_snapshot(load_snapshot(snapshot))
    counts = {check.id: len(list(cases_for(check, facts))) for check in CATALOGUE}
    return counts[check_id], sum(counts.values()) - counts[check_id]


HANDSHAKES, OTHERS = items_of(PROBED, "vip-handshake")
# The readiness items (issue 20), left out of a run whose -m does not name them.
READINESS = sum(items_of(PROBED, check.id)[0] for check in MIGRATION_CHECKS)


def test_replayed_probes_fail_the_incidents_handshakes_with_their_causes(
    pytester: pytest.Pytester,
) -> None:
    result = run_suites(pytester, "--from-snapshot", str(PROBED), "-k", "handshake", "-rf")
    failed = {f.split("::")[1] for f in failed_ids(result)}
    assert failed == {
        "test_handshake_through_vip[default/redis:6379/TCP]",
        "test_handshake_through_vip[default/api:80/TCP]",
    }, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*client: ClusterIP 10.96.0.40:80 from client: 2 of 2 handshakes failed (2 TIMEOUT)*"
            "node-2 has strict rp_filter*",
            "*client: ClusterIP 10.96.0.20:6379 from client: * handshakes failed*"
            "likely cause: stale real server 10.244.3.10:80*",
        ]
    )
    assert result.parseoutcomes() == {"failed": 2, "passed": HANDSHAKES - 2, "deselected": OTHERS}


def test_no_probe_and_replay_without_probes_skip_the_handshakes_saying_why(
    pytester: pytest.Pytester,
) -> None:
    off = run_suites(
        pytester, "--from-snapshot", str(PROBED), "--no-probe", "-k", "handshake", "-rs"
    )
    assert off.parseoutcomes().get("skipped") == HANDSHAKES
    off.stdout.fnmatch_lines(["*no handshake probes: probing turned off (--no-probe)*"])
    old = run_suites(pytester, "--from-snapshot", str(RECORDED), "-k", "handshake", "-rs")
    assert old.parseoutcomes().get("skipped") == items_of(RECORDED, "vip-handshake")[0]
    old.stdout.fnmatch_lines(["*no handshake probes: the replayed snapshot has no probes/*"])


def test_not_probe_deselects_exactly_the_handshakes(pytester: pytest.Pytester) -> None:
    result = run_suites(pytester, "--from-snapshot", str(PROBED), "-m", "not probe", "-q")
    outcomes = result.parseoutcomes()
    assert outcomes["deselected"] == HANDSHAKES + READINESS
    assert "handshake" not in result.stdout.str()


def test_handshake_test_names_carry_the_topic_word(pytester: pytest.Pytester) -> None:
    result = run_suites(
        pytester, "--from-snapshot", str(PROBED), "--collect-only", "-q", "-m", "probe"
    )
    lines = [line for line in result.outlines if "::" in line]
    assert len(lines) == HANDSHAKES
    assert all("test_handshake_through_vip[" in line for line in lines)


def test_the_run_ends_with_failures_grouped_by_check(pytester: pytest.Pytester) -> None:
    result = run_suites(pytester, "--from-snapshot", str(RECORDED), "-q", "--tb=no")
    grouped = result.outlines.index(next(line for line in result.outlines if "by check" in line))
    short = next(i for i, line in enumerate(result.outlines) if "short test summary" in line)
    assert grouped > short  # after pytest's own list, so the end of the output says it
    result.stdout.fnmatch_lines(
        [
            "*vipcheck: failures by check*",
            "ipvs-real-servers-match-endpoints ?critical?: 1 failed of * service port item(s), "
            "on 3 nodes (node-1, node-2, node-3)",
            "    failed: default/redis:6379/TCP",
            "ipvs-tcpfin-timeout ?warning?: 3 failed of 3 node item(s), on 3 nodes "
            "(node-1, node-2, node-3)",
        ]
    )


def test_vipcheck_parallel_bounds_gathering_and_is_validated(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from vipcheck.plugin import run_options\n\n"
        "def pytest_report_header(config):\n"
        "    return f'gather parallel {run_options(config).gather.parallel}'\n"
    )
    pytester.makepyfile("def test_plain():\n    pass\n")
    given = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vipcheck-parallel", "3")
    given.stdout.fnmatch_lines(["gather parallel 3"])
    default = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    default.stdout.fnmatch_lines(["gather parallel 32"])
    for bad in ("0", "-2", "many"):
        refused = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--vipcheck-parallel", bad
        )
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        refused.stderr.fnmatch_lines([f"*whole number above 0: '{bad}'*"])


def test_a_session_leaves_the_garbage_collector_as_it_found_it(pytester: pytest.Pytester) -> None:
    before = gc.get_threshold()
    summary = pytester.path / "summary.json"
    result = pytester.runpytest_inprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(RECORDED), "-q",
        "--vipcheck-json", str(summary),
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert summary.exists()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_suite_items_traceback_shows_controls_escaped_and_others_are_left_alone(
    pytester: pytest.Pytester,
) -> None:
    """An unexpected error in a suite test, traceback, locals and captured output included, shows
    a node's text escaped; another project's test in the same run is printed as pytest prints it."""
    pytester.makepyfile(
        test_mixed="""
        import pytest

        @pytest.mark.vipcheck_check("rp-filter-not-strict")
        def test_suite(vipcheck_result):
            name = "eth0\\x1b]0;t\\x07"
            print("captured \\x1b[2J")
            raise RuntimeError(f"bad interface {name}\\u202e")

        def test_other():
            raise RuntimeError("theirs \\x1b[1m")
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--from-snapshot", str(RECORDED), "--color=no", "-l", "-rf",
        "-vv", "-k", "suite and node-1/eth0 or other",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    suite, other = output.split("_ test_other _")
    assert [c for c in ("\x1b", "\x07", "\u202e") if c in suite] == []
    shown = "bad interface eth0\\x1b]0;t\\x07\\u202e"
    assert f"E       RuntimeError: {shown}\n" in suite
    assert "\ncaptured \\x1b[2J\n" in suite
    assert f"FAILED test_mixed.py::test_suite[node-1/eth0] - RuntimeError: {shown}\n" in other
    assert "FAILED test_mixed.py::test_other - RuntimeError: theirs \x1b[1m\n" in other


def test_a_fixture_asking_for_vipcheck_result_gets_the_items_own(pytester: pytest.Pytester) -> None:
    """vipcheck_result is given before pytest resolves fixtures (plugin.pytest_runtest_setup); a
    fixture of the user's that asks for it gets the same result, judged and recorded once."""
    pytester.makepyfile(
        test_own="""
        import pytest

        seen = []

        @pytest.fixture
        def outcome(vipcheck_result):
            seen.append(vipcheck_result)
            return vipcheck_result.outcome

        @pytest.mark.vipcheck_check("rp-filter-not-strict")
        def test_own(vipcheck_result, outcome):
            assert seen == [vipcheck_result]
            assert outcome.value == "passed" and vipcheck_result.case.node == "node-1"
        """
    )
    summary = pytester.path / "summary.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--from-snapshot", str(RECORDED), "-k", "node-1/eth0",
        "--vipcheck-json", str(summary),
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    records = json.loads(summary.read_text())["results"]
    assert [(r["check"], r["subject"], r["outcome"]) for r in records] == [
        ("rp-filter-not-strict", "node-1/eth0", "passed")
    ]


def test_pytest_is_a_release_the_private_rootdir_fix_was_checked_with() -> None:
    installed = tuple(int(part) for part in pytest.__version__.split(".")[:2])
    low, high = CHECKED_PYTEST
    assert low <= installed <= high, (
        f"pytest {pytest.__version__} is not among the releases vipcheck.pytest_setup was "
        f"checked with ({'.'.join(map(str, low))} to {'.'.join(map(str, high))}): read "
        "Config._preparse and _pytest.config.findpaths.determine_setup in this release, make "
        "settle_rootdir do what they do, run tests/unit/test_invocation.py, then widen "
        "CHECKED_PYTEST (and pyproject.toml's pytest requirement)"
    )


def test_pyproject_requires_the_lowest_pytest_checked() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    required = [d for d in project["project"]["dependencies"] if d.startswith("pytest>")]
    low = ".".join(map(str, CHECKED_PYTEST[0]))
    assert required == [f"pytest>={low}"]


def declared_fields() -> set[str]:
    """Every value of RunOptions a person may set, as a dotted path; the gate's are what
    gate_options takes (it reads the waivers and baseline files they name)."""
    groups = {
        "": RunOptions,
        "gather": GatherOptions,
        "probes": ProbeOptions,
        "probes.settings": ProbeSettings,
        "settings": Settings,
    }
    paths = {
        f"{prefix}.{f.name}".lstrip(".")
        for prefix, group in groups.items()
        for f in dataclasses.fields(group)
    }
    gate = {f"gate.{name}" for name in inspect.signature(gate_options).parameters}
    return (paths | gate) - {*groups, "gate", "gate.known_checks", "gate.max_file_bytes"}


# Fields that are no option on purpose: the probe's pacing is fixed.
FIXED = {"probes.settings.delay_s", "probes.settings.parallel"}


def test_each_run_option_is_declared_once_in_the_table() -> None:
    fields = [option.field for option in OPTIONS]
    assert len(fields) == len(set(fields)), fields
    assert set(fields) == declared_fields() - FIXED
    assert set(PATH_OPTIONS) >= {"from_snapshot", "kubeconfig", "ssh_config", "vipcheck_json"}


def test_the_help_lists_every_flag_and_ini_value_of_the_table(pytester: pytest.Pytester) -> None:
    shown = pytester.runpytest_inprocess("--help").stdout.str()
    ours = [o for o in OPTIONS if not o.testinfra]
    missing = [o.flag for o in ours if o.flag and f"{o.flag}" not in shown]
    missing += [o.ini for o in ours if o.ini and f"{o.ini} " not in shown]
    assert missing == []


@pytest.mark.parametrize(
    ("given", "ini", "message"),
    [
        (["--kind", "Bad_Name"], "", "ERROR: --kind 'Bad_Name' is not a kind cluster name *"),
        (["--kind", "lab", "--context", "c"], "", "ERROR: --kind lab and --context exclude *"),
        (["--vipcheck-node", "x"], "", "ERROR: --vipcheck-node 'x': expected HOST=NODE"),
        (["--vipcheck-timeout", "0"], "", "ERROR: must be more than 0 seconds: '0'"),
        (["--probe-budget", "x"], "", "ERROR: expected a whole number of seconds above 0: 'x'"),
        (["--vipcheck-max-file-size", "0"], "", "ERROR: --vipcheck-max-file-size: expected *"),
        (["--from-snapshot", "nope"], "", "ERROR: --from-snapshot nope: no such directory"),
        (["--from-snapshot", ".", "--save-snapshot", "s"], "", "ERROR: --save-snapshot and *"),
        ([], "vipcheck_syn_recv_max = many", "ERROR: ini option vipcheck_syn_recv_max: not an *"),
    ],
)
def test_a_bad_option_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, given: list[str], ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *given)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
