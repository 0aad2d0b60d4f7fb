"""The pytest plugin, hooks only: options (declared in vipcheck.pytest_options), one item per case
of every suite test, the JSON summary.

A test is a suite test when it carries the `vipcheck_check(check_id)` marker, wherever its module
comes from (a checkout, `--pyargs vipcheck.suites`, the `vipcheck` command). The target is
observed when the first one is collected, so a session without suite tests (another project's)
contacts nothing and writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from vipcheck import distributed, pytest_outputs
from vipcheck.arrival import ArrivalJudge
from vipcheck.cases import Case, Outcome, Result, cases_for, run_case
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS, SYSCTL_KEYS, check_by_id
from vipcheck.facts import Facts, MissingInput
from vipcheck.gate import Gate
from vipcheck.json_summary import Summary, unjudged_critical
from vipcheck.judging import Judgements, judge_nodes, reads_probes
from vipcheck.observe import ObserveError, observe
from vipcheck.options import RunOptions
from vipcheck.parse import ParseError
from vipcheck.pytest_options import PATH_OPTIONS, add_options, options_from_config, usage_error
from vipcheck.pytest_setup import settle_rootdir
from vipcheck.snapshot import load_snapshot
from vipcheck.untrusted import printable
from vipcheck.vocabulary import Progress

MARKER = "vipcheck_check"
PROBE_MARKER = "probe"
MIGRATION_MARKER = "migration"
# The readiness checks for a switch of kube-proxy mode run only when -m names their marker: on
# by default, every IPVS cluster's run would judge a switch nobody asked about (issue 20).
_MIGRATION_NAMED = re.compile(rf"\b{MIGRATION_MARKER}\b")


@dataclass
class VipcheckSession:
    """This session's options, its facts once observed, what it found, and usage errors met."""

    options: RunOptions
    facts: Facts | None = None
    judgements: Judgements = field(default_factory=Judgements)  # node by node, before items run
    arrival: ArrivalJudge | None = None  # a live run's nodes judged as they arrive
    summary: Summary = field(default_factory=Summary)
    usage_errors: list[str] = field(default_factory=list)
    tuned_gc: bool = False
    gate: Gate = field(default_factory=Gate)
    tally: pytest_outputs.FailureTally = field(default_factory=pytest_outputs.FailureTally)
    # Under pytest-xdist (vipcheck.distributed). A worker: the lock while it leads, the snapshot
    # its facts come from, its items' places, what it sends; the controller: the directory the
    # workers share and what they sent.
    lead: distributed.Lead | None = None
    snapshot: Path | None = None
    order: dict[str, int] = field(default_factory=dict)
    output: distributed.WorkerOutput = field(default_factory=distributed.WorkerOutput)
    shared: Path | None = None
    outputs: list[Mapping[str, Any]] = field(default_factory=list)


SESSION_KEY = pytest.StashKey[VipcheckSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """Find rootdir and config again when pytest took one of our options' values for a test path
    (vipcheck.pytest_setup)."""
    settle_rootdir(early_config, args, PATH_OPTIONS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(check_id): parametrize this test over the check's subjects"
    )
    config.addinivalue_line(
        "markers",
        f"{PROBE_MARKER}: opens TCP connections to the target (deselect with -m 'not probe')",
    )
    config.addinivalue_line(
        "markers",
        f"{MIGRATION_MARKER}: readiness of an IPVS cluster for nftables mode; runs only when -m "
        f"names it (-m {MIGRATION_MARKER}: alone)",
    )
    options = options_from_config(config)
    gate = Gate(
        waivers=options.gate.waivers,
        baseline=options.gate.baseline,
        baseline_source=str(options.gate.baseline_file),
    )
    session = config.stash[SESSION_KEY] = VipcheckSession(options, gate=gate)
    thresholds = gc.get_threshold()
    config.add_cleanup(lambda: _restore_gc(session, thresholds))
    if getattr(config.option, "dist", "no") != "no" and not distributed.is_worker(config):
        config.pluginmanager.register(XdistController(config), "vipcheck-xdist-controller")


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
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop with a usage error (exit 4) for what collection met: nothing has run yet. Leave
    out the readiness items unless `-m` names them: they judge a switch not yet made."""
    errors = config.stash[SESSION_KEY].usage_errors
    if errors:
        raise usage_error(*dict.fromkeys(errors))
    if _MIGRATION_NAMED.search(config.getoption("markexpr", "") or ""):
        return  # pytest's own -m decides: `-m migration` alone, `-m "not migration"` without
    readiness = [item for item in items if item.get_closest_marker(MIGRATION_MARKER)]
    if readiness:
        config.hook.pytest_deselected(items=readiness)
        items[:] = [item for item in items if not item.get_closest_marker(MIGRATION_MARKER)]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Judge node by node what the selected items ask (vipcheck.judging), before any runs;
    under xdist, once for every worker (vipcheck.distributed)."""
    state = session.config.stash.get(SESSION_KEY, None)
    if state is None or state.facts is None or session.config.option.collectonly:
        return
    facts = state.facts
    shared = distributed.shared_directory(session.config)
    if shared is not None and state.lead is None:  # another worker observed and judged
        state.judgements = Judgements.unpacked(distributed.judged(shared), facts)
    else:
        cases = _selected_cases(session.items)
        if state.lead is not None and state.options.replay is None:
            _probe_now(facts, cases)  # the others replay: the probes they select must be in it
        state.judgements = judge_nodes(
            cases,
            facts,
            state.options.settings,
            state.options.judge_jobs,
            lambda line: _print(session.config, line),
            judgements=None if state.arrival is None else state.arrival.judgements,
        )
        if state.lead is not None and state.snapshot is not None:
            state.lead.finish(state.snapshot, state.judgements.packed(facts))
    if shared is not None:
        state.order = {item.nodeid: index for index, item in enumerate(session.items)}
        state.output.snapshot = None if state.snapshot is None else str(state.snapshot)


def _selected_cases(items: Sequence[pytest.Item]) -> list[Case[Any]]:
    params = [getattr(item, "callspec", None) for item in items]
    return [
        case
        for callspec in params
        if callspec is not None and isinstance(case := callspec.params.get("vipcheck_result"), Case)
    ]


def _probe_now(facts: Facts, cases: Sequence[Case[Any]]) -> None:
    """Run a live target's probes now if a selected item reads them (they are saved with the
    snapshot: under xdist the other workers replay it)."""
    if any(reads_probes(case.check) for case in cases):
        with contextlib.suppress(MissingInput, ParseError):
            facts.probes.plan  # noqa: B018 (the first read of the probe files probes)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A suite item's vipcheck_result, given before pytest resolves its fixtures (pytest keeps a
    value already in `Function.funcargs`): the fixture's work without pytest's fixture machinery,
    which was a third of each item's cost (a definition of `request` made per item, with its
    signature read) on a 38,861-item run (issue 19)."""
    callspec = getattr(item, "callspec", None)
    case = None if callspec is None else callspec.params.get("vipcheck_result")
    if isinstance(item, pytest.Function) and isinstance(case, Case):
        item.funcargs["vipcheck_result"] = _judged_item(item, case)


@pytest.fixture
def vipcheck_result(request: pytest.FixtureRequest) -> Result:
    """This item's result (pytest_runtest_setup gives it first; another fixture asking for it
    gets the same one)."""
    return _judged_item(request.node, request.param)


_RESULT_KEY = pytest.StashKey[Result]()


def _judged_item(item: pytest.Item, case: Case[Any]) -> Result:
    """Run the item's case, once; skip when it does not apply; error when its node was not
    observed."""
    result = item.stash.get(_RESULT_KEY, None)
    if result is None:
        session = item.config.stash[SESSION_KEY]
        assert session.facts is not None  # parametrized only once observed
        result = session.judgements.result(case) or run_case(
            case, session.facts, session.options.settings
        )
        if session.order:  # an xdist worker: the controller judges it again, and writes it
            index = session.order[item.nodeid]
            session.output.results.append(distributed.Shipped.of(index, result))
        result = item.stash[_RESULT_KEY] = session.gate.judge(result)
        session.summary.add(result)
        item.user_properties.extend(pytest_outputs.junit_properties(result))
    if result.outcome in (Outcome.WAIVED, Outcome.KNOWN):
        pytest.skip("; ".join(result.notes))
    if result.outcome is Outcome.SKIPPED:
        pytest.skip(result.reason)
    if result.outcome is Outcome.ERROR:
        # A failure during setup is reported as ERROR: "could not observe", not "observed wrong".
        pytest.fail(result.reason, pytrace=False)
    return result


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    """Cases -k or -m left out: their waivers are reported as not judged, not as unused."""
    if items:
        state = items[0].config.stash[SESSION_KEY]
        cases = list(pytest_outputs.deselected_cases(items))
        state.gate.deselect(cases)
        if distributed.is_worker(items[0].config):
            state.output.deselected += [(case.check.id, case.subject) for case in cases]


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    """Waived and baseline-known items are their own category: neither passed nor skipped."""
    category = pytest_outputs.gate_category(report)
    return None if category is None else (category, category[0], category.upper())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, Any]:
    """Count failures by whether their severity fails the run (--vipcheck-fail-on); a suite
    item's failure and skip text shows terminal controls escaped, wherever pytest prints it."""
    report = yield
    if _is_suite_item(item):
        pytest_outputs.make_printable(report)
        # pytest copies every keyword of the item into each of its three reports, and keeps
        # them all to the end: about 0.8 KB an item, 17 items a node (issue 22). Only -rs
        # folding reads them, for skip markers, which no suite item carries.
        report.keywords = _NO_KEYWORDS
    if report.failed and not distributed.is_worker(item.config):
        state = item.config.stash[SESSION_KEY]
        state.tally.count(report, state.options.gate.fail_on)
    return report


_SUITE_ITEM_KEY = pytest.StashKey[bool]()
_NO_KEYWORDS: dict[str, Any] = {}  # every suite report's, shared: nothing writes to it


def _is_suite_item(item: pytest.Item) -> bool:
    """Whether the item is a vipcheck suite test (asked for each of its three reports: kept)."""
    found = item.stash.get(_SUITE_ITEM_KEY, None)
    if found is None:
        found = item.stash[_SUITE_ITEM_KEY] = item.get_closest_marker(MARKER) is not None
    return found


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the JSON summary of a session that ran suite tests (not of --collect-only)."""
    state = session.config.stash.get(SESSION_KEY, None)
    if state is not None and state.tuned_gc:
        # The parsed facts live until exit: spare them pytest's closing full collection.
        gc.freeze()
    if state is not None and distributed.is_worker(session.config):
        if state.facts is not None:  # the controller writes the summary and the reports
            outputs = session.config.workeroutput  # type: ignore[attr-defined]
            outputs[distributed.RESULTS] = state.output.packed()
        return
    if state is not None and state.facts is None and state.outputs:
        _gather_workers(state)
    if state is None or state.facts is None or session.config.option.collectonly:
        return
    state.summary.write(state.options.json_path)
    pytest_outputs.write_reports(state.options, state.facts, state.gate)
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
    for line in pytest_outputs.gate_lines(state.options, state.gate, state.tally):
        write(f"vipcheck: {line}")
    write(f"vipcheck: JSON summary: {target} ({totals})")
    for line in pytest_outputs.written_lines(state.options):
        write(f"vipcheck: {line}")
    unseen = sorted(state.facts.unobserved_nodes())
    if unseen:
        partial = sum(1 for r in state.summary.results if r.unseen and r.outcome is Outcome.PASSED)
        write(
            f"vipcheck: not observed, so not judged: {', '.join(unseen)} (see node-observed); "
            f"{partial} Service-port items passed on the other nodes only"
        )


class XdistController:
    """pytest-xdist's controller (registered by pytest_configure when -n runs workers): hands
    them a shared directory, counts the failures they report, keeps what they send."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        state = self.config.stash[SESSION_KEY]
        if state.shared is None:
            shared = state.shared = Path(tempfile.mkdtemp(prefix="vipcheck-xdist-"))
            self.config.add_cleanup(lambda: shutil.rmtree(shared, ignore_errors=True))
        node.workerinput[distributed.SHARED] = str(state.shared)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        self.config.stash[SESSION_KEY].outputs.append(getattr(node, "workeroutput", {}))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A worker's failure, counted as a run without -n counts its own (makereport)."""
        if report.failed:
            state = self.config.stash[SESSION_KEY]
            state.tally.count(report, state.options.gate.fail_on)


def _gather_workers(state: VipcheckSession) -> None:
    """pytest-xdist's controller: the workers' results judged by the gate in collection order,
    as a run without -n judges them, beside the facts of the snapshot they judged."""
    outputs = distributed.unpacked(state.outputs)
    snapshot = next((output.snapshot for output in outputs if output.snapshot), None)
    if snapshot is None:
        return  # no worker met a suite test
    state.facts = Facts.from_snapshot(load_snapshot(Path(snapshot), state.options.max_file_bytes))
    state.gate.deselect(distributed.deselected(outputs))
    for result in distributed.in_collection_order(outputs):
        state.summary.add(state.gate.judge(result))


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
        options = _observing(config, session)
        progress = functools.partial(_print, config)
        session.arrival = _arrival_judge(config, options, progress)
        try:
            session.facts = observe(options, progress, SYSCTL_KEYS, session.arrival)
        except ObserveError as error:
            session.usage_errors.append(str(error))
        session.snapshot = options.replay or options.save_to
    return session.facts


def _arrival_judge(
    config: pytest.Config, options: RunOptions, progress: Progress
) -> ArrivalJudge | None:
    """A judge of each node as it is gathered (vipcheck.arrival) when the run is live (under
    pytest-xdist, the worker that observes for all) and selects every check: -k or -m narrows
    a run to what collection selects, judged then; --collect-only judges nothing."""
    if options.replay is not None or config.option.collectonly:
        return None
    if config.getoption("keyword", "") or config.getoption("markexpr", ""):
        return None
    checks = [check for check in CATALOGUE if check not in MIGRATION_CHECKS]
    return ArrivalJudge(
        [check for check in checks if not reads_probes(check)],
        options.settings,
        SYSCTL_KEYS,
        progress,
    )


def _observing(config: pytest.Config, session: VipcheckSession) -> RunOptions:
    """What to observe: the options; under xdist, the snapshot the leading worker observed
    (vipcheck.distributed), and a worker that leads saves a live target's snapshot to share."""
    shared = distributed.shared_directory(config)
    if shared is None:
        return session.options
    lead = distributed.Lead(shared)  # waits while another worker leads
    snapshot = lead.observed()
    if snapshot is not None:
        lead.release()
        return replace(session.options, replay=snapshot, save_to=None)
    session.lead = lead
    if session.options.replay is not None:
        return session.options
    return replace(session.options, save_to=session.options.save_to or shared / "snapshot")


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


def _write_line(reporter: pytest.TerminalReporter, line: str) -> None:
    """One line of the terminal summary; it may quote a node's text, so controls show escaped."""
    reporter.write_line(printable(line, one_line=True))


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
