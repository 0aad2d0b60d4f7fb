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


def _seconds(duration: str) -> int:
    """nft's `3h`, `1d2h`, `10800s` in seconds."""
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * unit[u] for n, u in re.findall(r"(\d+)([dhms])", duration))


def _elements(text: str, is_map: bool) -> tuple[NftElement, ...]:
    found = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            found.append(_element(item, is_map))
    return tuple(found)


def _element(item: str, is_map: bool) -> NftElement:
    comment = None
    match = re.search(r' comment "([^"]*)"', item)
    if match is not None:
        comment = match[1]
        item = item[: match.start()] + item[match.end() :]
    key, _, value = item.partition(" : ") if is_map else (item, "", "")
    key = re.sub(r" (?:timeout|expires) \S+", "", key)
    return NftElement(tuple(key.split(" . ")), value or None, comment)


class _Reader:
    """One listing, line by line; each block reader leaves `index` on its closing brace."""

    def __init__(self, text: str, path: str) -> None:
        self.lines = text.splitlines()
        self.path = path
        self.index = 0

    def fail(self, why: str) -> NftTextError:
        return NftTextError(f"{self.path}:{self.index + 1}: {why}: {self.lines[self.index]!r}")

    def body(self) -> str:
        return self.lines[self.index].strip()

    def chain(self, name: str) -> NftChain:
        start = self.index
        hook = chain_type = priority = None
        rules = []
        self.index += 1
        while (body := self.body()) != "}":
            if base := _BASE.match(body):
                chain_type, hook = base["type"], base["hook"]
                priority = _priority(base["priority"])
            elif body and not body.startswith("comment "):
                rule_text, comment = body, None
                if comment_match := re.search(r' comment "([^"]*)"$', body):
                    rule_text, comment = body[: comment_match.start()], comment_match[1]
                rules.append(NftRule(rule_text, self.index + 1, None, comment))
            self.index += 1
        return NftChain(name, tuple(rules), hook, chain_type, priority, start + 1)

    def set(self, name: str, is_map: bool) -> NftSet:
        start = self.index
        key_type: tuple[str, ...] = ()
        value_type = None
        flags: frozenset[str] = frozenset()
        timeout = None
        elements: tuple[NftElement, ...] = ()
        self.index += 1
        while (body := self.body()) != "}":
            if body.startswith("type "):
                key, _, value = body[5:].partition(" : ")
                key_type = tuple(key.split(" . "))
                value_type = tuple(value.split(" . ")) if value else None
            elif body.startswith("flags "):
                flags = frozenset(body[6:].split(","))
            elif match := re.fullmatch(r"timeout ((?:\d+[dhms])+)", body):
                timeout = _seconds(match[1])
            elif body.startswith("elements = {"):
                collected = body[len("elements = {") :]
                while not collected.rstrip().endswith("}"):
                    self.index += 1
                    collected += " " + self.body()
                elements = _elements(collected.rstrip()[:-1], is_map)
            elif not body.startswith(("comment ", "size ", "policy ")):
                raise self.fail("unknown set line")
            self.index += 1
        return NftSet(name, key_type, value_type, elements, flags, timeout, None, start + 1)


def parse_nft_text(text: str, path: str) -> NftTable:
    """One `nft list table` listing as an NftTable (tests only; see the module docstring)."""
    reader = _Reader(text, path)
    family: NftFamily | None = None
    name = ""
    chains: dict[str, NftChain] = {}
    sets: dict[str, NftSet] = {}
    while reader.index < len(reader.lines):
        line = reader.body()
        if match := re.fullmatch(r"table (ip6?) (\S+) \{", line):
            family, name = NftFamily(match[1]), match[2]
        elif match := re.fullmatch(r"chain (\S+) \{", line):
            chains[match[1]] = reader.chain(match[1])
        elif match := re.fullmatch(r"(set|map) (\S+) \{", line):
            sets[match[2]] = reader.set(match[2], match[1] == "map")
        elif line and line != "}" and not line.startswith("comment "):
            raise reader.fail("unknown line")
        reader.index += 1
    if family is None:
        raise NftTextError(f"{path}: no table")
    return NftTable(family, name, chains, sets)
