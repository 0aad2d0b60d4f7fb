"""Every node could be observed: a node nobody saw is reported once, with its cause."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("node-observed")
def test_node_observed(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
