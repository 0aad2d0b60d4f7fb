"""IPVS is really in use where kube-proxy says so (it used to fall back to iptables silently)."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("ipvs-present")
def test_ipvs_present(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
