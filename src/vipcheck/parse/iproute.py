"""Read `ip -j addr` and `ip -j -d link`, where kube-ipvs0, tunl0 and their addresses are seen."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from ipaddress import ip_interface

from vipcheck.model.node import Interface, Interfaces, IPInterface, OperState
from vipcheck.parse import ParseError


def _load(text: str, source: str) -> dict[str, tuple[int, Mapping[str, object]]] | None:
    """The interface objects by name with their ifindex, or None for empty text (not gathered)."""
    if not text.strip():
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(source, error.lineno, f"invalid JSON: {error.msg}") from None
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


def _flags(item: Mapping[str, object], source: str) -> tuple[str, ...]:
    """The IFF_* names `ip` prints, e.g. ("BROADCAST", "NOARP", "UP")."""
    flags = item.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
        raise ParseError(source, None, f"{item['ifname']}: expected flags as a list of names")
    return tuple(flags)


def _operstate(item: Mapping[str, object], source: str) -> OperState:
    """The RFC 2863 state; kube-ipvs0 is normally DOWN, which is fine for a dummy."""
    try:
        return OperState(item.get("operstate"))
    except ValueError:
        raise ParseError(
            source, None, f"{item['ifname']}: unknown operstate {item.get('operstate')!r}"
        ) from None


def _kind(item: Mapping[str, object]) -> str | None:
    """linkinfo.info_kind ("dummy", "ipip", "veth", ...); None for devices without one."""
    linkinfo = item.get("linkinfo")
    kind = linkinfo.get("info_kind") if isinstance(linkinfo, dict) else None
    return kind if isinstance(kind, str) else None


@functools.lru_cache(maxsize=1 << 17)
def _interface(text: str) -> IPInterface:
    """Cached: every node's kube-ipvs0 holds the same thousands of Service addresses, and an
    interface address object (with its network) is several hundred bytes."""
    return ip_interface(text)


def _addresses(item: Mapping[str, object], source: str) -> tuple[IPInterface, ...]:
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
    return tuple(addresses)


def parse_ip_json(addr_text: str, link_text: str, source_addr: str, source_link: str) -> Interfaces:
    """Merges both outputs by name; an empty text means that output is unknown, not empty."""
    addrs = _load(addr_text, source_addr)
    links = _load(link_text, source_link)
    known_links, known_addrs = links or {}, addrs or {}
    interfaces = []
    for name in [*known_links, *(name for name in known_addrs if name not in known_links)]:
        link = known_links.get(name)
        index, base = link or known_addrs[name]
        source = source_link if link is not None else source_addr
        interfaces.append(
            Interface(
                name=name,
                index=index,
                kind=_kind(link[1]) if link is not None else None,
                flags=_flags(base, source),
                operstate=_operstate(base, source),
                addresses=(
                    _addresses(known_addrs[name][1], source_addr) if name in known_addrs else None
                ),
            )
        )
    return Interfaces(
        interfaces=tuple(interfaces),
        link_source=source_link if links is not None else None,
        addr_source=source_addr if addrs is not None else None,
    )
