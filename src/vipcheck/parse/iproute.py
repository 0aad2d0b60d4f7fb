"""Read a node's interfaces, where kube-ipvs0, tunl0 and their addresses are seen.

Four sources, each read into the same records and merged by name:
- `ip -j addr` / `ip -j -d link` (iproute2 >= 4.14, JSON);
- `ip addr show` / `ip -d link show` text, from any iproute2 (CentOS 7's 3.10 and 4.11 have no
  `-j`) or busybox's `ip` applet (no `-j`, no `-d`, and no `state` in some builds);
- /sys/class/net/<dev>/{ifindex,flags,operstate,type,uevent} as `grep -H .` prints them, where
  no `ip` exists at all: names, flags and tunnel kinds, but no IPv4 addresses.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_interface
from pathlib import PurePosixPath

from vipcheck.model.node import Interface, Interfaces, IPInterface, OperState
from vipcheck.parse import ParseError
from vipcheck.parse.ipvsadm import significant_lines
from vipcheck.untrusted import interface_name_problem, parse_address, printable


@dataclass(slots=True)
class _Record:
    """One interface as one source shows it; None where that source does not say."""

    index: int
    flags: tuple[str, ...] = ()
    operstate: OperState | None = None
    kind: str | None = None
    addresses: list[IPInterface] = field(default_factory=list)


_Records = dict[str, _Record]


def _interface_name(name: str, source: str, line: int | None) -> str:
    """The name, when Linux allows it: one only a forged file could hold goes no further.

    What passes may still hold `$(...)` or `;`, which the kernel allows: commands quote it.
    """
    problem = interface_name_problem(name)
    if problem is None:
        return name
    shown = printable(name, one_line=True)
    raise ParseError(source, line, f"interface name '{shown}': {problem}")


# --- ip -j ------------------------------------------------------------------------------------


def _load_json(text: str, source: str) -> dict[str, tuple[int, Mapping[str, object]]]:
    """The interface objects by name with their ifindex; JSON nested too deeply for the decoder
    (100,000 `[`) is a ParseError, not a RecursionError."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(source, error.lineno, f"invalid JSON: {error.msg}") from None
    except RecursionError:
        raise ParseError(source, None, "invalid JSON: nested too deeply to read") from None
    if not isinstance(document, list):
        raise ParseError(source, None, "expected a JSON list of interfaces from `ip -j`")
    interfaces: dict[str, tuple[int, Mapping[str, object]]] = {}
    for position, item in enumerate(document):
        if not isinstance(item, dict):
            raise ParseError(source, None, f"item {position}: expected an object, got {item!r}")
        if not item:
            continue  # `ip -j -4 addr` prints {} for interfaces without a matching address
        name, index = item.get("ifname"), item.get("ifindex")
        if not isinstance(name, str) or not isinstance(index, int):
            raise ParseError(source, None, f"item {position}: expected ifname and ifindex")
        if name in interfaces:
            raise ParseError(source, None, f"item {position}: interface {name} is listed twice")
        interfaces[name] = (index, item)
    return interfaces


def _json_flags(item: Mapping[str, object], source: str) -> tuple[str, ...]:
    """The IFF_* names `ip` prints, e.g. ("BROADCAST", "NOARP", "UP")."""
    flags = item.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
        raise ParseError(source, None, f"{item['ifname']}: expected flags as a list of names")
    return tuple(flags)


def _json_operstate(item: Mapping[str, object], source: str) -> OperState:
    """The RFC 2863 state; kube-ipvs0 is normally DOWN, which is fine for a dummy."""
    try:
        return OperState(item.get("operstate"))
    except ValueError:
        raise ParseError(
            source, None, f"{item['ifname']}: unknown operstate {item.get('operstate')!r}"
        ) from None


def _json_kind(item: Mapping[str, object]) -> str | None:
    """linkinfo.info_kind ("dummy", "ipip", "veth", ...); None for devices without one."""
    linkinfo = item.get("linkinfo")
    kind = linkinfo.get("info_kind") if isinstance(linkinfo, dict) else None
    return kind if isinstance(kind, str) else None


@functools.lru_cache(maxsize=1 << 17)
def _interface(text: str) -> IPInterface:
    """Cached: every node's kube-ipvs0 holds the same thousands of Service addresses, and an
    interface address object (with its network) is several hundred bytes.

    `ip` prints no zone (`fe80::1%eth0`) even for link-local addresses; ip_interface would keep
    one, so parse_address refuses it first.
    """
    parse_address(text.partition("/")[0])
    return ip_interface(text)


def _json_addresses(item: Mapping[str, object], source: str) -> list[IPInterface]:
    """The inet/inet6 addresses with prefix, e.g. 10.96.0.20/32 on kube-ipvs0."""
    entries = item.get("addr_info", [])
    if not isinstance(entries, list):
        raise ParseError(source, None, f"{item['ifname']}: expected addr_info as a list")
    addresses = []
    for entry in entries:
        if not isinstance(entry, dict) or "local" not in entry:
            continue
        try:
            addresses.append(_interface(f"{entry['local']}/{entry.get('prefixlen')}"))
        except ValueError as error:
            raise ParseError(source, None, f"{item['ifname']}: {error}") from None
    return addresses


def read_ip_json(text: str, source: str) -> _Records:
    """`ip -j addr` or `ip -j -d link`."""
    return {
        _interface_name(name, source, None): _Record(
            index=index,
            flags=_json_flags(item, source),
            operstate=_json_operstate(item, source),
            kind=_json_kind(item),
            addresses=_json_addresses(item, source),
        )
        for name, (index, item) in _load_json(text, source).items()
    }


# --- ip addr show / ip -d link show (iproute2 of any age, busybox) -----------------------------

# `2: tunl0@NONE: <NOARP,UP,LOWER_UP> mtu 1480 qdisc noqueue state UNKNOWN ... qlen 1`;
# the `@...` part names the link (`@NONE`, `@if4` in another netns, `@eth0` for a VLAN).
_HEADER = re.compile(
    r"(?:Deleted )?(?P<index>\d+):\s+(?P<name>[^\s:@]+)(?:@(?P<link>[^\s:]+))?:\s+"
    r"<(?P<flags>[^>]*)>(?P<rest>.*)"
)
_STATE = re.compile(r"\bstate (?P<state>\S+)")
# Detail lines of `ip -d link` that are not the link kind (print_linkinfo() in ipaddress.c).
_NOT_KINDS = frozenset(
    {
        "addrgenmode",
        "alias",
        "altname",
        "gso_max_size",
        "numtxqueues",
        "parentbus",
        "parentdev",
        "prop",
        "protodown",
        "vf",
        "xdp",
        "xdpgeneric",
        "xdpdrv",
        "xdpoffload",
        "link-netnsid",
    }
)
_KIND = re.compile(r"[a-z][a-z0-9_]*")
_ONELINE = re.compile(r"\d+:\s+\S+\s+(?:inet6?|link/\S+)\s")


def read_ip_text(text: str, source: str) -> _Records:
    """`ip addr show` or `ip -d link show` text: headers, `link/` lines, kinds, addresses."""
    records: _Records = {}
    first_line: dict[str, int] = {}
    current: str | None = None
    after_link = False
    for number, line in significant_lines(text, source):
        stripped = line.strip()
        header = _HEADER.fullmatch(stripped) if not line[:1].isspace() else None
        if header is not None:
            current = _interface_name(header["name"], source, number)
            if current in records:
                raise ParseError(
                    source,
                    number,
                    f"interface {current} is listed twice (first on line {first_line[current]}): "
                    "two outputs pasted together? give one node's output per file",
                )
            records[current] = _Record(
                index=int(header["index"]),
                flags=tuple(flag for flag in header["flags"].split(",") if flag),
                operstate=_text_operstate(header["rest"], source, number),
            )
            first_line[current] = number
            after_link = False
            continue
        if current is None or not line[:1].isspace():
            hint = (
                "`ip -o` output: give `ip addr show` without -o"
                if _ONELINE.match(stripped)
                else f"not a line of `ip addr show` or `ip -d link show` output: {stripped!r}"
            )
            raise ParseError(source, number, hint)
        words = stripped.split()
        record = records[current]
        if words[0].startswith("link/"):
            after_link = True
        elif words[0] in ("inet", "inet6"):
            after_link = False
            record.addresses.append(_text_address(words, source, number))
        elif after_link and record.kind is None and _is_kind(words[0]):
            record.kind = words[0]
            after_link = False
    return records


def _text_operstate(rest: str, source: str, line: int) -> OperState | None:
    """`state UP` from the header; busybox builds without IFF_DORMANT print none."""
    match = _STATE.search(rest)
    if match is None:
        return None
    try:
        return OperState(match["state"])
    except ValueError:
        raise ParseError(source, line, f"unknown operstate {match['state']!r}") from None


def _is_kind(word: str) -> bool:
    """The first word of `ip -d`'s line after `link/`: the kind (`ipip`, `vxlan id 1 ...`)."""
    return (
        bool(_KIND.fullmatch(word))
        and word not in _NOT_KINDS
        and not word.endswith(("_slave", "_subport"))  # a port's master kind (bridge_slave)
    )


def _text_address(words: list[str], source: str, line: int) -> IPInterface:
    """`inet 10.96.0.20/32 scope global kube-ipvs0`, or `inet A peer B/N` (prefix on the peer)."""
    if len(words) < 2:
        raise ParseError(source, line, f"expected an address after {words[0]}")
    local = words[1]
    if "/" not in local:
        peer = words[3] if len(words) > 3 and words[2] == "peer" else ""
        prefix = peer.partition("/")[2]
        local = f"{local}/{prefix}" if prefix else local
    try:
        return _interface(local)
    except ValueError as error:
        raise ParseError(source, line, f"{words[1]!r} is not an address: {error}") from None


# --- /sys/class/net -----------------------------------------------------------------------------

# include/uapi/linux/if.h: the IFF_* bits /sys/class/net/<dev>/flags holds, as `ip` names them.
_IFF = (
    (0x1, "UP"),
    (0x2, "BROADCAST"),
    (0x4, "DEBUG"),
    (0x8, "LOOPBACK"),
    (0x10, "POINTOPOINT"),
    (0x20, "NOTRAILERS"),
    (0x40, "RUNNING"),
    (0x80, "NOARP"),
    (0x100, "PROMISC"),
    (0x200, "ALLMULTI"),
    (0x400, "MASTER"),
    (0x800, "SLAVE"),
    (0x1000, "MULTICAST"),
    (0x2000, "PORTSEL"),
    (0x4000, "AUTOMEDIA"),
    (0x8000, "DYNAMIC"),
)
# include/uapi/linux/if_arp.h: tunnel device types, whose kind the type alone tells.
_ARPHRD_KINDS = {768: "ipip", 769: "ip6tnl", 776: "sit", 778: "gre", 823: "ip6gre"}
_SYS_LINE = re.compile(r"/sys/class/net/(?P<dev>[^/\s]+)/(?P<attr>[a-z_]+):(?P<value>.*)")


def read_sys_class_net(text: str, source: str) -> _Records:
    """`grep -H . /sys/class/net/*/{ifindex,flags,operstate,type,uevent}` lines."""
    attributes: dict[str, dict[str, str]] = {}
    lines: dict[str, int] = {}
    for number, line in significant_lines(text, source):
        match = _SYS_LINE.fullmatch(line.strip())
        if match is None:
            raise ParseError(
                source, number, f"expected `/sys/class/net/DEV/ATTR:VALUE`, got {line.strip()!r}"
            )
        if match["dev"] not in lines:
            lines[match["dev"]] = number
            _interface_name(match["dev"], source, number)
        values = attributes.setdefault(match["dev"], {})
        value = match["value"].strip()
        if match["attr"] == "uevent":
            key, _, uevent_value = value.partition("=")
            values[f"uevent.{key}"] = uevent_value
        else:
            values[match["attr"]] = value
    return {
        name: _sys_record(name, values, source, lines[name]) for name, values in attributes.items()
    }


def _sys_record(name: str, values: dict[str, str], source: str, line: int) -> _Record:
    try:
        index = int(values["ifindex"])
        flags = int(values.get("flags", "0"), 16)
        arphrd = int(values["type"]) if "type" in values else None
    except (KeyError, ValueError) as error:
        raise ParseError(
            source, line, f"{name}: expected ifindex, flags and type: {error}"
        ) from None
    operstate = values.get("operstate")
    try:
        state = OperState(operstate.upper()) if operstate else None
    except ValueError:
        raise ParseError(source, line, f"{name}: unknown operstate {operstate!r}") from None
    devtype = values.get("uevent.DEVTYPE")
    return _Record(
        index=index,
        flags=tuple(flag for bit, flag in _IFF if flags & bit),
        operstate=state,
        kind=devtype or (_ARPHRD_KINDS.get(arphrd) if arphrd is not None else None),
    )


# --- merging --------------------------------------------------------------------------------------


def read_interfaces(text: str, source: str) -> _Records | None:
    """One source's records, its format told by its file name; None for empty text (unknown)."""
    if not text.strip():
        return None
    name = PurePosixPath(source).name
    if name.endswith(".json"):
        return read_ip_json(text, source)
    if name.startswith("sys-class-net"):
        return read_sys_class_net(text, source)
    return read_ip_text(text, source)


def _merged(addrs: _Records | None, links: _Records | None) -> Iterator[Interface]:
    known_links, known_addrs = links or {}, addrs or {}
    for name in [*known_links, *(name for name in known_addrs if name not in known_links)]:
        link, addr = known_links.get(name), known_addrs.get(name)
        base = link or addr
        assert base is not None
        operstate = base.operstate
        if operstate is None and addr is not None:
            operstate = addr.operstate
        yield Interface(
            name=name,
            index=base.index,
            kind=link.kind if link is not None else None,
            flags=base.flags,
            operstate=operstate,
            addresses=tuple(addr.addresses) if addr is not None else None,
        )


def merge_interfaces(
    addrs: _Records | None, links: _Records | None, source_addr: str, source_link: str
) -> Interfaces:
    """Merges an address listing and a link listing by name; None means that one is unknown."""
    return Interfaces(
        interfaces=tuple(_merged(addrs, links)),
        link_source=source_link if links is not None else None,
        addr_source=source_addr if addrs is not None else None,
    )


def parse_interfaces(addr: tuple[str, str] | None, link: tuple[str, str] | None) -> Interfaces:
    """An address listing and a link listing, each (text, source) or None, in any format."""
    addrs = read_interfaces(*addr) if addr is not None else None
    links = read_interfaces(*link) if link is not None else None
    return merge_interfaces(addrs, links, addr[1] if addr else "", link[1] if link else "")


def parse_ip_json(addr_text: str, link_text: str, source_addr: str, source_link: str) -> Interfaces:
    """Merges `ip -j addr` and `ip -j -d link`; an empty text means that output is unknown."""
    addrs = read_ip_json(addr_text, source_addr) if addr_text.strip() else None
    links = read_ip_json(link_text, source_link) if link_text.strip() else None
    return merge_interfaces(addrs, links, source_addr, source_link)


def parse_ip_text(addr_text: str, link_text: str, source_addr: str, source_link: str) -> Interfaces:
    """Merges `ip addr show` and `ip -d link show` text (or busybox's `ip addr` / `ip link`)."""
    addrs = read_ip_text(addr_text, source_addr) if addr_text.strip() else None
    links = read_ip_text(link_text, source_link) if link_text.strip() else None
    return merge_interfaces(addrs, links, source_addr, source_link)
