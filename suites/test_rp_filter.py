"""Founding incident 3: strict rp_filter drops packets that arrive through the tunnel."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("rp-filter-not-strict")
def test_rp_filter_not_strict(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
