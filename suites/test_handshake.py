"""End to end: a TCP handshake through every Service VIP completes, from nodes and from outside."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.probe
@pytest.mark.vipcheck_check("vip-handshake")
def test_handshake_through_vip(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
