"""Read `ipvsadm -Ln`, `-L --timeout` and `-Lnc` output as printed or as people paste it."""

from __future__ import annotations

import enum
import functools
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address

from vipcheck.model.node import (
    Connection,
    FwdMethod,
    HostPort,
    IpvsTable,
    IpvsTimeouts,
    Protocol,
    RealServer,
    VirtualService,
    VirtualServiceKey,
)
from vipcheck.parse import ParseError

# `$ ipvsadm -Ln`, `# ...`, `root@x:~# ...`, `[root@x ~]# ...`, `user@x:~$ ...`, zsh `% ...`.
_PROMPT = re.compile(r"(?:\[[^\]]*\]|[\w.@:~/-]+)?[#$%](?:\s|$)")
_ANSIBLE_BANNER = re.compile(r"(?P<host>\S+) \| [A-Z]+(?: \| rc=\d+)? >>")
_ELISION = frozenset({"...", "\u2026", "[...]", "--"})
VERSION_LINE = re.compile(r"IP Virtual Server version (?P<version>\S+) \(size=(?P<size>\d+)\)")
_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>\d{1,3}(?:\.\d{1,3}){3})):(?P<port>\d{1,5})"
)
_INTEGER = re.compile(r"-?\d+")
_NUMBER = re.compile(r"\d+[KMGT]?")  # print_largenum() abbreviates unless --exact
_SCHEDULER = re.compile(r"[a-z][a-z0-9_]*")
_TIMEOUT = re.compile(r"Timeout \(tcp tcpfin udp\): (?P<tcp>\d+) (?P<fin>\d+) (?P<udp>\d+)")
_EXPIRE = re.compile(r"(?P<minutes>\d+):(?P<seconds>[0-5]\d)")
CONNECTION_PROTOCOL = re.compile(r"TCP|UDP|SCTP|IP|ICMP|ICMPv6|IP_\d+")  # ip_vs_proto_name()
_FWD_NAMES = frozenset(method.value for method in FwdMethod)
_FWD_BY_NAME = {method.value: method for method in FwdMethod}
_LIST_HINT = "use `ipvsadm -Ln` (numeric): without -n, names replace addresses and ports"
_CONN_HINT = "use `ipvsadm -Lnc` (numeric): without -n, names replace addresses and ports"


def _maybe_prompt(stripped: str) -> bool:
    """Whether the prompt pattern could match: it needs a `#`, `$` or `%` (a cheap test first)."""
    return "#" in stripped or "$" in stripped or "%" in stripped


def significant_lines(text: str, source: str) -> Iterator[tuple[int, str]]:
    """Yields (line number, line) for output lines, skipping the prompts and gaps of pastes."""
    banner_host: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if (
            not stripped
            or stripped in _ELISION
            or (_maybe_prompt(stripped) and _PROMPT.match(stripped))
        ):
            continue
        banner = _ANSIBLE_BANNER.fullmatch(stripped) if " | " in stripped else None
        if banner:
            if banner_host is not None and banner["host"] != banner_host:
                raise ParseError(
                    source,
                    number,
                    f"output of {banner_host} and {banner['host']} pasted together: "
                    "give one node's output per file",
                )
            banner_host = banner["host"]
            continue
        yield number, line.rstrip()


def parse_host_port(token: str, source: str, line: int, hint: str) -> HostPort:
    """`10.96.0.20:6379` or `[fd00::1]:80`; anything else is non-numeric output, refused."""
    try:
        host_port = _numeric_host_port(token)
    except ValueError as error:
        raise ParseError(source, line, f"{token!r}: {error}") from None
    if host_port is None:
        raise ParseError(source, line, f"{token!r} is not a numeric address:port; {hint}")
    if host_port.port > 65535:
        raise ParseError(source, line, f"{token!r}: port {host_port.port} is out of range")
    return host_port


@functools.lru_cache(maxsize=1 << 17)
def _numeric_host_port(token: str) -> HostPort | None:
    """The address:port a token names, or None; cached, as every node lists the same endpoints,
    which then share one HostPort (and one address object) across nodes."""
    match = _HOST_PORT.fullmatch(token)
    if match is None:
        return None
    return HostPort(ip_address(match["v6"] or match["v4"]), int(match["port"]))


class _Layout(enum.Enum):
    """Which columns follow an address, set by the list option and announced by the title lines."""

    UNKNOWN = "no title line seen"
    NORMAL = "Forward Weight ActiveConn InActConn"
    COUNTERS = "--stats or --rate counters"
    THRESHOLDS = "Uthreshold Lthreshold ActiveConn InActConn"
    PERSISTENT_CONN = "Weight PersistConn ActiveConn InActConn"


_COLUMNS_NEEDED = {_Layout.NORMAL: 4, _Layout.THRESHOLDS: 4, _Layout.PERSISTENT_CONN: 4}


def _title_layout(words: list[str]) -> _Layout | None:
    """The layout a title line announces, or None when it names no columns (the 2nd of --stats)."""
    if "Forward" in words or "Scheduler" in words:
        return _Layout.NORMAL
    if "Conns" in words or "CPS" in words:
        return _Layout.COUNTERS
    if "Uthreshold" in words:
        return _Layout.THRESHOLDS
    if "PersistConn" in words:
        return _Layout.PERSISTENT_CONN
    return None


@dataclass(slots=True)
class PendingService:
    """A service line waiting for its real-server lines (shared with the procfs parser)."""

    number: int
    raw: str
    protocol: Protocol | None
    host_port: HostPort | None
    fwmark: int | None
    af: socket.AddressFamily
    scheduler: str | None
    persistent_timeout: int | None = None
    netmask: str | None = None
    pe_name: str | None = None
    flags: list[str] = field(default_factory=list)
    real_servers: list[RealServer] = field(default_factory=list)

    def build(self, source: str) -> VirtualService:
        """The frozen service; the model's checks (a real server twice) become ParseErrors."""
        try:
            return VirtualService(
                protocol=self.protocol,
                address=self.host_port.address if self.host_port else None,
                port=self.host_port.port if self.host_port else None,
                fwmark=self.fwmark,
                af=self.af,
                scheduler=self.scheduler,
                persistent_timeout=self.persistent_timeout,
                netmask=self.netmask,
                pe_name=self.pe_name,
                flags=tuple(self.flags),
                real_servers=tuple(self.real_servers),
                raw=self.raw,
            )
        except ValueError as error:
            raise ParseError(source, self.number, str(error)) from None


def build_services(pending: list[PendingService], source: str) -> tuple[VirtualService, ...]:
    """Freezes the services, refusing one listed twice: the sign of two listings pasted together."""
    first_line: dict[VirtualServiceKey, int] = {}
    services = []
    for item in pending:
        service = item.build(source)
        if service.key in first_line:
            raise ParseError(
                source,
                item.number,
                f"{service.name} is listed twice (first on line {first_line[service.key]}): "
                "two listings pasted together? give one node's output per file",
            )
        first_line[service.key] = item.number
        services.append(service)
    return tuple(services)


def _service_line(
    number: int, line: str, layout: _Layout, source: str
) -> tuple[PendingService, _Layout]:
    """Parses `TCP  10.96.0.20:6379 rr ...` or `FWM  42 IPv6 rr ...`, with the layout it implies."""
    words = line.split()
    if words[0] == "FWM":
        if len(words) < 2 or not words[1].isdigit():
            raise ParseError(
                source, number, f"expected a firewall mark after FWM: {line.strip()!r}"
            )
        ipv6 = len(words) > 2 and words[2] == "IPv6"
        service = PendingService(
            number=number,
            raw=line,
            protocol=None,
            host_port=None,
            fwmark=int(words[1]),
            af=socket.AF_INET6 if ipv6 else socket.AF_INET,
            scheduler=None,
        )
        rest = words[3:] if ipv6 else words[2:]
    else:
        if len(words) < 2:
            raise ParseError(source, number, f"expected an address after {words[0]}: {line!r}")
        host_port = parse_host_port(words[1], source, number, _LIST_HINT)
        service = PendingService(
            number=number,
            raw=line,
            protocol=Protocol(words[0]),
            host_port=host_port,
            fwmark=None,
            af=socket.AF_INET6 if host_port.address.version == 6 else socket.AF_INET,
            scheduler=None,
        )
        rest = words[2:]
    if layout is _Layout.COUNTERS or (
        layout is _Layout.UNKNOWN and rest and _NUMBER.fullmatch(rest[0])
    ):
        return service, _Layout.COUNTERS if layout is _Layout.UNKNOWN else layout
    if not rest or not _SCHEDULER.fullmatch(rest[0]):
        raise ParseError(source, number, f"expected a scheduler after {words[1]}: {line.strip()!r}")
    service.scheduler = rest[0]
    _service_options(service, rest[1:])
    return service, layout


def _service_options(service: PendingService, words: list[str]) -> None:
    """Reads `(sched-flags) persistent N mask M pe NAME ops`; anything else is an annotation."""
    position = 0
    while position < len(words):
        word = words[position]
        argument = words[position + 1] if position + 1 < len(words) else None
        if position == 0 and word.startswith("(") and word.endswith(")"):
            service.flags.extend(flag for flag in word[1:-1].split(",") if flag)
            position += 1
        elif word == "persistent" and argument is not None and argument.isdigit():
            service.persistent_timeout = int(argument)
            position += 2
        elif word == "mask" and argument is not None:
            service.netmask = argument
            position += 2
        elif word == "pe" and argument is not None:
            service.pe_name = argument
            position += 2
        elif word == "ops":
            service.flags.append("ops")
            position += 1
        else:
            return  # trailing annotation, e.g. `<<== removed`


def _integer(word: str, column: str, source: str, number: int) -> int:
    """One integer column, or a ParseError naming the column."""
    if word.isascii() and word.isdigit():
        return int(word)
    if not _INTEGER.fullmatch(word):
        raise ParseError(source, number, f"expected {column} to be an integer, got {word!r}")
    return int(word)


def _real_server(
    number: int, line: str, layout: _Layout, source: str, split: list[str] | None = None
) -> RealServer:
    """Parses `  -> 10.244.3.10:6379  Masq 1 0 5` in whichever layout the title announced."""
    if layout is _Layout.NORMAL:
        fast = _plain_real_server(line)
        if fast is not None:
            return fast
    words = (split or line.split())[1:]
    if not words:
        raise ParseError(source, number, "expected an address after `->`")
    host_port = parse_host_port(words[0], source, number, _LIST_HINT)
    columns = words[1:]
    if layout is _Layout.UNKNOWN:
        counters = bool(columns) and _NUMBER.fullmatch(columns[0]) is not None
        layout = _Layout.COUNTERS if counters else _Layout.NORMAL
    needed = _COLUMNS_NEEDED.get(layout, 1)
    if len(columns) < needed:
        raise ParseError(source, number, f"expected {layout.value} after {words[0]}: {line!r}")
    fwd_method = weight = active = inactive = None
    if layout is _Layout.NORMAL:
        if columns[0] not in _FWD_NAMES:
            raise ParseError(
                source, number, f"unknown forward method {columns[0]!r}, expected Masq/Local/..."
            )
        fwd_method = _FWD_BY_NAME[columns[0]]
        weight = _integer(columns[1], "Weight", source, number)
    elif layout is _Layout.PERSISTENT_CONN:
        weight = _integer(columns[0], "Weight", source, number)
    elif not _NUMBER.fullmatch(columns[0]):
        raise ParseError(source, number, f"expected a counter after {words[0]}, got {columns[0]!r}")
    if layout is not _Layout.COUNTERS:
        active = _integer(columns[2], "ActiveConn", source, number)
        inactive = _integer(columns[3], "InActConn", source, number)
    return RealServer(
        address=host_port.address,
        port=host_port.port,
        fwd_method=fwd_method,
        weight=weight,
        active_conns=active,
        inact_conns=inactive,
        raw=line,
    )


@functools.lru_cache(maxsize=1 << 18)
def _plain_real_server(line: str) -> RealServer | None:
    """The common line, `-> ADDR:PORT Masq 1 0 5` with plain numbers, without the general path
    (a 100-node table is millions of them); None sends anything else down the general path.

    Cached by line: nodes list the same real servers, idle ones with the same `0 0` counters,
    so identical lines across nodes become one (immutable) RealServer.
    """
    words = line.split()[1:]
    if len(words) != 5:
        return None
    host_port = _numeric_host_port(words[0])
    method = _FWD_BY_NAME.get(words[1])
    if host_port is None or method is None or host_port.port > 65535:
        return None
    weight, active, inactive = words[2], words[3], words[4]
    if not (weight.isdigit() and active.isdigit() and inactive.isdigit()):
        return None
    if not (weight.isascii() and active.isascii() and inactive.isascii()):
        return None
    return RealServer(
        address=host_port.address,
        port=host_port.port,
        fwd_method=method,
        weight=int(weight),
        active_conns=int(active),
        inact_conns=int(inactive),
        raw=line,
    )


def parse_ipvsadm_list(text: str, source: str) -> IpvsTable:
    """The table from `ipvsadm -Ln` in any list format, refusing pastes of two nodes."""
    version: tuple[str, int] | None = None
    layout = _Layout.UNKNOWN
    services: list[PendingService] = []
    saw_output = False
    for number, line in significant_lines(text, source):
        saw_output = True
        stripped = line.strip()
        words = stripped.split()
        version_match = VERSION_LINE.fullmatch(stripped) if stripped[0] == "I" else None
        if version_match:
            this = (version_match["version"], int(version_match["size"]))
            if version is not None and this != version:
                raise ParseError(
                    source,
                    number,
                    f"a second IPVS version header ({stripped!r}) differs from the first: "
                    "two nodes pasted together; give one node's output per file",
                )
            if services:
                raise ParseError(
                    source,
                    number,
                    "a second listing starts here: two nodes (or two runs) pasted together; "
                    "give one node's output per file",
                )
            version = this
        elif stripped.startswith("Prot LocalAddress:Port") or stripped.startswith(
            "-> RemoteAddress:Port"
        ):
            layout = _title_layout(words) or layout
        elif words[0] == "->":
            if not services:
                raise ParseError(source, number, "a real-server line before any service line")
            services[-1].real_servers.append(_real_server(number, line, layout, source, words))
        elif words[0] in {"TCP", "UDP", "SCTP", "FWM"}:
            service, layout = _service_line(number, line, layout, source)
            services.append(service)
        else:
            raise ParseError(source, number, f"not a line of `ipvsadm -Ln` output: {stripped!r}")
    if not saw_output:
        raise ParseError(source, None, "empty: expected the output of `ipvsadm -Ln`")
    return IpvsTable(
        version=version[0] if version else None,
        conn_table_size=version[1] if version else None,
        services=build_services(services, source),
    )


def parse_ipvsadm_timeout(text: str, source: str) -> IpvsTimeouts:
    """The tcp, tcpfin and udp timeouts from `ipvsadm -L --timeout`."""
    found: IpvsTimeouts | None = None
    for number, line in significant_lines(text, source):
        match = _TIMEOUT.fullmatch(line.strip())
        if match is None:
            raise ParseError(
                source, number, f"expected `Timeout (tcp tcpfin udp): N N N`, got {line.strip()!r}"
            )
        if found is not None:
            raise ParseError(
                source, number, "a second Timeout line: give one node's output per file"
            )
        found = IpvsTimeouts(
            tcp=int(match["tcp"]), tcp_fin=int(match["fin"]), udp=int(match["udp"])
        )
    if found is None:
        raise ParseError(source, None, "empty: expected the output of `ipvsadm -L --timeout`")
    return found


def parse_ipvsadm_connections(text: str, source: str) -> tuple[Connection, ...]:
    """The connection entries of `ipvsadm -Lnc`, with or without --persistent-conn columns."""
    connections: list[Connection] = []
    saw_output = False
    for number, line in significant_lines(text, source):
        saw_output = True
        stripped = line.strip()
        if stripped == "IPVS connection entries" or stripped.startswith("pro expire "):
            continue
        words = stripped.split()
        if len(words) not in (6, 8):
            raise ParseError(
                source,
                number,
                "expected `pro expire state source virtual destination [pe-name pe-data]`, "
                f"got {stripped!r}",
            )
        protocol, expire, state = words[:3]
        if not CONNECTION_PROTOCOL.fullmatch(protocol):
            raise ParseError(source, number, f"unknown protocol {protocol!r} in {stripped!r}")
        expire_match = _EXPIRE.fullmatch(expire)
        if expire_match is None:
            raise ParseError(source, number, f"expected expire as mm:ss, got {expire!r}")
        client, virtual, destination = (
            parse_host_port(word, source, number, _CONN_HINT) for word in words[3:6]
        )
        connections.append(
            Connection(
                protocol=protocol,
                client=client,
                virtual=virtual,
                destination=destination,
                state_name=state,
                expires_s=int(expire_match["minutes"]) * 60 + int(expire_match["seconds"]),
                pe_name=words[6] if len(words) == 8 else None,
                pe_data=words[7] if len(words) == 8 else None,
                raw=line,
            )
        )
    if not saw_output:
        raise ParseError(source, None, "empty: expected the output of `ipvsadm -Lnc`")
    return tuple(connections)
