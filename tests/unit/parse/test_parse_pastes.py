"""Evidence as people paste it: `ipvsadm -S -n`, command lines, grep-cut and one-service tables."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from pathlib import Path

import pytest

from vipcheck.model.node import FwdMethod, IpvsTable, L4Protocol, RealServer
from vipcheck.parse import ParseError
from vipcheck.parse.ipvsadm import parse_ipvsadm_list
from vipcheck.parse.procfs import parse_proc_ip_vs, parse_proc_ip_vs_conn

OLD_NODE = Path(__file__).resolve().parents[3] / "fixtures" / "recorded" / "seed-incidents-old-node"
VERSION = "IP Virtual Server version 1.2.1 (size=4096)\n"
TITLES = (
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
)
REDIS = (
    "TCP  10.96.0.20:6379 rr\n"
    "  -> 10.244.3.10:80                Masq    1      0          0\n"
    "  -> 10.244.3.10:6379              Masq    1      0          5\n"
)
WEB = "TCP  10.96.0.30:80 rr\n  -> 10.244.1.10:8080              Masq    1      0          0\n"


def shape(table: IpvsTable) -> dict[object, set[tuple[object, ...]]]:
    """Each service's real servers with forward method and weight (what -S and -Ln share)."""
    return {
        service.key: {(rs.key, rs.fwd_method, rs.weight) for rs in service.real_servers}
        for service in table.services
    }


# --- ipvsadm -S -n / ipvsadm-save -n ----------------------------------------------------------


@pytest.mark.parametrize("node", ["node-1", "node-3"])
def test_rule_format_reads_as_the_listing(node: str) -> None:
    # Both recorded from the lab's ipvsadm 1.31 on the same node (the stale :80 included).
    folder = OLD_NODE / "nodes" / node
    rules = parse_ipvsadm_list((folder / "ipvsadm-S.txt").read_text(), "ipvsadm-S.txt")
    listing = parse_ipvsadm_list((folder / "ipvsadm-Ln.txt").read_text(), "ipvsadm-Ln.txt")
    assert shape(rules) == shape(listing)
    assert [s.scheduler for s in rules.services] == [s.scheduler for s in listing.services]
    assert (rules.version, rules.partial) == (None, None)
    assert {rs.active_conns for s in rules.services for rs in s.real_servers} == {None}


def test_rule_format_options() -> None:
    text = (
        "[root@node-2 ~]# ipvsadm-save -n\n"
        "-A -t 10.96.0.50:443 -s rr -p 10800 -M 255.255.255.0 --pe sip -o\n"
        "-a -t 10.96.0.50:443 -r 10.244.2.7:8443 -m -w 0 -x 100 -y 10\n"
        "-A -u [fd00:10:96::10]:53 -s mh -b mh-fallback,mh-port\n"
        "-a -u [fd00:10:96::10]:53 -r [fd00:10:244:2::7]:53 -i -w 3 --tun-type ipip\n"
        "-A --sctp-service 10.96.0.60:3868 -s wrr\n"
        "-A -f 42 -6 -s sh\n"
        "-a -f 42 -6 -r [fd00::9]:80 -g -w 1\n"
    )
    table = parse_ipvsadm_list(text, "ipvsadm-Ln.txt")
    https, dns, sctp, fwmark = table.services
    assert (https.persistent_timeout, https.netmask, https.pe_name, https.flags) == (
        10800,
        "255.255.255.0",
        "sip",
        ("ops",),
    )
    assert https.real_servers == (
        RealServer(ip_address("10.244.2.7"), 8443, FwdMethod.MASQ, 0, None, None),
    )
    assert (dns.protocol, dns.af, dns.flags) == (
        L4Protocol.UDP,
        socket.AF_INET6,
        ("mh-fallback", "mh-port"),
    )
    assert dns.real_servers[0].fwd_method is FwdMethod.TUNNEL
    assert (sctp.protocol, sctp.scheduler, sctp.real_servers) == (L4Protocol.SCTP, "wrr", ())
    assert (fwmark.key, fwmark.real_servers[0].fwd_method) == (("FWM", 42, "IPv6"), FwdMethod.ROUTE)
    assert table.partial is None


def test_rule_format_of_old_ipvsadm_prints_pe_and_ops_bare() -> None:
    # ipvsadm 1.26's print_service_entry(): printf(" pe %s", ...) and printf(" ops") after -p/-M.
    text = "-A -t 10.96.0.50:5060 -s rr -p 10800 pe sip ops\n"
    [service] = parse_ipvsadm_list(text, "ipvsadm-Ln.txt").services
    assert (service.persistent_timeout, service.pe_name, service.flags) == (10800, "sip", ("ops",))


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("-A -t kubernetes.default:https -s rr\n", 1, "use `ipvsadm -S -n` (numeric)"),
        ("-a -t 10.96.0.20:6379 -r 10.244.3.10:6379 -m -w 1\n", 1, "not added by -A before"),
        ("-A -t 10.96.0.20:6379 -s rr -Z\n", 1, "unknown option '-Z' of `ipvsadm -A`"),
        ("-A -t 10.96.0.20:6379 -s rr\n-a -t 10.96.0.20:6379 -m -w 1\n", 2, "expected -r"),
        ("-A -t 10.96.0.20:6379 -s rr -p\n", 1, "expected a value after -p"),
        ("-A -t 10.96.0.20:6379 -s rr\n-A -t 10.96.0.20:6379 -s rr\n", 2, "is added twice"),
        ("-A -x 10.96.0.20:6379 -s rr\n", 1, "expected -t/-u/--sctp-service ADDR:PORT or -f"),
    ],
)
def test_rule_format_refuses(text: str, line: int, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_ipvsadm_list(text, "nodes/node-2/ipvsadm-Ln.txt")
    assert (raised.value.source, raised.value.line) == ("nodes/node-2/ipvsadm-Ln.txt", line)
    assert message in raised.value.message


# --- command lines and partial tables -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "partial", "real_servers_complete"),
    [
        pytest.param(
            "sudo ipvsadm -ln | grep 30530\nTCP  192.168.58.12:30530 rr\nTCP  10.10.0.1:30530 rr\n",
            "cut by `grep 30530` in the command on line 1",
            False,
            id="grep-without-prompt",
        ),
        pytest.param(
            "ansible kube-node -i hosts -b -a 'ipvsadm -Ln -t 10.96.0.20:6379'\n"
            "node-2 | CHANGED | rc=0 >>\n" + TITLES + REDIS,
            "one service listed by `ansible kube-node -i hosts -b -a 'ipvsadm -Ln -t "
            "10.96.0.20:6379'` on line 1",
            True,
            id="ansible-one-service",
        ),
        pytest.param(
            "[root@node-2 ~]# ipvsadm -Lnt 10.96.0.20:6379\n" + TITLES + REDIS,
            "one service listed by `ipvsadm -Lnt 10.96.0.20:6379` on line 1",
            True,
            id="prompt-clustered-short-options",
        ),
        pytest.param(
            "for h in node-2; do ssh $h ipvsadm -Ln; done | grep -A2 6379\n" + REDIS,
            "cut by `grep -A2 6379` in the command on line 1",
            False,
            id="shell-loop-cut",
        ),
        pytest.param(
            "for h in node-2; do ssh $h 'ipvsadm -Ln --exact'; done\n" + VERSION + TITLES + REDIS,
            None,
            True,
            id="shell-loop-whole",
        ),
        pytest.param(
            TITLES + REDIS + "--\n" + WEB,
            "no version line and a gap at line 6",
            False,
            id="gap-without-version",
        ),
        pytest.param(VERSION + TITLES + REDIS + "...\n" + WEB, None, True, id="gap-with-version"),
        pytest.param(TITLES + REDIS + WEB, None, True, id="no-version-no-gap"),
    ],
)
def test_partial_tables(text: str, partial: str | None, real_servers_complete: bool) -> None:
    table = parse_ipvsadm_list(text, "ipvsadm-Ln.txt")
    assert (table.partial, table.real_servers_complete) == (partial, real_servers_complete)
    assert table.services


def test_a_command_line_is_not_output_only_before_the_output() -> None:
    text = "ipvsadm -Ln\n" + VERSION + TITLES + REDIS + "ipvsadm -Ln\n"
    with pytest.raises(ParseError) as raised:
        parse_ipvsadm_list(text, "ipvsadm-Ln.txt")
    assert raised.value.line == 8
    assert "not a line of `ipvsadm -Ln` output: 'ipvsadm -Ln'" in raised.value.message


def test_proc_ip_vs_cut_by_grep() -> None:
    text = (
        "cat /proc/net/ip_vs | grep -A1 0A600014\n"
        "TCP  0A600014:18EB rr \n"
        "  -> 0AF4030A:18EB      Masq    1      0          5\n"
    )
    table = parse_proc_ip_vs(text, "proc-ip_vs.txt")
    assert table.partial == "cut by `grep -A1 0A600014` in the command on line 1"
    assert not table.real_servers_complete


def test_centos7_ipvsadm_1_27_and_kernel_3_10() -> None:
    # ipvsadm 1.27 (CentOS 7) lists as 1.31 does (ipvsadm-formats.md section 1), and kernel
    # 3.10's /proc/net/ip_vs_conn already has the PEName/PEData columns (added in 2.6.37).
    listing = (
        "[root@centos7 ~]# ipvsadm -Ln\n"
        + VERSION
        + TITLES
        + "TCP  10.96.0.1:443 rr persistent 10800\n"
        "  -> 10.0.0.11:6443               Masq    1      2          0\n"
        "UDP  10.96.0.10:53 rr\n"
        "  -> 10.244.1.2:53                Masq    1      0          12\n"
    )
    table = parse_ipvsadm_list(listing, "ipvsadm-Ln.txt")
    https, dns = table.services
    assert (https.persistent_timeout, https.flags, table.partial) == (10800, (), None)
    assert dns.real_servers[0].inact_conns == 12
    connections = parse_proc_ip_vs_conn(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
        "TCP 0A0A0024 D431 0A600028 0050 0AF4020A 1F90 SYN_RECV         57\n",
        "ip_vs_conn.txt",
    )
    assert [(c.state_name, c.expires_s) for c in connections] == [("SYN_RECV", 57)]


def test_proc_ip_vs_read_with_dd_as_documented_and_pasted_with_its_report() -> None:
    text = (
        "root@kind-worker:/# dd if=/proc/net/ip_vs bs=16\n"
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
        "TCP  0A600014:18EB rr \n"
        "  -> 0AF4030A:18EB      Masq    1      0          5\n"
        "13+1 records in\n"
        "13+1 records out\n"
        "214 bytes copied, 0.000315 s, 679 kB/s\n"
    )
    table = parse_proc_ip_vs(text, "proc-ip_vs.txt")
    assert [str(vs.address) for vs in table.services] == ["10.96.0.20"]
    assert table.partial is None
    assert len(table.services[0].real_servers) == 1
    # Without a prompt, the command line itself is known too.
    assert parse_proc_ip_vs(text.split("# ", 1)[1], "proc-ip_vs.txt") == table
