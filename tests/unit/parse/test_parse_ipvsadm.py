"""ipvsadm parsers: every variant on the format page, pastes, refusals, and the lab's recordings."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from vipcheck.model.node import (
    ConnState,
    FwdMethod,
    HostPort,
    IpvsTable,
    IpvsTimeouts,
    L4Protocol,
    RealServer,
    VirtualService,
)
from vipcheck.parse import ParseError
from vipcheck.parse.ipvsadm import (
    SharedServices,
    parse_ipvsadm_connections,
    parse_ipvsadm_list,
    parse_ipvsadm_timeout,
)

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded"
# Nodes recorded by `python -m fixtures.lab record`, every list format of ipvsadm included.
NODE_DIRS = sorted(path.parent for path in RECORDED.glob("*/nodes/*/ipvsadm-Ln-exact.txt"))
LIST_FILES = sorted(path for d in NODE_DIRS for path in d.glob("ipvsadm-Ln*.txt"))
LIST_FILES = [path for path in LIST_FILES if path.name != "ipvsadm-Lnc.txt"]


def rs(
    host_port: str,
    fwd: FwdMethod | None = FwdMethod.MASQ,
    weight: int | None = 1,
    active: int | None = 0,
    inactive: int | None = 0,
) -> RealServer:
    address, _, port = host_port.rpartition(":")
    return RealServer(ip_address(address.strip("[]")), int(port), fwd, weight, active, inactive)


def vs(
    name: str,
    scheduler: str | None = "rr",
    *real_servers: RealServer,
    persistent: int | None = None,
    netmask: str | None = None,
    pe_name: str | None = None,
    flags: tuple[str, ...] = (),
) -> VirtualService:
    words = name.split()
    protocol: L4Protocol | None = None
    address: IPv4Address | IPv6Address | None = None
    port: int | None = None
    fwmark: int | None = None
    if words[0] == "FWM":
        fwmark = int(words[1])
        af = socket.AF_INET6 if words[-1] == "IPv6" else socket.AF_INET
    else:
        host, _, port_text = words[1].rpartition(":")
        protocol, address, port = L4Protocol(words[0]), ip_address(host.strip("[]")), int(port_text)
        af = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return VirtualService(
        protocol,
        address,
        port,
        fwmark,
        af,
        scheduler,
        persistent_timeout=persistent,
        netmask=netmask,
        pe_name=pe_name,
        flags=flags,
        real_servers=real_servers,
    )


HEADER = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
"""
REDIS = vs("TCP 10.96.0.20:6379", "rr", rs("10.244.3.10:80"), rs("10.244.3.10:6379", inactive=5))

LIST_CASES = [
    pytest.param(
        HEADER
        + "TCP  10.96.0.20:6379 rr\n"
        + "  -> 10.244.3.10:80               Masq    1      0          0         \n"
        + "  -> 10.244.3.10:6379             Masq    1      0          5         \n",
        (REDIS,),
        id="plain-with-trailing-blanks",
    ),
    pytest.param(
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.96.0.20:6379 rr\n"
        "  -> 10.244.3.10:80 Masq 1 0 0\n"
        "  -> 10.244.3.10:6379 Masq 1 0 5\n",
        (REDIS,),
        id="single-service-no-version-blanks-stripped",
    ),
    pytest.param(
        "root@node-1:~# ipvsadm -Ln -t 10.96.0.20:6379\n"
        "TCP  10.96.0.20:6379 rr\n"
        "  -> 10.244.3.10:80    Masq    1      0          0      <<== removed\n"
        "...\n"
        "  -> 10.244.3.10:6379  Masq    1      0          5\n"
        "$ \n",
        (REDIS,),
        id="prompts-elision-annotation",
    ),
    pytest.param(
        "node-1 | CHANGED | rc=0 >>\n" + HEADER + "\n"
        "TCP  10.96.0.20:6379 rr  <<== the stale one\n"
        "  -> 10.244.3.10:80 Masq 1 0 0\n"
        "--\n"
        "  -> 10.244.3.10:6379 Masq 1 0 5\n\n\n",
        (REDIS,),
        id="ansible-banner-grep-gap-annotated-service",
    ),
    pytest.param(
        HEADER
        + "TCP  10.96.0.20:6379 rr\n"
        + "  -> 10.244.3.10:80 Masq 1 0 0\n"
        + "  -> 10.244.3.10:6379 Masq 1 0 5\n"
        + HEADER.split("\n", 1)[1]
        + "UDP  10.96.0.10:53 rr\n"
        + "  -> 10.244.1.2:53 Masq 1 0 7\n",
        (REDIS, vs("UDP 10.96.0.10:53", "rr", rs("10.244.1.2:53", inactive=7))),
        id="duplicated-title-lines",
    ),
    pytest.param(
        HEADER + "TCP  [fd00:10:96::20]:6379 rr\n"
        "  -> [fd00:10:244:3:ffff:ffff:ffff:10]:6379 Masq    1      3          0\n",
        (
            vs(
                "TCP [fd00:10:96::20]:6379",
                "rr",
                rs("[fd00:10:244:3:ffff:ffff:ffff:10]:6379", active=3),
            ),
        ),
        id="ipv6-long-dest-shifts-columns",
    ),
    pytest.param(
        HEADER + "UDP  10.96.0.10:53 rr\n"
        "  -> 10.244.1.2:53                Masq    0      0          12\n"
        "SCTP 10.96.0.50:3868 wrr\n"
        "TCP  10.96.0.60:443 lc\n",
        (
            vs("UDP 10.96.0.10:53", "rr", rs("10.244.1.2:53", weight=0, inactive=12)),
            vs("SCTP 10.96.0.50:3868", "wrr"),
            vs("TCP 10.96.0.60:443", "lc"),
        ),
        id="udp-sctp-weight-0-no-real-servers",
    ),
    pytest.param(
        HEADER + "TCP  10.96.0.70:80 rr persistent 10800\n"
        "  -> 10.244.1.7:80 Masq 1 0 0\n"
        "TCP  10.96.0.71:80 rr persistent 360 mask 255.255.255.0 pe sip ops\n"
        "UDP  [fd00::72]:5060 sh (sh-fallback,sh-port) persistent 60 mask 64\n"
        "TCP  10.96.0.73:80 mh (mh-fallback) ops\n",
        (
            vs("TCP 10.96.0.70:80", "rr", rs("10.244.1.7:80"), persistent=10800),
            vs(
                "TCP 10.96.0.71:80",
                "rr",
                persistent=360,
                netmask="255.255.255.0",
                pe_name="sip",
                flags=("ops",),
            ),
            vs(
                "UDP [fd00::72]:5060",
                "sh",
                persistent=60,
                netmask="64",
                flags=("sh-fallback", "sh-port"),
            ),
            vs("TCP 10.96.0.73:80", "mh", flags=("mh-fallback", "ops")),
        ),
        id="persistence-mask-pe-ops-scheduler-flags",
    ),
    pytest.param(
        HEADER + "FWM  42 rr\n"
        "  -> 10.244.1.8:0 Route 1 0 0\n"
        "FWM  42 IPv6 wlc\n"
        "  -> [fd00::8]:0 Tunnel 2 0 0\n"
        "  -> [fd00::9]:0 Local 3 0 0\n",
        (
            vs("FWM 42", "rr", rs("10.244.1.8:0", FwdMethod.ROUTE)),
            vs(
                "FWM 42 IPv6",
                "wlc",
                rs("[fd00::8]:0", FwdMethod.TUNNEL, 2),
                rs("[fd00::9]:0", FwdMethod.LOCAL, 3),
            ),
        ),
        id="fwmark-ipv4-and-ipv6",
    ),
    pytest.param(
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
        "  -> RemoteAddress:Port\n"
        "TCP  10.96.0.20:6379                 150K    9876M      12G     987T        0\n"
        "  -> 10.244.3.10:6379                  10  123456789        5      300      200\n",
        (vs("TCP 10.96.0.20:6379", None, rs("10.244.3.10:6379", None, None, None, None)),),
        id="stats-with-suffixes",
    ),
    pytest.param(
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
        "  -> RemoteAddress:Port\n"
        "TCP  10.96.0.20:6379                    1        2        3     120K       4M\n"
        "  -> 10.244.3.10:6379                   1        2        3      120        4\n",
        (vs("TCP 10.96.0.20:6379", None, rs("10.244.3.10:6379", None, None, None, None)),),
        id="rate",
    ),
    pytest.param(
        "TCP  10.96.0.20:6379                    1        2        3      120        4\n"
        "  -> 10.244.3.10:6379                   1        2        3      120        4\n",
        (vs("TCP 10.96.0.20:6379", None, rs("10.244.3.10:6379", None, None, None, None)),),
        id="stats-grepped-without-titles",
    ),
    pytest.param(
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn\n"
        "  -> RemoteAddress:Port\n"
        "TCP  10.96.0.20:6379 rr\n"
        "  -> 10.244.3.10:6379             10000      100        7          2\n",
        (vs("TCP 10.96.0.20:6379", "rr", rs("10.244.3.10:6379", None, None, 7, 2)),),
        id="thresholds",
    ),
    pytest.param(
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n"
        "  -> RemoteAddress:Port\n"
        "TCP  10.96.0.20:6379 rr persistent 10800\n"
        "  -> 10.244.3.10:6379             1         4           7          2\n",
        (
            vs(
                "TCP 10.96.0.20:6379",
                "rr",
                rs("10.244.3.10:6379", None, 1, 7, 2),
                persistent=10800,
            ),
        ),
        id="persistent-conn",
    ),
    pytest.param(
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn TunnelInfo\n"
        "TCP  10.96.0.20:6379 rr\n"
        "  -> 10.244.3.10:6379             Tunnel  1      0          0          ipip\n",
        (vs("TCP 10.96.0.20:6379", "rr", rs("10.244.3.10:6379", FwdMethod.TUNNEL)),),
        id="tun-info",
    ),
    pytest.param(HEADER, (), id="no-services"),
]


@pytest.mark.parametrize(("text", "expected"), LIST_CASES)
def test_parse_ipvsadm_list(text: str, expected: tuple[VirtualService, ...]) -> None:
    table = parse_ipvsadm_list(text, "ipvsadm-Ln.txt")
    assert table.services == expected


def test_version_line_is_kept_and_optional() -> None:
    with_version = parse_ipvsadm_list(HEADER, "a")
    assert (with_version.version, with_version.conn_table_size) == ("1.2.1", 4096)
    without = parse_ipvsadm_list("TCP  10.96.0.20:6379 rr\n", "b")
    assert (without.version, without.conn_table_size) == (None, None)


def test_lines_are_kept_as_evidence() -> None:
    text = "TCP  10.96.0.20:6379 rr\n  -> 10.244.3.10:80 Masq 1 0 0   <<== removed\n"
    service = parse_ipvsadm_list(text, "x")[("TCP", ip_address("10.96.0.20"), 6379)]
    assert service.raw == "TCP  10.96.0.20:6379 rr"
    assert service.real_servers[0].raw == "  -> 10.244.3.10:80 Masq 1 0 0   <<== removed"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param(
            HEADER + "TCP  kubernetes.default.svc.cluster.local:https rr\n",
            4,
            "use `ipvsadm -Ln`",
            id="hostname-without-n",
        ),
        pytest.param(HEADER + "TCP  10.96.0.1:https rr\n", 4, "use `ipvsadm -Ln`", id="port-name"),
        pytest.param(
            HEADER + "TCP  10.96.0.1:443 rr\n  -> node-2.example:https Masq 1 0 0\n",
            5,
            "use `ipvsadm -Ln`",
            id="dest-hostname",
        ),
        pytest.param(
            HEADER + "  -> 10.244.3.10:80 Masq 1 0 0\n",
            4,
            "before any service line",
            id="real-server-first",
        ),
        pytest.param(
            HEADER + "TCP  10.96.0.1:443 rr\nIP Virtual Server version 1.2.1 (size=1048576)\n",
            5,
            "two nodes pasted together",
            id="two-different-versions",
        ),
        pytest.param(
            HEADER + "TCP  10.96.0.1:443 rr\n" + HEADER + "TCP  10.96.0.2:443 rr\n",
            5,
            "a second listing starts here",
            id="same-version-twice",
        ),
        pytest.param(
            "TCP  10.96.0.1:443 rr\nTCP  10.96.0.1:443 rr\n",
            2,
            "TCP 10.96.0.1:443 is listed twice (first on line 1)",
            id="service-twice",
        ),
        pytest.param(
            "TCP  10.96.0.1:443 rr\n  -> 10.244.1.1:443 Masq 1 0 0\n"
            "  -> 10.244.1.1:443 Masq 1 0 0\n",
            1,
            "real server 10.244.1.1:443 is listed twice",
            id="real-server-twice",
        ),
        pytest.param(
            "node-1 | CHANGED | rc=0 >>\nTCP  10.96.0.1:443 rr\n"
            "node-2 | CHANGED | rc=0 >>\nTCP  10.96.0.2:443 rr\n",
            3,
            "output of node-1 and node-2 pasted together",
            id="ansible-two-hosts",
        ),
        pytest.param(
            HEADER + "Can't initialize ipvs: L4Protocol not available\n",
            4,
            "not a line of `ipvsadm -Ln` output",
            id="error-message",
        ),
        pytest.param(
            HEADER + "TCP  10.96.0.1:443 rr\n  -> 10.244.1.1:443 Bypass 1 0 0\n",
            5,
            "unknown forward method 'Bypass'",
            id="unknown-forward",
        ),
        pytest.param(
            HEADER + "TCP  10.96.0.1:443 rr\n  -> 10.244.1.1:443 Masq 1 0\n",
            5,
            "expected Forward Weight ActiveConn InActConn",
            id="missing-column",
        ),
        pytest.param(
            HEADER + "TCP  10.96.0.1:443 rr\n  -> 10.244.1.1:443 Masq one 0 0\n",
            5,
            "expected Weight to be an integer",
            id="weight-not-a-number",
        ),
        pytest.param(HEADER + "FWM  mark rr\n", 4, "expected a firewall mark", id="fwm-no-mark"),
        pytest.param(HEADER + "TCP  10.96.0.1:443\n", 4, "expected a scheduler", id="no-sched"),
        pytest.param(HEADER + "TCP  10.96.0.1:99999 rr\n", 4, "out of range", id="bad-port"),
        pytest.param(HEADER + "TCP  10.96.0.256:80 rr\n", 4, "10.96.0.256", id="bad-octet"),
        pytest.param("\n\n", None, "empty", id="empty"),
    ],
)
def test_parse_ipvsadm_list_refuses(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_ipvsadm_list(text, "node-1/ipvsadm-Ln.txt")
    assert raised.value.line == line
    assert message in raised.value.message
    prefix = "node-1/ipvsadm-Ln.txt" if line is None else f"node-1/ipvsadm-Ln.txt:{line}"
    assert str(raised.value).startswith(f"{prefix}: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Timeout (tcp tcpfin udp): 900 120 300\n", IpvsTimeouts(900, 120, 300)),
        (
            "# ipvsadm -L --timeout\nTimeout (tcp tcpfin udp): 900 30 300  \n",
            IpvsTimeouts(900, 30, 300),
        ),
    ],
)
def test_parse_ipvsadm_timeout(text: str, expected: IpvsTimeouts) -> None:
    assert parse_ipvsadm_timeout(text, "ipvsadm-timeout.txt") == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("Timeout (tcp tcpfin udp): 900 120\n", 1, "expected `Timeout"),
        ("Timeout (tcp tcpfin udp): 900 120 300\n" * 2, 2, "a second Timeout line"),
        ("", None, "empty"),
    ],
)
def test_parse_ipvsadm_timeout_refuses(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_ipvsadm_timeout(text, "ipvsadm-timeout.txt")
    assert (raised.value.line, message in raised.value.message) == (line, True)


def hp(text: str) -> HostPort:
    address, _, port = text.rpartition(":")
    return HostPort(ip_address(address.strip("[]")), int(port))


CONN_HEADER = (
    "IPVS connection entries\npro expire state       source             virtual            "
    "destination\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            CONN_HEADER
            + "TCP 00:51  SYN_RECV    10.10.0.36:41202   10.96.0.40:80      10.244.2.10:8080\n",
            [("TCP", "10.10.0.36:41202", "10.96.0.40:80", "10.244.2.10:8080", "SYN_RECV", 51)],
            id="syn-recv",
        ),
        pytest.param(
            "TCP 179:59 NONE        10.10.0.36:0       10.96.0.20:6379    10.244.3.10:6379\n"
            "TCP 02:59  ASSURED     10.10.0.36:0       10.96.0.20:6379    10.244.3.10:6379\n",
            [
                ("TCP", "10.10.0.36:0", "10.96.0.20:6379", "10.244.3.10:6379", "NONE", 10799),
                ("TCP", "10.10.0.36:0", "10.96.0.20:6379", "10.244.3.10:6379", "ASSURED", 179),
            ],
            id="affinity-templates-uncapped-minutes",
        ),
        pytest.param(
            "UDP 04:58  UDP         192.168.127.89:44117 10.96.0.10:53    10.244.1.2:53\n"
            "SCTP 00:10 ESTABLISHED 10.10.0.36:5000    10.96.0.50:3868    10.244.1.5:3868\n"
            "IP  05:00  NONE        10.10.0.36:0       0.0.0.42:0         10.244.1.8:0\n"
            "TCP 14:59  ESTABLISHED [fd00::36]:40000 [fd00:10:96::20]:6379 [fd00::10]:6379\n",
            [
                ("UDP", "192.168.127.89:44117", "10.96.0.10:53", "10.244.1.2:53", "UDP", 298),
                (
                    "SCTP",
                    "10.10.0.36:5000",
                    "10.96.0.50:3868",
                    "10.244.1.5:3868",
                    "ESTABLISHED",
                    10,
                ),
                ("IP", "10.10.0.36:0", "0.0.0.42:0", "10.244.1.8:0", "NONE", 300),
                (
                    "TCP",
                    "[fd00::36]:40000",
                    "[fd00:10:96::20]:6379",
                    "[fd00::10]:6379",
                    "ESTABLISHED",
                    899,
                ),
            ],
            id="shifted-columns-udp-sctp-fwmark-ipv6",
        ),
    ],
)
def test_parse_ipvsadm_connections(
    text: str, expected: list[tuple[str, str, str, str, str, int]]
) -> None:
    connections = parse_ipvsadm_connections(text, "ipvsadm-Lnc.txt")
    assert [
        (c.protocol, str(c.client), str(c.virtual), str(c.destination), c.state_name, c.expires_s)
        for c in connections
    ] == expected
    assert all(c.state is ConnState(c.state_name) for c in connections)


def test_persistent_conn_rows_carry_pe_data() -> None:
    text = (
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination        "
        "pe name          pe_data\n"
        "UDP 00:59  UDP         10.10.0.36:5060    10.96.0.72:5060    10.244.1.9:5060  "
        "sip              3c26700c-1d8e\n"
        "UDP 00:59  UDP         10.10.0.37:5060    10.96.0.72:5060    10.244.1.9:5060\n"
    )
    with_pe, without_pe = parse_ipvsadm_connections(text, "ipvsadm-Lnc.txt")
    assert (with_pe.pe_name, with_pe.pe_data) == ("sip", "3c26700c-1d8e")
    assert (without_pe.pe_name, without_pe.pe_data) == (None, None)


def test_unknown_states_are_kept_as_strings() -> None:
    text = "TCP 00:01  ERR!        10.10.0.36:1       10.96.0.40:80      10.244.2.10:8080\n"
    (connection,) = parse_ipvsadm_connections(text, "ipvsadm-Lnc.txt")
    assert (connection.state_name, connection.state) == ("ERR!", None)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("TCP 1:5  SYN_RECV 10.10.0.36:1 10.96.0.40:80 10.244.2.10:8080\n", 1, "mm:ss"),
        ("TCP 00:51 SYN_RECV client.example:41202 10.96.0.40:http pod:8080\n", 1, "ipvsadm -Lnc"),
        ("TCP 00:51 SYN_RECV 10.10.0.36:1 10.96.0.40:80\n", 1, "expected `pro expire"),
        ("XYZ 00:51 SYN_RECV 10.10.0.36:1 10.96.0.40:80 10.244.2.10:8080\n", 1, "protocol 'XYZ'"),
        ("", None, "empty"),
    ],
)
def test_parse_ipvsadm_connections_refuses(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_ipvsadm_connections(text, "ipvsadm-Lnc.txt")
    assert raised.value.line == line
    assert message in raised.value.message


# Golden tests over the lab's recordings (fixtures/recorded/*/nodes/*/).


def test_recordings_exist() -> None:
    assert len(NODE_DIRS) >= 3
    assert len(LIST_FILES) >= 4 * len(NODE_DIRS)


def shape(table: IpvsTable) -> dict[object, set[object]]:
    return {s.key: {r.key for r in s.real_servers} for s in table.services}


@pytest.mark.parametrize("node_dir", NODE_DIRS, ids=lambda path: path.name)
def test_every_list_format_shows_the_same_table(node_dir: Path) -> None:
    plain = parse_ipvsadm_list((node_dir / "ipvsadm-Ln.txt").read_text(), "ipvsadm-Ln.txt")
    assert plain.services
    assert all(s.scheduler and s.real_servers for s in plain.services)
    for path in node_dir.glob("ipvsadm-Ln?*.txt"):
        if path.name == "ipvsadm-Lnc.txt":
            continue
        table = parse_ipvsadm_list(path.read_text(), path.name)
        assert shape(table) == shape(plain), path.name
        assert table.version == plain.version
        if "stats" in path.name:
            assert all(s.scheduler is None for s in table.services)
        else:
            assert table.services == plain.services


def node(name: str) -> Path:
    return RECORDED / "seed-incidents" / "nodes" / name


@pytest.mark.parametrize("name", ["node-1", "node-2", "node-3"])
def test_seed_incidents_tables(name: str) -> None:
    table = parse_ipvsadm_list((node(name) / "ipvsadm-Ln.txt").read_text(), "ipvsadm-Ln.txt")
    assert (table.version, table.conn_table_size) == ("1.2.1", 4096)
    number = name.rsplit("-", 1)[1]
    assert {s.name for s in table.services} == {
        f"TCP 192.168.58.1{number}:30080",
        "TCP 10.96.0.20:6379",
        "TCP 10.96.0.30:80",
        "TCP 10.96.0.40:80",
    }
    # The stale-real-server incident: redis still points at the pod's old port 80.
    redis = table[("TCP", ip_address("10.96.0.20"), 6379)]
    assert {r.name for r in redis.real_servers} == {"10.244.3.10:6379", "10.244.3.10:80"}
    assert all(r.weight == 1 and r.fwd_method is FwdMethod.MASQ for r in redis.real_servers)
    assert table.get(("TCP", ip_address("10.96.0.99"), 80)) is None


def test_seed_incidents_node_1_counters() -> None:
    table = parse_ipvsadm_list((node("node-1") / "ipvsadm-Ln.txt").read_text(), "ipvsadm-Ln.txt")
    redis = table[("TCP", ip_address("10.96.0.20"), 6379)]
    by_port = {r.port: (r.active_conns, r.inact_conns) for r in redis.real_servers}
    assert by_port == {6379: (0, 5), 80: (0, 0)}
    web = table[("TCP", ip_address("10.96.0.40"), 80)]
    assert [(r.name, r.active_conns) for r in web.real_servers] == [("10.244.2.10:8080", 2)]


@pytest.mark.parametrize("node_dir", NODE_DIRS, ids=lambda path: path.name)
def test_recorded_timeouts(node_dir: Path) -> None:
    text = (node_dir / "ipvsadm-timeout.txt").read_text()
    assert parse_ipvsadm_timeout(text, "ipvsadm-timeout.txt") == IpvsTimeouts(900, 120, 300)


@pytest.mark.parametrize("node_dir", NODE_DIRS, ids=lambda path: path.name)
def test_recorded_connections_parse(node_dir: Path) -> None:
    text = (node_dir / "ipvsadm-Lnc.txt").read_text()
    connections = parse_ipvsadm_connections(text, "ipvsadm-Lnc.txt")
    data_rows = len(text.splitlines()) - 2
    assert len(connections) == data_rows
    assert all(c.state is not None and c.expires_s >= 0 for c in connections)


def test_seed_incidents_node_1_connections() -> None:
    text = (node("node-1") / "ipvsadm-Lnc.txt").read_text()
    connections = parse_ipvsadm_connections(text, "ipvsadm-Lnc.txt")
    syn_recv = [c for c in connections if c.state is ConnState.SYN_RECV]
    # The rp_filter incident: handshakes toward the pod behind strict rp_filter never complete.
    assert syn_recv
    assert {(str(c.virtual), str(c.destination)) for c in syn_recv} == {
        ("10.96.0.40:80", "10.244.2.10:8080")
    }
    assert all(0 < c.expires_s <= 60 for c in syn_recv)
    assert {c.client.address for c in connections} == {ip_address("10.10.0.36")}
    assert any(
        c.state is ConnState.TIME_WAIT and c.virtual == hp("10.96.0.30:80") for c in connections
    )


def _node_table(node_ip: str, endpoint: str) -> str:
    """A node's table: a ClusterIP every node lists, and a NodePort on the node's own address."""
    return (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.96.0.10:53 rr\n"
        "  -> 10.244.0.5:53                 Masq    1      0          0\n"
        f"TCP  {node_ip}:30080 rr\n"
        f"  -> {endpoint}                 Masq    1      0          0\n"
    )


def test_shared_services_carry_what_every_node_lists_and_let_the_rest_go() -> None:
    shared = SharedServices()
    first, second, third = (
        parse_ipvsadm_list(_node_table(ip, "10.244.1.7:80"), f"node-{n}", shared)
        for n, ip in enumerate(("192.168.58.11", "192.168.58.12", "192.168.58.11"), start=1)
    )
    cluster_ip = ("TCP", IPv4Address("10.96.0.10"), 53)
    node_port = ("TCP", IPv4Address("192.168.58.11"), 30080)
    # The ClusterIP every node lists is one object, carried from table to table.
    assert first.get(cluster_ip) is second.get(cluster_ip) is third.get(cluster_ip)
    # node-1's NodePort went with the table after it: the third table built its own, equal.
    assert third.get(node_port) == first.get(node_port)
    assert third.get(node_port) is not first.get(node_port)
    # A service whose real servers differ is never shared, whatever its line.
    moved = parse_ipvsadm_list(_node_table("192.168.58.11", "10.244.1.8:80"), "node-4", shared)
    assert moved.get(node_port) != third.get(node_port)
    assert moved.get(cluster_ip) is first.get(cluster_ip)
