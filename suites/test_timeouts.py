"""Founding incident 2: IPVS timeouts, tcpfin first (the FIN_WAIT timer, kernel default 120 s)."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("ipvs-tcpfin-timeout")
def test_ipvs_tcpfin_timeout(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ipvs-timeouts-match-kube-proxy-config")
def test_ipvs_timeouts_match_kube_proxy_config(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
