"""iproute parser: `ip -j addr` + `ip -j -d link` merged by name, unknowns kept, recorded nodes."""

from __future__ import annotations

import json
from ipaddress import ip_interface
from pathlib import Path

import pytest

from vipcheck.model.node import Interface, OperState
from vipcheck.parse import ParseError
from vipcheck.parse.iproute import parse_ip_json

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded"
NODE_DIRS = sorted(RECORDED.glob("*/nodes/*"))

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
