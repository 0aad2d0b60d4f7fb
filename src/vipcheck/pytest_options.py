"""Every option of a run, declared once: `OPTIONS` makes the pytest options and ini values, their
validation, the `RunOptions` they fill and the list of those that take a path.

A new option is one `Option` here and, if no group takes it yet, a field in `vipcheck.options`.
testinfra's own options (--hosts, --ssh-config, ...) are declared by testinfra and only read here.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vipcheck.checks import CHECKS_BY_ID
from vipcheck.gather.agents import DEFAULT_NAMESPACE, check_agents_namespace
from vipcheck.judging import MOST_WORKERS, NODES_PER_WORKER
from vipcheck.kind import valid_kind_name
from vipcheck.model.handshakes import ProbeSettings
from vipcheck.options import (
    DEFAULT_HTML,
    DEFAULT_JSON,
    GATHER_PARALLEL,
    GatherOptions,
    OptionError,
    ProbeOptions,
    RunOptions,
    gate_options,
)
from vipcheck.settings import DEFAULTS, Settings, SettingsError, setting_help, setting_value
from vipcheck.snapshot import MAX_FILE_BYTES, parse_size
from vipcheck.untrusted import printable
from vipcheck.vocabulary import Severity

GROUP = ("vipcheck", "vipcheck: kube-proxy IPVS datapath conformance")
PROBE_DEFAULTS = ProbeSettings()
Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Option:
    """One option: how it is given (flag, ini name), read (parser), and where its value goes.

    `field` is a dotted path in RunOptions' groups ("gather.timeout_s"); `finish` turns what
    pytest collected (a list for `append`, a flag's bool) into that field's value.
    """

    field: str
    help: str = ""
    flag: str | None = None
    ini: str | None = None
    parse: Parser | None = None  # text -> value; OptionError says what is wrong with the text
    default: Any = None
    metavar: str | None = None
    action: str | None = None  # "append", "store_true"
    nargs: str | None = None  # "?": the flag alone gives `const`
    const: Any = None
    choices: tuple[str, ...] | None = None
    finish: Callable[[Any], Any] | None = None
    path: bool = False  # pytest may take its value for a test path (vipcheck.pytest_setup)
    testinfra: bool = False  # declared by testinfra's plugin, read here

    @property
    def dest(self) -> str:
        """The name pytest stores a flag's value under: --from-snapshot is from_snapshot."""
        assert self.flag is not None
        return self.flag.lstrip("-").replace("-", "_")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise OptionError(f"must be more than 0 seconds: {text!r}")
    return value


def _positive_count(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise OptionError(f"expected a whole number above 0: {text!r}")
    return int(text)


def _positive_seconds(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise OptionError(f"expected a whole number of seconds above 0: {text!r}")
    return int(text)


def _jobs(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit() or int(text) <= 0:
        raise OptionError(f"--vipcheck-jobs {text!r}: expected auto or a whole number above 0")
    return int(text)


def _file_size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise OptionError(f"--vipcheck-max-file-size: {error}") from None


def _snapshot_dir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise OptionError(f"--from-snapshot {text}: not a directory")
    if not path.is_dir():
        raise OptionError(f"--from-snapshot {text}: no such directory")
    return path


def _kind_name(text: str) -> str:
    why = valid_kind_name(text)
    if why is not None:
        raise OptionError(f"--kind {why}")
    return text


def _agents_namespace(text: str) -> str:
    why = check_agents_namespace(text)
    if why is not None:
        raise OptionError(why)
    return text


def _node_mapping(text: str) -> tuple[str, str]:
    host, sep, node = text.partition("=")
    if not sep or not host or not node:
        raise OptionError(f"--vipcheck-node {text!r}: expected HOST=NODE")
    return host, node


def _split_commas(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """Specs and names given as `a,b`, as repeated options, or both (testinfra's --hosts is one
    comma-separated string)."""
    given = [values] if isinstance(values, str) else list(values or [])
    return tuple(item.strip() for value in given for item in value.split(",") if item.strip())


def _settings_options() -> tuple[Option, ...]:
    """The checks' thresholds: ini values only, each `vipcheck_<setting>`."""
    return tuple(
        Option(
            field=f"settings.{name}",
            help=text,
            ini=f"vipcheck_{name}",
            parse=functools.partial(setting_value, name),
            default=getattr(DEFAULTS, name),
        )
        for name, text in setting_help().items()
    )


OPTIONS: tuple[Option, ...] = (
    Option(
        "gather.kubeconfig",
        "kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
        flag="--kubeconfig",
        path=True,
    ),
    Option(
        "gather.context",
        "kubeconfig context to use (default: the current one)",
        flag="--context",
    ),
    Option(
        "gather.kind",
        "a kind cluster: context kind-NAME, nodes its Docker containers (docker exec; "
        "DOCKER_HOST and DOCKER_CONTEXT honoured)",
        flag="--kind",
        metavar="NAME",
        parse=_kind_name,
    ),
    Option(
        "gather.via_agents",
        "reach the nodes through the API only: one exec of vipcheck-node per node, in its "
        f"agent pod (`vipcheck manifests`) in NAMESPACE (default {DEFAULT_NAMESPACE}); no SSH, "
        "no docker; needs --no-probe",
        flag="--via-agents",
        nargs="?",
        const=DEFAULT_NAMESPACE,
        metavar="NAMESPACE",
        parse=_agents_namespace,
    ),
    Option(
        "gather.node_map",
        "say which Kubernetes node a --hosts spec (or its host) is, when names differ",
        flag="--vipcheck-node",
        action="append",
        default=[],
        metavar="HOST=NODE",
        parse=_node_mapping,
        finish=dict,
    ),
    Option(
        "gather.timeout_s",
        "per-node gathering timeout (default 60)",
        flag="--vipcheck-timeout",
        parse=_positive_float,
        default=GatherOptions().timeout_s,
        metavar="SECONDS",
    ),
    Option(
        "gather.parallel",
        f"nodes gathered at once (default {GATHER_PARALLEL}); each has its own timeout",
        flag="--vipcheck-parallel",
        parse=_positive_count,
        default=GATHER_PARALLEL,
        metavar="N",
    ),
    Option("gather.hosts", flag="--hosts", finish=_split_commas, testinfra=True),
    Option("gather.ssh_config", flag="--ssh-config", path=True, testinfra=True),
    Option("gather.ssh_identity_file", flag="--ssh-identity-file", path=True, testinfra=True),
    Option("gather.sudo", flag="--sudo", finish=bool, testinfra=True),
    Option("gather.connection", flag="--connection", testinfra=True),
    Option(
        "save_to",
        "also write what was gathered to DIR",
        flag="--save-snapshot",
        parse=Path,
        metavar="DIR",
        path=True,
    ),
    Option(
        "replay",
        "replay a snapshot directory: no cluster and no nodes are contacted",
        flag="--from-snapshot",
        parse=_snapshot_dir,
        metavar="DIR",
        path=True,
    ),
    Option(
        "max_file_bytes",
        f"largest snapshot file --from-snapshot reads whole, e.g. 256M or 1G (default "
        f"{MAX_FILE_BYTES >> 20}M; connection tables are streamed, not limited)",
        flag="--vipcheck-max-file-size",
        parse=_file_size,
        default=MAX_FILE_BYTES,
        metavar="SIZE",
    ),
    Option(
        "judge_jobs",
        "processes judging the nodes, each node read, judged and let go in turn: a number, or "
        f"auto, one per CPU (at most {MOST_WORKERS}) when each has {NODES_PER_WORKER} nodes "
        "or more (default auto)",
        flag="--vipcheck-jobs",
        parse=_jobs,
        metavar="N",
    ),
    Option(
        "json_path",
        f"JSON summary of every result (default {DEFAULT_JSON})",
        flag="--vipcheck-json",
        parse=Path,
        default=DEFAULT_JSON,
        metavar="FILE",
        path=True,
    ),
    Option(
        "probes.enabled",
        "open no connection: the handshake probes (marker `probe`) are skipped",
        flag="--no-probe",
        action="store_true",
        default=False,
        finish=operator.not_,
    ),
    Option(
        "probes.probe_from",
        "probe only from these nodes or outside hosts (default: every node, and every "
        "ssh_config Host or --hosts spec that is no node)",
        flag="--probe-from",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        finish=_split_commas,
    ),
    Option(
        "probes.settings.timeout_s",
        f"per-connection timeout of a probe (default {PROBE_DEFAULTS.timeout_s})",
        flag="--probe-timeout",
        parse=_positive_seconds,
        default=PROBE_DEFAULTS.timeout_s,
        metavar="SECONDS",
    ),
    Option(
        "probes.settings.budget_s",
        "time cap of one vantage point's probes per round; attempts past it are not made "
        f"(default {PROBE_DEFAULTS.budget_s})",
        flag="--probe-budget",
        parse=_positive_seconds,
        default=PROBE_DEFAULTS.budget_s,
        metavar="SECONDS",
    ),
    Option(
        "probes.total_s",
        "time cap of the whole probe in a large cluster, whose Service ports are then "
        f"dealt across node vantage points (default {ProbeOptions().total_s}; docs/probe.md)",
        flag="--probe-total",
        parse=_positive_seconds,
        default=ProbeOptions().total_s,
        metavar="SECONDS",
    ),
    Option(
        "gate.waivers_file",
        "YAML waivers (check, subject/node, reason, owner, expires): matching failures are "
        "reported as waived until they expire",
        flag="--vipcheck-waivers",
        ini="vipcheck_waivers",
        parse=Path,
        metavar="FILE",
        path=True,
    ),
    Option(
        "gate.fail_on",
        "lowest severity whose failures make the exit code 1; failures below it are shown "
        "and counted (default warning)",
        flag="--vipcheck-fail-on",
        default=Severity.WARNING.value,
        choices=tuple(s.value for s in Severity),
    ),
    Option(
        "gate.baseline_file",
        "a JSON summary of an earlier run: fail only what is new against it",
        flag="--vipcheck-baseline",
        parse=Path,
        metavar="SUMMARY",
        path=True,
    ),
    Option(
        "gate.html_path",
        f"self-contained HTML report (default {DEFAULT_HTML})",
        flag="--vipcheck-html",
        parse=Path,
        default=DEFAULT_HTML,
        metavar="FILE",
        path=True,
    ),
    Option(
        "gate.fix_script",
        "write a POSIX sh script of the failures' fix commands, for review (never run)",
        flag="--vipcheck-fix-script",
        parse=Path,
        metavar="FILE",
        path=True,
    ),
    *_settings_options(),
)

# The options whose value is a path, ours and testinfra's, by the name pytest stores them under.
PATH_OPTIONS = tuple(option.dest for option in OPTIONS if option.path and option.flag)


def add_options(parser: pytest.Parser, options: Sequence[Option] = OPTIONS) -> None:
    """Register our flags and ini values with pytest; testinfra registers its own."""
    group = parser.getgroup(*GROUP)
    for option in options:
        if option.flag is not None and not option.testinfra:
            group.addoption(option.flag, **_flag_arguments(option))
        if option.ini is not None:
            parser.addini(option.ini, _ini_help(option), default=_ini_default(option))


def options_from_config(config: pytest.Config, options: Sequence[Option] = OPTIONS) -> RunOptions:
    """Every option's value, validated into RunOptions; a bad one is a usage error (exit 4)."""
    try:
        values = {option.field: _value(config, option) for option in options}
        return build_run_options(values)
    except (OptionError, SettingsError) as error:
        raise usage_error(str(error)) from None


def build_run_options(values: Mapping[str, Any]) -> RunOptions:
    """RunOptions from each option's value by field path; the checks between options, and the
    gate's files (waivers, baseline) read now, before any item."""
    if values["replay"] is not None and values["save_to"] is not None:
        raise OptionError("--save-snapshot and --from-snapshot exclude each other")
    if values["gather.kind"] is not None and values["gather.context"]:
        raise OptionError(f"--kind {values['gather.kind']} and --context exclude each other")
    _check_via_agents(values)
    group = _grouped(values)
    probes = group("probes")
    return RunOptions(
        gather=GatherOptions(**group("gather")),
        probes=ProbeOptions(**probes, settings=ProbeSettings(**group("probes.settings"))),
        settings=Settings(**group("settings")),
        gate=gate_options(
            **group("gate"),
            known_checks=tuple(CHECKS_BY_ID),
            max_file_bytes=values["max_file_bytes"],
        ),
        **group(""),
    )


def _check_via_agents(values: Mapping[str, Any]) -> None:
    """--via-agents reads nodes through the API alone: no other transport, and no probe (the
    agents run the node reader and nothing else, docs/agents.md)."""
    namespace = values["gather.via_agents"]
    if namespace is None:
        return
    for field, flag in (("hosts", "--hosts"), ("ssh_config", "--ssh-config"), ("kind", "--kind")):
        if values[f"gather.{field}"]:
            raise OptionError(
                f"--via-agents {namespace} and {flag} exclude each other: the agents reach "
                "every node through the API"
            )
    if values["probes.enabled"]:
        raise OptionError(
            f"--via-agents {namespace}: the agents run the node reader only, never a probe: add "
            "--no-probe (the handshake items then skip, saying so), or probe in a run that "
            "reaches the nodes by SSH"
        )


def usage_error(*lines: str) -> pytest.UsageError:
    """Exit 4 with these lines, which may quote a snapshot, a kubeconfig or a baseline: controls
    are shown escaped, one line each."""
    return pytest.UsageError("\n".join(printable(line, one_line=True) for line in lines))


def _grouped(values: Mapping[str, Any]) -> Callable[[str], dict[str, Any]]:
    """The values of one group's own fields ("gather" -> timeout_s, ...; "" -> RunOptions')."""

    def group(name: str) -> dict[str, Any]:
        prefix = f"{name}." if name else ""
        return {
            path.removeprefix(prefix): value
            for path, value in values.items()
            if path.startswith(prefix) and "." not in path.removeprefix(prefix)
        }

    return group


def _value(config: pytest.Config, option: Option) -> Any:
    """The flag's value, else the ini value, else the default; finished for its field."""
    value = option.default
    if option.flag is not None:
        value = config.getoption(option.dest, option.default)
    if option.ini is not None and (option.flag is None or value is None):
        value = _ini_value(config, option)
    return value if option.finish is None else option.finish(value)


def _ini_value(config: pytest.Config, option: Option) -> Any:
    """An ini value, parsed; a path is relative to the ini file (to rootdir without one)."""
    assert option.ini is not None
    raw = str(config.getini(option.ini))
    if not raw:
        return option.default
    value = raw if option.parse is None else option.parse(raw)
    if option.path:
        value = (config.inipath.parent if config.inipath else config.rootpath) / value
    return value


def _flag_arguments(option: Option) -> dict[str, Any]:
    arguments: dict[str, Any] = {"help": _flag_help(option)}
    if option.parse is not None:
        arguments["type"] = _as_usage_error(option.parse)
    for name in ("default", "metavar", "action", "choices", "nargs", "const"):
        if getattr(option, name) is not None:
            arguments[name] = getattr(option, name)
    if "choices" in arguments:
        arguments["choices"] = list(arguments["choices"])
    return arguments


def _flag_help(option: Option) -> str:
    return option.help if option.ini is None else f"{option.help} (ini: {option.ini})"


def _ini_help(option: Option) -> str:
    return option.help if option.flag is None else f"as {option.flag}, when it is not given"


def _ini_default(option: Option) -> str:
    return "" if option.flag is not None or option.default is None else str(option.default)


def _as_usage_error(parse: Parser) -> Parser:
    """The parser pytest calls on a flag's text: a bad value is a usage error (exit 4), one line
    naming it, rather than argparse's own message."""

    def parse_flag(text: str) -> Any:
        try:
            return parse(text)
        except OptionError as error:
            raise usage_error(str(error)) from None

    return parse_flag
