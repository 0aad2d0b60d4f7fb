"""The IPVS connection table: handshakes stuck in SYN_RECV mean a path drops packets."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("ipvs-no-stuck-syn-recv")
def test_no_stuck_syn_recv(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
