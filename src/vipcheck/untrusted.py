"""Strings that others control: names validated where they enter, text made safe where it goes.

A node's output, a snapshot and the objects any tenant can create are hostile until checked.
Names are held to the rules of whoever owns them (Kubernetes for Node names, the kernel for
interface names), so a name that could only come from a forged file is refused where it is
read; what passes may still hold shell metacharacters (`$(...)` is a valid interface name), so
every command is built as an argument list and quoted for each shell it passes through. Text
shown to a person (terminal, fix-script preview and comments) goes through `printable`.

A leaf module: it imports nothing of vipcheck, so every layer may use it.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address

# A Node's name is a DNS subdomain (RFC 1123): Kubernetes' ValidateNodeName, IsDNS1123Subdomain.
MAX_NODE_NAME = 253
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# A host as a --hosts spec names it: a run that could not read the API names its nodes so.
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# The kernel's dev_valid_name (net/core/dev.c): at most IFNAMSIZ - 1 bytes, not "." or "..", and
# no '/', ':' or byte for which the kernel's isspace() holds (which counts 0xA0, lib/ctype.c).
MAX_INTERFACE_NAME = 15
_NOT_IN_INTERFACE_NAMES = frozenset(b"/: \t\n\v\f\r\xa0\x00")

# What is shown escaped: C0 controls but tab and newline, DEL, C1 controls, and the Unicode
# format characters that move or hide text in a terminal (bidi overrides and isolates, line and
# paragraph separators, zero-width marks).
_SHOWN_ESCAPED = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]"
)
_SHOWN_ESCAPED_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]"
)


def node_name_problem(name: str) -> str | None:
    """Why `name` cannot be a Kubernetes Node's name, or None when it can."""
    if len(name) > MAX_NODE_NAME:
        return f"longer than {MAX_NODE_NAME} characters"
    if not _DNS_SUBDOMAIN.fullmatch(name):
        return "not a DNS subdomain (lowercase letters, digits, '-' and '.')"
    return None


def host_name_problem(name: str) -> str | None:
    """Why `name` is neither a host name nor an IP address, or None when it is one of them.

    Wider than a Node's name (capitals, `_`, IPv6), never a shell word or an option: what a
    snapshot's node directory may be called when the run that saved it had no Nodes to go by.
    """
    if len(name) <= MAX_NODE_NAME and _HOST_NAME.fullmatch(name):
        return None
    try:
        parse_address(name)
    except ValueError:
        return "neither a host name (letters, digits, '-', '_', '.'; not '-' first) nor an address"
    return None


def interface_name_problem(name: str) -> str | None:
    """Why `name` cannot be a Linux interface's name, or None when it can."""
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 escape can spell
        return "not text a kernel could hold (a lone UTF-16 surrogate)"
    if not data:
        return "empty"
    if len(data) > MAX_INTERFACE_NAME:
        return f"longer than {MAX_INTERFACE_NAME} bytes"
    if name in (".", ".."):
        return "'.' and '..' are not interface names"
    if any(byte in _NOT_IN_INTERFACE_NAMES for byte in data):
        return "holds '/', ':', a NUL or white space, which Linux forbids in interface names"
    return None


def ipset_name_problem(name: str) -> str | None:
    """Why `name` cannot be an ipset's name as `ipset list -n` lists them, or None when it can:
    at most IPSET_MAXNAMELEN - 1 bytes (include/uapi/linux/netfilter/ipset/ip_set.h), one word
    of printable text (a set named with a line break or a space is not one line of that list)."""
    return _word_problem(name, MAX_IPSET_NAME, "ipset names")


def iptables_chain_problem(name: str) -> str | None:
    """Why `name` cannot be an iptables chain's name as iptables-save prints it, or None: one
    printable word, not an option (iptables refuses `-x` and `!x` as chain names), at most
    NFT_CHAIN_MAXNAMELEN - 1 bytes (iptables-nft's chains are nftables chains, whose names may
    be longer than x_tables' 28 where nft made them)."""
    if name.startswith(("-", "!")):
        return "starts with '-' or '!', as no iptables chain does"
    return _word_problem(name, MAX_CHAIN_NAME, "chain names")


MAX_IPSET_NAME = 31
MAX_CHAIN_NAME = 255


def _word_problem(name: str, limit: int, what: str) -> str | None:
    """Why `name` is not one printable word of at most `limit` UTF-8 bytes, or None."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "not text a kernel could hold (a lone UTF-16 surrogate)"
    if size == 0:
        return "empty"
    if size > limit:
        return f"longer than {limit} bytes, the most {what} hold"
    if printable(name, one_line=True) != name or any(char.isspace() for char in name):
        return "holds white space or a control character"
    return None


def parse_address(text: str) -> IPv4Address | IPv6Address:
    """An IP address as Kubernetes and IPVS write them: no IPv6 zone (`fe80::1%eth0`).

    Python's ip_address accepts a zone of any text (`fd00::1%$(id)`); no Service, endpoint or
    virtual server address has one, so one is refused here rather than carried into a command.
    """
    if "%" in text:
        shown = printable(text, one_line=True)
        raise ValueError(
            f"{shown}: an address with a zone (%...), which no Service, endpoint "
            "or IPVS virtual server has"
        )
    return ip_address(text)


def printable(text: str, *, one_line: bool = False) -> str:
    """`text` with the characters that steer a terminal shown as escapes (`\\x1b`, `\\u202e`).

    Tab and newline stay unless `one_line`, where a newline is shown as `\\n` too. Everything
    vipcheck prints from a node, a snapshot or the API goes through here.
    """
    pattern = _SHOWN_ESCAPED_ONE_LINE if one_line else _SHOWN_ESCAPED
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
