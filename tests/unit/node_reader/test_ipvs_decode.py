"""The IPVS replies decoded: messages in the kernel's format (as ip_vs_genl_fill_service() and
ip_vs_genl_fill_dest() build them), encoded and decoded by pyroute2 itself, read into the
fields the rendering takes. This host has no ip_vs: the kernel's own replies are the lab's.

They hold what pyroute2's IPVSService/IPVSDest replace with class defaults (the persistence
timeout, the flags, the forward method, in pyroute2 0.9.7's from_message()), so a reader
relying on those would render `Route` for Masq and no persistence; this one must not.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2 import IPVSService
from pyroute2.netlink.generic.ipvs import (
    IPVS_CMD_GET_DEST,
    IPVS_CMD_NEW_DEST,
    IPVS_CMD_NEW_SERVICE,
    ipvsmsg,
)

from vipcheck.node_reader.ipvs_netlink import Attributes, decode_dest, decode_service, service_key
from vipcheck.node_reader.ipvs_text import dest_line, service_line


def kernel_message(command: int, attribute: str, attributes: list[tuple[str, Any]]) -> Any:
    """A reply as the kernel sends it, through pyroute2's encoder and decoder."""
    message = ipvsmsg()
    message["cmd"] = command
    message["version"] = 1
    message["attrs"] = [(attribute, {"attrs": attributes})]
    message.encode()
    decoded = ipvsmsg(message.data)
    decoded.decode()
    return decoded


def sent_key(key: list[tuple[str, Any]]) -> dict[str, Any]:
    """A GET_DEST request keyed so, as the kernel would read it back."""
    request = kernel_message(IPVS_CMD_GET_DEST, "IPVS_CMD_ATTR_SERVICE", key)
    return dict(request.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])


def service_message(*attributes: tuple[str, Any]) -> Any:
    common = [
        ("IPVS_SVC_ATTR_SCHED_NAME", "rr"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": 0x3, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", 10800),
    ]
    return kernel_message(IPVS_CMD_NEW_SERVICE, "IPVS_CMD_ATTR_SERVICE", [*attributes, *common])


def test_a_persistent_ipv6_service_and_its_masq_real_server() -> None:
    message = service_message(
        ("IPVS_SVC_ATTR_AF", socket.AF_INET6),
        ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_TCP),
        ("IPVS_SVC_ATTR_ADDR", "fd00:10:96::1"),
        ("IPVS_SVC_ATTR_PORT", 443),
        ("IPVS_SVC_ATTR_NETMASK", "0.0.0.64"),  # IPv6: a prefix length, in an ip4addr NLA
    )
    dest = kernel_message(
        IPVS_CMD_NEW_DEST,
        "IPVS_CMD_ATTR_DEST",
        [
            ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET6),
            ("IPVS_DEST_ATTR_ADDR", "fd00:10:244::7"),
            ("IPVS_DEST_ATTR_PORT", 6443),
            ("IPVS_DEST_ATTR_FWD_METHOD", 0),
            ("IPVS_DEST_ATTR_WEIGHT", 0),
            ("IPVS_DEST_ATTR_ACTIVE_CONNS", 1),
            ("IPVS_DEST_ATTR_INACT_CONNS", 5),
        ],
    )
    real_server = decode_dest(Attributes(dest.get_attr("IPVS_CMD_ATTR_DEST")))
    attributes = Attributes(message.get_attr("IPVS_CMD_ATTR_SERVICE"))
    service = decode_service(attributes, [real_server])
    assert service_line(service) == "TCP  [fd00:10:96::1]:443 rr persistent 10800 mask 64\n"
    assert dest_line(real_server).split() == ["->", "[fd00:10:244::7]:6443", "Masq", "0", "1", "5"]
    key = IPVSService.from_message(message).dump_key()["attrs"]
    assert dict(service_key(attributes)) == dict(key)  # what pyroute2's IPVS.dest() sends
    assert sent_key(service_key(attributes)) == dict(key)  # the address encoded by its family
    assert dict(key) == {
        "IPVS_SVC_ATTR_AF": socket.AF_INET6,
        "IPVS_SVC_ATTR_PROTOCOL": socket.IPPROTO_TCP,
        "IPVS_SVC_ATTR_ADDR": "fd00:10:96::1",
        "IPVS_SVC_ATTR_PORT": 443,
    }


def test_a_fwmark_service_is_keyed_by_its_mark() -> None:
    message = service_message(
        ("IPVS_SVC_ATTR_AF", socket.AF_INET),
        ("IPVS_SVC_ATTR_FWMARK", 42),
        ("IPVS_SVC_ATTR_NETMASK", "255.255.255.0"),
    )
    attributes = Attributes(message.get_attr("IPVS_CMD_ATTR_SERVICE"))
    service = decode_service(attributes, [])
    assert service_line(service) == "FWM  42 rr persistent 10800 mask 255.255.255.0\n"
    key = IPVSService.from_message(message).dump_key()["attrs"]
    assert dict(service_key(attributes)) == dict(key)
    assert dict(key) == {"IPVS_SVC_ATTR_AF": socket.AF_INET, "IPVS_SVC_ATTR_FWMARK": 42}
