"""Names validated as their owners allow them; text shown without what steers a terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import LINUX_INTERFACE_NAMES
from vipcheck.untrusted import (
    host_name_problem,
    interface_name_problem,
    node_name_problem,
    parse_address,
    printable,
)


@pytest.mark.parametrize(
    "name", ["node-1", "ip-10-0-0-1.eu-west-1.compute.internal", "a", "x" * 253]
)
def test_kubernetes_node_names_pass(name: str) -> None:
    assert node_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["n\ntouch PWNED\n#", "-oProxyCommand=touch P", "Node-1", "node_1", "node-", "", "x" * 254,
     "a..b", "node 1", "$(id)"],
)  # fmt: skip
def test_other_node_names_are_refused(name: str) -> None:
    assert node_name_problem(name) is not None


@pytest.mark.parametrize(
    "name",
    ["eth0", "tunl0", "vxlan.calico", "eth0.100", "$(touch${IFS}P)", "a;b|c&d`e`", "\x1b]0;t"],
)
def test_names_linux_allows_pass(name: str) -> None:
    assert interface_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "a:b", "a b", "a\nb", "a\tb", "x" * 16, "é" * 8, "a\xa0", "\ud800"],
)
def test_names_linux_refuses_are_refused(name: str) -> None:
    assert interface_name_problem(name) is not None


@given(LINUX_INTERFACE_NAMES)
def test_every_name_linux_allows_passes(name: str) -> None:
    assert interface_name_problem(name) is None


def test_addresses_with_a_zone_are_refused() -> None:
    assert str(parse_address("fd00::1")) == "fd00::1"
    assert str(parse_address("10.0.0.1")) == "10.0.0.1"
    with pytest.raises(ValueError, match="zone"):
        parse_address("fd00::1%$(id)")
    with pytest.raises(ValueError, match=r"\\x1b"):
        parse_address("fd00::1%\x1b[2J")


def test_printable_escapes_what_steers_a_terminal() -> None:
    assert printable("ok\ttext\nnext") == "ok\ttext\nnext"
    assert printable("\x1b]0;title\x07\x1b[2J") == "\\x1b]0;title\\x07\\x1b[2J"
    assert printable("a\x9bb\x7fc") == "a\\x9bb\\x7fc"
    assert printable("abc\u202edcb") == "abc\\u202edcb"
    assert printable("a\nb\rc", one_line=True) == "a\\nb\\x0dc"


@given(st.text())
def test_printable_leaves_no_control_character(text: str) -> None:
    shown = printable(text, one_line=True)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown


@pytest.mark.parametrize("name", ["MYHOST", "build_host-1", "10.0.0.11", "fd00::11", "node-1"])
def test_hosts_as_a_run_without_the_api_names_nodes_pass(name: str) -> None:
    assert host_name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["-oProxyCommand=x", "n\nx", "$(id)", "a b", "fd00::1%eth0", "a;b", "", "x" * 254]
)
def test_hosts_that_are_shell_words_or_options_are_refused(name: str) -> None:
    assert host_name_problem(name) is not None
