"""The SYN_RECV entries of a node's connection table: the rows the checks read, parsed alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipcheck.facts import Facts, NodeFacts
from vipcheck.model.node import ConnState
from vipcheck.parse import ParseError
from vipcheck.parse.ipvsadm import parse_ipvsadm_connections
from vipcheck.parse.procfs import parse_proc_ip_vs_conn
from vipcheck.snapshot import NodeSnapshot, load_snapshot

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "seed-incidents"
HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
ROW = "TCP 0A0A0024 9CB8 0A60001E 0050 0AF4030B 1F90 {state:<11} {expires:>7}\n"


def node(name: str, text: str) -> NodeFacts:
    return NodeFacts(NodeSnapshot("node-1", {name: text}))


@pytest.mark.parametrize("name", ["ip_vs_conn.txt", "ipvsadm-Lnc.txt"])
def test_the_recorded_tables_syn_recv_rows_are_those_of_the_whole_table(name: str) -> None:
    snapshot = load_snapshot(SEED)
    for recorded in snapshot.nodes.values():
        one = node(name, recorded.files[name])
        parse = parse_proc_ip_vs_conn if name == "ip_vs_conn.txt" else parse_ipvsadm_connections
        whole = [c for c in parse(recorded.files[name], name) if c.state is ConnState.SYN_RECV]
        assert list(one.syn_recv_connections) == whole
    facts = Facts.from_snapshot(snapshot)
    assert any(node_.syn_recv_connections for node_ in facts.nodes.values())


def test_a_table_without_syn_recv_has_none_and_an_empty_one_is_refused() -> None:
    quiet = HEADER + ROW.format(state="ESTABLISHED", expires=900) * 3
    assert node("ip_vs_conn.txt", quiet).syn_recv_connections == ()
    with pytest.raises(ParseError, match="empty"):
        node("ip_vs_conn.txt", "\n").syn_recv_connections  # noqa: B018


def test_a_malformed_syn_recv_row_is_named_by_its_line_in_the_file() -> None:
    text = HEADER + ROW.format(state="TIME_WAIT", expires=60) * 4 + "TCP 0A0A SYN_RECV 51\n"
    with pytest.raises(ParseError, match=r"ip_vs_conn\.txt:6"):
        node("ip_vs_conn.txt", text).syn_recv_connections  # noqa: B018
