"""Leftovers of IPVS mode on nodes that switched to nftables mode: nothing of it may stay."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("ipvs-leftover-virtual-servers")
def test_ipvs_leftover_virtual_servers(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ipvs-leftover-kube-ipvs0")
def test_ipvs_leftover_kube_ipvs0(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("iptables-leftover-chains")
def test_iptables_leftover_chains(vipcheck_result: Result) -> None:
    # The chains' commands before the ipsets': a set a rule still names cannot be destroyed.
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ipvs-leftover-ipsets")
def test_ipvs_leftover_ipsets(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("ipvs-leftover-sysctls")
def test_ipvs_leftover_sysctls(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
