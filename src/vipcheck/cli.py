"""`vipcheck [pytest options]`: run the installed suites with pytest, whatever the directory.

`vipcheck diff BEFORE AFTER` compares two runs instead (vipcheck.diff), and `vipcheck manifests`
prints the in-cluster agents' manifests (vipcheck.manifests); nothing else is ours.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tomllib
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from typing import NoReturn

import iniconfig
import pytest

import vipcheck
from vipcheck.diff import compare_loaded, load_sides, write_json
from vipcheck.manifests import DEFAULT_IMAGE, DEFAULT_NAMESPACE, ManifestError, render
from vipcheck.plugin import report_header
from vipcheck.saved_summaries import SummaryError
from vipcheck.settings import Settings, SettingsError, settings_from
from vipcheck.snapshot import MAX_FILE_BYTES, format_size, parse_size
from vipcheck.untrusted import printable

# Where the installed suites are: site-packages, or the checkout's suites/ when editable.
SUITES_DIR = Path(str(files("vipcheck.suites")))
PLUGINS = ("vipcheck.plugin", "testinfra.plugin")


class _Header:
    """The report header the checkout's conftest.py prints, for runs of the installed suites."""

    @staticmethod
    def pytest_report_header(config: pytest.Config) -> list[str]:
        return report_header(config)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["diff"]:
        return diff_main(args[1:])
    if args[:1] == ["manifests"]:
        return manifests_main(args[1:])
    # Pinned, so the directory it runs from changes nothing: rootdir is the suites, no config file
    # is read (os.devnull; a -c or --rootdir of the user's comes later and wins), and vipcheck and
    # testinfra load before the command line is read, so an option's value is never taken for a
    # test path, even with PYTEST_DISABLE_PLUGIN_AUTOLOAD. The suites live in site-packages: keep
    # pytest's cache out of it. This module has imported vipcheck already, which pytest would warn
    # cannot be assertion-rewritten; the suites report through pytest.fail, so nothing is lost.
    # Output is captured at sys level: the checks only compute (nodes are read before the first
    # item runs), and pytest's default, the file descriptors, cost 2-3 s in syscalls on 38,861
    # items (issue 19); `--capture=fd` or `-s` given later wins.
    pinned = [
        str(SUITES_DIR),
        "--rootdir",
        str(SUITES_DIR),
        "-c",
        os.devnull,
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        "--capture=sys",
    ]
    if args.count("--version") + args.count("-V") == 1:
        # pytest answers a lone --version itself, naming only pytest (_pytest.config._main).
        print(f"vipcheck {vipcheck.__version__}", flush=True)
    code = int(pytest.main([*pinned, *args], plugins=[*_entry_point_names(PLUGINS), _Header()]))
    if argv is None and sys.getprofile() is None and sys.gettrace() is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """End the command without tearing down its heap, as mypy does: the parsed facts of a big
    cluster are millions of objects whose one-by-one release took 3-8 s after the last line of
    a 2,000-Service run (bench --lab). Everything is written and closed by now; the streams and
    logging are flushed here, the rest of atexit is skipped (so not under a profiler or a
    tracer such as coverage, which write their data at exit)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


class _UsageParser(argparse.ArgumentParser):
    """Bad arguments are a usage error, exit 4, as for every vipcheck run."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(int(pytest.ExitCode.USAGE_ERROR), f"{self.prog}: error: {message}\n")


def diff_main(argv: list[str]) -> int:
    """`vipcheck diff BEFORE AFTER [--json FILE]`: exit 1 when anything is new or, across a
    kube-proxy mode switch, lost; 4 on bad input.

    A side that cannot be read, is too big or is not shaped as vipcheck writes summaries is one
    line naming it and exit 4, never a traceback (whose exit 1 would say "something is new").
    """
    parser = _UsageParser(
        prog="vipcheck diff",
        description="Compare two runs: new, resolved, unchanged and incomparable failures. Each "
        "side is a JSON summary (--vipcheck-json) or a snapshot directory (its checks are run). "
        "Two snapshots of different kube-proxy modes (IPVS, nftables) are also compared for "
        "equivalence: the endpoints each node sends each VIP to, and the handshakes.",
    )
    parser.add_argument("before", type=Path, help="summary.json or snapshot directory")
    parser.add_argument("after", type=Path, help="summary.json or snapshot directory")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the diff as JSON")
    parser.add_argument(
        "-c",
        dest="config_file",
        type=Path,
        metavar="FILE",
        help="judge snapshots with this ini file's vipcheck_* thresholds, as `vipcheck -c FILE`",
    )
    parser.add_argument(
        "-o",
        dest="override_ini",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a vipcheck_* threshold for judging snapshots, as `vipcheck -o NAME=VALUE`",
    )
    parser.add_argument(
        "--vipcheck-max-file-size",
        default=format_size(MAX_FILE_BYTES, unit=True),
        metavar="SIZE",
        help="the largest summary or snapshot file read (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        max_file_bytes = parse_size(args.vipcheck_max_file_size)
    except ValueError as error:
        parser.error(f"--vipcheck-max-file-size: {error}")
    try:
        settings = _diff_settings(args.config_file, args.override_ini)
    except SettingsError as error:
        parser.error(printable(str(error), one_line=True))
    progress = lambda line: print(f"vipcheck: {line}", file=sys.stderr)  # noqa: E731
    try:
        before, after = load_sides((args.before, args.after), progress, max_file_bytes, settings)
    except SummaryError as error:
        print(f"vipcheck diff: error: {printable(str(error), one_line=True)}", file=sys.stderr)
        return int(pytest.ExitCode.USAGE_ERROR)
    diff = compare_loaded(before, after, (str(args.before), str(args.after)))
    for line in diff.lines(args.json):
        print(line)
    if args.json is not None:
        write_json(diff, args.json)
        print(f"vipcheck diff: JSON: {printable(str(args.json), one_line=True)}")
    return diff.exit_code


def manifests_main(argv: list[str]) -> int:
    """`vipcheck manifests [--namespace NS] [--image IMAGE]`: the YAML to stdout; a bad option is
    one line and exit 4, as for every vipcheck command."""
    parser = _UsageParser(
        prog="vipcheck manifests",
        description="Print the Kubernetes objects that let vipcheck read nodes from inside the "
        "cluster, as YAML: a namespace labelled privileged for Pod Security, vipcheck's "
        "ServiceAccount with the least RBAC it needs (list Nodes, Services, EndpointSlices; get "
        "the kube-proxy ConfigMap and DaemonSet; exec into its own namespace's pods), and the "
        "vipcheck-agent DaemonSet (host network, NET_ADMIN only, read-only root filesystem, every "
        "taint tolerated). Apply with: vipcheck manifests | kubectl apply -f -",
        epilog="docs/agents.md says what each object is for and why each permission is needed.",
    )
    parser.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help="the namespace of the agents and of vipcheck's ServiceAccount, created by the "
        "manifests (default %(default)s)",
    )
    parser.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help="the agent image: vipcheck-node and nft on a slim Python base (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        text = render(args.namespace, args.image)
    except ManifestError as error:
        parser.error(printable(str(error), one_line=True))
    sys.stdout.write(text)
    return 0


def _diff_settings(config_file: Path | None, overrides: list[str]) -> Settings:
    """The thresholds `vipcheck -c FILE -o NAME=VALUE` judges with (the command reads no other
    ini file), read by the run's own reader (settings_from), for the sides that are snapshots."""
    values = {} if config_file is None else _ini_file_values(config_file)
    for item in overrides:
        name, equals, value = item.partition("=")
        if not equals:
            raise SettingsError(f"-o {item!r}: expected NAME=VALUE")
        values[name.strip()] = value
    return settings_from(values.get)


def _ini_file_values(path: Path) -> dict[str, object]:
    """The options of a pytest configuration file, from where pytest reads them: a .toml's
    [tool.pytest.ini_options], a .cfg's [tool:pytest], any other file's [pytest]."""
    try:
        if path.suffix == ".toml":
            with path.open("rb") as file:
                table = tomllib.load(file).get("tool", {}).get("pytest", {})
            options = table.get("ini_options", table)
            return dict(options) if isinstance(options, dict) else {}
        config = iniconfig.IniConfig(str(path))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, iniconfig.ParseError) as error:
        raise SettingsError(f"-c {path}: {error}") from None
    section = "tool:pytest" if path.suffix == ".cfg" else "pytest"
    return dict(config[section].items()) if section in config else {}


def _entry_point_names(modules: tuple[str, ...]) -> list[str]:
    """The plugins' pytest11 entry-point names: loaded by name, autoloading will not load twice."""
    return [ep.name for ep in entry_points(group="pytest11") if ep.value in modules]


if __name__ == "__main__":
    sys.exit(main())
