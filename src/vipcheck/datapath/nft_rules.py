"""kube-proxy's nftables rules, each text read once into what the packet trace runs.

A rule is a run of tests (`ip daddr @cluster-ips`, `ct state new`, `fib daddr type local`),
statements that change the packet (`meta mark set meta mark | 0x00004000`) or change nothing
(`counter`, `update @affinity-X { ip saddr }`), and one terminal: a verdict, a jump or goto, a
verdict map, a numgen choice, a DNAT or a masquerade. `compiled(text)` reads a rule's text into
those parts once per text, however many packets and nodes run it: every node's table repeats
most rule texts, and a replay traces each of them thousands of times
(vipcheck.datapath.nft_trace, whose module docstring says what is interpreted and why).

The shapes are nft's listing (`meta mark set meta mark | 0x00004000`) and kube-proxy's input
(`mark set mark or 0x4000`), as kube-proxy's own test tracer reads them (`nftablesTracer` in
pkg/proxy/nftables/helpers_test.go, kubernetes/kubernetes@803d40a57714). Text the reader does not
know is kept as an Unreadable terminal: it fails the trace where a packet reaches it, as the rule
would if it were read as it runs, never a rule that does not match.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address, ip_network
from operator import attrgetter
from typing import Protocol, cast

from vipcheck.model.cluster import IPAddress
from vipcheck.model.nftables import NftElement
from vipcheck.model.node import HostPort


class Untraceable(Exception):
    """What the trace cannot interpret, why; the tracer names the rule (CannotTrace)."""


class End(StrEnum):
    """How running a rule or chain ended."""

    CONTINUE = "continue"  # fell off the end, or `return`: back to the caller
    ACCEPT = "accept"  # accept, or a NAT statement: this base chain is done
    DROP = "drop"
    REJECT = "reject"


class Fields(Protocol):
    """What the rules read of a packet."""

    @property
    def source(self) -> IPAddress: ...
    @property
    def destination(self) -> IPAddress: ...
    @property
    def protocol(self) -> str: ...  # nft's spelling: tcp, udp, sctp
    @property
    def port(self) -> int: ...
    @property
    def mark(self) -> int: ...
    @property
    def dnat(self) -> HostPort | None: ...


Value = str | IPAddress | int


class SetIndex:
    """A set's or map's elements by exact key, and those keyed by a prefix or range apart."""

    def __init__(self, elements: Iterable[NftElement]) -> None:
        self.exact: dict[tuple[Value, ...], NftElement] = {}
        self.ranges: list[NftElement] = []
        for element in elements:
            key = tuple(_exact(component) for component in element.key)
            if any(part is None for part in key):
                self.ranges.append(element)
            else:
                self.exact.setdefault(tuple(p for p in key if p is not None), element)

    def get(self, values: tuple[Value, ...]) -> NftElement | None:
        found = self.exact.get(values)
        return found if found is not None else _lookup(self.ranges, values)


class Tables(Protocol):
    """The table a test reads: its sets by name, and the node's local addresses."""

    local: frozenset[IPAddress]

    def index(self, name: str) -> SetIndex | None: ...
    def is_map(self, name: str) -> bool: ...


# --- tests -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reads:
    """What a test reads beyond the packet's protocol, port and mark, and the rule texts: the
    trace memo keeps such a test's result to check it again on another node."""

    set_name: str | None = None
    source: bool = False
    destination: bool = False
    local: bool = False


@dataclass(frozen=True, slots=True)
class StateTest:
    """A test on the packet alone (`ct state new`, `tcp dport 80`, a mark)."""

    test: Callable[[Fields], bool]
    reads: None = None

    def __call__(self, tables: Tables, state: Fields) -> bool:
        return self.test(state)


@dataclass(frozen=True, slots=True)
class SetTest:
    """`ip daddr @set` or `ip saddr . ip daddr . meta l4proto . th dport @set`."""

    set_name: str
    key: Callable[[Fields], tuple[Value, ...]]
    negated: bool
    reads: Reads

    def __call__(self, tables: Tables, state: Fields) -> bool:
        element = lookup(tables, self.set_name, self.key(state))
        return (element is None) if self.negated else (element is not None)


@dataclass(frozen=True, slots=True)
class AddressTest:
    """`ip saddr != 10.0.0.0/8` or `ip daddr { 10.96.0.0/12 }`."""

    use_source: bool
    ranges: tuple[tuple[IPAddress, IPAddress], ...]
    negated: bool
    reads: Reads

    def __call__(self, tables: Tables, state: Fields) -> bool:
        found = _in_ranges(state.source if self.use_source else state.destination, self.ranges)
        return not found if self.negated else found


@dataclass(frozen=True, slots=True)
class LocalTest:
    """`fib daddr type local`, and the kernel's own routing decision after prerouting."""

    use_source: bool
    negated: bool
    reads: Reads

    def __call__(self, tables: Tables, state: Fields) -> bool:
        found = (state.source if self.use_source else state.destination) in tables.local
        return not found if self.negated else found


IS_LOCAL = LocalTest(False, False, Reads(destination=True, local=True))
"""Whether the (rewritten) destination is one of the node's: input, or forward."""

Test = StateTest | SetTest | AddressTest | LocalTest


@dataclass(frozen=True, slots=True)
class MarkSet:
    """`meta mark set meta mark | 0x4000` (and `^`, `&`): a statement the rule path shows."""

    operator: str
    value: int

    def apply(self, mark: int) -> int:
        if self.operator in ("|", "or"):
            return mark | self.value
        if self.operator in ("^", "xor"):
            return mark ^ self.value
        return mark & self.value


# --- terminals ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerdictStatement:
    """accept, drop, reject or return."""

    end: End


@dataclass(frozen=True, slots=True)
class Jump:
    """jump or goto a chain."""

    goto: bool
    chain: str


@dataclass(frozen=True, slots=True)
class Dispatch:
    """`ip daddr . meta l4proto . th dport vmap @map`: the matching element's verdict runs."""

    map_name: str
    key: Callable[[Fields], tuple[Value, ...]]
    reads: Reads

    def __call__(self, tables: Tables, state: Fields) -> NftElement | None:
        element = lookup(tables, self.map_name, self.key(state))
        if not tables.is_map(self.map_name):
            raise Untraceable(f"{self.map_name!r} is a set, not a map")
        return element


@dataclass(frozen=True, slots=True)
class EveryBranch:
    """`numgen random mod N vmap { 0 : goto A, ... }`: every endpoint, not one at random."""

    branches: tuple[Terminal, ...]


@dataclass(frozen=True, slots=True)
class Dnat:
    """`dnat to IP:port`, or every target of `dnat to numgen random mod N map { ... }`."""

    targets: tuple[HostPort, ...]


@dataclass(frozen=True, slots=True)
class Masquerade:
    pass


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Text the trace cannot interpret: an error where a packet reaches it."""

    why: str


Terminal = VerdictStatement | Jump | Dispatch | EveryBranch | Dnat | Masquerade | Unreadable


@dataclass(frozen=True, slots=True)
class Compiled:
    """A rule as the trace runs it: tests and mark statements in order, then its terminal (None:
    the rule ends without one and the chain goes on)."""

    steps: tuple[Test | MarkSet, ...]
    terminal: Terminal | None


def lookup(tables: Tables, name: str, values: tuple[Value, ...]) -> NftElement | None:
    """The element of the named set or map the values match, if any."""
    index = tables.index(name)
    if index is None:
        raise Untraceable(f"no set or map {name!r} in the table")
    return index.get(values)


# --- reading a rule ----------------------------------------------------------------------------

_COMMENT = re.compile(r' ?comment "(?:[^"\\]|\\.)*"$')

# The rule shapes, as nft lists them and as kube-proxy writes them. Each `neg` group is `!= `.
_ADDR_FIELD = r"(?P<field>ip6? (?:saddr|daddr))"
_KEY_FIELD = r"(?:ip6? (?:saddr|daddr)|meta l4proto|th dport)"
_CT_STATE = re.compile(r"ct state (?P<neg>!= )?(?P<values>\{[^}]*\}|[a-z,]+)")
_CT_STATUS_DNAT = re.compile(r"ct status (?P<neg>!= )?dnat")
_TUPLE_LOOKUP = re.compile(
    rf"(?P<fields>{_KEY_FIELD}(?: \. {_KEY_FIELD})+) (?P<neg>!= )?@(?P<set>\S+)"
)
_ADDRESS_LOOKUP = re.compile(_ADDR_FIELD + r" (?P<neg>!= )?@(?P<set>\S+)")
_ADDRESS_SET = re.compile(_ADDR_FIELD + r" (?P<neg>!= )?\{ ?(?P<items>[^}]*?) ?\}")
_ADDRESS = re.compile(
    _ADDR_FIELD + r" (?P<neg>!= )?(?P<value>[0-9a-fA-F:][0-9a-fA-F.:/\-]*)(?= |$)"
)
_FIB_LOCAL = re.compile(r"fib (?P<which>saddr|daddr) type (?P<neg>!= )?local")
_DPORT = re.compile(r"(?P<proto>tcp|udp|sctp) dport (?P<neg>!= )?(?P<port>\d+(?:-\d+)?)")
_L4PROTO = re.compile(r"meta l4proto (?P<neg>!= )?(?P<values>\{[^}]*\}|tcp|udp|sctp)(?= |$)")
_MARK_TEST = re.compile(
    r"(?:meta )?mark (?:&|and) (?P<mask>0x[0-9a-f]+|\d+) (?P<op>==|!=) (?P<value>0x[0-9a-f]+|\d+)"
)
_MARK_SET = re.compile(
    r"(?:meta )?mark set (?:meta )?mark (?P<op>\||or|\^|xor|&|and) (?P<value>0x[0-9a-f]+|\d+)"
)
_COUNTER = re.compile(r"counter(?: packets \d+ bytes \d+)?(?= |$)")
_UPDATE = re.compile(r"update @\S+ \{ [^}]* \}")
_VERDICT = re.compile(r"(?P<word>accept|drop|return|reject)(?: with .*)?")
_JUMP = re.compile(r"(?P<kind>jump|goto) (?P<chain>\S+)")
_VMAP = re.compile(rf"(?P<fields>{_KEY_FIELD}(?: \. {_KEY_FIELD})*) vmap @(?P<map>\S+)")
_NUMGEN_VMAP = re.compile(r"numgen random mod \d+ vmap \{ ?(?P<entries>.*?) ?\}")
_DNAT_MAP = re.compile(r"dnat (?:ip6? )?to numgen random mod \d+ map \{ ?(?P<entries>.*?) ?\}")
_DNAT = re.compile(r"dnat (?:ip6? )?to (?P<target>\S+)")
_MASQUERADE = re.compile(r"masquerade(?: fully-random)?")
# `return` goes back to the caller; accept ends the base chain.
_VERDICTS = {"accept": End.ACCEPT, "return": End.CONTINUE, "drop": End.DROP, "reject": End.REJECT}

# What a concatenated key's field reads from the packet.
_FIELDS: Mapping[str, str] = {
    "ip daddr": "destination",
    "ip6 daddr": "destination",
    "ip saddr": "source",
    "ip6 saddr": "source",
    "meta l4proto": "protocol",
    "th dport": "port",
}


@functools.lru_cache(maxsize=1 << 16)
def compiled(text: str) -> Compiled:
    """A rule's text (without its comment) read into tests, statements and terminal."""
    rest = _COMMENT.sub("", text).strip()
    steps: list[Test | MarkSet] = []
    while rest:
        rest = rest.lstrip()
        step, after = _step(rest)
        if step is None and after is None:
            return Compiled(tuple(steps), terminal(rest))
        if step is not None:
            steps.append(step)
        rest = after or ""
    return Compiled(tuple(steps), None)


def _step(text: str) -> tuple[Test | MarkSet | None, str | None]:
    """The test or statement the text starts with and the text after it ((None, after) for a
    statement that changes nothing; (None, None) where the terminal starts)."""
    for pattern, make in _TESTS:
        found = pattern.match(text)
        if found is not None:
            return make(found), text[found.end() :]
    found = _MARK_SET.match(text)
    if found is not None:
        return MarkSet(found["op"], int(found["value"], 0)), text[found.end() :]
    for ignored in (_COUNTER, _UPDATE):
        found = ignored.match(text)
        if found is not None:
            return None, text[found.end() :]
    return None, None


@functools.lru_cache(maxsize=1 << 16)
def terminal(text: str) -> Terminal:
    """The statement that ends a rule, or a verdict map's value (`goto service-...`)."""
    for pattern, make in _TERMINALS:
        found = pattern.fullmatch(text)
        if found is not None:
            return make(found)
    return Unreadable(f"not a rule shape kube-proxy writes: {text!r}")


def _dispatch(found: re.Match[str]) -> Terminal:
    key = _key_of(found["fields"])
    if key is None:
        return Unreadable(f"unknown key {found['fields']!r}")
    return Dispatch(found["map"], key, _reads(found["fields"], set_name=found["map"]))


def _dnat(targets: list[str]) -> Dnat | Unreadable:
    read = [_host_port(target) for target in targets]
    for target, host_port in zip(targets, read, strict=True):
        if host_port is None:
            return Unreadable(f"unreadable DNAT target {target!r}")
    return Dnat(tuple(t for t in read if t is not None))


def _negated(found: re.Match[str]) -> bool:
    return bool(found["neg"])


def _set_test(found: re.Match[str], fields: str) -> Test | MarkSet:
    key = _key_of(fields)
    if key is None:  # the patterns only match known fields
        raise AssertionError(fields)
    return SetTest(found["set"], key, _negated(found), _reads(fields, set_name=found["set"]))


def _ct_state(found: re.Match[str]) -> Test:
    matches = ("new" in _words(found["values"])) != _negated(found)  # only new connections
    return StateTest(lambda s: matches)


def _ct_status_dnat(found: re.Match[str]) -> Test:
    negated = _negated(found)
    return StateTest(lambda s: (s.dnat is not None) != negated)


def _dport(found: re.Match[str]) -> Test:
    protocol, ports, negated = found["proto"], found["port"], _negated(found)
    return StateTest(
        lambda s: (s.protocol == protocol and _component_matches(ports, s.port)) != negated
    )


def _l4proto(found: re.Match[str]) -> Test:
    protocols, negated = frozenset(_words(found["values"])), _negated(found)
    return StateTest(lambda s: (s.protocol in protocols) != negated)


def _mark_test(found: re.Match[str]) -> Test:
    mask, value, equal = int(found["mask"], 0), int(found["value"], 0), found["op"] == "=="
    return StateTest(lambda s: ((s.mark & mask) == value) == equal)


def _address_test(found: re.Match[str], items: str) -> Test:
    field = found["field"]
    return AddressTest(
        field.endswith("saddr"), _ranges(items), _negated(found), _reads(field, set_name=None)
    )


def _fib_local(found: re.Match[str]) -> Test:
    source = found["which"] == "saddr"
    reads = Reads(source=source, destination=not source, local=True)
    return LocalTest(source, _negated(found), reads)


_TESTS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Test | MarkSet]], ...] = (
    (_CT_STATE, _ct_state),
    (_CT_STATUS_DNAT, _ct_status_dnat),
    (_TUPLE_LOOKUP, lambda m: _set_test(m, m["fields"])),
    (_ADDRESS_LOOKUP, lambda m: _set_test(m, m["field"])),
    (_ADDRESS_SET, lambda m: _address_test(m, m["items"])),
    (_ADDRESS, lambda m: _address_test(m, m["value"])),
    (_FIB_LOCAL, _fib_local),
    (_DPORT, _dport),
    (_L4PROTO, _l4proto),
    (_MARK_TEST, _mark_test),
)


_TERMINALS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Terminal]], ...] = (
    (_VERDICT, lambda m: VerdictStatement(_VERDICTS[m["word"]])),
    (_JUMP, lambda m: Jump(m["kind"] == "goto", m["chain"])),
    (_VMAP, _dispatch),
    (_NUMGEN_VMAP, lambda m: EveryBranch(tuple(terminal(v) for v in _map_values(m["entries"])))),
    (_DNAT_MAP, lambda m: _dnat(list(_map_values(m["entries"])))),
    (_DNAT, lambda m: _dnat([m["target"]])),
    (_MASQUERADE, lambda m: Masquerade()),
)


def _reads(fields: str, *, set_name: str | None) -> Reads:
    """Which of the packet's addresses a match or key reads (`ip saddr . ip daddr . ...`)."""
    return Reads(set_name, source="saddr" in fields, destination="daddr" in fields)


@functools.cache
def _key_of(fields: str) -> Callable[[Fields], tuple[Value, ...]] | None:
    """What a concatenated key (`ip saddr . ip daddr . meta l4proto . th dport`) reads from the
    packet, as a tuple; None if a field is unknown."""
    names = [name.strip() for name in fields.split(" . ")]
    if any(name not in _FIELDS for name in names):
        return None
    if len(names) == 1:
        one = attrgetter(_FIELDS[names[0]])
        return lambda state: (one(state),)
    return cast(Callable[[Fields], tuple[Value, ...]], attrgetter(*(_FIELDS[n] for n in names)))


def _lookup(elements: Iterable[NftElement], values: tuple[Value, ...]) -> NftElement | None:
    for element in elements:
        if len(element.key) == len(values) and all(
            _component_matches(key, value) for key, value in zip(element.key, values, strict=True)
        ):
            return element
    return None


def _exact(component: str) -> Value | None:
    """A key component as the packet's value it equals (address, port, protocol name), or None
    for a prefix or range, which only a scan can match."""
    if "/" in component or "-" in component:
        return None
    if component.isdigit():
        return int(component)
    try:
        return ip_address(component)
    except ValueError:
        return component


def _component_matches(key: str, value: Value) -> bool:
    """One key component (`10.0.0.0/8`, `1.2.3.4-1.2.3.9`, `tcp`, `80`, `1-100`) against a value."""
    if isinstance(value, str):
        return key == value
    if isinstance(value, int):
        low, _, high = key.partition("-")
        try:
            return int(low) <= value <= int(high or low)
        except ValueError:
            return False
    return _in_ranges(value, _ranges(key))


def _in_ranges(address: IPAddress, ranges: tuple[tuple[IPAddress, IPAddress], ...]) -> bool:
    return any(
        low.version == address.version and low <= address <= high  # type: ignore[operator]
        for low, high in ranges
    )


@functools.lru_cache(maxsize=4096)
def _ranges(items: str) -> tuple[tuple[IPAddress, IPAddress], ...]:
    """Each address, prefix or range of a comma-separated list as its first and last address
    (an item that is none of them matches nothing)."""
    found: list[tuple[IPAddress, IPAddress]] = []
    for item in (part.strip() for part in items.split(",")):
        try:
            if "/" in item:
                network = ip_network(item, strict=False)
                found.append((network.network_address, network.broadcast_address))
            elif "-" in item:
                low, high = (ip_address(end) for end in item.split("-", 1))
                if low.version == high.version:
                    found.append((low, high))
            else:
                found.append((ip_address(item), ip_address(item)))
        except ValueError:
            continue
    return tuple(found)


def _words(values: str) -> set[str]:
    return {word.strip() for word in values.strip("{} ").split(",")}


def _map_values(entries: str) -> Iterator[str]:
    """The values of an anonymous map `0 : goto a, 1 : goto b` (nft prints `, `; kube-proxy
    writes ` , `)."""
    for entry in entries.split(","):
        key, sep, value = entry.partition(" : ")
        if sep and key.strip().isdigit():
            yield value.strip()


def _host_port(target: str) -> HostPort | None:
    """`10.0.0.1:80`, `[fd00::1]:80` or a map value `10.0.0.1 . 80`."""
    try:
        if " . " in target:
            address, port = target.split(" . ")
            return HostPort(ip_address(address.strip()), int(port))
        if target.startswith("["):
            address, _, port = target[1:].partition("]:")
            return HostPort(ip_address(address), int(port))
        address, _, port = target.rpartition(":")
        return HostPort(ip_address(address), int(port))
    except ValueError:
        return None
