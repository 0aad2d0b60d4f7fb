"""The IPVS rendering, as a pure function: fields as netlink carries them -> ipvsadm's text.

This host has no ip_vs, so the kernel's own replies are not read here (tests/lab proves that
part on the lab's IPVS kernel). What is proven here: real `ipvsadm -Ln --exact` outputs
recorded from the lab, parsed, turned back into the kernel's fields and rendered, give the same
lines, byte for byte, and parse to the same table; and every option ipvsadm prints renders as
the parser reads it.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from vipcheck.model.node import FwdMethod, IpvsTable, L4Protocol, VirtualService
from vipcheck.node_reader.ipvs_netlink import (
    CMD_ATTR_TIMEOUT_TCP,
    CMD_ATTR_TIMEOUT_TCP_FIN,
    CMD_ATTR_TIMEOUT_UDP,
    u32_attributes,
)
from vipcheck.node_reader.ipvs_text import (
    FORWARD_NAMES,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    IpvsDest,
    IpvsService,
    render_list,
    render_timeouts,
    service_line,
)
from vipcheck.parse.ipvsadm import parse_ipvsadm_list, parse_ipvsadm_timeout

ROOT = Path(__file__).resolve().parents[3]
RECORDED = sorted((ROOT / "fixtures" / "recorded").glob("*/nodes/*/ipvsadm-Ln.txt"))
TIMEOUTS = sorted((ROOT / "fixtures" / "recorded").glob("*/nodes/*/ipvsadm-timeout.txt"))
_PROTOCOLS = {L4Protocol.TCP: 6, L4Protocol.UDP: 17, L4Protocol.SCTP: 132}
_SCHED_FLAGS = {"sh-fallback": SVC_F_SCHED1, "sh-port": SVC_F_SCHED2, "mh-fallback": SVC_F_SCHED1}


def as_netlink(service: VirtualService) -> IpvsService:
    """The fields the kernel's reply holds for a parsed service (the test's inverse of decoding)."""
    flags = SVC_F_PERSISTENT if service.persistent_timeout is not None else 0
    for name in service.flags:
        flags |= SVC_F_ONEPACKET if name == "ops" else _SCHED_FLAGS[name]
    ipv6 = service.af == socket.AF_INET6
    return IpvsService(
        af=service.af,
        protocol=_PROTOCOLS[service.protocol] if service.protocol else None,
        address=str(service.address) if service.address else None,
        port=service.port,
        fwmark=service.fwmark,
        scheduler=service.scheduler or "",
        flags=flags,
        timeout=service.persistent_timeout or 0,
        netmask=int(service.netmask or 128) if ipv6 else service.netmask or "255.255.255.255",
        pe_name=service.pe_name,
        dests=tuple(
            IpvsDest(
                address=str(server.address),
                port=server.port,
                fwd_method=FORWARD_NAMES.index((server.fwd_method or FwdMethod.MASQ).value),
                weight=server.weight or 0,
                active_conns=server.active_conns or 0,
                inact_conns=server.inact_conns or 0,
            )
            for server in service.real_servers
        ),
    )


def by_key(table: IpvsTable) -> dict[object, VirtualService]:
    """Services by identity, real servers in a set: ipvsadm's own order is not reproducible."""
    return {service.key: service for service in table.services}


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: "/".join(p.parts[-4:-1]))
def test_recorded_listing_renders_back_line_for_line(path: Path) -> None:
    text = path.read_text()
    table = parse_ipvsadm_list(text, str(path))
    assert table.version is not None
    assert table.conn_table_size is not None
    major, minor, patch = (int(part) for part in table.version.split("."))
    rendered = "".join(
        render_list(
            (major << 16) | (minor << 8) | patch,
            table.conn_table_size,
            [as_netlink(service) for service in table.services],
        )
    )
    assert sorted(rendered.splitlines()) == sorted(text.splitlines())
    again = parse_ipvsadm_list(rendered, "rendered")
    assert by_key(again) == by_key(table)
    for key, service in by_key(again).items():
        assert set(service.real_servers) == set(by_key(table)[key].real_servers)


@pytest.mark.parametrize("path", TIMEOUTS, ids=lambda p: "/".join(p.parts[-4:-1]))
def test_recorded_timeouts_render_back(path: Path) -> None:
    text = path.read_text()
    timeouts = parse_ipvsadm_timeout(text, str(path))
    assert render_timeouts(timeouts.tcp, timeouts.tcp_fin, timeouts.udp) == text


def service(**fields: object) -> IpvsService:
    defaults: dict[str, object] = {
        "af": socket.AF_INET,
        "protocol": 6,
        "address": "10.96.0.70",
        "port": 80,
        "fwmark": None,
        "scheduler": "rr",
        "flags": 0x2,  # HASHED, on every live service: never printed
        "timeout": 0,
        "netmask": "255.255.255.255",
    }
    return IpvsService(**{**defaults, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"flags": 0x3, "timeout": 10800}, "TCP  10.96.0.70:80 rr persistent 10800"),
        (
            {"flags": 0x3 | SVC_F_ONEPACKET, "timeout": 360, "netmask": "255.255.255.0"}
            | {"pe_name": "sip"},
            "TCP  10.96.0.70:80 rr persistent 360 mask 255.255.255.0 pe sip ops",
        ),
        (
            {"af": socket.AF_INET6, "protocol": 17, "address": "fd00:0:0::72", "port": 5060}
            | {"scheduler": "sh", "flags": 0x3 | SVC_F_SCHED1 | SVC_F_SCHED2, "timeout": 60}
            | {"netmask": 64},
            "UDP  [fd00::72]:5060 sh (sh-fallback,sh-port) persistent 60 mask 64",
        ),
        (
            {"af": socket.AF_INET6, "netmask": 128, "flags": 0x3, "timeout": 60}
            | {"address": "fd00::70"},
            "TCP  [fd00::70]:80 rr persistent 60",
        ),
        (
            {"scheduler": "mh", "flags": 0x2 | SVC_F_SCHED1 | SVC_F_ONEPACKET},
            "TCP  10.96.0.70:80 mh (mh-fallback) ops",
        ),
        ({"scheduler": "wrr", "flags": 0x2 | SVC_F_SCHED1}, "TCP  10.96.0.70:80 wrr (flag-1)"),
        ({"protocol": 132, "port": 3868}, "SCTP 10.96.0.70:3868 rr"),
        (
            {"fwmark": 42, "af": socket.AF_INET6, "protocol": None, "address": None}
            | {"port": None, "scheduler": "wlc"},
            "FWM  42 IPv6 wlc",
        ),
    ],
)
def test_service_options_render_as_ipvsadm_prints_them(
    fields: dict[str, object], line: str
) -> None:
    rendered = service_line(service(**fields))
    assert rendered == line + "\n"
    header = "".join(render_list(0x010201, 4096, []))
    [parsed] = parse_ipvsadm_list(header + rendered, "rendered").services
    assert parsed.raw == line


def test_real_server_line_keeps_ipvsadm_columns() -> None:
    dest = IpvsDest("fd00:10:244::10", 6379, fwd_method=0, weight=0, active_conns=3, inact_conns=7)
    text = "".join(render_list(0x010201, 4096, [service(dests=(dest,))]))
    assert text.splitlines()[-1] == (
        "  -> [fd00:10:244::10]:6379       Masq    0      3          7         "
    )


def test_unknown_forward_method_is_refused_by_name() -> None:
    dest = IpvsDest("10.244.1.1", 80, fwd_method=5, weight=1, active_conns=0, inact_conns=0)
    with pytest.raises(ValueError, match="forward method 5"):
        list(render_list(0x010201, 4096, [service(dests=(dest,))]))


def test_config_reply_attributes_decode_from_bytes() -> None:
    """A GET_CONFIG reply as the kernel builds it (nlmsghdr, genlmsghdr, three u32 NLAs)."""
    attributes = b"".join(
        struct.pack("=HHI", 8, kind, value)
        for kind, value in (
            (CMD_ATTR_TIMEOUT_TCP, 900),
            (CMD_ATTR_TIMEOUT_TCP_FIN, 30),
            (CMD_ATTR_TIMEOUT_UDP, 300),
        )
    )
    body = struct.pack("=BBH", 12, 1, 0) + attributes
    message = struct.pack("=IHHII", 16 + len(body), 0x20, 0, 1, 0) + body
    assert u32_attributes(message) == {
        CMD_ATTR_TIMEOUT_TCP: 900,
        CMD_ATTR_TIMEOUT_TCP_FIN: 30,
        CMD_ATTR_TIMEOUT_UDP: 300,
    }
