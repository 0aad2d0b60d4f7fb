"""kube-proxy's nftables tables (issue 19): maps, chains, affinity sets, firewalls, stale chains,
sets."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("nft-service-maps")
def test_nft_service_maps(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("nft-chains-reach-endpoints")
def test_nft_chains_reach_endpoints_no_stale_dnat(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("nft-session-affinity")
def test_nft_session_affinity(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("nft-lb-source-ranges")
def test_nft_lb_source_ranges(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("nft-no-stale-chains")
def test_nft_no_stale_chains(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("nft-cluster-ips")
def test_nft_cluster_ips(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("nft-nodeport-ips")
def test_nft_nodeport_ips(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
