"""The packet trace: each node's own nftables rules send a Service's traffic to its endpoints."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("nft-trace-reaches-endpoints")
def test_nft_trace_reaches_endpoints(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
