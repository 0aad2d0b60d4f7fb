"""Founding incident 3: strict rp_filter drops packets that arrive through the tunnel."""

from __future__ import annotations

import pytest

from vipcheck.cases import Result
from vipcheck.plugin import assert_conforms


@pytest.mark.vipcheck_check("rp-filter-not-strict")
def test_rp_filter_not_strict(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
