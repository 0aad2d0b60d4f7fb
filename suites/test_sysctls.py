"""Host settings that break IPVS traffic behind NAT, under churn, or altogether."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("tcp-tw-recycle-off")
def test_tcp_tw_recycle_off(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ipvs-conn-reuse-mode")
def test_ipvs_conn_reuse_mode(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ipvs-expire-nodest-conn")
def test_ipvs_expire_nodest_conn(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ip-forward-enabled")
def test_ip_forward_enabled(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("conntrack-headroom")
def test_conntrack_headroom(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
