"""Links and addresses over rtnetlink, rendered as `ip -j -d link` and `ip -j addr` print them.

Two dumps (RTM_GETLINK, RTM_GETADDR), in the kernel's order, as `ip` makes them. Each object
holds the keys vipcheck's parser reads (parse/iproute.py: ifindex, ifname, flags, operstate,
linkinfo.info_kind, addr_info's family, local and prefixlen) with the values iproute2 prints
(ipaddress.c: print_link_flags(), print_linkinfo(), print_addrinfo()), plus a few that help a
reader (mtu, link_type, address, master). The detailed per-kind data of `-d` is not rendered.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from vipcheck.node_reader.messages import Message

# include/uapi/linux/if.h, in the order print_link_flags() prints them.
_FLAG_BITS = (
    ("LOOPBACK", 0x8),
    ("BROADCAST", 0x2),
    ("POINTOPOINT", 0x10),
    ("MULTICAST", 0x1000),
    ("NOARP", 0x80),
    ("ALLMULTI", 0x200),
    ("PROMISC", 0x100),
    ("MASTER", 0x400),
    ("SLAVE", 0x800),
    ("DEBUG", 0x4),
    ("DYNAMIC", 0x8000),
    ("AUTOMEDIA", 0x4000),
    ("PORTSEL", 0x2000),
    ("NOTRAILERS", 0x20),
    ("UP", 0x1),
    ("LOWER_UP", 0x10000),
    ("DORMANT", 0x20000),
    ("ECHO", 0x40000),
)
_IFF_UP, _IFF_RUNNING = 0x1, 0x40
# include/uapi/linux/if_arp.h, as lib/ll_types.c names the common ones.
_LINK_TYPES = {
    1: "ether",
    32: "infiniband",
    512: "ppp",
    768: "ipip",
    769: "tunnel6",
    772: "loopback",
    776: "sit",
    778: "gre",
    801: "ieee802.11",
    823: "gre6",
    0xFFFE: "none",
    0xFFFF: "void",
}
_FAMILIES: dict[int, str] = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
# include/uapi/linux/rtnetlink.h rt_scope_t, as rtnl_rtscope_n2a() names them.
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


def link_flags(flags: int, master_down: bool) -> list[str]:
    """The names `ip` prints for ifi_flags: NO-CARRIER where up without carrier, the known
    bits in print_link_flags()'s order, the rest in hex, M-DOWN where the lower link is down."""
    names = ["NO-CARRIER"] if flags & _IFF_UP and not flags & _IFF_RUNNING else []
    rest = flags & ~_IFF_RUNNING
    for name, bit in _FLAG_BITS:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(f"{rest:x}")
    if master_down:
        names.append("M-DOWN")
    return names


def _link_object(link: Message, by_index: dict[int, Message], detailed: bool) -> dict[str, Any]:
    index: int = link["index"]
    item: dict[str, Any] = {"ifindex": index, "ifname": link.get_attr("IFLA_IFNAME")}
    lower = link.get_attr("IFLA_LINK")
    master_down = False
    if lower is not None and lower != 0 and link.get_attr("IFLA_LINK_NETNSID") is None:
        lower_link = by_index.get(lower)
        if lower_link is not None:
            item["link"] = lower_link.get_attr("IFLA_IFNAME")
            master_down = not lower_link["flags"] & _IFF_UP
    elif lower is not None and lower != 0:
        item["link_index"] = lower
    item["flags"] = link_flags(link["flags"], master_down)
    for key, attribute in (("mtu", "IFLA_MTU"), ("qdisc", "IFLA_QDISC")):
        value = link.get_attr(attribute)
        if value is not None:
            item[key] = value
    operstate = link.get_attr("IFLA_OPERSTATE")
    if operstate is not None:
        item["operstate"] = operstate
    master = link.get_attr("IFLA_MASTER")
    if master is not None and master in by_index:
        item["master"] = by_index[master].get_attr("IFLA_IFNAME")
    ifi_type: int = link["ifi_type"]
    item["link_type"] = _LINK_TYPES.get(ifi_type, f"[{ifi_type}]")
    for key, attribute in (("address", "IFLA_ADDRESS"), ("broadcast", "IFLA_BROADCAST")):
        value = link.get_attr(attribute)
        if value is not None:
            item[key] = value
    if detailed:
        linkinfo = _linkinfo(link)
        if linkinfo:
            item["linkinfo"] = linkinfo
    return item


def _linkinfo(link: Message) -> dict[str, str]:
    """IFLA_LINKINFO's kind and, for a port, its master's kind (`bridge_slave`)."""
    info = link.get_attr("IFLA_LINKINFO")
    if info is None:
        return {}
    found = {"info_kind": info.get_attr("IFLA_INFO_KIND")}
    found["info_slave_kind"] = info.get_attr("IFLA_INFO_SLAVE_KIND")
    return {key: value for key, value in found.items() if isinstance(value, str)}


def ip_link_json(links: Iterable[Message]) -> list[dict[str, Any]]:
    """`ip -j -d link`'s objects, one per link, in the dump's order."""
    listed = list(links)
    by_index = {link["index"]: link for link in listed}
    return [_link_object(link, by_index, detailed=True) for link in listed]


def ip_addr_json(links: Iterable[Message], addresses: Iterable[Message]) -> list[dict[str, Any]]:
    """`ip -j addr`'s objects: each link, with its addresses in the dump's order."""
    listed = list(links)
    by_index = {link["index"]: link for link in listed}
    infos: dict[int, list[dict[str, Any]]] = {link["index"]: [] for link in listed}
    for address in addresses:
        entries = infos.get(address["index"])
        if entries is not None:  # an address of a link created since the link dump
            entries.append(_address_info(address))
    return [
        {**_link_object(link, by_index, detailed=False), "addr_info": infos[link["index"]]}
        for link in listed
    ]


def _address_info(address: Message) -> dict[str, Any]:
    """print_addrinfo(): local (IFA_LOCAL, else IFA_ADDRESS), the peer where they differ."""
    family: int = address["family"]
    local = address.get_attr("IFA_LOCAL")
    peer = address.get_attr("IFA_ADDRESS")
    local = local if local is not None else peer
    peer = peer if peer is not None else local
    info: dict[str, Any] = {"family": _FAMILIES.get(family, str(family)), "local": local}
    if peer != local:
        info["address"] = peer
    info["prefixlen"] = address["prefixlen"]
    broadcast = address.get_attr("IFA_BROADCAST")
    if broadcast is not None:
        info["broadcast"] = broadcast
    scope: int = address["scope"]
    info["scope"] = _SCOPES.get(scope, str(scope))
    label = address.get_attr("IFA_LABEL")
    if label is not None:
        info["label"] = label
    return info
