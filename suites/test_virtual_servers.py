"""Every virtual server kube-proxy should program exists, and none that nothing explains."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("ipvs-virtual-servers-complete")
def test_virtual_servers_complete(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ipvs-no-orphan-virtual-servers")
def test_no_orphan_virtual_servers(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("kube-ipvs0-holds-service-ips")
def test_kube_ipvs0_holds_service_ips(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("kube-ipvs0-no-stale-addresses")
def test_kube_ipvs0_no_stale_addresses(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
