"""A small reader of `nft list table` text, for the tracer's tests only.

Stands in for the "inputs" helper's vipcheck.parse.nft.parse_nft_text (issue 19) until that
merges; same name and signature, so the swap is one import. It reads what nft 1.0.x prints for
kube-proxy's table (the recordings under data/), nothing more: anything else is an error naming
the line, so a recording it misreads fails loudly rather than tracing a half-read table.
"""

from __future__ import annotations

import re

from vipcheck.model.nftables import NftChain, NftElement, NftFamily, NftRule, NftSet, NftTable

# nft's symbolic priorities (libnftables, for the ip/ip6 families), as `nft list` prints them.
_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50}
_PRIORITIES["srcnat"] = 100

_BASE = re.compile(
    r"type (?P<type>\w+) hook (?P<hook>\w+) priority (?P<priority>[\w-]+(?: [+-] \d+)?);"
)


class NftTextError(ValueError):
    """A line the reader does not know, with its file and line."""


def _priority(text: str) -> int:
    name, _, offset = text.partition(" ")
    base = _PRIORITIES[name] if name in _PRIORITIES else int(name)
    if not offset:
        return base
    sign, amount = offset.split()
    return base + int(amount) if sign == "+" else base - int(amount)


def _elements(text: str, is_map: bool) -> tuple[NftElement, ...]:
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        comment = None
        match = re.search(r' comment "([^"]*)"', item)
        if match is not None:
            comment = match[1]
            item = item[: match.start()] + item[match.end() :]
        value = None
        if is_map:
            item, _, value = item.partition(" : ")
        key = re.sub(r" (?:timeout|expires) \S+", "", item)
        found.append(NftElement(tuple(key.split(" . ")), value, comment))
    return tuple(found)


def parse_nft_text(text: str, path: str) -> NftTable:
    """One `nft list table` listing as an NftTable (tests only; see the module docstring)."""
    lines = text.splitlines()
    family: NftFamily | None = None
    name = ""
    chains: dict[str, NftChain] = {}
    sets: dict[str, NftSet] = {}
    index = 0

    def fail(why: str) -> NftTextError:
        return NftTextError(f"{path}:{index + 1}: {why}: {lines[index]!r}")

    while index < len(lines):
        line = lines[index].strip()
        if not line or line == "}":
            index += 1
            continue
        if match := re.fullmatch(r"table (ip6?) (\S+) \{", line):
            family, name = NftFamily(match[1]), match[2]
        elif line.startswith("comment "):
            pass
        elif match := re.fullmatch(r"chain (\S+) \{", line):
            start = index
            chain_name = match[1]
            hook = chain_type = priority = None
            rules = []
            index += 1
            while lines[index].strip() != "}":
                body = lines[index].strip()
                if base := _BASE.match(body):
                    chain_type, hook = base["type"], base["hook"]
                    priority = _priority(base["priority"])
                elif body and not body.startswith("comment "):
                    rule_text, comment = body, None
                    if comment_match := re.search(r' comment "([^"]*)"$', body):
                        rule_text, comment = body[: comment_match.start()], comment_match[1]
                    rules.append(NftRule(rule_text, index + 1, None, comment))
                index += 1
            chains[chain_name] = NftChain(
                chain_name, tuple(rules), hook, chain_type, priority, start + 1
            )
        elif match := re.fullmatch(r"(set|map) (\S+) \{", line):
            start, set_name, is_map = index, match[2], match[1] == "map"
            key_type: tuple[str, ...] = ()
            value_type = None
            flags: frozenset[str] = frozenset()
            timeout = None
            elements: tuple[NftElement, ...] = ()
            index += 1
            while lines[index].strip() != "}":
                body = lines[index].strip()
                if body.startswith("type "):
                    key, _, value = body[5:].partition(" : ")
                    key_type = tuple(key.split(" . "))
                    value_type = tuple(value.split(" . ")) if value else None
                elif body.startswith("flags "):
                    flags = frozenset(body[6:].split(","))
                elif match := re.fullmatch(r"timeout (\d+)s", body):
                    timeout = int(match[1])
                elif body.startswith("elements = {"):
                    collected = body[len("elements = {") :]
                    while not collected.rstrip().endswith("}"):
                        index += 1
                        collected += " " + lines[index].strip()
                    elements = _elements(collected.rstrip()[:-1], is_map)
                elif not body.startswith(("comment ", "size ", "policy ")):
                    raise fail("unknown set line")
                index += 1
            sets[set_name] = NftSet(
                set_name, key_type, value_type, elements, flags, timeout, None, start + 1
            )
        else:
            raise fail("unknown line")
        index += 1
    if family is None:
        raise NftTextError(f"{path}: no table")
    return NftTable(family, name, chains, sets)
