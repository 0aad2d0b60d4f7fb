"""The pytest plugin: options, gathering (or replay) once per session, one item per case, reports.

It does nothing unless the session collects vipcheck's suites, so installing vipcheck does not
change other projects' test runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vipcheck import suites
from vipcheck.cases import Case, Outcome, Result, cases_for, render, run_case
from vipcheck.checks import check_by_id
from vipcheck.facts import Facts, NotProbed, ProbeLoader
from vipcheck.model.probe import ProbeSettings
from vipcheck.report import Summary
from vipcheck.settings import DEFAULTS, Settings, setting_help
from vipcheck.snapshot import Snapshot, SnapshotError, load_snapshot, save_probes, save_snapshot

if TYPE_CHECKING:
    from vipcheck.gather import GatherOptions
    from vipcheck.gather.probes import VantagePoint

SUITES_DIR = Path(suites.__file__).parent
MARKER = "vipcheck_check"
PROBE_MARKER = "probe"
PROBE_DEFAULTS = ProbeSettings()
DEFAULT_JSON = Path("reports") / "summary.json"
FACTS_KEY = pytest.StashKey[Facts]()
SETTINGS_KEY = pytest.StashKey[Settings]()
SUMMARY_KEY = pytest.StashKey[Summary]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vipcheck", "vipcheck: kube-proxy IPVS datapath conformance")
    group.addoption("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    group.addoption("--context", help="kubeconfig context to use (default: the current one)")
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
        "--save-snapshot", type=Path, metavar="DIR", help="also write what was gathered to DIR"
    )
    group.addoption(
        "--from-snapshot",
        type=_snapshot_dir,
        metavar="DIR",
        help="replay a snapshot directory: no cluster and no nodes are contacted",
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
    for name, text in setting_help().items():
        parser.addini(f"vipcheck_{name}", text, default=str(getattr(DEFAULTS, name)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(check_id): parametrize this test over the check's subjects"
    )
    config.addinivalue_line(
        "markers",
        f"{PROBE_MARKER}: opens TCP connections to the target (deselect with -m 'not probe')",
    )
    if config.getoption("from_snapshot") and config.getoption("save_snapshot"):
        raise pytest.UsageError("--save-snapshot and --from-snapshot exclude each other")
    config.stash[SETTINGS_KEY] = _settings(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Observe the target once, before collection, when this session runs the suites."""
    config = session.config
    if not _runs_suites(config):
        return
    try:
        snapshot = _observe(config)
    except SnapshotError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[FACTS_KEY] = Facts.from_snapshot(snapshot, _probe_loader(config, snapshot))
    config.stash[SUMMARY_KEY] = Summary()


def _probe_loader(config: pytest.Config, snapshot: Snapshot) -> ProbeLoader | None:
    """How the handshake items get probe results: replayed, refused, or probed on first use.

    Probing waits for the first probe item, so `-m "not probe"` and `-k` that leave none out
    open no connection at all. Vantage points are resolved now, so a bad --probe-from fails early.
    """
    if config.getoption("no_probe"):
        return _refuse("probing turned off (--no-probe)")
    if config.getoption("from_snapshot") is not None:
        if snapshot.probes is None:
            return _refuse(
                "the replayed snapshot has no probes/ (the run that saved it did not probe)"
            )
        return None
    from vipcheck.gather.probes import ProbeError, vantage_points  # noqa: PLC0415

    probe_from = tuple(_split_commas(config.getoption("probe_from")))
    try:
        points = vantage_points(
            _gather_options(config), snapshot.cluster.get("nodes.json"), probe_from
        )
    except ProbeError as error:
        raise pytest.UsageError(str(error)) from None
    settings = ProbeSettings(
        timeout_s=config.getoption("probe_timeout"), budget_s=config.getoption("probe_budget")
    )
    return lambda: _probe(config, points, settings)


def _refuse(reason: str) -> ProbeLoader:
    def refuse() -> Mapping[str, str]:
        raise NotProbed(reason)

    return refuse


def _probe(
    config: pytest.Config, points: tuple[VantagePoint, ...], settings: ProbeSettings
) -> Mapping[str, str]:
    """Probe now (the first probe item runs), and add the outputs to --save-snapshot's DIR."""
    from vipcheck.gather.probes import run_probes  # noqa: PLC0415

    _print(config, f"probing from {', '.join(p.vantage.name for p in points) or 'nowhere'}")
    files = run_probes(config.stash[FACTS_KEY], points, settings, lambda line: _print(config, line))
    save_to: Path | None = config.getoption("save_snapshot")
    if save_to is not None:
        try:
            save_probes(files, save_to)
        except SnapshotError as error:
            _print(config, str(error))
    return files


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        return
    check = check_by_id(marker.args[0])
    facts = metafunc.config.stash.get(FACTS_KEY, None)
    if facts is None:
        raise pytest.UsageError("vipcheck suites ran without vipcheck's session start")
    cases = list(cases_for(check, facts))
    metafunc.parametrize("vipcheck_result", cases, ids=[c.id for c in cases], indirect=True)


@pytest.fixture
def vipcheck_result(request: pytest.FixtureRequest) -> Result:
    """Run this item's case; skip when it does not apply; error when its node was not observed."""
    case: Case[Any] = request.param
    config = request.config
    result = run_case(case, config.stash[FACTS_KEY], config.stash[SETTINGS_KEY])
    config.stash[SUMMARY_KEY].add(result)
    if result.outcome is Outcome.SKIPPED:
        pytest.skip(result.reason)
    if result.outcome is Outcome.ERROR:
        # A failure during setup is reported as ERROR: "could not observe", not "observed wrong".
        pytest.fail(result.reason, pytrace=False)
    return result


def assert_conforms(result: Result) -> None:
    """Fail the item with the rendered violations, subject first, without a Python traceback."""
    __tracebackhide__ = True
    if result.violations:
        pytest.fail(render(result), pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    summary = session.config.stash.get(SUMMARY_KEY, None)
    if summary is None:
        return
    target: Path = session.config.getoption("vipcheck_json")
    summary.write(target)
    _print(session.config, f"JSON summary: {target} ({summary.totals_text()})")


def _observe(config: pytest.Config) -> Snapshot:
    replay: Path | None = config.getoption("from_snapshot")
    if replay is not None:
        _print(config, f"replaying snapshot {replay}")
        return load_snapshot(replay)
    # Imported here: the kubernetes client is heavy, and replay and other projects never need it.
    from vipcheck.gather import gather  # noqa: PLC0415
    from vipcheck.gather.cluster import ClusterConfigError  # noqa: PLC0415
    from vipcheck.transport import TargetError  # noqa: PLC0415

    try:
        snapshot = gather(_gather_options(config), lambda line: _print(config, line))
    except (ClusterConfigError, TargetError) as error:
        raise pytest.UsageError(str(error)) from None
    save_to: Path | None = config.getoption("save_snapshot")
    if save_to is not None:
        save_snapshot(snapshot, save_to)
        _print(config, f"snapshot saved to {save_to}")
    return snapshot


def _gather_options(config: pytest.Config) -> GatherOptions:
    from vipcheck.gather import GatherOptions  # noqa: PLC0415

    return GatherOptions(
        kubeconfig=config.getoption("kubeconfig"),
        context=config.getoption("context"),
        hosts=tuple(_testinfra_hosts(config)),
        ssh_config=config.getoption("ssh_config", None),
        ssh_identity_file=config.getoption("ssh_identity_file", None),
        sudo=bool(config.getoption("sudo", False)),
        connection=config.getoption("connection", None),
        node_map=dict(config.getoption("vipcheck_node")),
        timeout_s=config.getoption("vipcheck_timeout"),
    )


def _testinfra_hosts(config: pytest.Config) -> Iterator[str]:
    yield from _split_commas(config.getoption("hosts", None) or [])


def _split_commas(values: list[str]) -> Iterator[str]:
    for value in values:
        yield from (item.strip() for item in value.split(",") if item.strip())


def _runs_suites(config: pytest.Config) -> bool:
    """Whether any path this session collects lies in vipcheck's suites."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == SUITES_DIR or SUITES_DIR in path.parents or path in SUITES_DIR.parents:
            return True
    return False


def _settings(config: pytest.Config) -> Settings:
    values = {}
    for name in setting_help():
        raw = config.getini(f"vipcheck_{name}")
        try:
            values[name] = int(str(raw))
        except ValueError:
            message = f"ini option vipcheck_{name}: not an integer: {raw!r}"
            raise pytest.UsageError(message) from None
    return Settings(**values)


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


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise pytest.UsageError(f"expected a whole number of seconds above 0: {text!r}")
    return int(text)


def _snapshot_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise pytest.UsageError(f"--from-snapshot {text}: no such directory")
    return path


def _print(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"vipcheck: {line}")
    else:
        print(f"vipcheck: {line}", file=sys.stderr)
