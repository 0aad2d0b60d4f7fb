"""Ready for nftables mode: what switching this IPVS cluster would break, before the switch.

Every test here is marked `migration`: `vipcheck -m migration` runs them alone, and
`vipcheck -m "not migration"` leaves them out of a run.
"""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result

pytestmark = pytest.mark.migration


@pytest.mark.vipcheck_check("migration-kernel-version")
def test_kernel_runs_nftables_mode(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("migration-nft-version")
def test_nft_is_new_enough(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("migration-foreign-virtual-servers")
def test_no_foreign_virtual_server_is_flushed(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("migration-nodeport-addresses")
def test_no_reached_nodeport_address_is_dropped(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("migration-ipvs-only-settings")
def test_ipvs_only_settings_are_known(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)


@pytest.mark.vipcheck_check("migration-calico-kube-ipvs0")
def test_calico_leaves_ipvs_mode_with_kube_ipvs0(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
