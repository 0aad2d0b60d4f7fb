"""IPVS over its generic netlink family, with pyroute2: GET and DUMP requests only.

GET_SERVICE (dump), GET_DEST (dump, per service), GET_INFO (the version and connection table
size of ipvsadm's first line) and GET_CONFIG (the three timeouts), as include/uapi/linux/
ip_vs.h and net/netfilter/ipvs/ip_vs_ctl.c define them (pyroute2 0.9.7). pyroute2's IPVSService
and IPVSDest keep class defaults in place of some values the kernel sent (the persistence timeout,
the flags, the forward method), so the fields are read from the messages' own attributes;
GET_INFO's and GET_CONFIG's replies are read from their bytes, as pyroute2 decodes them with
the service/dest attribute map (garbage for GET_INFO, hex strings for the timeouts).

Every request needs CAP_NET_ADMIN in the network namespace read (GENL_ADMIN_PERM, GETs too).
Without the IPVS family (ip_vs not loaded) nothing is asked: loading it is not reading.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, ip_address
from typing import Any

from pyroute2 import IPVS
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import ipvs as ipvs_genl

from vipcheck.model.node import IpvsTimeouts
from vipcheck.node_reader.ipvs_text import IpvsDest, IpvsService
from vipcheck.node_reader.messages import Message, ReadError

# include/uapi/linux/ip_vs.h
INFO_ATTR_VERSION, INFO_ATTR_CONN_TAB_SIZE = 1, 2
CMD_ATTR_TIMEOUT_TCP, CMD_ATTR_TIMEOUT_TCP_FIN, CMD_ATTR_TIMEOUT_UDP = 4, 5, 6
_NLMSG_AND_GENL_HEADERS = 16 + 4
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_FWD_MASK = 0x7


@dataclass(frozen=True, slots=True)
class IpvsInfo:
    version: int
    table_size: int


def open_ipvs() -> Any | None:
    """A socket bound to the IPVS family; None where the kernel has none (ip_vs not loaded)."""
    try:
        return IPVS()
    except NetlinkError as error:
        if error.code == errno.ENOENT:
            return None
        raise ReadError(_failed("CTRL_CMD_GETFAMILY IPVS", error)) from None


def services(ipvs: Any) -> list[IpvsService]:
    """Every virtual service with its real servers: one service dump, one dest dump each."""
    dumped = _request("IPVS_CMD_GET_SERVICE dump", lambda: list(ipvs.service("dump")))
    found = []
    for message in dumped:
        service = Attributes(message.get_attr("IPVS_CMD_ATTR_SERVICE"))
        dests = _request("IPVS_CMD_GET_DEST dump", partial(_dest_dump, ipvs, service_key(service)))
        found.append(
            decode_service(
                service, [decode_dest(Attributes(d.get_attr("IPVS_CMD_ATTR_DEST"))) for d in dests]
            )
        )
    return found


def service_key(service: Attributes) -> list[tuple[str, Any]]:
    """What names a service to the kernel (ip_vs_genl_parse_service): its family and either its
    fwmark or its protocol, address and port; what pyroute2's IPVSService.dump_key() sends, made
    from the dumped attributes without its request-building machinery (a third of the read's
    time on `big`'s 2,104 services)."""
    names = ("FWMARK",) if service.get("IPVS_SVC_ATTR_FWMARK") else ("PROTOCOL", "ADDR", "PORT")
    return [
        (name, service.required(name))
        for name in ("IPVS_SVC_ATTR_AF", *(f"IPVS_SVC_ATTR_{n}" for n in names))
    ]


def _dest_dump(ipvs: Any, key: list[tuple[str, Any]]) -> list[Any]:
    """GET_DEST dump of one service, keyed as the kernel asks (as pyroute2's IPVS.dest sends it)."""
    request = ipvs_genl.ipvsmsg()
    request["cmd"] = ipvs_genl.IPVS_CMD_GET_DEST
    request["version"] = ipvs_genl.GENL_VERSION
    request["attrs"] = [("IPVS_CMD_ATTR_SERVICE", {"attrs": key})]
    prid = ipvs.asyncore.prid
    replies = ipvs.nlm_request(request, msg_type=prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
    return [reply for reply in replies if reply["header"]["type"] == prid]


def info(ipvs: Any) -> IpvsInfo:
    """IPVS_CMD_GET_INFO: the version and the connection table's size."""
    values = _get(ipvs, ipvs_genl.IPVS_CMD_GET_INFO, "IPVS_CMD_GET_INFO")
    return IpvsInfo(values[INFO_ATTR_VERSION], values[INFO_ATTR_CONN_TAB_SIZE])


def timeouts(ipvs: Any) -> IpvsTimeouts:
    """IPVS_CMD_GET_CONFIG: the tcp, tcpfin and udp timeouts, in seconds."""
    values = _get(ipvs, ipvs_genl.IPVS_CMD_GET_CONFIG, "IPVS_CMD_GET_CONFIG")
    return IpvsTimeouts(
        values[CMD_ATTR_TIMEOUT_TCP], values[CMD_ATTR_TIMEOUT_TCP_FIN], values[CMD_ATTR_TIMEOUT_UDP]
    )


def _get(ipvs: Any, command: int, what: str) -> dict[int, int]:
    """One GET (not a dump: GET_INFO and GET_CONFIG have no dumpit), its reply's u32 attributes."""
    request = ipvs_genl.ipvsmsg()
    request["cmd"] = command
    request["version"] = ipvs_genl.GENL_VERSION
    prid = ipvs.asyncore.prid
    replies = _request(
        what,
        lambda: list(ipvs.nlm_request(request, msg_type=prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)),
    )
    for reply in replies:
        if reply["header"]["type"] == prid:
            end = reply.offset + reply["header"]["length"]
            return u32_attributes(bytes(reply.data[reply.offset : end]))
    raise ReadError(f"{what}: the kernel sent no reply")


def u32_attributes(message: bytes) -> dict[int, int]:
    """A generic netlink message's 4-byte top-level attributes, by type, in host byte order."""
    values = {}
    position = _NLMSG_AND_GENL_HEADERS
    while position + 4 <= len(message):
        length, kind = struct.unpack_from("=HH", message, position)
        if length < 4:
            break
        if length == 8:
            values[kind & _NLA_TYPE_MASK] = struct.unpack_from("=I", message, position + 4)[0]
        position += (length + 3) & ~3
    return values


class Attributes:
    """A decoded message's attributes by name, found in one pass (pyroute2's get_attr scans
    them all for each name asked), each decoded when first read; the first of a name wins."""

    def __init__(self, message: Message) -> None:
        self._slots: dict[str, Any] = {}
        for slot in message["attrs"]:
            self._slots.setdefault(slot[0], slot)

    def get(self, name: str) -> Any:
        slot = self._slots.get(name)
        return None if slot is None else slot[1]

    def required(self, name: str) -> Any:
        """An attribute every reply of the kernel holds (ip_vs_genl_fill_service/_dest)."""
        value = self.get(name)
        if value is None:
            raise ReadError(f"IPVS netlink reply without {name}")
        return value


def decode_service(service: Attributes, dests: list[IpvsDest]) -> IpvsService:
    af: int = service.required("IPVS_SVC_ATTR_AF")
    fwmark = service.get("IPVS_SVC_ATTR_FWMARK") or None
    netmask = service.required("IPVS_SVC_ATTR_NETMASK")
    return IpvsService(
        af=af,
        protocol=None if fwmark else service.required("IPVS_SVC_ATTR_PROTOCOL"),
        address=None if fwmark else _address(service.required("IPVS_SVC_ATTR_ADDR")),
        port=None if fwmark else service.required("IPVS_SVC_ATTR_PORT"),
        fwmark=fwmark,
        scheduler=service.required("IPVS_SVC_ATTR_SCHED_NAME"),
        flags=service.required("IPVS_SVC_ATTR_FLAGS")["flags"],
        timeout=service.get("IPVS_SVC_ATTR_TIMEOUT") or 0,
        netmask=_ipv6_prefix(netmask) if af == socket.AF_INET6 else netmask,
        pe_name=service.get("IPVS_SVC_ATTR_PE_NAME"),
        dests=tuple(dests),
    )


def decode_dest(dest: Attributes) -> IpvsDest:
    return IpvsDest(
        address=_address(dest.required("IPVS_DEST_ATTR_ADDR")),
        port=dest.required("IPVS_DEST_ATTR_PORT"),
        fwd_method=dest.required("IPVS_DEST_ATTR_FWD_METHOD") & _FWD_MASK,
        weight=dest.required("IPVS_DEST_ATTR_WEIGHT"),
        active_conns=dest.required("IPVS_DEST_ATTR_ACTIVE_CONNS"),
        inact_conns=dest.required("IPVS_DEST_ATTR_INACT_CONNS"),
    )


def _ipv6_prefix(netmask: str) -> int:
    """An IPv6 service's prefix length, which pyroute2 decodes as an IPv4 address
    (IPVS_SVC_ATTR_NETMASK is declared ip4addr: 128 comes out as '0.0.0.128')."""
    return int(IPv4Address(netmask))


def _address(value: object) -> str:
    """The address pyroute2 decoded by the attribute's family; anything else is refused."""
    try:
        return str(ip_address(str(value)))
    except ValueError:
        raise ReadError(f"IPVS netlink address {value!r}: not an IPv4 or IPv6 address") from None


def _request(what: str, send: Callable[[], list[Any]]) -> list[Any]:
    """send(), its netlink error made one line naming the request."""
    try:
        return send()
    except NetlinkError as error:
        raise ReadError(_failed(what, error)) from None


def _failed(what: str, error: NetlinkError) -> str:
    hint = " (needs CAP_NET_ADMIN in the node's network namespace)"
    hint = hint if error.code == errno.EPERM else ""
    return f"netlink {what}: {os.strerror(error.code)}{hint}"
