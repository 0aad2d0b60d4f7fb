"""Each node runs the proxy mode kube-proxy's config names: a half-rolled-out switch is found."""

from __future__ import annotations

import pytest

from vipcheck.assertions import assert_conforms
from vipcheck.cases import Result


@pytest.mark.vipcheck_check("kube-proxy-mode")
def test_kube_proxy_mode(vipcheck_result: Result) -> None:
    assert_conforms(vipcheck_result)
