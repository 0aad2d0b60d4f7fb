"""What a suite test asserts: its case conforms, or it fails with the violations, subject first."""

from __future__ import annotations

import pytest

from vipcheck.cases import Result, render


def assert_conforms(result: Result) -> None:
    """Fail the item with the rendered violations, without a Python traceback."""
    __tracebackhide__ = True
    if result.violations:
        pytest.fail(render(result), pytrace=False)
