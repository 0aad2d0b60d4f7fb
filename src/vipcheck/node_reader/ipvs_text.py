"""IPVS state as ipvsadm prints it: pure functions from the kernel's fields to text.

The fields are those of the IPVS generic netlink family's replies (include/uapi/linux/
ip_vs.h), as ipvs_netlink decodes them; the text is ipvsadm 1.31's `ipvsadm -Ln --exact`
(list_all(), print_title(), print_service_entry() in ipvsadm.c) and `ipvsadm -L --timeout`
(print_timeout()). Without --stats or --rate, --exact changes nothing in the listing.

Order: ipvsadm sorts services by fwmark, family, protocol, address, port (ipvs_cmp_services
in libipvs.c), and real servers by family, address, port; its address compare overflows for
addresses more than 2^31 apart, so its own order cannot be reproduced and no parser relies on
it. This sorts by what that comparator means.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address

# include/uapi/linux/ip_vs.h
SVC_F_PERSISTENT = 0x1
SVC_F_ONEPACKET = 0x4
SVC_F_SCHED1 = 0x8
SVC_F_SCHED2 = 0x10
SVC_F_SCHED3 = 0x20
# ipvsadm.c print_sched_flags(): the names of SCHED1..3 for sh and mh, and for the others.
_SCHED_FLAG_NAMES = {
    "sh": ("sh-fallback", "sh-port", "flag-3"),
    "mh": ("mh-fallback", "mh-port", "flag-3"),
}
_GENERIC_FLAG_NAMES = ("flag-1", "flag-2", "flag-3")
_SCHED_BITS = (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3)
# IP_VS_CONN_F_FWD_MASK values, as ipvsadm's fwd_name() names them.
FORWARD_NAMES = ("Masq", "Local", "Tunnel", "Route")
_PROTOCOL_NAMES = {
    socket.IPPROTO_TCP: "TCP",
    socket.IPPROTO_UDP: "UDP",
    socket.IPPROTO_SCTP: "SCTP",
}
_IPV4_HOST_MASK = "255.255.255.255"
_IPV6_HOST_PREFIX = 128

TITLE = (
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
)


@dataclass(frozen=True, slots=True)
class IpvsDest:
    """One real server as IPVS_CMD_ATTR_DEST holds it."""

    address: str
    port: int
    fwd_method: int  # IPVS_DEST_ATTR_FWD_METHOD & 7
    weight: int
    active_conns: int
    inact_conns: int


@dataclass(frozen=True, slots=True)
class IpvsService:
    """One virtual service as IPVS_CMD_ATTR_SERVICE holds it: by address, or by fwmark (then
    protocol, address and port are None)."""

    af: int
    protocol: int | None
    address: str | None
    port: int | None
    fwmark: int | None
    scheduler: str
    flags: int
    timeout: int
    netmask: str | int  # IPv4: dotted mask; IPv6: prefix length
    pe_name: str | None = None
    dests: tuple[IpvsDest, ...] = field(default=())


def host_port(address: str, port: int) -> str:
    """`10.96.0.1:443`, or `[fd00::1]:443` as inet_ntop compresses it."""
    parsed = ip_address(address)
    return f"[{parsed}]:{port}" if parsed.version == 6 else f"{parsed}:{port}"


def render_list(version: int, table_size: int, services: list[IpvsService]) -> Iterator[str]:
    """`ipvsadm -Ln --exact`, line by line: the version line, the titles, each service."""
    major, minor, patch = (version >> 16) & 0xFF, (version >> 8) & 0xFF, version & 0xFF
    yield f"IP Virtual Server version {major}.{minor}.{patch} (size={table_size})\n"
    yield TITLE
    for service in sorted(services, key=_service_order):
        yield service_line(service)
        for dest in sorted(service.dests, key=_dest_order):
            yield dest_line(dest)


def render_timeouts(tcp: int, tcp_fin: int, udp: int) -> str:
    """`ipvsadm -L --timeout`."""
    return f"Timeout (tcp tcpfin udp): {tcp} {tcp_fin} {udp}\n"


def service_line(service: IpvsService) -> str:
    """print_service_entry() without stats: name, scheduler, flags, persistence, ops."""
    if service.fwmark:
        name = f"FWM  {service.fwmark}" + (" IPv6" if service.af == socket.AF_INET6 else "")
    else:
        if service.protocol is None or service.address is None or service.port is None:
            raise ValueError("a service without fwmark needs protocol, address and port")
        protocol = _PROTOCOL_NAMES.get(service.protocol)
        if protocol is None:
            raise ValueError(f"protocol {service.protocol} is none IPVS serves (TCP, UDP, SCTP)")
        name = f"{protocol:<4} {host_port(service.address, service.port)}"
    words = [name, service.scheduler]
    flag_names = _SCHED_FLAG_NAMES.get(service.scheduler, _GENERIC_FLAG_NAMES)
    sched_flags = [n for bit, n in zip(_SCHED_BITS, flag_names, strict=True) if service.flags & bit]
    if sched_flags:
        words.append(f"({','.join(sched_flags)})")
    if service.flags & SVC_F_PERSISTENT:
        words.append(f"persistent {service.timeout}")
        mask = _mask(service)
        if mask is not None:
            words.append(f"mask {mask}")
        if service.pe_name:
            words.append(f"pe {service.pe_name}")
    if service.flags & SVC_F_ONEPACKET:
        words.append("ops")
    return " ".join(words) + "\n"


def _mask(service: IpvsService) -> str | None:
    """The netmask ipvsadm prints: only where it is not the host mask of the family."""
    if service.af == socket.AF_INET6:
        return None if int(service.netmask) == _IPV6_HOST_PREFIX else str(int(service.netmask))
    return None if str(service.netmask) == _IPV4_HOST_MASK else str(service.netmask)


def dest_line(dest: IpvsDest) -> str:
    """`  -> %-28s %-7s %-6d %-10u %-10u`, trailing blanks and all."""
    if not 0 <= dest.fwd_method < len(FORWARD_NAMES):
        raise ValueError(f"forward method {dest.fwd_method} is none ipvsadm names")
    forward = FORWARD_NAMES[dest.fwd_method]
    name = host_port(dest.address, dest.port)
    return (
        f"  -> {name:<28} {forward:<7} {dest.weight:<6} "
        f"{dest.active_conns:<10} {dest.inact_conns:<10}\n"
    )


def _address_key(address: str | None) -> tuple[int, int]:
    if address is None:
        return (0, 0)
    parsed = ip_address(address)
    return (parsed.version, int(parsed))


def _service_order(service: IpvsService) -> tuple[int, int, int, tuple[int, int], int]:
    return (
        service.fwmark or 0,
        service.af,
        service.protocol or 0,
        _address_key(service.address),
        service.port or 0,
    )


def _dest_order(dest: IpvsDest) -> tuple[tuple[int, int], int]:
    return (_address_key(dest.address), dest.port)
