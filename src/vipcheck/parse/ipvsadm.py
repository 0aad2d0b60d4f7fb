"""Read `ipvsadm -Ln`, `-L --timeout` and `-Lnc` output as printed or as people paste it."""

from __future__ import annotations

import enum
import functools
import re
import shlex
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from vipcheck.model.node import (
    Connection,
    FwdMethod,
    HostPort,
    IpvsTable,
    IpvsTimeouts,
    L4Protocol,
    RealServer,
    VirtualService,
    VirtualServiceKey,
)
from vipcheck.parse import ParseError
from vipcheck.untrusted import parse_address

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


# A line naming ipvsadm (or /proc/net/ip_vs*, or `ip addr`/`ip link`) before any output is the
# command that was run:
# `sudo ipvsadm -ln | grep 30530`, `ansible all -b -a 'ipvsadm -Ln -t VIP:PORT'`, a shell loop.
_COMMAND = re.compile(
    r"(?:^|[\s'\"/;|(`])(?:ipvsadm(?:-save)?(?=[\s'\";|`)]|$)"
    r"|(?:cat\s+|dd\s+(?:\S+\s+)*if=)/proc/net/ip_vs"
    r"|ip(?:\s+-\S+)*\s+(?:a|addr|address|l|link)\b)"
)
# Options of ipvsadm that list one service, and tools that cut a listing when piped into.
_ONE_SERVICE = frozenset(
    {"-t", "-u", "-f", "--tcp-service", "--udp-service", "--sctp-service", "--fwmark-service"}
)
_CUTTERS = frozenset({"grep", "egrep", "fgrep", "rg", "head", "tail", "awk", "sed", "cut"})
_SEPARATORS = frozenset({"|", "||", ";", "&&", "&"})


@dataclass(slots=True)
class Paste:
    """What a pasted file holds: its output lines, the command lines around them, and gaps."""

    lines: list[tuple[int, str]] = field(default_factory=list)
    commands: list[tuple[int, str]] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)  # elisions (`...`, grep's `--`) within output


def _maybe_prompt(stripped: str) -> bool:
    """Whether the prompt pattern could match: it needs a `#`, `$` or `%` (a cheap test first)."""
    return "#" in stripped or "$" in stripped or "%" in stripped


def read_paste(text: str, source: str) -> Paste:
    """Output lines, skipping the prompts, commands, banners and gaps of pastes, which it keeps."""
    paste = Paste()
    banner_host: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped in _ELISION:
            if paste.lines:
                paste.gaps.append(number)
            continue
        prompt = _PROMPT.match(stripped) if _maybe_prompt(stripped) else None
        if prompt is not None:
            if stripped[prompt.end() :].strip():
                paste.commands.append((number, stripped[prompt.end() :].strip()))
            continue
        if not paste.lines and _COMMAND.search(stripped):
            paste.commands.append((number, stripped))
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
        paste.lines.append((number, line.rstrip()))
    return paste


def significant_lines(text: str, source: str) -> Iterator[tuple[int, str]]:
    """Yields (line number, line) for output lines, skipping the prompts and gaps of pastes."""
    yield from read_paste(text, source).lines


def _command_words(command: str) -> list[str]:
    """A command line's words, quoted arguments (`-a 'ipvsadm -Ln'`) split again, pipes apart."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # an unbalanced quote in a paste
        words = command.replace("|", " | ").replace(";", " ; ").split()
    flat: list[str] = []
    for word in words:
        flat.extend(_command_words(word) if " " in word.strip() else [word])
    return flat


def _lists_ipvs(word: str) -> bool:
    """ipvsadm (any path), ipvsadm-save, or a /proc/net/ip_vs file (dd's `if=` too)."""
    return word.rsplit("/", 1)[-1] in ("ipvsadm", "ipvsadm-save") or word.removeprefix(
        "if="
    ).startswith("/proc/net/ip_vs")


def paste_partial(paste: Paste, version_seen: bool) -> tuple[str | None, bool]:
    """Why a paste shows only part of the table, and whether its services' real servers are whole.

    A cut (grep, head) in the command line, or a gap without the version line, may drop any line;
    `-t VIP:PORT` lists one whole service.
    """
    for number, command in paste.commands:
        words = _command_words(command)
        starts = [i for i, word in enumerate(words) if _lists_ipvs(word)]
        if not starts:
            continue
        after = words[starts[0] + 1 :]
        for position, word in enumerate(after[:-1]):
            if word == "|" and after[position + 1] in _CUTTERS:
                cut = " ".join(after[position + 1 :])
                return f"cut by `{cut}` in the command on line {number}", False
        arguments = after[: next((i for i, w in enumerate(after) if w in _SEPARATORS), None)]
        for word in arguments:
            one_service = word in _ONE_SERVICE or (
                re.fullmatch(r"-[A-Za-z]+", word) is not None and bool(set(word[1:]) & set("tuf"))
            )
            if one_service:
                return f"one service listed by `{command}` on line {number}", True
    if not version_seen and paste.gaps:
        return f"no version line and a gap at line {paste.gaps[0]}", False
    return None, True


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
    which then share one HostPort (and one address object) across nodes. No zone: the pattern
    has no `%`, and parse_address would refuse one."""
    match = _HOST_PORT.fullmatch(token)
    if match is None:
        return None
    return HostPort(parse_address(match["v6"] or match["v4"]), int(match["port"]))


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


# A built service's line, fwmark, family, options and real servers' lines (PendingService).
_BuiltKey = tuple[
    str,
    int | None,
    socket.AddressFamily,
    str | None,
    int | None,
    str | None,
    str | None,
    tuple[str, ...],
    tuple[str, ...],
]


class SharedServices:
    """The services built from one snapshot's tables, shared by the nodes that list the same.

    Nodes list the same services (a ClusterIP's on every node, with the same real servers), so
    one snapshot's `ipvsadm -Ln` tables share them rather than build and validate each again per
    node. One is made per snapshot's facts (vipcheck.facts), never kept across snapshots. Keyed
    by the lines (strings hash once), and shared only when its real servers are equal too (the
    same objects, mostly: _plain_real_server shares them), so a shared service equals, field for
    field, the one it stands for.

    What is kept is two tables' worth: the services of the table being built and of the one
    before it. A service every node lists is carried on from table to table; one that a single
    node lists (a NodePort on the node's own address, at 1,000 nodes a thousand such sets) goes
    with the next table, so what is kept does not grow with the nodes.
    """

    def __init__(self) -> None:
        self._previous: dict[_BuiltKey, VirtualService] = {}
        self._current: dict[_BuiltKey, VirtualService] = {}

    def build(self, pending: PendingService, source: str) -> VirtualService:
        """The service built before from the same line, options and real servers, or a new one."""
        key = pending.shared_key()
        built = self._current.get(key) or self._previous.get(key)
        if built is None or built.real_servers != tuple(pending.real_servers):
            built = pending.build(source)
        self._current[key] = built
        return built

    def table_done(self) -> None:
        """The table being built is whole: it becomes the one before the next."""
        self._previous, self._current = self._current, {}


@dataclass(slots=True)
class PendingService:
    """A service line waiting for its real-server lines (shared with the procfs parser)."""

    number: int
    raw: str
    protocol: L4Protocol | None
    host_port: HostPort | None
    fwmark: int | None
    af: socket.AddressFamily
    scheduler: str | None
    persistent_timeout: int | None = None
    netmask: str | None = None
    pe_name: str | None = None
    flags: list[str] = field(default_factory=list)
    real_servers: list[RealServer] = field(default_factory=list)

    def shared_key(self) -> _BuiltKey:
        """What the built service is made of, as lines and options, for SharedServices."""
        return (
            self.raw,
            self.fwmark,
            self.af,
            self.scheduler,
            self.persistent_timeout,
            self.netmask,
            self.pe_name,
            tuple(self.flags),
            tuple(server.raw for server in self.real_servers),
        )

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


def build_services(
    pending: list[PendingService], source: str, shared: SharedServices | None = None
) -> tuple[VirtualService, ...]:
    """Freezes the services, refusing one listed twice: the sign of two listings pasted together.

    shared: share services with the tables of the same snapshot built before.
    """
    first_line: dict[VirtualServiceKey, int] = {}
    services = []
    for item in pending:
        service = item.build(source) if shared is None else shared.build(item, source)
        first = first_line.setdefault(service.key, item.number)
        if first != item.number:
            raise ParseError(
                source,
                item.number,
                f"{service.name} is listed twice (first on line {first}): "
                "two listings pasted together? give one node's output per file",
            )
        services.append(service)
    if shared is not None:
        shared.table_done()
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
            protocol=L4Protocol(words[0]),
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


@functools.lru_cache(maxsize=1 << 16)
def _plain_real_server(line: str) -> RealServer | None:
    """The common line, `-> ADDR:PORT Masq 1 0 5` with plain numbers, without the general path
    (a 100-node table is millions of them); None sends anything else down the general path.

    Cached by line: nodes list the same real servers, idle ones with the same `0 0` counters,
    so identical lines across nodes become one (immutable) RealServer. Room for one node's
    lines at 12,500 Service ports, the node judged before it still in it; more only fills with
    other nodes' busy lines, in every judging process (issue 22: 1,000 nodes).
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


def parse_ipvsadm_list(text: str, source: str, shared: SharedServices | None = None) -> IpvsTable:
    """The table from `ipvsadm -Ln` in any list format, or `ipvsadm -S -n`, as printed or pasted.

    Pastes of two nodes are refused; a paste showing only part of the table is marked partial.
    shared: the services of the snapshot's other nodes, to share (SharedServices).
    """
    version: tuple[str, int] | None = None
    layout = _Layout.UNKNOWN
    services: list[PendingService] = []
    rules: dict[VirtualServiceKey, PendingService] = {}
    paste = read_paste(text, source)
    saw_output = False
    for number, line in paste.lines:
        saw_output = True
        stripped = line.strip()
        words = stripped.split()
        if words[0] in ("-A", "-a"):
            _rule_line(number, words, source, services, rules)
            continue
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
    partial, real_servers_complete = paste_partial(paste, version is not None)
    return IpvsTable(
        version=version[0] if version else None,
        conn_table_size=version[1] if version else None,
        services=build_services(services, source, shared),
        partial=partial,
        real_servers_complete=real_servers_complete,
    )


_RULE_HINT = "use `ipvsadm -S -n` (numeric): without -n, names replace addresses and ports"
_RULE_PROTOCOLS = {"-t": L4Protocol.TCP, "-u": L4Protocol.UDP, "--sctp-service": L4Protocol.SCTP}
_RULE_FORWARD = {"-m": FwdMethod.MASQ, "-i": FwdMethod.TUNNEL, "-g": FwdMethod.ROUTE}
# Real-server options of `ipvsadm -S` taking a value, and flags, that the model does not keep.
_RULE_IGNORED_VALUES = frozenset({"-x", "-y", "--tun-type", "--tun-port"})
_RULE_IGNORED_FLAGS = frozenset({"--tun-nocsum", "--tun-csum", "--tun-remcsum"})


def _rule_service(number: int, words: list[str], source: str) -> tuple[PendingService, list[str]]:
    """`-t ADDR:PORT`, `-f MARK [-6]` after -A/-a: the service and the words after it."""
    if len(words) < 2:
        raise ParseError(source, number, f"expected a service after {words[0]}")
    option, value, rest = words[0], words[1], words[2:]
    line = " ".join(words)
    if option in _RULE_PROTOCOLS:
        host_port = parse_host_port(value, source, number, _RULE_HINT)
        af = socket.AF_INET6 if host_port.address.version == 6 else socket.AF_INET
        return PendingService(
            number, line, _RULE_PROTOCOLS[option], host_port, None, af, None
        ), rest
    if option == "-f" and value.isdigit():
        ipv6 = rest[:1] == ["-6"]
        af = socket.AF_INET6 if ipv6 else socket.AF_INET
        return PendingService(number, line, None, None, int(value), af, None), rest[ipv6:]
    raise ParseError(
        source, number, f"expected -t/-u/--sctp-service ADDR:PORT or -f MARK, got {option!r}"
    )


def _rule_line(
    number: int,
    words: list[str],
    source: str,
    services: list[PendingService],
    rules: dict[VirtualServiceKey, PendingService],
) -> None:
    """One line of `ipvsadm -S -n`: `-A SERVICE -s SCHED ...` or `-a SERVICE -r RS -m -w N`."""
    if len(words) < 3:
        raise ParseError(source, number, f"expected a service after {words[0]}")
    service, rest = _rule_service(number, words[1:], source)
    service.raw = " ".join(words)
    key = service.build(source).key
    if words[0] == "-A":
        if key in rules:
            raise ParseError(source, number, f"{service.build(source).name} is added twice")
        _rule_service_options(service, iter(rest), source, number)
        rules[key] = service
        services.append(service)
        return
    owner = rules.get(key)
    if owner is None:
        raise ParseError(
            source, number, f"a real server of {service.build(source).name}, not added by -A before"
        )
    owner.real_servers.append(_rule_real_server(iter(rest), source, number, " ".join(words)))


def _rule_service_options(
    service: PendingService, options: Iterator[str], source: str, number: int
) -> None:
    """`-s SCHED [-p TIMEOUT [-M MASK]] [--pe NAME] [-o] [-b FLAGS]` of `ipvsadm -A`."""
    for option in options:
        if option == "-s":
            service.scheduler = next(options, None)
        elif option == "-p":
            timeout = _value(option, options, source, number)
            service.persistent_timeout = _integer(timeout, "-p", source, number)
        elif option == "-M":
            service.netmask = next(options, None)
        elif option in ("--pe", "pe"):  # ipvsadm <= 1.26 printed ` pe NAME` and ` ops` bare
            service.pe_name = next(options, None)
        elif option in ("-o", "ops"):
            service.flags.append("ops")
        elif option == "-b":
            service.flags.extend(_value(option, options, source, number).split(","))
        else:
            raise ParseError(source, number, f"unknown option {option!r} of `ipvsadm -A`")


def _rule_real_server(options: Iterator[str], source: str, number: int, raw: str) -> RealServer:
    """`-r ADDR:PORT -m|-i|-g -w WEIGHT [-x U] [-y L] [--tun-...]` of `ipvsadm -a`."""
    address: HostPort | None = None
    forward, weight = None, None
    for option in options:
        if option == "-r":
            address = parse_host_port(
                _value(option, options, source, number), source, number, _RULE_HINT
            )
        elif option in _RULE_FORWARD:
            forward = _RULE_FORWARD[option]
        elif option == "-w":
            weight = _integer(_value(option, options, source, number), "-w", source, number)
        elif option in _RULE_IGNORED_VALUES:
            _value(option, options, source, number)
        elif option not in _RULE_IGNORED_FLAGS:
            raise ParseError(source, number, f"unknown option {option!r} of `ipvsadm -a`")
    if address is None:
        raise ParseError(source, number, "expected -r ADDR:PORT in `ipvsadm -a`")
    return RealServer(address.address, address.port, forward, weight, None, None, raw=raw)


def _value(option: str, options: Iterator[str], source: str, number: int) -> str:
    value = next(options, None)
    if value is None:
        raise ParseError(source, number, f"expected a value after {option}")
    return value


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
