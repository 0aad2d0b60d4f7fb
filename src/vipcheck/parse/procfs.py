"""Read /proc/net/ip_vs and /proc/net/ip_vs_conn, which need no privileges and no ipvsadm."""

from __future__ import annotations

import functools
import re
import socket
from ipaddress import IPv4Address

from vipcheck.model.node import (
    Connection,
    FwdMethod,
    HostPort,
    IPAddress,
    IpvsTable,
    L4Protocol,
    RealServer,
)
from vipcheck.parse import ParseError
from vipcheck.parse.ipvsadm import (
    CONNECTION_PROTOCOL,
    VERSION_LINE,
    PendingService,
    build_services,
    paste_partial,
    read_paste,
    significant_lines,
)
from vipcheck.untrusted import parse_address

_HEX_HOST_PORT = re.compile(
    r"(?:(?P<v4>[0-9A-Fa-f]{8})|\[(?P<v6>[0-9A-Fa-f:]+)\]):(?P<port>[0-9A-Fa-f]{4})"
)
_HEX_ADDRESS = re.compile(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f:]+:[0-9A-Fa-f:]+")
_HEX_PORT = re.compile(r"[0-9A-Fa-f]{4}")
# dd's report on stderr (GNU, busybox): `393+1 records in`, `6298 bytes (6.3 kB) copied, ...`.
_DD_STATUS = re.compile(r"\d+\+\d+ records (?:in|out)|\d+ bytes? .*copied.*")
_ALL_ONES_V4 = 0xFFFFFFFF


def _address(text: str, source: str, line: int) -> IPAddress:
    """`0A600014` (IPv4, host order) or `fd00:0000:...` (%pI6, uncompressed)."""
    try:
        return _hex_address(text)
    except ValueError as error:
        raise ParseError(source, line, f"{text!r} is not an address: {error}") from None


@functools.lru_cache(maxsize=1 << 16)
def _hex_address(text: str) -> IPAddress:
    """Cached: a connection table names the same VIPs and pods over and over."""
    return IPv4Address(int(text, 16)) if ":" not in text else parse_address(text)


def _host_port(token: str, source: str, line: int) -> HostPort:
    """`0A600014:18EB` or `[fd00:...:0001]:0050`."""
    match = _HEX_HOST_PORT.fullmatch(token)
    if match is None:
        raise ParseError(
            source, line, f"expected hex address:port like 0A600014:18EB, got {token!r}"
        )
    return HostPort(_address(match["v4"] or match["v6"], source, line), int(match["port"], 16))


def _netmask(mask: int, af: socket.AddressFamily) -> str | None:
    """The mask as ipvsadm prints it: dotted for IPv4, prefix length for IPv6, None if host-wide."""
    if af == socket.AF_INET:
        return None if mask == _ALL_ONES_V4 else str(IPv4Address(mask))
    # The kernel keeps an IPv6 prefix length in host order and prints it through ntohl(),
    # so little-endian hosts show /128 as 80000000.
    prefix = mask if mask <= 128 else int.from_bytes(mask.to_bytes(4, "big"), "little")
    return None if prefix == 128 else str(prefix)


def _service(number: int, line: str, source: str) -> tuple[PendingService, int | None]:
    """`TCP  0A600014:18EB rr [ops ][persistent N MASK]`, with the raw mask to resolve later."""
    words = line.split()
    if words[0] == "FWM":
        if len(words) < 3 or not re.fullmatch(r"[0-9A-Fa-f]{8}", words[1]):
            raise ParseError(source, number, f"expected `FWM  %08X sched`, got {line.strip()!r}")
        # The family of a fwmark service is not printed; it is settled from its real servers.
        service = PendingService(number, line, None, None, int(words[1], 16), socket.AF_INET, None)
    else:
        if len(words) < 3:
            raise ParseError(source, number, f"expected `PROTO  ADDR:PORT sched`, got {line!r}")
        host_port = _host_port(words[1], source, number)
        af = socket.AF_INET6 if host_port.address.version == 6 else socket.AF_INET
        service = PendingService(number, line, L4Protocol(words[0]), host_port, None, af, None)
    service.scheduler = words[2]
    rest = words[3:]
    if rest[:1] == ["ops"]:
        service.flags.append("ops")
        rest = rest[1:]
    mask = None
    if rest:
        persistent = len(rest) == 3 and rest[0] == "persistent" and rest[1].isdigit()
        if not persistent or not re.fullmatch(r"[0-9A-Fa-f]{8}", rest[2]):
            raise ParseError(
                source, number, f"expected `persistent N MASK`, got {' '.join(rest)!r}"
            )
        service.persistent_timeout = int(rest[1])
        mask = int(rest[2], 16)
    return service, mask


def _real_server(number: int, line: str, source: str) -> RealServer:
    """`  -> 0AF4030A:18EB      Masq    1      0          5`."""
    words = line.split()[1:]
    if len(words) != 5 or words[1] not in {method.value for method in FwdMethod}:
        raise ParseError(
            source, number, f"expected `-> ADDR:PORT Forward Weight Active InAct`, got {line!r}"
        )
    host_port = _host_port(words[0], source, number)
    try:
        weight, active, inactive = (int(word) for word in words[2:])
    except ValueError:
        raise ParseError(
            source, number, f"expected integer columns, got {line.strip()!r}"
        ) from None
    return RealServer(
        address=host_port.address,
        port=host_port.port,
        fwd_method=FwdMethod(words[1]),
        weight=weight,
        active_conns=active,
        inact_conns=inactive,
        raw=line,
    )


def parse_proc_ip_vs(text: str, source: str) -> IpvsTable:
    """The table from /proc/net/ip_vs (hex addresses, kernel hash order, no flags or stats)."""
    version: tuple[str, int] | None = None
    services: list[tuple[PendingService, int | None]] = []
    saw_output = False
    paste = read_paste(text, source)
    for number, line in paste.lines:
        saw_output = True
        stripped = line.strip()
        words = stripped.split()
        version_match = VERSION_LINE.fullmatch(stripped)
        if version_match:
            if version is not None or services:
                raise ParseError(
                    source,
                    number,
                    "a second /proc/net/ip_vs listing starts here: give one node's file per node",
                )
            version = (version_match["version"], int(version_match["size"]))
        elif stripped.startswith(
            ("Prot LocalAddress:Port", "-> RemoteAddress:Port")
        ) or _DD_STATUS.fullmatch(stripped):
            continue  # the titles; what `dd if=/proc/net/ip_vs bs=16` says on stderr, pasted
        elif words[0] == "->":
            if not services:
                raise ParseError(source, number, "a real-server line before any service line")
            services[-1][0].real_servers.append(_real_server(number, line, source))
        elif words[0] in {"TCP", "UDP", "SCTP", "FWM"}:
            services.append(_service(number, line, source))
        else:
            raise ParseError(source, number, f"not a line of /proc/net/ip_vs: {stripped!r}")
    if not saw_output:
        raise ParseError(source, None, "empty: expected the contents of /proc/net/ip_vs")
    for service, mask in services:
        if service.fwmark is not None and any(
            rs.address.version == 6 and rs.fwd_method is not FwdMethod.TUNNEL
            for rs in service.real_servers
        ):
            service.af = socket.AF_INET6  # only tunnels may cross families
        if mask is not None:
            service.netmask = _netmask(mask, service.af)
    partial, real_servers_complete = paste_partial(paste, version is not None)
    return IpvsTable(
        version=version[0] if version else None,
        conn_table_size=version[1] if version else None,
        services=build_services([service for service, _ in services], source),
        partial=partial,
        real_servers_complete=real_servers_complete,
    )


def parse_proc_ip_vs_conn(text: str, source: str) -> tuple[Connection, ...]:
    """The entries of /proc/net/ip_vs_conn: hex endpoints, expiry in seconds, optional pe data."""
    connections: list[Connection] = []
    saw_output = False
    for number, line in significant_lines(text, source):
        saw_output = True
        words = line.split()
        if words[0] == "Pro" and words[1:2] == ["FromIP"]:
            continue
        if len(words) not in (9, 11):
            raise ParseError(
                source,
                number,
                "expected `Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires [PEName PEData]`, "
                f"got {line.strip()!r}",
            )
        if not CONNECTION_PROTOCOL.fullmatch(words[0]):
            raise ParseError(source, number, f"unknown protocol {words[0]!r} in {line.strip()!r}")
        endpoints = []
        for address, port in zip(words[1:7:2], words[2:7:2], strict=True):
            if not _HEX_ADDRESS.fullmatch(address) or not _HEX_PORT.fullmatch(port):
                raise ParseError(
                    source, number, f"expected hex address and port, got {address!r} {port!r}"
                )
            endpoints.append(HostPort(_address(address, source, number), int(port, 16)))
        if not words[8].isdigit():
            raise ParseError(source, number, f"expected Expires in seconds, got {words[8]!r}")
        connections.append(
            Connection(
                protocol=words[0],
                client=endpoints[0],
                virtual=endpoints[1],
                destination=endpoints[2],
                state_name=words[7],
                expires_s=int(words[8]),
                pe_name=words[9] if len(words) == 11 else None,
                pe_data=words[10] if len(words) == 11 else None,
                raw=line,
            )
        )
    if not saw_output:
        raise ParseError(source, None, "empty: expected the contents of /proc/net/ip_vs_conn")
    return tuple(connections)
