"""iproute parser: `ip -j addr` + `ip -j -d link` merged by name, unknowns kept, recorded nodes."""

from __future__ import annotations

import json
from ipaddress import ip_interface
from pathlib import Path

import pytest

from vipcheck.model.node import Interface, OperState
from vipcheck.parse import ParseError
from vipcheck.parse.iproute import parse_interfaces, parse_ip_json, parse_ip_text

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded"
# Every recorded node that ran `ip -j` (an old node has the text files instead).
NODE_DIRS = sorted(path.parent for path in RECORDED.glob("*/nodes/*/ip-link.json"))

LINK = [
    {
        "ifindex": 2,
        "link": None,
        "ifname": "tunl0",
        "flags": ["NOARP", "UP", "LOWER_UP"],
        "operstate": "UNKNOWN",
        "linkinfo": {"info_kind": "ipip", "info_data": {"remote": "any"}},
    },
    {
        "ifindex": 4,
        "link_index": 3,
        "ifname": "cali96603d4dfdd",
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "operstate": "UP",
        "link_netnsid": 1,
        "linkinfo": {"info_kind": "veth"},
    },
    {
        "ifindex": 8,
        "ifname": "kube-ipvs0",
        "flags": ["BROADCAST", "NOARP"],
        "operstate": "DOWN",
        "linkinfo": {"info_kind": "dummy"},
    },
    {"ifindex": 9, "ifname": "ens3", "flags": ["UP"], "operstate": "UP"},
]
ADDR = [
    {
        "ifindex": 2,
        "ifname": "tunl0",
        "flags": ["NOARP", "UP", "LOWER_UP"],
        "operstate": "UNKNOWN",
        "addr_info": [{"family": "inet", "local": "10.244.1.0", "prefixlen": 32}],
    },
    {
        "ifindex": 4,
        "ifname": "cali96603d4dfdd",
        "flags": ["UP"],
        "operstate": "UP",
        "link_netnsid": 1,
        "addr_info": [],
    },
    {},
    {
        "ifindex": 8,
        "ifname": "kube-ipvs0",
        "flags": ["BROADCAST", "NOARP"],
        "operstate": "DOWN",
        "addr_info": [
            {"family": "inet", "local": "10.96.0.20", "prefixlen": 32},
            {"family": "inet6", "local": "fd00:10:96::20", "prefixlen": 128},
            {},
        ],
    },
    {"ifindex": 9, "ifname": "ens3", "flags": ["UP"], "operstate": "UP"},
]
TUNL0 = Interface(
    "tunl0",
    2,
    "ipip",
    ("NOARP", "UP", "LOWER_UP"),
    OperState.UNKNOWN,
    (ip_interface("10.244.1.0/32"),),
)
TUNL0_LINK_ONLY = Interface(
    "tunl0", 2, "ipip", ("NOARP", "UP", "LOWER_UP"), OperState.UNKNOWN, None
)
TUNL0_ADDR_ONLY = Interface(
    "tunl0",
    2,
    None,
    ("NOARP", "UP", "LOWER_UP"),
    OperState.UNKNOWN,
    (ip_interface("10.244.1.0/32"),),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param((json.dumps(ADDR), json.dumps(LINK)), TUNL0, id="both"),
        pytest.param(("", json.dumps(LINK)), TUNL0_LINK_ONLY, id="link-only"),
        pytest.param((json.dumps(ADDR), "  \n"), TUNL0_ADDR_ONLY, id="addr-only"),
    ],
)
def test_parse_ip_json(text: tuple[str, str], expected: Interface) -> None:
    interfaces = parse_ip_json(*text, "ip-addr.json", "ip-link.json")
    assert interfaces["tunl0"] == expected
    assert [i.name for i in interfaces] == ["tunl0", "cali96603d4dfdd", "kube-ipvs0", "ens3"]
    assert interfaces.link_source == ("ip-link.json" if text[1].strip() else None)
    assert interfaces.addr_source == ("ip-addr.json" if text[0].strip() else None)


def test_merged_details() -> None:
    interfaces = parse_ip_json(json.dumps(ADDR), json.dumps(LINK), "a", "l")
    ipvs = interfaces["kube-ipvs0"]
    assert (ipvs.kind, ipvs.operstate) == ("dummy", OperState.DOWN)
    assert ipvs.addresses == (ip_interface("10.96.0.20/32"), ip_interface("fd00:10:96::20/128"))
    assert interfaces["cali96603d4dfdd"].kind == "veth"
    assert interfaces["cali96603d4dfdd"].addresses == ()
    assert interfaces["ens3"].kind is None
    assert interfaces.get("eth9") is None
    assert len(interfaces) == 4


def test_an_interface_in_one_output_only_is_kept() -> None:
    link = [*LINK, {"ifindex": 11, "ifname": "vxlan0", "flags": [], "operstate": "DOWN"}]
    addr = [
        *ADDR,
        {
            "ifindex": 12,
            "ifname": "cali1",
            "flags": ["UP"],
            "operstate": "UP",
            "addr_info": [{"family": "inet", "local": "169.254.1.1", "prefixlen": 32}],
        },
    ]
    interfaces = parse_ip_json(json.dumps(addr), json.dumps(link), "a", "l")
    assert interfaces["vxlan0"].addresses is None
    assert (interfaces["cali1"].kind, interfaces["cali1"].index) == (None, 12)


def test_both_unknown() -> None:
    interfaces = parse_ip_json("", "", "ip-addr.json", "ip-link.json")
    assert (len(interfaces), interfaces.link_source, interfaces.addr_source) == (0, None, None)


@pytest.mark.parametrize(
    ("addr", "link", "source", "line", "message"),
    [
        ('[\n{"ifindex": 1,\n]', "", "ip-addr.json", 3, "invalid JSON"),
        ("", '{"ifname": "lo"}', "ip-link.json", None, "expected a JSON list"),
        ("", "[1]", "ip-link.json", None, "item 0: expected an object"),
        ("", '[{"ifname": "lo"}]', "ip-link.json", None, "expected ifname and ifindex"),
        (
            "",
            '[{"ifname": "lo", "ifindex": 1, "operstate": "UNKNOWN"},'
            ' {"ifname": "lo", "ifindex": 2, "operstate": "UNKNOWN"}]',
            "ip-link.json",
            None,
            "interface lo is listed twice",
        ),
        (
            "",
            '[{"ifname": "lo", "ifindex": 1, "operstate": "WEIRD"}]',
            "ip-link.json",
            None,
            "unknown operstate 'WEIRD'",
        ),
        (
            "",
            '[{"ifname": "lo", "ifindex": 1, "operstate": "UP", "flags": "UP"}]',
            "ip-link.json",
            None,
            "flags",
        ),
        (
            '[{"ifname": "lo", "ifindex": 1, "operstate": "UP", "addr_info": '
            '[{"local": "127.0.0.1", "prefixlen": 33}]}]',
            "",
            "ip-addr.json",
            None,
            "lo:",
        ),
    ],
)
def test_parse_ip_json_refuses(
    addr: str, link: str, source: str, line: int | None, message: str
) -> None:
    with pytest.raises(ParseError) as raised:
        parse_ip_json(addr, link, "ip-addr.json", "ip-link.json")
    assert (raised.value.source, raised.value.line) == (source, line)
    assert message in raised.value.message


def parse_node(node_dir: Path) -> dict[str, Interface]:
    interfaces = parse_ip_json(
        (node_dir / "ip-addr.json").read_text(),
        (node_dir / "ip-link.json").read_text(),
        "ip-addr.json",
        "ip-link.json",
    )
    return {i.name: i for i in interfaces}


@pytest.mark.parametrize("node_dir", NODE_DIRS, ids=lambda path: path.name)
def test_recorded_interfaces(node_dir: Path) -> None:
    interfaces = parse_node(node_dir)
    assert len(interfaces) == len(json.loads((node_dir / "ip-link.json").read_text()))
    assert interfaces["tunl0"].kind == "ipip"
    assert "UP" in interfaces["tunl0"].flags
    assert interfaces["kube-ipvs0"].kind == "dummy"
    assert interfaces["lo"].addresses is not None
    assert ip_interface("127.0.0.1/8") in interfaces["lo"].addresses
    assert all(i.addresses is not None for i in interfaces.values())


@pytest.mark.parametrize("number", [1, 2, 3])
def test_seed_incidents_interfaces(number: int) -> None:
    interfaces = parse_node(RECORDED / "seed-incidents" / "nodes" / f"node-{number}")
    ipvs = interfaces["kube-ipvs0"]
    assert ipvs.operstate is OperState.DOWN
    assert ipvs.addresses == tuple(ip_interface(f"10.96.0.{vip}/32") for vip in (20, 30, 40))
    assert interfaces["tunl0"].addresses == (ip_interface(f"10.244.{number}.0/32"),)
    assert ip_interface(f"192.168.58.1{number}/24") in (interfaces["eth0"].addresses or ())
    pod_veths = [i for i in interfaces.values() if i.name.startswith("cali")]
    assert pod_veths
    assert all(i.kind == "veth" and i.operstate is OperState.UP for i in pod_veths)


# --- text and kernel-file forms (issue 9: nodes without `ip -j`) ------------------------------

OLD_NODE = RECORDED / "seed-incidents-old-node" / "nodes"


@pytest.mark.parametrize("node", ["node-1", "node-3"])
def test_iproute2_text_reads_as_its_json(node: str) -> None:
    # Recorded from the same node a second apart: `ip addr show` + `ip -d link show` (6.1).
    folder = OLD_NODE / node
    text = parse_ip_text(
        (folder / "ip-addr.txt").read_text(),
        (folder / "ip-link.txt").read_text(),
        "ip-addr.txt",
        "ip-link.txt",
    )
    assert list(text) == list(parse_node(folder).values())
    assert (text.addr_source, text.link_source) == ("ip-addr.txt", "ip-link.txt")


def test_busybox_ip_text() -> None:
    # node-2 of the old-node lab: busybox 1.35's `ip addr show` and `ip link show` (no -d, no
    # state: print_linkinfo() prints `state` only where built with IFF_DORMANT).
    folder = OLD_NODE / "node-2"
    interfaces = parse_interfaces(
        ((folder / "ip-addr.txt").read_text(), "ip-addr.txt"),
        ((folder / "ip-link.txt").read_text(), "ip-link.txt"),
    )
    assert [i.name for i in interfaces][:3] == ["lo", "tunl0", "eth0"]
    assert {i.kind for i in interfaces} == {None}
    assert {i.operstate for i in interfaces} == {None}
    assert interfaces["tunl0"].addresses == (ip_interface("10.244.2.0/32"),)
    assert interfaces["tunl0"].flags == ("NOARP", "UP", "LOWER_UP")
    assert interfaces["eth0"].flags[-1] == "M-DOWN"
    ipvs = interfaces["kube-ipvs0"]
    assert ipvs.addresses == tuple(ip_interface(f"10.96.0.{vip}/32") for vip in (20, 30, 40))
    assert ip_interface("192.168.58.12/24") in (interfaces["eth0"].addresses or ())


def test_sys_class_net_gives_names_flags_and_tunnel_kinds() -> None:
    folder = OLD_NODE / "node-1"
    from_sys = parse_interfaces(
        None, ((folder / "sys-class-net.txt").read_text(), "sys-class-net.txt")
    )
    from_json = parse_node(folder)
    assert sorted(i.name for i in from_sys) == sorted(from_json)
    for interface in from_sys:
        assert interface.index == from_json[interface.name].index
        assert interface.operstate == from_json[interface.name].operstate
        assert interface.addresses is None
        # sysfs flags hold IFF_* only: LOWER_UP is a netlink flag, RUNNING is not printed by ip.
        assert set(interface.flags) - {"RUNNING"} <= set(from_json[interface.name].flags)
    assert from_sys["tunl0"].kind == "ipip"
    assert from_sys.addr_source is None
    assert from_sys.link_source == "sys-class-net.txt"


# CentOS 7's iproute 3.10: `state` but no `group`, `qlen 1` on tunnels, `@NONE`, the -d line
# with the kind (print_linktype(): `_SL_` then "    %s " kind, then its options), a point-to-point
# address printed `inet A peer B/N` (print_addrinfo()).
CENTOS7_ADDR = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN qlen 1
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
    inet 127.0.0.1/8 scope host lo
       valid_lft forever preferred_lft forever
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP qlen 1000
    link/ether 52:54:00:8a:1b:2c brd ff:ff:ff:ff:ff:ff
    inet 10.0.0.12/24 brd 10.0.0.255 scope global eth0
       valid_lft forever preferred_lft forever
3: tunl0@NONE: <NOARP,UP,LOWER_UP> mtu 1440 qdisc noqueue state UNKNOWN qlen 1
    link/ipip 0.0.0.0 brd 0.0.0.0
    inet 10.244.2.0/32 scope global tunl0
       valid_lft forever preferred_lft forever
4: kube-ipvs0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN
    link/ether 8e:4b:2a:7c:11:05 brd ff:ff:ff:ff:ff:ff
    inet 10.96.0.1/32 brd 10.96.0.1 scope global kube-ipvs0
       valid_lft forever preferred_lft forever
5: cali1e2f3a4b5@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1440 qdisc noqueue state UP
    link/ether ee:ee:ee:ee:ee:ee brd ff:ff:ff:ff:ff:ff link-netnsid 0
    inet6 fe80::ecee:eeff:feee:eeee/64 scope link
       valid_lft forever preferred_lft forever
6: tun0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1400 qdisc pfifo_fast state UNKNOWN qlen 100
    link/none
    inet 192.168.255.1 peer 192.168.255.2/32 scope global tun0
       valid_lft forever preferred_lft forever
"""
CENTOS7_LINK = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT qlen 1
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00 promiscuity 0
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP mode DEFAULT qlen 1000
    link/ether 52:54:00:8a:1b:2c brd ff:ff:ff:ff:ff:ff promiscuity 0
3: tunl0@NONE: <NOARP,UP,LOWER_UP> mtu 1440 qdisc noqueue state UNKNOWN mode DEFAULT qlen 1
    link/ipip 0.0.0.0 brd 0.0.0.0 promiscuity 0
    ipip remote any local any ttl inherit nopmtudisc
4: kube-ipvs0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN mode DEFAULT
    link/ether 8e:4b:2a:7c:11:05 brd ff:ff:ff:ff:ff:ff promiscuity 0
    dummy
5: cali1e2f3a4b5@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1440 qdisc noqueue state UP mode DEFAULT
    link/ether ee:ee:ee:ee:ee:ee brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 0
    veth
6: tun0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1400 qdisc fq state UNKNOWN mode DEFAULT qlen 100
    link/none  promiscuity 0
    tun
7: vxlan.calico: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1410 qdisc noqueue state UNKNOWN mode DEFAULT
    link/ether 66:2b:d1:3e:a0:1f brd ff:ff:ff:ff:ff:ff promiscuity 0
    vxlan id 4096 local 10.0.0.12 dev eth0 srcport 0 0 dstport 4789 nolearning ageing 300
    alias calico vxlan
8: br0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT
    link/ether 52:54:00:8a:1b:2d brd ff:ff:ff:ff:ff:ff promiscuity 0
    bridge
9: veth0@if2: <BROADCAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master br0 state UP mode DORMANT
    link/ether 52:54:00:8a:1b:2e brd ff:ff:ff:ff:ff:ff link-netnsid 1 promiscuity 1
    veth
    bridge_slave
10: ens4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP mode DEFAULT qlen 1000
    link/ether 52:54:00:8a:1b:2f brd ff:ff:ff:ff:ff:ff promiscuity 0 addrgenmode eui64
    altname enp0s4
"""


def test_centos7_iproute_text() -> None:
    interfaces = parse_ip_text(CENTOS7_ADDR, CENTOS7_LINK, "ip-addr.txt", "ip-link.txt")
    kinds = {i.name: i.kind for i in interfaces}
    assert kinds == {
        "lo": None,
        "eth0": None,
        "tunl0": "ipip",
        "kube-ipvs0": "dummy",
        "cali1e2f3a4b5": "veth",
        "tun0": "tun",
        "vxlan.calico": "vxlan",
        "br0": "bridge",
        "veth0": "veth",
        "ens4": None,
    }
    assert interfaces["tunl0"] == Interface(
        "tunl0",
        3,
        "ipip",
        ("NOARP", "UP", "LOWER_UP"),
        OperState.UNKNOWN,
        (ip_interface("10.244.2.0/32"),),
    )
    assert interfaces["tun0"].addresses == (ip_interface("192.168.255.1/32"),)
    assert interfaces["cali1e2f3a4b5"].addresses == (ip_interface("fe80::ecee:eeff:feee:eeee/64"),)
    assert interfaces["vxlan.calico"].addresses is None  # in the link listing only


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "2: eth0    inet 10.0.0.12/24 brd 10.0.0.255 scope global eth0\\"
            "       valid_lft forever preferred_lft forever\n",
            1,
            "`ip -o` output: give `ip addr show` without -o",
        ),
        ("    inet 10.0.0.1/24 scope global eth0\n", 1, "not a line of `ip addr show`"),
        (
            "1: lo: <LOOPBACK> mtu 65536 state UNKNOWN\n    inet 127.0.0.1/33 scope host lo\n",
            2,
            "'127.0.0.1/33' is not an address",
        ),
        (
            "1: lo: <LOOPBACK> mtu 65536 state UNKNOWN\n1: lo: <LOOPBACK> mtu 65536\n",
            2,
            "interface lo is listed twice (first on line 1): two outputs pasted together?",
        ),
        ("1: lo: <LOOPBACK> mtu 65536 state SLEEPY\n", 1, "unknown operstate 'SLEEPY'"),
    ],
)
def test_ip_text_refuses(text: str, line: int, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_ip_text(text, "", "nodes/node-2/ip-addr.txt", "nodes/node-2/ip-link.txt")
    assert (raised.value.source, raised.value.line) == ("nodes/node-2/ip-addr.txt", line)
    assert message in raised.value.message


def test_pasted_ip_text_starting_with_its_command() -> None:
    pasted = "ssh node-2 ip -d link show\n" + CENTOS7_LINK
    interfaces = parse_ip_text("", pasted, "a", "l")
    assert interfaces["tunl0"].kind == "ipip"


def test_pasted_ip_text_with_a_prompt() -> None:
    pasted = (
        "[root@node-2 ~]# ip addr show dev tunl0\n" + CENTOS7_ADDR.split("4: kube", maxsplit=1)[0]
    )
    interfaces = parse_ip_text(pasted, "", "a", "l")
    assert [i.name for i in interfaces] == ["lo", "eth0", "tunl0"]


@pytest.mark.parametrize(
    ("text", "line"),
    [("/sys/class/net/eth0/ifindex 2\n", 1), ("/sys/class/net/eth0/flags:0x1003\n", 1)],
)
def test_sys_class_net_refuses(text: str, line: int) -> None:
    with pytest.raises(ParseError) as raised:
        parse_interfaces(None, (text, "sys-class-net.txt"))
    assert (raised.value.source, raised.value.line) == ("sys-class-net.txt", line)


def test_json_and_text_may_be_mixed_in_a_hand_made_snapshot() -> None:
    folder = OLD_NODE / "node-1"
    mixed = parse_interfaces(
        ((folder / "ip-addr.json").read_text(), "nodes/node-1/ip-addr.json"),
        ((folder / "ip-link.txt").read_text(), "nodes/node-1/ip-link.txt"),
    )
    assert list(mixed) == list(parse_node(folder).values())
    assert mixed.link_source == "nodes/node-1/ip-link.txt"
