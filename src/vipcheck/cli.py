"""`vipcheck [pytest options]`: run the installed suites with pytest, passing options through."""

from __future__ import annotations

import sys

import pytest

from vipcheck.plugin import SUITES_DIR


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # The suites live in site-packages: keep pytest from writing its cache there. This module has
    # imported vipcheck already, which pytest would warn cannot be assertion-rewritten; the
    # suites report through pytest.fail, not assert, so nothing is lost.
    options = ["-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return int(pytest.main([str(SUITES_DIR), *options, *args]))


if __name__ == "__main__":
    sys.exit(main())
