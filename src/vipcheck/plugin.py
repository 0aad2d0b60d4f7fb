"""The pytest plugin: options, gathering (or replay) once per session, one item per case, reports.

It does nothing unless the session collects vipcheck's suites, so installing vipcheck does not
change other projects' test runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vipcheck import suites
from vipcheck.cases import Case, Outcome, Result, cases_for, render, run_case
from vipcheck.checks import check_by_id
from vipcheck.facts import Facts
from vipcheck.report import Summary
from vipcheck.settings import DEFAULTS, Settings, setting_help
from vipcheck.snapshot import Snapshot, SnapshotError, load_snapshot, save_snapshot

SUITES_DIR = Path(suites.__file__).parent
MARKER = "vipcheck_check"
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
    for name, text in setting_help().items():
        parser.addini(f"vipcheck_{name}", text, default=str(getattr(DEFAULTS, name)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(check_id): parametrize this test over the check's subjects"
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
    config.stash[FACTS_KEY] = Facts.from_snapshot(snapshot)
    config.stash[SUMMARY_KEY] = Summary()


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
    case: Case = request.param
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
    from vipcheck.gather import GatherOptions, gather  # noqa: PLC0415
    from vipcheck.gather.cluster import ClusterConfigError  # noqa: PLC0415
    from vipcheck.transport import TargetError  # noqa: PLC0415

    options = GatherOptions(
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
    try:
        snapshot = gather(options, lambda line: _print(config, line))
    except (ClusterConfigError, TargetError) as error:
        raise pytest.UsageError(str(error)) from None
    save_to: Path | None = config.getoption("save_snapshot")
    if save_to is not None:
        save_snapshot(snapshot, save_to)
        _print(config, f"snapshot saved to {save_to}")
    return snapshot


def _testinfra_hosts(config: pytest.Config) -> Iterator[str]:
    for value in config.getoption("hosts", None) or []:
        yield from (spec.strip() for spec in value.split(",") if spec.strip())


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
