"""`vipcheck [pytest options]`: run the installed suites with pytest, whatever the directory."""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path

import pytest

from vipcheck.plugin import run_options

# Where the installed suites are: site-packages, or the checkout's suites/ when editable.
SUITES_DIR = Path(str(files("vipcheck.suites")))
PLUGINS = ("vipcheck.plugin", "testinfra.plugin")


class _Header:
    """The report header the checkout's conftest.py prints, for runs of the installed suites."""

    @staticmethod
    def pytest_report_header(config: pytest.Config) -> list[str]:
        return run_options(config).header()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Pinned, so the directory it runs from changes nothing: rootdir is the suites, no config file
    # is read (os.devnull; a -c or --rootdir of the user's comes later and wins), and vipcheck and
    # testinfra load before the command line is read, so an option's value is never taken for a
    # test path, even with PYTEST_DISABLE_PLUGIN_AUTOLOAD. The suites live in site-packages: keep
    # pytest's cache out of it. This module has imported vipcheck already, which pytest would warn
    # cannot be assertion-rewritten; the suites report through pytest.fail, so nothing is lost.
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
    ]
    return int(pytest.main([*pinned, *args], plugins=[*_entry_point_names(PLUGINS), _Header()]))


def _entry_point_names(modules: tuple[str, ...]) -> list[str]:
    """The plugins' pytest11 entry-point names: loaded by name, autoloading will not load twice."""
    return [ep.name for ep in entry_points(group="pytest11") if ep.value in modules]


if __name__ == "__main__":
    sys.exit(main())
