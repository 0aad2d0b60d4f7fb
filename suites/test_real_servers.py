"""Founding incident 1: real servers in IPVS match the Service's endpoints (no stale pod:80)."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("ipvs-real-servers-match-endpoints")
def test_real_servers_match_endpoints_no_stale_or_missing(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
