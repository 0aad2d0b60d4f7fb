"""Founding incident 2 where conntrack holds closing connections (nftables, iptables): its
sysctls as kube-proxy's config sets them at start, in every mode."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("conntrack-timeouts")
def test_conntrack_timeouts(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
