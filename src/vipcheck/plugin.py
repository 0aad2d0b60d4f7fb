"""The pytest plugin: vipcheck's options, one item per case of every suite test, the JSON summary.

A test is a suite test when it carries the `vipcheck_check(check_id)` marker, wherever its module
comes from (a checkout, `--pyargs vipcheck.suites`, the `vipcheck` command). The target is
observed when the first one is collected, so a session without suite tests (another project's)
contacts nothing and writes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.config.findpaths import determine_setup

from vipcheck import outputs
from vipcheck.cases import Case, Outcome, Result, cases_for, run_case
from vipcheck.checks import CHECKS_BY_ID, check_by_id
from vipcheck.checks.base import Severity
from vipcheck.facts import Facts
from vipcheck.gate import Gate
from vipcheck.kind import valid_kind_name
from vipcheck.model.probe import ProbeSettings
from vipcheck.observe import ObserveError, observe
from vipcheck.options import (
    DEFAULT_HTML,
    DEFAULT_JSON,
    GATHER_PARALLEL,
    GateOptions,
    GatherOptions,
    OptionError,
    ProbeOptions,
    RunOptions,
    gate_options,
)
from vipcheck.report import Summary, unjudged_critical
from vipcheck.settings import DEFAULTS, Settings, SettingsError, setting_help, settings_from
from vipcheck.snapshot import MAX_FILE_BYTES, parse_size
from vipcheck.untrusted import printable

MARKER = "vipcheck_check"
PROBE_MARKER = "probe"
PROBE_DEFAULTS = ProbeSettings()
# Options whose value is a path, ours and testinfra's: pytest takes such a value for a test path
# when it settles rootdir and config, before plugins add their options.
PATH_OPTIONS = (
    "from_snapshot",
    "save_snapshot",
    "vipcheck_json",
    "kubeconfig",
    "ssh_config",
    "ssh_identity_file",
    "vipcheck_waivers",
    "vipcheck_baseline",
    "vipcheck_html",
    "vipcheck_fix_script",
)


@dataclass
class VipcheckSession:
    """This session's options, its facts once observed, what it found, and usage errors met."""

    options: RunOptions
    facts: Facts | None = None
    summary: Summary = field(default_factory=Summary)
    usage_errors: list[str] = field(default_factory=list)
    tuned_gc: bool = False
    gate: Gate = field(default_factory=Gate)
    tally: outputs.FailureTally = field(default_factory=outputs.FailureTally)


SESSION_KEY = pytest.StashKey[VipcheckSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vipcheck", "vipcheck: kube-proxy IPVS datapath conformance")
    group.addoption("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    group.addoption("--context", help="kubeconfig context to use (default: the current one)")
    group.addoption(
        "--kind",
        metavar="NAME",
        type=_kind_name,
        help="a kind cluster: context kind-NAME, nodes its Docker containers (docker exec; "
        "DOCKER_HOST and DOCKER_CONTEXT honoured)",
    )
    group.addoption(
        "--vipcheck-node",
        action="append",
        default=[],
        metavar="HOST=NODE",
        type=_node_mapping,
        help="say which Kubernetes node a --hosts spec (or its host) is, when names differ",
    )
    group.addoption(
        "--vipcheck-timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="per-node gathering timeout (default 60)",
    )
    group.addoption(
        "--vipcheck-parallel",
        type=_positive_count,
        default=GATHER_PARALLEL,
        metavar="N",
        help=f"nodes gathered at once (default {GATHER_PARALLEL}); each has its own timeout",
    )
    group.addoption(
        "--save-snapshot", type=Path, metavar="DIR", help="also write what was gathered to DIR"
    )
    group.addoption(
        "--from-snapshot",
        type=_snapshot_dir,
        metavar="DIR",
        help="replay a snapshot directory: no cluster and no nodes are contacted",
    )
    group.addoption(
        "--vipcheck-max-file-size",
        type=_file_size,
        default=MAX_FILE_BYTES,
        metavar="SIZE",
        help=f"largest snapshot file --from-snapshot reads whole, e.g. 256M or 1G (default "
        f"{MAX_FILE_BYTES >> 20}M; connection tables are streamed, not limited)",
    )
    group.addoption(
        "--vipcheck-json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="FILE",
        help=f"JSON summary of every result (default {DEFAULT_JSON})",
    )
    group.addoption(
        "--no-probe",
        action="store_true",
        default=False,
        help="open no connection: the handshake probes (marker `probe`) are skipped",
    )
    group.addoption(
        "--probe-from",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="probe only from these nodes or outside hosts (default: every node, and every "
        "ssh_config Host or --hosts spec that is no node)",
    )
    group.addoption(
        "--probe-timeout",
        type=_positive_int,
        default=PROBE_DEFAULTS.timeout_s,
        metavar="SECONDS",
        help=f"per-connection timeout of a probe (default {PROBE_DEFAULTS.timeout_s})",
    )
    group.addoption(
        "--probe-budget",
        type=_positive_int,
        default=PROBE_DEFAULTS.budget_s,
        metavar="SECONDS",
        help="time cap of one vantage point's probes per round; attempts past it are not made "
        f"(default {PROBE_DEFAULTS.budget_s})",
    )
    group.addoption(
        "--probe-total",
        type=_positive_int,
        default=ProbeOptions().total_s,
        metavar="SECONDS",
        help="time cap of the whole probe in a large cluster, whose Service ports are then "
        f"dealt across node vantage points (default {ProbeOptions().total_s}; docs/probe.md)",
    )
    group.addoption(
        "--vipcheck-waivers",
        type=Path,
        metavar="FILE",
        help="YAML waivers (check, subject/node, reason, owner, expires): matching failures are "
        "reported as waived until they expire (ini: vipcheck_waivers)",
    )
    group.addoption(
        "--vipcheck-fail-on",
        default=Severity.WARNING.value,
        choices=[s.value for s in Severity],
        help="lowest severity whose failures make the exit code 1; failures below it are shown "
        "and counted (default warning)",
    )
    group.addoption(
        "--vipcheck-baseline",
        type=Path,
        metavar="SUMMARY",
        help="a JSON summary of an earlier run: fail only what is new against it",
    )
    group.addoption(
        "--vipcheck-html",
        type=Path,
        default=DEFAULT_HTML,
        metavar="FILE",
        help=f"self-contained HTML report (default {DEFAULT_HTML})",
    )
    group.addoption(
        "--vipcheck-fix-script",
        type=Path,
        metavar="FILE",
        help="write a POSIX sh script of the failures' fix commands, for review (never run)",
    )
    parser.addini("vipcheck_waivers", "YAML waivers file (as --vipcheck-waivers)", default="")
    for name, text in setting_help().items():
        parser.addini(f"vipcheck_{name}", text, default=str(getattr(DEFAULTS, name)))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Find rootdir and config again when pytest took one of our options' values for a test path.

    pytest settles them before plugins add options, so `pytest --from-snapshot /elsewhere` in a
    checkout looked for configuration in /elsewhere and collected the wrong tests. Now that the
    options are known, decide again from the real test paths; nothing changes when they agree.
    """
    namespace = early_config.known_args_namespace
    if namespace.inifilename or namespace.rootdir:
        return
    here = early_config.invocation_params.dir
    given = {
        (here / str(v)).resolve() for name in PATH_OPTIONS if (v := getattr(namespace, name, None))
    }
    taken = {(here / arg).resolve() for arg in args if not arg.startswith("-")}
    if not given & taken:
        return
    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=None,
        override_ini=namespace.override_ini,
        args=namespace.file_or_dir,
        rootdir_cmd_arg=None,
        invocation_dir=early_config.invocation_params.dir,
    )
    if (rootpath, inipath) == (early_config.rootpath, early_config.inipath):
        return
    old_cutdir = str(early_config.inipath.parent if early_config.inipath else early_config.rootpath)
    early_config._rootpath = rootpath
    early_config._inipath = inipath
    early_config._inicfg = inicfg
    early_config._ignored_config_files = ignored
    early_config._inicache.clear()
    early_config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))
    args[:] = [*early_config.getini("addopts"), *args]
    early_config.known_args_namespace = early_config._parser.parse_known_args(
        args, namespace=copy.copy(early_config.option)
    )
    if namespace.confcutdir in (None, old_cutdir):
        cutdir = inipath.parent if inipath else rootpath
        early_config.known_args_namespace.confcutdir = str(cutdir)
    early_config._configure_python_path()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(check_id): parametrize this test over the check's subjects"
    )
    config.addinivalue_line(
        "markers",
        f"{PROBE_MARKER}: opens TCP connections to the target (deselect with -m 'not probe')",
    )
    options = _run_options(config)
    gate = Gate(
        waivers=options.gate.waivers,
        baseline=options.gate.baseline,
        baseline_source=str(options.gate.baseline_file),
    )
    session = config.stash[SESSION_KEY] = VipcheckSession(options, gate=gate)
    thresholds = gc.get_threshold()
    config.add_cleanup(lambda: _restore_gc(session, thresholds))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A suite test becomes one item per case of its check; the first one observes the target."""
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        return
    session = metafunc.config.stash[SESSION_KEY]
    try:
        check = check_by_id(*marker.args)
    except (KeyError, TypeError) as error:
        where = metafunc.definition.nodeid
        session.usage_errors.append(f"{where}: @pytest.mark.{MARKER}: {error.args[0]}")
        return
    facts = _observed(metafunc.config, session)
    if facts is None:
        return
    cases = list(cases_for(check, facts))
    metafunc.parametrize("vipcheck_result", cases, ids=[c.id for c in cases], indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config) -> None:
    """Stop with a usage error (exit 4) for what collection met: nothing has run yet."""
    errors = config.stash[SESSION_KEY].usage_errors
    if errors:
        raise _usage_error(*dict.fromkeys(errors))


@pytest.fixture
def vipcheck_result(request: pytest.FixtureRequest) -> Result:
    """Run this item's case; skip when it does not apply; error when its node was not observed."""
    case: Case[Any] = request.param
    session = request.config.stash[SESSION_KEY]
    assert session.facts is not None  # parametrized only once observed
    result = session.gate.judge(run_case(case, session.facts, session.options.settings))
    session.summary.add(result)
    request.node.user_properties.extend(outputs.junit_properties(result))
    if result.outcome in (Outcome.WAIVED, Outcome.KNOWN):
        pytest.skip("; ".join(result.notes))
    if result.outcome is Outcome.SKIPPED:
        pytest.skip(result.reason)
    if result.outcome is Outcome.ERROR:
        # A failure during setup is reported as ERROR: "could not observe", not "observed wrong".
        pytest.fail(result.reason, pytrace=False)
    return result


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    """Waived and baseline-known items are their own category: neither passed nor skipped."""
    category = outputs.gate_category(report)
    return None if category is None else (category, category[0], category.upper())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, Any]:
    """Count failures by whether their severity fails the run (--vipcheck-fail-on); a suite
    item's failure and skip text shows terminal controls escaped, wherever pytest prints it."""
    report = yield
    if item.get_closest_marker(MARKER) is not None:
        outputs.make_printable(report)
    if report.failed:
        state = item.config.stash[SESSION_KEY]
        state.tally.count(report, state.options.gate.fail_on)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the JSON summary of a session that ran suite tests (not of --collect-only)."""
    state = session.config.stash.get(SESSION_KEY, None)
    if state is not None and state.tuned_gc:
        # The parsed facts live until exit: spare them pytest's closing full collection.
        gc.freeze()
    if state is None or state.facts is None or session.config.option.collectonly:
        return
    state.summary.write(state.options.json_path)
    outputs.write_reports(state.options, state.facts, state.gate)
    if session.exitstatus == pytest.ExitCode.TESTS_FAILED and state.tally.tolerated_only:
        session.exitstatus = pytest.ExitCode.OK
    if state.facts.unobserved_nodes() and session.exitstatus == pytest.ExitCode.OK:
        # Never exit 0 with a node nobody saw, even when -k left out its node-observed item.
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """After pytest's own summary: failures grouped by check, and where the JSON went.

    A run of 20,000 items can fail thousands; counted per check with the first few named, the
    end of the output still says what is wrong where.
    """
    yield
    state = terminalreporter.config.stash.get(SESSION_KEY, None)
    if state is None or state.facts is None or terminalreporter.config.option.collectonly:
        return
    write = functools.partial(_write_line, terminalreporter)
    grouped = state.summary.by_check()
    if grouped:
        terminalreporter.write_sep("=", "vipcheck: failures by check")
        for line in grouped:
            write(line)
    unjudged = unjudged_critical(state.summary.results)
    if unjudged:
        terminalreporter.write_sep("=", "vipcheck: critical checks not judged")
        for line in unjudged:
            write(line)
    target, totals = state.options.json_path, state.summary.totals_text()
    for line in outputs.gate_lines(state.options, state.gate, state.tally):
        write(f"vipcheck: {line}")
    write(f"vipcheck: JSON summary: {target} ({totals})")
    for line in outputs.written_lines(state.options):
        write(f"vipcheck: {line}")
    unseen = sorted(state.facts.unobserved_nodes())
    if unseen:
        partial = sum(1 for r in state.summary.results if r.unseen and r.outcome is Outcome.PASSED)
        write(
            f"vipcheck: not observed, so not judged: {', '.join(unseen)} (see node-observed); "
            f"{partial} Service-port items passed on the other nodes only"
        )


def run_options(config: pytest.Config) -> RunOptions:
    """This session's options, for a conftest or plugin of the user's."""
    return config.stash[SESSION_KEY].options


def report_header(config: pytest.Config) -> list[str]:
    """The run's target, thresholds and probes, for the report header of a checkout's conftest
    or the command; a snapshot's or kubeconfig's path may hold controls, shown escaped."""
    return [printable(line, one_line=True) for line in run_options(config).header()]


def _observed(config: pytest.Config, session: VipcheckSession) -> Facts | None:
    """The session's facts, observed on first call; None once observing has failed."""
    if session.facts is None and not session.usage_errors:
        _collect_garbage_rarely(config)
        try:
            session.facts = observe(session.options, lambda line: _print(config, line))
        except ObserveError as error:
            session.usage_errors.append(str(error))
    return session.facts


# Parsed facts of a big cluster are millions of long-lived, acyclic objects: with the default
# thresholds every full collection walks them all again, a third of a 20 x 1,000 replay.
GC_THRESHOLDS = (100_000, 50, 1_000)


def _collect_garbage_rarely(config: pytest.Config) -> None:
    """Raise the collector's thresholds for this session (a vipcheck one); restored at its end."""
    gc.set_threshold(*GC_THRESHOLDS)
    config.stash[SESSION_KEY].tuned_gc = True


def _restore_gc(session: VipcheckSession, thresholds: tuple[int, int, int]) -> None:
    """Undo _collect_garbage_rarely and the freeze at session finish, after pytest's own last
    collection (this cleanup is registered in pytest_configure, before pytest's, so runs after)."""
    if session.tuned_gc:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _run_options(config: pytest.Config) -> RunOptions:
    """Every vipcheck option and ini value, validated, in one object."""
    replay: Path | None = config.getoption("from_snapshot")
    save_to: Path | None = config.getoption("save_snapshot")
    if replay is not None and save_to is not None:
        raise pytest.UsageError("--save-snapshot and --from-snapshot exclude each other")
    return RunOptions(
        gather=GatherOptions(
            kubeconfig=config.getoption("kubeconfig"),
            context=config.getoption("context"),
            hosts=tuple(_split_commas(_given_hosts(config))),
            ssh_config=config.getoption("ssh_config", None),
            ssh_identity_file=config.getoption("ssh_identity_file", None),
            sudo=bool(config.getoption("sudo", False)),
            connection=config.getoption("connection", None),
            kind=_kind_option(config),
            node_map=dict(config.getoption("vipcheck_node")),
            timeout_s=config.getoption("vipcheck_timeout"),
            parallel=config.getoption("vipcheck_parallel"),
        ),
        replay=replay,
        save_to=save_to,
        max_file_bytes=config.getoption("vipcheck_max_file_size"),
        json_path=config.getoption("vipcheck_json"),
        probes=ProbeOptions(
            enabled=not config.getoption("no_probe"),
            probe_from=tuple(_split_commas(config.getoption("probe_from"))),
            total_s=config.getoption("probe_total"),
            settings=ProbeSettings(
                timeout_s=config.getoption("probe_timeout"),
                budget_s=config.getoption("probe_budget"),
            ),
        ),
        settings=_settings(config),
        gate=_gate_options(config),
    )


def _gate_options(config: pytest.Config) -> GateOptions:
    waivers: Path | None = config.getoption("vipcheck_waivers")
    ini_waivers = str(config.getini("vipcheck_waivers") or "")
    if waivers is None and ini_waivers:
        waivers = (config.inipath.parent if config.inipath else config.rootpath) / ini_waivers
    try:
        return gate_options(
            waivers_file=waivers,
            fail_on=config.getoption("vipcheck_fail_on"),
            baseline_file=config.getoption("vipcheck_baseline"),
            html_path=config.getoption("vipcheck_html"),
            fix_script=config.getoption("vipcheck_fix_script"),
            known_checks=tuple(CHECKS_BY_ID),
            max_file_bytes=config.getoption("vipcheck_max_file_size"),
        )
    except OptionError as error:
        raise _usage_error(str(error)) from None


def _given_hosts(config: pytest.Config) -> list[str]:
    """testinfra's --hosts: one comma-separated string, not a list of specs."""
    given: str | list[str] | None = config.getoption("hosts", None)
    return [given] if isinstance(given, str) else list(given or [])


def _split_commas(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _settings(config: pytest.Config) -> Settings:
    try:
        return settings_from(config.getini)
    except SettingsError as error:
        raise pytest.UsageError(str(error)) from None


def _kind_name(text: str) -> str:
    why = valid_kind_name(text)
    if why is not None:
        raise pytest.UsageError(f"--kind {why}")
    return text


def _kind_option(config: pytest.Config) -> str | None:
    """--kind NAME, which names the context and the nodes itself."""
    name: str | None = config.getoption("kind")
    if name is None:
        return None
    if config.getoption("context"):
        raise pytest.UsageError(f"--kind {name} and --context exclude each other")
    return name


def _node_mapping(text: str) -> tuple[str, str]:
    host, sep, node = text.partition("=")
    if not sep or not host or not node:
        raise pytest.UsageError(f"--vipcheck-node {text!r}: expected HOST=NODE")
    return host, node


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise pytest.UsageError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise pytest.UsageError(f"must be more than 0 seconds: {text!r}")
    return value


def _positive_count(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise pytest.UsageError(f"expected a whole number above 0: {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise pytest.UsageError(f"expected a whole number of seconds above 0: {text!r}")
    return int(text)


def _file_size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise pytest.UsageError(f"--vipcheck-max-file-size: {error}") from None


def _snapshot_dir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"--from-snapshot {text}: not a directory")
    if not path.is_dir():
        raise pytest.UsageError(f"--from-snapshot {text}: no such directory")
    return path


def _write_line(reporter: pytest.TerminalReporter, line: str) -> None:
    """One line of the terminal summary; it may quote a node's text, so controls show escaped."""
    reporter.write_line(printable(line, one_line=True))


def _usage_error(*lines: str) -> pytest.UsageError:
    """Exit 4 with these lines, which may quote a snapshot, a kubeconfig or a baseline: controls
    are shown escaped, one line each."""
    return pytest.UsageError("\n".join(printable(line, one_line=True) for line in lines))


def _print(config: pytest.Config, line: str) -> None:
    """Progress for the person watching: shown even while pytest captures output (collection).
    A line may quote a node's or a snapshot's text: controls are shown escaped."""
    shown = f"vipcheck: {printable(line, one_line=True)}"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print(shown, file=sys.stderr)
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(shown)
