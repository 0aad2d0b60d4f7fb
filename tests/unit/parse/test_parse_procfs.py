"""procfs parsers: hex endpoints, families, masks, refusals, and agreement with ipvsadm's view."""

from __future__ import annotations

import dataclasses
import socket
from ipaddress import ip_address
from pathlib import Path

import pytest

from vipcheck.model.node import ConnState, FwdMethod, IpvsTable, RealServer, VirtualService
from vipcheck.parse import ParseError
from vipcheck.parse.ipvsadm import parse_ipvsadm_connections, parse_ipvsadm_list
from vipcheck.parse.procfs import parse_proc_ip_vs, parse_proc_ip_vs_conn

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded"
# Nodes recorded with ipvsadm beside procfs (an old node has no ipvsadm).
NODE_DIRS = sorted(path.parent for path in RECORDED.glob("*/nodes/*/ipvsadm-Lnc.txt"))

HEADER = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
"""
V6 = "FD00:0010:0096:0000:0000:0000:0000:0020".lower()


def summary(table: IpvsTable) -> list[tuple[object, ...]]:
    return [
        (
            s.name,
            s.af,
            s.scheduler,
            s.flags,
            s.persistent_timeout,
            s.netmask,
            [
                (r.name, r.fwd_method, r.weight, r.active_conns, r.inact_conns)
                for r in s.real_servers
            ],
        )
        for s in table.services
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            HEADER + "TCP  0A600014:18EB rr  \n"
            "  -> 0AF4030A:0050      Masq    1      0          0         \n"
            "  -> 0AF4030A:18EB      Masq    1      0          5         \n",
            [
                (
                    "TCP 10.96.0.20:6379",
                    socket.AF_INET,
                    "rr",
                    (),
                    None,
                    None,
                    [
                        ("10.244.3.10:80", FwdMethod.MASQ, 1, 0, 0),
                        ("10.244.3.10:6379", FwdMethod.MASQ, 1, 0, 5),
                    ],
                )
            ],
            id="ipv4-trailing-blanks",
        ),
        pytest.param(
            HEADER + f"UDP  [{V6}]:0035 wrr \n"
            "  -> [fd00:0010:0244:0001:0000:0000:0000:0002]:0035      Masq    0      0          3\n"
            "SCTP  0A600032:0F1C sh ops \n",
            [
                (
                    "UDP [fd00:10:96::20]:53",
                    socket.AF_INET6,
                    "wrr",
                    (),
                    None,
                    None,
                    [("[fd00:10:244:1::2]:53", FwdMethod.MASQ, 0, 0, 3)],
                ),
                ("SCTP 10.96.0.50:3868", socket.AF_INET, "sh", ("ops",), None, None, []),
            ],
            id="ipv6-full-form-sctp-ops-weight-0",
        ),
        pytest.param(
            HEADER + "TCP  0A600046:0050 rr persistent 10800 FFFFFFFF\n"
            "TCP  0A600047:0050 rr ops persistent 360 FFFFFF00\n"
            f"TCP  [{V6}]:0050 rr persistent 60 80000000\n"
            f"UDP  [{V6}]:0050 rr persistent 60 40000000\n",
            [
                ("TCP 10.96.0.70:80", socket.AF_INET, "rr", (), 10800, None, []),
                ("TCP 10.96.0.71:80", socket.AF_INET, "rr", ("ops",), 360, "255.255.255.0", []),
                ("TCP [fd00:10:96::20]:80", socket.AF_INET6, "rr", (), 60, None, []),
                ("UDP [fd00:10:96::20]:80", socket.AF_INET6, "rr", (), 60, "64", []),
            ],
            id="persistence-and-masks",
        ),
        pytest.param(
            HEADER + "FWM  0000002A rr \n"
            "  -> 0AF4010A:0000      Route   1      0          0\n"
            "FWM  0000002B lc persistent 300 00000040\n"
            "  -> [fd00:0000:0000:0000:0000:0000:0000:0008]:0000      Masq    1      0          0\n"
            "FWM  0000002C rr \n",
            [
                (
                    "FWM 42",
                    socket.AF_INET,
                    "rr",
                    (),
                    None,
                    None,
                    [("10.244.1.10:0", FwdMethod.ROUTE, 1, 0, 0)],
                ),
                (
                    "FWM 43 IPv6",
                    socket.AF_INET6,
                    "lc",
                    (),
                    300,
                    "64",
                    [("[fd00::8]:0", FwdMethod.MASQ, 1, 0, 0)],
                ),
                ("FWM 44", socket.AF_INET, "rr", (), None, None, []),
            ],
            id="fwmark-family-from-real-servers",
        ),
        pytest.param(HEADER, [], id="no-services"),
    ],
)
def test_parse_proc_ip_vs(text: str, expected: list[tuple[object, ...]]) -> None:
    assert summary(parse_proc_ip_vs(text, "proc-ip_vs.txt")) == expected


def test_proc_lines_are_kept_as_evidence() -> None:
    table = parse_proc_ip_vs(
        HEADER + "TCP  0A600014:18EB rr  \n  -> 0AF4030A:0050 Masq 1 0 0\n", "p"
    )
    (service,) = table.services
    assert service.raw == "TCP  0A600014:18EB rr"
    assert service.real_servers[0].raw == "  -> 0AF4030A:0050 Masq 1 0 0"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (HEADER + "  -> 0AF4030A:0050 Masq 1 0 0\n", 4, "before any service line"),
        (HEADER + "TCP  10.96.0.20:6379 rr\n", 4, "expected hex address:port"),
        (HEADER + "TCP  0A600014:18EB rr\n  -> 0AF4030A:0050 Masq 1 0\n", 5, "expected `->"),
        (HEADER + "TCP  0A600014:18EB rr\n  -> 0AF4030A:0050 Masq 1 x 0\n", 5, "integer"),
        (HEADER + "TCP  0A600014:18EB rr persistent 10800\n", 4, "persistent N MASK"),
        (HEADER + "FWM  42 rr\n", 4, "expected `FWM  %08X sched`"),
        (HEADER + HEADER, 4, "a second /proc/net/ip_vs listing"),
        (HEADER + "TCP  0A600014:18EB rr\nTCP  0A600014:18EB rr\n", 5, "listed twice"),
        (HEADER + "cat: /proc/net/ip_vs: No such file or directory\n", 4, "not a line"),
        ("", None, "empty"),
    ],
)
def test_parse_proc_ip_vs_refuses(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_proc_ip_vs(text, "proc-ip_vs.txt")
    assert raised.value.line == line
    assert message in raised.value.message


CONN_HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            CONN_HEADER + "TCP 0A0A0024 A0F2 0A600028 0050 0AF4020A 1F90 SYN_RECV         51\n",
            [
                (
                    "TCP",
                    "10.10.0.36:41202",
                    "10.96.0.40:80",
                    "10.244.2.10:8080",
                    "SYN_RECV",
                    51,
                    None,
                )
            ],
            id="ipv4",
        ),
        pytest.param(
            "TCP fd00:0000:0000:0000:0000:0000:0000:0036 9C40 "
            "fd00:0010:0096:0000:0000:0000:0000:0020 18EB "
            "fd00:0000:0000:0000:0000:0000:0000:0010 18EB ESTABLISHED     899\n",
            [
                (
                    "TCP",
                    "[fd00::36]:40000",
                    "[fd00:10:96::20]:6379",
                    "[fd00::10]:6379",
                    "ESTABLISHED",
                    899,
                    None,
                )
            ],
            id="ipv6-full-form",
        ),
        pytest.param(
            "TCP 0A0A0024 0000 0A600014 18EB 0AF4030A 18EB NONE          10799\n"
            "IP  0A0A0024 0000 0000002A 0000 0AF4010A 0000 ASSURED         300\n"
            "UDP 0A0A0024 13C4 0A600048 13C4 0AF40109 13C4 UDP              59 sip 3c26700c-1d8e\n",
            [
                ("TCP", "10.10.0.36:0", "10.96.0.20:6379", "10.244.3.10:6379", "NONE", 10799, None),
                ("IP", "10.10.0.36:0", "0.0.0.42:0", "10.244.1.10:0", "ASSURED", 300, None),
                ("UDP", "10.10.0.36:5060", "10.96.0.72:5060", "10.244.1.9:5060", "UDP", 59, "sip"),
            ],
            id="templates-fwmark-pe-data",
        ),
    ],
)
def test_parse_proc_ip_vs_conn(text: str, expected: list[tuple[object, ...]]) -> None:
    connections = parse_proc_ip_vs_conn(text, "ip_vs_conn.txt")
    assert [
        (
            c.protocol,
            str(c.client),
            str(c.virtual),
            str(c.destination),
            c.state_name,
            c.expires_s,
            c.pe_name,
        )
        for c in connections
    ] == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("TCP 0A0A0024 A0F2 0A600028 0050 0AF4020A 1F90 SYN_RECV\n", 1, "expected `Pro FromIP"),
        ("TCP 10.10.0.36 A0F2 0A600028 0050 0AF4020A 1F90 SYN_RECV 51\n", 1, "expected hex"),
        ("TCP 0A0A0024 A0F2 0A600028 0050 0AF4020A 1F90 SYN_RECV 00:51\n", 1, "in seconds"),
        ("XYZ 0A0A0024 A0F2 0A600028 0050 0AF4020A 1F90 SYN_RECV 51\n", 1, "protocol 'XYZ'"),
        ("", None, "empty"),
    ],
)
def test_parse_proc_ip_vs_conn_refuses(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_proc_ip_vs_conn(text, "ip_vs_conn.txt")
    assert raised.value.line == line
    assert message in raised.value.message


# Golden tests over the lab's recordings (fixtures/recorded/*/nodes/*/).


def by_key(table: IpvsTable) -> dict[object, tuple[VirtualService, frozenset[RealServer]]]:
    return {
        s.key: (dataclasses.replace(s, real_servers=()), frozenset(s.real_servers))
        for s in table.services
    }


@pytest.mark.parametrize("node_dir", NODE_DIRS, ids=lambda path: path.name)
def test_proc_ip_vs_agrees_with_ipvsadm(node_dir: Path) -> None:
    proc = parse_proc_ip_vs((node_dir / "proc-ip_vs.txt").read_text(), "proc-ip_vs.txt")
    ipvsadm = parse_ipvsadm_list((node_dir / "ipvsadm-Ln.txt").read_text(), "ipvsadm-Ln.txt")
    assert proc.services
    assert (proc.version, proc.conn_table_size) == (ipvsadm.version, ipvsadm.conn_table_size)
    assert by_key(proc) == by_key(ipvsadm)


def test_seed_incidents_node_1_proc_table() -> None:
    path = RECORDED / "seed-incidents" / "nodes" / "node-1" / "proc-ip_vs.txt"
    table = parse_proc_ip_vs(path.read_text(), path.name)
    redis = table[("TCP", ip_address("10.96.0.20"), 6379)]
    assert {(r.name, r.inact_conns) for r in redis.real_servers} == {
        ("10.244.3.10:80", 0),
        ("10.244.3.10:6379", 5),
    }
    assert table.get(("TCP", ip_address("192.168.58.11"), 30080)) is not None


@pytest.mark.parametrize("node_dir", NODE_DIRS, ids=lambda path: path.name)
def test_proc_ip_vs_conn_agrees_with_ipvsadm(node_dir: Path) -> None:
    text = (node_dir / "ip_vs_conn.txt").read_text()
    proc = parse_proc_ip_vs_conn(text, "ip_vs_conn.txt")
    assert len(proc) == len(text.splitlines()) - 1
    ipvsadm = parse_ipvsadm_connections((node_dir / "ipvsadm-Lnc.txt").read_text(), "Lnc")
    states = {c.key: c.state for c in ipvsadm}
    shared = [c for c in proc if c.key in states]
    # Both were read a moment apart, so entries may come and go, but most must match.
    assert len(shared) * 2 >= len(proc)
    assert all(states[c.key] is c.state for c in shared)


def test_seed_incidents_node_1_proc_connections() -> None:
    path = RECORDED / "seed-incidents" / "nodes" / "node-1" / "ip_vs_conn.txt"
    connections = parse_proc_ip_vs_conn(path.read_text(), path.name)
    syn_recv = [c for c in connections if c.state is ConnState.SYN_RECV]
    assert syn_recv
    assert {str(c.destination) for c in syn_recv} == {"10.244.2.10:8080"}
    assert {str(c.virtual) for c in syn_recv} == {"10.96.0.40:80"}
    redis = [c for c in connections if str(c.virtual) == "10.96.0.20:6379"]
    assert redis
    assert all(c.state is ConnState.TIME_WAIT for c in redis)
    assert {str(c.destination) for c in redis} == {"10.244.3.10:6379"}
