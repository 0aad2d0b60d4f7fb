"""The checkout's root: `pytest` here runs the suites (testpaths) against the target you name.

The plugin itself comes from the installed package (entry point `pytest11`), as for every user;
this file only adds what a person running the suites from a checkout wants to see first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vipcheck.plugin import report_header

SUITES = Path(__file__).parent / "suites"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the target, the thresholds and the probes in force, when the run is the suites'."""
    paths = [
        Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args
    ]
    if not any(path == SUITES or SUITES in path.parents for path in paths):
        return []
    return report_header(config)
