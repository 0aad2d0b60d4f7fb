"""Read kube-proxy's nftables table, from `nft -j list table` (JSON) or `nft list table` (text).

Both forms parse to one model (vipcheck.model.nftables): a rule is the one line `nft list table`
prints for it, so the JSON parser renders each rule's expressions back into that text as nft
1.0.x prints it (`mark set mark or 0x4000` is listed `meta mark set meta mark | 0x00004000`),
for the statements and expressions kube-proxy writes (pkg/proxy/nftables/proxier.go,
kubernetes/kubernetes@736e3b684ef1 and @531be81208e2). An expression it cannot render is an
error naming the rule, never dropped: a rule missing a part would read as a different rule.

What the two forms do not both show is left out of the model, so they stay equal: the table's
and chains' comments and the `dynamic` set flag (nft 1.0.6's JSON prints none of them: measured
with tests/unit/parse/data/*.nft), sets' `size`, elements' `expires` (a countdown), counters'
values of named counter objects. The text form is what people paste: tabs expanded, `# handle N`
from `nft -a`, blank lines, a prompt or command line around the table, element lists cut by hand.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import msgspec

from vipcheck.model.nftables import (
    KUBE_PROXY_TABLE,
    NftChain,
    NftElement,
    NftFamily,
    NftRule,
    NftSet,
    NftTable,
)
from vipcheck.parse import ParseError
from vipcheck.untrusted import printable

# nft's standard priority names for the ip and ip6 families (nft(8), "CHAINS"): a base chain at
# -110 is listed `priority dstnat - 10`.
_PRIORITY_NAMES = {
    "raw": -300,
    "mangle": -150,
    "dstnat": -100,
    "filter": 0,
    "security": 50,
    "srcnat": 100,
}
# nft 1.0.6's JSON omits `dynamic` (text: `flags dynamic,timeout`): left out of both forms.
_FAMILIES = frozenset(family.value for family in NftFamily)
_UNSHARED_FLAGS = frozenset({"dynamic"})
# A chain or set name as kube-proxy makes them (`service-ULMVA6XW-ns1/svc1/tcp/p80`, endpoint
# chains with `__10.180.0.1/80`, IPv6 `:` as `.`); nft allows at most 256 bytes.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./:-]{0,255}")
# Control characters have no place in a name, comment or rule: one is a forged listing.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NUMBER = re.compile(r"-?\d{1,19}")
_TIME_PART = re.compile(r"(\d{1,12})(d|h|ms|m|s)")
_MAX_SECONDS = 1 << 40
K = TypeVar("K")
V = TypeVar("V")


# --- shared -------------------------------------------------------------------------------------


def _name(name: object, what: str, source: str, line: int | None) -> str:
    """A chain, set or table name, refused when it could not be one kube-proxy made."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    shown = printable(str(name), one_line=True)
    raise ParseError(source, line, f"{what} name '{shown}': not a name nft and kube-proxy use")


def _clean(text: str, what: str, source: str, line: int | None) -> str:
    """Text kept in the model (a rule, a comment): no control characters, which only a forged or
    corrupted listing holds and which would reach terminals and reports."""
    if _CONTROL.search(text):
        shown = printable(text, one_line=True)
        raise ParseError(source, line, f"{what} '{shown}' holds control characters")
    return text


def _seconds(text: str, source: str, line: int | None) -> int:
    """An nft time (`3h`, `10800s`, `1d2h3m4s`, `59m59s996ms`) in whole seconds."""
    parts = _TIME_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ParseError(source, line, f"expected a time such as 3h or 10800s, got {text!r}")
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    milliseconds = sum(int(n) * (1 if u == "ms" else scale[u] * 1000) for n, u in parts)
    return milliseconds // 1000


def _time_text(seconds: int) -> str:
    """Seconds as nft prints a time: 10800 is `3h`, 93784 `1d2h3m4s`, 0 `0s`."""
    text = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            text += f"{count}{unit}"
    return text or "0s"


def _flags(flags: frozenset[str]) -> frozenset[str]:
    return flags - _UNSHARED_FLAGS


def _family(text: object, source: str, line: int | None) -> NftFamily:
    try:
        return NftFamily(str(text))
    except ValueError:
        shown = printable(str(text), one_line=True)
        raise ParseError(
            source, line, f"table family '{shown}': kube-proxy's tables are ip and ip6"
        ) from None


def _only_kube_proxy(family: str, name: str, source: str, line: int | None) -> None:
    if name != KUBE_PROXY_TABLE or family not in _FAMILIES:
        shown = printable(f"{family} {name}", one_line=True)
        raise ParseError(
            source,
            line,
            f"table {shown} is not kube-proxy's: list only `nft list table ip kube-proxy` "
            "(or ip6), never the whole ruleset",
        )


# --- JSON: expressions rendered as nft prints them -----------------------------------------------


class _Unreadable(Exception):
    """An expression the renderer does not know: the rule is an error, never rendered partly."""


_VERDICTS = frozenset({"accept", "drop", "continue", "return"})
_JUMPS = frozenset({"jump", "goto"})
_BINOPS = frozenset({"&", "|", "^", "<<", ">>"})
_OPERATORS = frozenset({"!=", "<", ">", "<=", ">="})
# Meta keys nft prints without `meta` (src/meta.c, meta_key_is_unqualified), and those whose
# values are strings it quotes (interface names).
_UNQUALIFIED_META = frozenset({"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"})
_QUOTED_META = frozenset({"iif", "oif", "iifname", "oifname", "iifkind", "oifkind"})
# `reject` alone is ICMP port unreachable in ip, ICMPv6 port unreachable in ip6.
_DEFAULT_REJECT = {
    NftFamily.IP: ("icmp", "port-unreachable"),
    NftFamily.IP6: ("icmpv6", "port-unreachable"),
}


def _snippet(expr: object) -> str:
    text = json.dumps(expr, separators=(",", ":"))
    return text if len(text) <= 120 else text[:120] + "..."


def _one(expr: object) -> tuple[str, object]:
    """The kind and body of an expression object `{"kind": body}`."""
    if isinstance(expr, dict) and len(expr) == 1:
        [(kind, body)] = expr.items()
        return str(kind), body
    raise _Unreadable(_snippet(expr))


def _fields(
    body: object, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, object]:
    """An object's fields, refusing ones it does not know (they would change its meaning)."""
    if not isinstance(body, dict) or not set(required) <= body.keys():
        raise _Unreadable(_snippet(body))
    if unknown := body.keys() - set(required) - set(optional):
        raise _Unreadable(f"{_snippet(body)} (field {sorted(unknown)[0]!r})")
    return body


def _is_mark(expr: object) -> bool:
    """Whether expr is a packet or connection mark, whose values nft prints as 0x%08x."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return False
    [(kind, body)] = expr.items()
    if kind in ("meta", "ct") and isinstance(body, dict):
        return body.get("key") == "mark"
    return kind in _BINOPS and isinstance(body, list) and bool(body) and _is_mark(body[0])


def _value(expr: object, mark: bool = False, quoted: bool = False) -> str:
    """A value or an expression; mark: an integer is a mark (hex); quoted: a string is quoted."""
    if isinstance(expr, bool):
        return "exists" if expr else "missing"  # fib ... oif missing
    if isinstance(expr, int):
        return f"0x{expr:08x}" if mark and expr >= 0 else str(expr)
    if isinstance(expr, str):
        return f'"{expr}"' if quoted else expr
    if isinstance(expr, list):  # flags, as in ct state established,related
        return ",".join(_value(item, mark) for item in expr)
    kind, body = _one(expr)
    if kind in _BINOPS:
        return _binop(kind, body, mark)
    render = _EXPRESSIONS.get(kind)
    if render is None:
        raise _Unreadable(_snippet(expr))
    return render(body, mark)


def _payload(body: object, _: bool) -> str:
    fields = _fields(body, ("protocol", "field"))
    return f"{_value(fields['protocol'])} {_value(fields['field'])}"


def _meta(body: object, _: bool) -> str:
    key = _value(_fields(body, ("key",))["key"])
    return key if key in _UNQUALIFIED_META else f"meta {key}"


def _ct(body: object, _: bool) -> str:
    fields = _fields(body, ("key",), ("dir",))
    direction = f"{_value(fields['dir'])} " if "dir" in fields else ""
    return f"ct {direction}{_value(fields['key'])}"


def _fib(body: object, _: bool) -> str:
    fields = _fields(body, ("result", "flags"))
    flags = fields["flags"]
    flags = [flags] if isinstance(flags, str) else flags
    if not isinstance(flags, list) or not flags:
        raise _Unreadable(_snippet(body))
    return f"fib {' . '.join(_value(flag) for flag in flags)} {_value(fields['result'])}"


def _numgen(body: object, _: bool) -> str:
    fields = _fields(body, ("mode", "mod"), ("offset",))
    text = f"numgen {_value(fields['mode'])} mod {_value(fields['mod'])}"
    offset = fields.get("offset", 0)
    return text + (f" offset {_value(offset)}" if offset else "")


def _concat(body: object, mark: bool) -> str:
    if not isinstance(body, list) or not body:
        raise _Unreadable(_snippet(body))
    return " . ".join(_value(item, mark) for item in body)


def _prefix(body: object, _: bool) -> str:
    fields = _fields(body, ("addr", "len"))
    return f"{_value(fields['addr'])}/{_value(fields['len'])}"


def _range(body: object, mark: bool) -> str:
    if not isinstance(body, list) or len(body) != 2:
        raise _Unreadable(_snippet(body))
    return f"{_value(body[0], mark)}-{_value(body[1], mark)}"


def _anonymous_set(body: object, mark: bool) -> str:
    """An anonymous set `{ a, b }`, or a map's `{ k : v, ... }` where items are pairs."""
    items = body if isinstance(body, list) else [body]
    shown = []
    for item in items:
        if isinstance(item, list) and len(item) == 2:
            shown.append(f"{_value(item[0], mark)} : {_map_value(item[1])}")
        else:
            shown.append(_element_text(item, mark))
    return "{ " + ", ".join(shown) + " }"


def _map(body: object, _: bool) -> str:
    fields = _fields(body, ("key", "data"))
    return f"{_value(fields['key'])} map {_value(fields['data'])}"


def _binop(operator: str, body: object, mark: bool) -> str:
    if not isinstance(body, list) or len(body) != 2:
        raise _Unreadable(_snippet(body))
    right = _value(body[1], mark or _is_mark(body[0]))
    return f"{_value(body[0], mark)} {operator} {right}"


_EXPRESSIONS: Mapping[str, Callable[[object, bool], str]] = {
    "payload": _payload,
    "meta": _meta,
    "ct": _ct,
    "fib": _fib,
    "numgen": _numgen,
    "concat": _concat,
    "prefix": _prefix,
    "range": _range,
    "set": _anonymous_set,
    "map": _map,
}


def _element_text(item: object, mark: bool = False) -> str:
    """An element inside a rule: a value, or `{"elem": {"val": ..., "timeout": ...}}`."""
    if not (isinstance(item, dict) and "elem" in item):
        return _value(item, mark)
    fields = _fields(_one(item)[1], ("val",), ("timeout", "expires", "comment"))
    text = _value(fields["val"], mark)
    if "timeout" in fields:
        text += f" timeout {_time_text(_int(fields['timeout']))}"
    if "comment" in fields:
        text += f' comment "{_value(fields["comment"])}"'
    return text


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_SECONDS:
        return value
    raise _Unreadable(_snippet(value))


def _map_value(value: object) -> str:
    """A map element's value: a verdict (`goto service-...`, `drop`) or data (`10.0.0.1 . 80`)."""
    if isinstance(value, dict) and len(value) == 1:
        kind = next(iter(value))
        if kind in _VERDICTS or kind in _JUMPS:
            return _verdict(kind, value[kind])
    return _value(value)


def _verdict(kind: str, body: object) -> str:
    if kind in _VERDICTS and body is None:
        return kind
    if kind in _JUMPS:
        return f"{kind} {_value(_fields(body, ('target',))['target'])}"
    raise _Unreadable(_snippet({kind: body}))


def _statement(stmt: object, family: NftFamily) -> str:
    kind, body = _one(stmt)
    if kind in _VERDICTS or kind in _JUMPS:
        return _verdict(kind, body)
    if kind == "reject":
        return _reject(body, family)
    if kind in ("dnat", "snat", "masquerade", "redirect"):
        return _nat(kind, body)
    render = _STATEMENTS.get(kind)
    if render is None:
        raise _Unreadable(_snippet(stmt))
    return render(body)


def _match(body: object) -> str:
    fields = _fields(body, ("op", "left", "right"))
    left_expr, op = fields["left"], fields["op"]
    quoted = (
        isinstance(left_expr, dict)
        and isinstance(left_expr.get("meta"), dict)
        and left_expr["meta"].get("key") in _QUOTED_META
    )
    left = _value(left_expr)
    right = _value(fields["right"], _is_mark(left_expr), quoted)
    # nft prints `==` only after a binary operation (src/rule.c must_print_eq_op); `in` (flags,
    # as in ct state new) never.
    binop_left = (
        isinstance(left_expr, dict) and len(left_expr) == 1 and (next(iter(left_expr)) in _BINOPS)
    )
    if op == "==" and (masked := _masked_flags(left_expr)) is not None:
        # `tcp flags syn / syn,ack`: flags under a mask of flags, as nft 1.0.x lists it
        return f"{_value(masked[0])} {right} / {_value(masked[1])}"
    if op == "in" or (op == "==" and not binop_left):
        return f"{left} {right}"
    if op != "==" and op not in _OPERATORS:
        raise _Unreadable(_snippet(body))
    return f"{left} {op} {right}"


def _masked_flags(expr: object) -> tuple[object, object] | None:
    """The flags and mask of `flags & [a, b]`, a bitmask under a mask of named flags; or None."""
    body = expr.get("&") if isinstance(expr, dict) else None
    if isinstance(body, list) and len(body) == 2 and isinstance(body[1], list):
        return body[0], body[1]
    return None


def _mangle(body: object) -> str:
    fields = _fields(body, ("key", "value"))
    return f"{_value(fields['key'])} set {_value(fields['value'], _is_mark(fields['key']))}"


def _vmap(body: object) -> str:
    fields = _fields(body, ("key", "data"))
    return f"{_value(fields['key'])} vmap {_value(fields['data'])}"


def _nat(kind: str, body: object) -> str:
    """dnat/snat/masquerade: `dnat to 10.180.0.1:80`, `dnat to [fd00::1]:80`, `dnat ip to
    numgen random mod 2 map { 0 : 10.180.0.1 . 80, ... }`, `masquerade fully-random`."""
    if body is None:
        return kind
    fields = _fields(body, (), ("family", "addr", "port", "flags"))
    text = kind + (f" {_value(fields['family'])}" if "family" in fields else "")
    target = _value(fields["addr"]) if "addr" in fields else ""
    if "port" in fields:
        target = f"[{target}]" if ":" in target else target
        target += f":{_value(fields['port'])}"
    if target:
        text += f" to {target}"
    if "flags" in fields:
        text += f" {_value(fields['flags'])}"
    return text


def _reject(body: object, family: NftFamily) -> str:
    if body is None:
        return "reject"
    fields = _fields(body, ("type",), ("expr",))
    kind, code = fields["type"], fields.get("expr")
    if (kind, code) == _DEFAULT_REJECT[family]:
        return "reject"
    return f"reject with {_value(kind)}" + (f" {_value(code)}" if code is not None else "")


def _counter(body: object) -> str:
    if body is None:
        return "counter"
    if isinstance(body, str):
        return f'counter name "{body}"'
    fields = _fields(body, ("packets", "bytes"))
    return f"counter packets {_value(fields['packets'])} bytes {_value(fields['bytes'])}"


def _log(body: object) -> str:
    if body is None:
        return "log"
    fields = _fields(body, (), ("prefix", "group", "level"))
    text = "log"
    if "prefix" in fields:
        text += f' prefix "{_value(fields["prefix"])}"'
    if "group" in fields:
        text += f" group {_value(fields['group'])}"
    if "level" in fields:
        text += f" level {_value(fields['level'])}"
    return text


def _set_statement(body: object) -> str:
    """`update @affinity-X { ip saddr }` (kube-proxy's ClientIP affinity), `add @s { ... }`."""
    fields = _fields(body, ("op", "elem", "set"))
    op = _value(fields["op"])
    if op not in ("add", "update", "delete"):
        raise _Unreadable(_snippet(body))
    return f"{op} {_value(fields['set'])} {{ {_element_text(fields['elem'])} }}"


_STATEMENTS: Mapping[str, Callable[[object], str]] = {
    "match": _match,
    "mangle": _mangle,
    "vmap": _vmap,
    "counter": _counter,
    "log": _log,
    "set": _set_statement,
}


# --- JSON: the listing --------------------------------------------------------------------------

# Objects a table may hold that the model has no place for and kube-proxy does not make.
_IGNORED_OBJECTS = frozenset(
    {
        "counter",
        "quota",
        "limit",
        "ct helper",
        "ct timeout",
        "ct expectation",
        "flowtable",
        "secmark",
        "synproxy",
    }
)


@dataclass(slots=True)
class _Building:
    """A table as its objects are read: chains keep their order, rules are added to them."""

    family: NftFamily | None = None
    chains: dict[str, NftChain] = field(default_factory=dict)
    rules: dict[str, list[NftRule]] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    cuts: list[str] = field(default_factory=list)  # where a paste leaves part of it out

    def table(self, source: str, line: int | None) -> NftTable:
        if self.family is None:
            raise ParseError(source, line, "no `table ip kube-proxy` in the listing")
        chains = {
            name: _interned(
                _chains,
                NftChain(
                    chain.name,
                    tuple(self.rules[name]),
                    chain.hook,
                    chain.chain_type,
                    chain.priority,
                    chain.line,
                ),
            )
            for name, chain in self.chains.items()
        }
        partial = "; ".join(self.cuts) or None
        sets = {
            name: _interned(_sets, _set_with_named_protocols(each))
            for name, each in self.sets.items()
        }
        return NftTable(self.family, KUBE_PROXY_TABLE, chains, sets, partial=partial)


# nft names a protocol number from /etc/protocols; a host without that file (minimal images,
# the lab's guest) prints `meta l4proto 6` and `10.96.0.10 . 6 . 53`, in text and JSON alike.
# Both become the names nft prints elsewhere, so one table reads the same on every host.
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp"}
_NUMBERED_L4PROTO = re.compile(r"\bl4proto (\d{1,3})\b")


def _named_protocols(text: str) -> str:
    return _NUMBERED_L4PROTO.sub(
        lambda found: f"l4proto {_PROTOCOL_NAMES.get(found[1], found[1])}", text
    )


def _set_with_named_protocols(nft_set: NftSet) -> NftSet:
    positions = [i for i, kind in enumerate(nft_set.key_type) if kind == "inet_proto"]
    numbered = (
        element.key[i] in _PROTOCOL_NAMES for element in nft_set.elements for i in positions
    )
    if not any(numbered):
        return nft_set
    elements = tuple(
        replace(
            element,
            key=tuple(
                _PROTOCOL_NAMES.get(part, part) if i in positions else part
                for i, part in enumerate(element.key)
            ),
        )
        for element in nft_set.elements
    )
    return replace(nft_set, elements=elements)


# Every node's table repeats most rules, elements, chains and sets. Each rule and element is
# rendered once per process, kept by its JSON text (or as repr prints it, where the listing was
# read whole), a set's elements by their JSON text, and equal chains and sets are one object: a
# replay of 100 nodes renders a tenth of what it reads, holds each thing once, and the packet
# trace tells an unchanged chain or set by identity. Bounded: element lists by fewer, as each
# key is a whole map's text (service-ips is hundreds of kilobytes).
_KEPT_AT_MOST = 1 << 17
_LISTS_KEPT_AT_MOST = 64
_rule_texts: dict[tuple[NftFamily, str | bytes], str] = {}
_elements: dict[tuple[bool, str] | tuple[bool, str, str], NftElement] = {}
_element_lists: dict[tuple[bool, bytes], tuple[NftElement, ...]] = {}
_chains: dict[NftChain, NftChain] = {}
_sets: dict[NftSet, NftSet] = {}


def _kept(cache: dict[K, V], key: K, value: V, at_most: int = _KEPT_AT_MOST) -> V:
    if len(cache) >= at_most:
        cache.clear()
    cache[key] = value
    return value


def _interned(cache: dict[V, V], value: V) -> V:
    """The object equal to value that an earlier table holds, else value, kept for later ones."""
    found = cache.get(value)
    return found if found is not None else _kept(cache, value, value)


def parse_nft_json(text: str, path: str) -> NftTable:
    """`nft -j list table ip kube-proxy` (or ip6): its one table, with chains, rules and sets.

    A rule's line is its object's position in the `nftables` list (1-based), as nft prints the
    whole listing on one line; errors name that position and the rule's chain and handle.

    Read in one of two ways that give the same table. First by parts (`_by_parts`): each rule's
    expressions and each set's elements are kept as their JSON text, decoded only when no
    earlier table had that very text (a node's table is mostly its neighbours'), which reads a
    100-node replay's tables several times faster. Any listing that path does not take whole
    (invalid JSON, an unexpected shape, a number or string msgspec refuses) is read again
    whole with the standard library, whose errors are the ones reported.
    """
    try:
        return _by_parts(text, path)
    except _NotByParts:
        pass
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(path, error.lineno, f"invalid JSON: {error.msg}") from None
    except RecursionError:
        raise ParseError(path, None, "invalid JSON: nested too deeply to read") from None
    return _read_objects(document, path)


def _read_objects(document: object, path: str) -> NftTable:
    objects = document.get("nftables") if isinstance(document, dict) else None
    if not isinstance(objects, list):
        raise ParseError(
            path, None, 'expected `{"nftables": [...]}` as `nft -j list table` prints it'
        )
    building = _Building()
    for position, item in enumerate(objects, start=1):
        try:
            _json_object(item, position, building, path)
        except RecursionError:
            raise ParseError(path, None, f"nftables[{position}]: nested too deeply") from None
    return building.table(path, None)


class _NotByParts(Exception):
    """The listing is not one `_by_parts` reads whole: read it again with the standard library."""


@dataclass(frozen=True, slots=True)
class _Undecoded:
    """A rule's expressions or a set's elements, as their JSON text: the key of what an earlier
    table rendered from that very text, decoded only when none did."""

    text: bytes

    def decoded(self) -> object:
        return _decoded(self.text)


_RAW_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_OBJECTS = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])
# The fields kept undecoded, by the kind of object holding them.
_UNDECODED = {"rule": "expr", "set": "elem", "map": "elem"}


def _decoded(text: bytes | msgspec.Raw) -> object:
    try:
        return msgspec.json.decode(text)
    except (msgspec.MsgspecError, RecursionError):
        raise _NotByParts from None


def _by_parts(text: str, path: str) -> NftTable:
    try:
        document = _RAW_FIELDS.decode(text)
        objects = _RAW_OBJECTS.decode(document["nftables"])
    except (msgspec.MsgspecError, RecursionError, KeyError):
        raise _NotByParts from None
    building = _Building()
    for position, item in enumerate(objects, start=1):
        if len(item) != 1:
            raise _NotByParts
        [(kind, raw_body)] = item.items()
        undecoded = _UNDECODED.get(kind)
        if undecoded is None:
            body = _decoded(raw_body)
        else:
            try:
                fields = _RAW_FIELDS.decode(raw_body)
            except (msgspec.MsgspecError, RecursionError):
                raise _NotByParts from None
            body = {
                name: _Undecoded(bytes(value)) if name == undecoded else _decoded(value)
                for name, value in fields.items()
            }
        _json_object({kind: body}, position, building, path)
    return building.table(path, None)


def _json_object(item: object, position: int, building: _Building, path: str) -> None:
    where = f"nftables[{position}]"
    if not isinstance(item, dict) or len(item) != 1:
        raise ParseError(path, None, f"{where}: expected one object, got {_snippet(item)}")
    [(kind, body)] = item.items()
    if not isinstance(body, dict):
        raise ParseError(path, None, f"{where}: expected a {kind} object")
    if kind == "metainfo" or kind in _IGNORED_OBJECTS:
        return
    family = body.get("family")
    if kind == "table":
        table_name = _name(body.get("name"), "table", path, None)
        _only_kube_proxy(str(family), table_name, path, None)
        if building.family is not None:
            raise ParseError(path, None, f"{where}: a second table: give one table per file")
        building.family = _family(family, path, None)
        return
    if (
        building.family is None
        or family != building.family
        or body.get("table") != KUBE_PROXY_TABLE
    ):
        shown = printable(f"{family} {body.get('table')}", one_line=True)
        raise ParseError(path, None, f"{where}: a {kind} of table {shown}, not of the one listed")
    if kind == "chain":
        _json_chain(body, position, building, path)
    elif kind in ("set", "map"):
        _json_set(body, position, building, path)
    elif kind == "rule":
        _json_rule(body, position, building, path)
    elif kind != "element":  # `nft -j list set` objects; a table listing has none
        raise ParseError(path, None, f"{where}: unexpected {printable(kind, one_line=True)}")


def _json_chain(body: dict[str, object], position: int, building: _Building, path: str) -> None:
    name = _name(body.get("name"), "chain", path, None)
    if name in building.chains:
        raise ParseError(path, None, f"nftables[{position}]: chain {name} is listed twice")
    hook, chain_type, priority = body.get("hook"), body.get("type"), body.get("prio")
    if hook is not None and not (
        isinstance(hook, str) and isinstance(chain_type, str) and isinstance(priority, int)
    ):
        raise ParseError(
            path, None, f"nftables[{position}]: base chain {name}: expected type and prio"
        )
    building.chains[name] = NftChain(
        name,
        hook=hook if isinstance(hook, str) else None,
        chain_type=chain_type if isinstance(chain_type, str) else None,
        priority=priority if isinstance(priority, int) and hook is not None else None,
        line=position,
    )
    building.rules[name] = []


def _json_rule(body: dict[str, object], position: int, building: _Building, path: str) -> None:
    chain, handle, comment = body.get("chain"), body.get("handle"), body.get("comment")

    def refused(why: str) -> ParseError:
        shown = printable(str(chain), one_line=True)
        return ParseError(
            path, None, f"nftables[{position}]: rule {handle} of chain {shown}: {why}"
        )

    if not isinstance(chain, str) or chain not in building.chains:
        raise refused("no such chain listed before it")
    if not (handle is None or isinstance(handle, int)) or not (
        comment is None or isinstance(comment, str)
    ):
        raise refused("expected an integer handle and a string comment")
    family = building.family
    assert family is not None
    expressions = body.get("expr")
    undecoded = expressions.text if isinstance(expressions, _Undecoded) else None
    key = (family, undecoded if undecoded is not None else repr(expressions))
    text = _rule_texts.get(key)
    if text is None:
        if isinstance(expressions, _Undecoded):
            expressions = expressions.decoded()
        if not isinstance(expressions, list) or not expressions:
            raise refused("expected its expressions")
        try:
            rendered = " ".join(_statement(stmt, family) for stmt in expressions)
        except _Unreadable as error:
            raise refused(f"cannot read expression {error}") from None
        # Interned, here and in the text parser: a replay holds all nodes' tables.
        rendered = sys.intern(_named_protocols(_clean(rendered, "rule", path, None)))
        text = _kept(_rule_texts, key, rendered)
    if comment is not None:
        comment = _clean(comment, "comment", path, None)
    building.rules[chain].append(NftRule(text, position, handle, comment))


def _json_set(body: dict[str, object], position: int, building: _Building, path: str) -> None:
    name = _name(body.get("name"), "set", path, None)
    where = f"nftables[{position}]: set {name}"
    if name in building.sets:
        raise ParseError(path, None, f"{where}: listed twice")
    try:
        key_type = _types(body.get("type"))
        value_type = _types(body["map"]) if "map" in body else None
        flags = body.get("flags", [])
        flags = [flags] if isinstance(flags, str) else flags
        if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
            raise _Unreadable(_snippet(flags))
        timeout = _int(body["timeout"]) if "timeout" in body else None
        elements = _json_elements(body.get("elem", []), value_type is not None)
    except _Unreadable as error:
        raise ParseError(path, None, f"{where}: cannot read {error}") from None
    comment = body.get("comment")
    building.sets[name] = NftSet(
        name,
        key_type,
        value_type,
        elements,
        _flags(frozenset(flags)),
        timeout,
        _clean(comment, "comment", path, None) if isinstance(comment, str) else None,
        position,
    )


def _types(value: object) -> tuple[str, ...]:
    """A set's `type` as nft -j gives it: one name, or a list for a concatenation."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _Unreadable(f"type {_snippet(value)}")
    return tuple(names)


def _json_elements(items: object, is_map: bool) -> tuple[NftElement, ...]:
    """A set's or map's elements, read once for every table whose listing has the same text."""
    undecoded = items.text if isinstance(items, _Undecoded) else None
    if undecoded is not None and (found := _element_lists.get((is_map, undecoded))) is not None:
        return found
    if isinstance(items, _Undecoded):
        items = items.decoded()
    if not isinstance(items, list):
        raise _Unreadable(f"elem {_snippet(items)}")
    elements = tuple(_json_element(item, is_map) for item in items)
    if undecoded is None:
        return elements
    return _kept(_element_lists, (is_map, undecoded), elements, _LISTS_KEPT_AT_MOST)


def _json_element(item: object, is_map: bool) -> NftElement:
    """One element of a named set or map, the same object wherever it was read before."""
    key = (is_map, item) if isinstance(item, str) else (is_map, repr(item), "repr")
    found = _elements.get(key)
    return found if found is not None else _kept(_elements, key, _read_element(item, is_map))


def _read_element(item: object, is_map: bool) -> NftElement:
    """One element of a named set or map: `[key, value]` in a map, the key alone in a set."""
    value = None
    if is_map:
        if not isinstance(item, list) or len(item) != 2:
            raise _Unreadable(f"element {_snippet(item)}")
        key_item, value_item = item
        item, value = key_item, _map_value(value_item)
    comment, timeout = None, None
    if isinstance(item, dict) and len(item) == 1 and "elem" in item:
        fields = _fields(item["elem"], ("val",), ("timeout", "expires", "comment", "counter"))
        item = fields["val"]
        timeout = _int(fields["timeout"]) if "timeout" in fields else None
        comment = _value(fields["comment"]) if "comment" in fields else None
    if isinstance(item, dict) and "concat" in item:
        components = item["concat"]
        if not isinstance(components, list) or not components:
            raise _Unreadable(f"element {_snippet(item)}")
        key = tuple(sys.intern(_value(component)) for component in components)
    else:
        key = (sys.intern(_value(item)),)
    return NftElement(key, None if value is None else sys.intern(value), comment, timeout)


# --- text ---------------------------------------------------------------------------------------

_HANDLE = re.compile(r"\s+# handle (\d{1,19})$")
_TABLE = re.compile(r"table (\S+) (\S+) \{")
_BLOCK = re.compile(r"(set|map|chain) (\S+) \{")
_OTHER_BLOCK = re.compile(
    r"(?:counter|quota|limit|ct helper|ct timeout|ct expectation|flowtable|secmark|synproxy) \S+ \{"
)
_BASE_CHAIN = re.compile(
    r"type (\S+) hook (\S+)(?: device \S+)? priority ([^;]+);(?: policy \w+;)?"
)
_PRIORITY = re.compile(r"(-?\d{1,10})|([a-z]+)(?: ([+-]) (\d{1,10}))?")
_COMMENT_END = re.compile(r'(.*?) ?comment "([^"]*)"$')
_ELEMENT = re.compile(
    r"(?P<key>.+?)(?: timeout (?P<timeout>\S+))?(?: expires \S+)?"
    r'(?: counter packets \d+ bytes \d+)?(?: comment "(?P<comment>[^"]*)")?'
)
_SPACES = re.compile(r"\s+")
# A line a person put where they cut lines out of a paste.
_GAP = re.compile(r"\s*(?:\.{3,}|…|\[\.\.\.\])\s*,?\s*")
# What may stand around the table in a paste: a prompt, the command line, a blank.
_AROUND = re.compile(r".*(?:\bnft\b|[$#>]\s*$).*|\s*")


def _spaced(text: str) -> str:
    """Runs of white space outside quotes made one space, as nft prints a rule."""
    parts = text.split('"')
    parts[::2] = [_SPACES.sub(" ", part) for part in parts[::2]]
    return '"'.join(parts).strip()


def _quoted_free(text: str) -> str:
    """text with quoted strings blanked, to look for braces and commas outside them."""
    parts = text.split('"')
    parts[1::2] = ["x" * len(part) for part in parts[1::2]]
    return '"'.join(parts)


@dataclass(slots=True)
class _Lines:
    """The listing's lines, tabs expanded and `# handle N` taken off, read one at a time."""

    source: str
    lines: list[tuple[int, str, int | None]]
    gaps: list[str]  # where a person cut lines out, marking it `...`
    position: int = 0
    cut: str | None = None  # an element list just read was cut (its `}` missing)

    @classmethod
    def of(cls, text: str, source: str) -> _Lines:
        lines, gaps = [], []
        for number, raw in enumerate(text.expandtabs().splitlines(), start=1):
            line, handle = raw.rstrip(), None
            if match := _HANDLE.search(line):
                line, handle = line[: match.start()], int(match.group(1))
            if _GAP.fullmatch(line):
                gaps.append(f"a gap (`{line.strip()}`) at line {number}")
            elif line.strip():
                lines.append((number, _spaced(line), handle))
        return cls(source, lines, gaps)

    def next(self, inside: str) -> tuple[int, str, int | None]:
        if self.position >= len(self.lines):
            last = self.lines[-1][0] if self.lines else None
            raise ParseError(self.source, last, f"the listing ends inside {inside}: cut off?")
        self.position += 1
        return self.lines[self.position - 1]

    def more(self) -> bool:
        return self.position < len(self.lines)


def parse_nft_text(text: str, path: str) -> NftTable:
    """`nft list table ip kube-proxy` (or ip6, or `nft -a`) as printed or pasted."""
    lines = _Lines.of(text, path)
    building = _Building(cuts=lines.gaps)
    while lines.more():
        number, line, _ = lines.next("the listing")
        if match := _TABLE.fullmatch(line):
            family, name = match.groups()
            _only_kube_proxy(family, name, path, number)
            if building.family is not None:
                raise ParseError(path, number, "a second table: give one table per file")
            building.family = _family(family, path, number)
            _text_table(lines, building)
        elif line.startswith("table "):
            raise ParseError(path, number, f"expected `table ip kube-proxy {{`, got {line!r}")
        elif not _AROUND.fullmatch(line):
            raise ParseError(
                path, number, f"expected `table ip kube-proxy {{` as nft lists it, got {line!r}"
            )
    return building.table(path, None)


def _text_table(lines: _Lines, building: _Building) -> None:
    source = lines.source
    while True:
        number, line, _ = lines.next("the table")
        if line == "}":
            return
        if line.startswith("comment "):
            continue  # the table's comment: nft 1.0.6's JSON does not show it
        if match := _BLOCK.fullmatch(line):
            kind, raw_name = match.groups()
            name = _name(raw_name, kind, source, number)
            if kind == "chain":
                _text_chain(lines, building, name, number)
            else:
                _text_set(lines, building, name, kind, number)
        elif _OTHER_BLOCK.fullmatch(line):
            _skip_block(lines)
        else:
            raise ParseError(source, number, f"expected a set, map or chain, got {line!r}")


def _skip_block(lines: _Lines) -> None:
    depth = 1
    while depth:
        _, line, _ = lines.next("an object")
        free = _quoted_free(line)
        depth += free.count("{") - free.count("}")


def _text_chain(lines: _Lines, building: _Building, name: str, start: int) -> None:
    source = lines.source
    if name in building.chains:
        raise ParseError(source, start, f"chain {name} is listed twice")
    hook = chain_type = priority = None
    rules: list[NftRule] = []
    while True:
        number, line, handle = lines.next(f"chain {name}")
        if line == "}":
            break
        if match := _BASE_CHAIN.fullmatch(line):
            if rules or hook is not None:
                raise ParseError(source, number, f"chain {name}: its hook must come first")
            chain_type, hook = match.group(1), match.group(2)
            priority = _priority(match.group(3), source, number)
        elif line.startswith('comment "') and not rules:
            continue  # the chain's comment: nft 1.0.6's JSON does not show it
        else:
            rules.append(_text_rule(line, number, handle, source))
    building.chains[name] = NftChain(name, (), hook, chain_type, priority, start)
    building.rules[name] = rules


def _priority(text: str, source: str, line: int) -> int:
    """`-110`, `dstnat`, `dstnat - 10`: a base chain's priority as a number."""
    match = _PRIORITY.fullmatch(text.strip())
    if match is None or (match.group(2) and match.group(2) not in _PRIORITY_NAMES):
        raise ParseError(
            source, line, f"expected a chain priority such as -110 or dstnat, got {text!r}"
        )
    if match.group(1):
        return int(match.group(1))
    offset = int(match.group(4) or 0) * (-1 if match.group(3) == "-" else 1)
    return _PRIORITY_NAMES[match.group(2)] + offset


def _text_rule(line: str, number: int, handle: int | None, source: str) -> NftRule:
    comment = None
    if line.endswith('"') and (match := _COMMENT_END.fullmatch(line)):
        line, comment = match.group(1), _clean(match.group(2), "comment", source, number)
    if not line:
        raise ParseError(source, number, "a rule with a comment and nothing else")
    text = _named_protocols(_clean(line, "rule", source, number))
    return NftRule(sys.intern(text), number, handle, comment)


def _text_set(lines: _Lines, building: _Building, name: str, kind: str, start: int) -> None:
    source = lines.source
    if name in building.sets:
        raise ParseError(source, start, f"set {name} is listed twice")
    key_type: tuple[str, ...] | None = None
    value_type = None
    flags: frozenset[str] = frozenset()
    timeout = comment = None
    elements: tuple[NftElement, ...] = ()
    while True:
        number, line, _ = lines.next(f"{kind} {name}")
        if line == "}":
            break
        word, _, rest = line.partition(" ")
        if word == "type":
            key_text, colon, value_text = rest.partition(" : ")
            key_type = tuple(key_text.split(" . "))
            value_type = tuple(value_text.split(" . ")) if colon else None
        elif word == "flags":
            flags = frozenset(rest.split(","))
        elif word == "timeout":
            timeout = _seconds(rest, source, number)
        elif word == "comment" and rest.startswith('"') and rest.endswith('"'):
            comment = _clean(rest[1:-1], "comment", source, number)
        elif word in ("size", "policy", "gc-interval", "auto-merge", "counter"):
            continue
        elif line.startswith("elements = {"):
            elements = _text_elements(lines, line, number, value_type is not None)
            if lines.cut is not None:
                building.cuts.append(lines.cut)
                lines.cut = None
        else:
            raise ParseError(source, number, f"{kind} {name}: unexpected {line!r}")
    if key_type is None or (kind == "map") != (value_type is not None):
        raise ParseError(source, start, f"{kind} {name}: expected its `type`")
    building.sets[name] = NftSet(
        name, key_type, value_type, elements, _flags(flags), timeout, comment, start
    )


def _text_elements(lines: _Lines, first: str, start: int, is_map: bool) -> tuple[NftElement, ...]:
    """`elements = { a, b,` continued over lines up to its `}`; a list cut by hand (its `}`
    missing, the set's own `}` next) ends there."""
    source = lines.source
    text, number = first.removeprefix("elements = {"), start
    while not _quoted_free(text).rstrip().endswith("}"):
        if not lines.more() or lines.lines[lines.position][1] == "}":
            text += " }"
            lines.cut = f"the element list at line {start} has no `}}`: cut by hand"
            break
        number, line, _ = lines.next("an element list")
        text += " " + line
    body = text.rstrip().removesuffix("}")
    elements = []
    for item in _split_elements(body):
        elements.append(_text_element(item, is_map, source, number))
    return tuple(elements)


def _split_elements(body: str) -> Iterator[str]:
    """The list's elements, split at commas outside quotes."""
    free = _quoted_free(body)
    begin = 0
    for index, char in enumerate(free):
        if char == ",":
            if part := body[begin:index].strip():
                yield part
            begin = index + 1
    if part := body[begin:].strip():
        yield part


def _text_element(item: str, is_map: bool, source: str, line: int) -> NftElement:
    item = _clean(_spaced(item), "element", source, line)
    value = None
    if is_map:
        free = _quoted_free(item)
        split = free.rfind(" : ")
        if split < 0:
            raise ParseError(source, line, f"map element {item!r}: expected `key : value`")
        item, value = item[:split], item[split + 3 :]
    match = _ELEMENT.fullmatch(item)
    if match is None:
        raise ParseError(source, line, f"element {item!r}: not as nft lists one")
    timeout = match.group("timeout")
    return NftElement(
        tuple(map(sys.intern, match.group("key").split(" . "))),
        None if value is None else sys.intern(value),
        match.group("comment"),
        _seconds(timeout, source, line) if timeout else None,
    )


# --- nft list tables ----------------------------------------------------------------------------

_TABLE_LINE = re.compile(r"table (\S+) (\S+)")


def parse_nft_tables(text: str, path: str) -> frozenset[tuple[str, str]]:
    """`nft list tables` (or `nft -a list tables`): each table as (family, name).

    Every table counts, kube-proxy's or not (a node's firewall has its own): only kube-proxy's
    are then listed. A prompt or the command line around a paste is skipped.
    """
    tables = set()
    for number, line, _ in _Lines.of(text, path).lines:
        if match := _TABLE_LINE.fullmatch(line):
            family, name = match.groups()
            tables.add((_clean(family, "family", path, number), _clean(name, "name", path, number)))
        elif not _AROUND.fullmatch(line):
            raise ParseError(path, number, f"expected `table FAMILY NAME` lines, got {line!r}")
    return frozenset(tables)
