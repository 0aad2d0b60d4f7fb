"""The IPVS connection table: handshakes stuck in SYN_RECV mean a path drops packets."""

from __future__ import annotations

import pytest

from vipcheck.cases import Result
from vipcheck.plugin import assert_conforms


@pytest.mark.vipcheck_check("ipvs-no-stuck-syn-recv")
def test_no_stuck_syn_recv(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
