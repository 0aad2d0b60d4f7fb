"""A kube-proxy nftables table in the two forms the bench needs: the ruleset kube-proxy writes
(`nft -f` input) and the listing `nft -j list table ip kube-proxy` prints for it (nft 1.0.6).

Each rule is held once with both spellings: kube-proxy's written text (`mark set mark or
0x4000`, `dnat ip addr . port to numgen ...`) and the expressions nft's JSON gives back for it,
copied shape for shape from the kernel's own listing of tests/unit/parse/data/dnat-maps.nft
(dnat-maps.json). The handles are the kernel's: one counter per table for sets, chains and
rules, an anonymous set or map taking the handle before its rule's. A test loads a small table
into the kernel (`unshare -n nft -f`) and holds its listing equal to this one
(tests/unit/bench/test_synth_nftables.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

NFT_VERSION = {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}
MARK = 0x4000

Expr = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Element:
    """A set or map element: key components (strings, ports as ints), a map's verdict."""

    key: tuple[str | int, ...]
    goto: str | None = None  # a verdict map element's `goto CHAIN`


@dataclass(slots=True)
class NftSet:
    name: str
    types: tuple[str, ...]
    comment: str
    is_map: bool = False
    elements: list[Element] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Base:
    """A base chain's type, hook and priority."""

    chain_type: str
    hook: str
    priority: int


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: kube-proxy's text, the JSON expressions nft lists, its comment."""

    chain: str
    written: str
    expr: tuple[Expr, ...]
    comment: str | None = None
    anonymous: bool = False  # holds an anonymous set or map (which takes a handle first)


@dataclass(slots=True)
class Table:
    """The `ip kube-proxy` table: sets and maps, then chains, in creation order, then rules."""

    sets: list[NftSet] = field(default_factory=list)
    chains: list[tuple[str, Base | None, str | None]] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    def chain(self, name: str, base: Base | None = None, comment: str | None = None) -> None:
        self.chains.append((name, base, comment))

    def rule(self, chain: str, written: str, *expr: Expr, comment: str | None = None) -> None:
        anonymous = " map { " in written or " vmap { " in written
        self.rules.append(Rule(chain, written, expr, comment, anonymous))

    def ruleset(self) -> str:
        """The table as `nft -f` input, the way kube-proxy's transaction writes it."""
        lines = ['add table ip kube-proxy { comment "rules for kube-proxy" ; }']
        for nft_set in self.sets:
            kind = "map" if nft_set.is_map else "set"
            types = " . ".join(nft_set.types) + (" : verdict" if nft_set.is_map else "")
            lines.append(
                f"add {kind} ip kube-proxy {nft_set.name} "
                f'{{ type {types} ; comment "{nft_set.comment}" ; }}'
            )
        for name, base, comment in self.chains:
            spec = ""
            if base is not None:
                spec = f" {{ type {base.chain_type} hook {base.hook} priority {base.priority} ; }}"
            elif comment is not None:
                spec = f' {{ comment "{comment}" ; }}'
            lines.append(f"add chain ip kube-proxy {name}{spec}")
        for rule in self.rules:
            comment = "" if rule.comment is None else f' comment "{rule.comment}"'
            lines.append(f"add rule ip kube-proxy {rule.chain} {rule.written}{comment}")
        for nft_set in self.sets:
            if nft_set.elements:
                items = " , ".join(_written_element(e) for e in nft_set.elements)
                lines.append(f"add element ip kube-proxy {nft_set.name} {{ {items} }}")
        return "\n".join(lines) + "\n"

    def listing(self) -> str:
        """The table as `nft -j list table ip kube-proxy` prints it."""
        objects: list[Expr] = [{"metainfo": NFT_VERSION}]
        objects.append({"table": {"family": "ip", "name": "kube-proxy", "handle": 1}})
        handle = 0
        for nft_set in self.sets:
            handle += 1
            body: Expr = {"family": "ip", "name": nft_set.name, "table": "kube-proxy"}
            body["type"] = nft_set.types[0] if len(nft_set.types) == 1 else list(nft_set.types)
            body["handle"] = handle
            body["comment"] = nft_set.comment
            if nft_set.is_map:
                body["map"] = "verdict"
            if nft_set.elements:
                body["elem"] = [_listed_element(e) for e in nft_set.elements]
            objects.append({"map" if nft_set.is_map else "set": body})
        for name, base, comment in self.chains:
            handle += 1
            chain: Expr = {"family": "ip", "table": "kube-proxy", "name": name, "handle": handle}
            if comment is not None:
                chain["comment"] = comment
            if base is not None:
                chain |= {"type": base.chain_type, "hook": base.hook, "prio": base.priority}
                chain["policy"] = "accept"
            objects.append({"chain": chain})
        handles = []
        for rule in self.rules:  # handles in the order nft -f adds the rules
            handle += 2 if rule.anonymous else 1
            handles.append(handle)
        position = {name: index for index, (name, _, _) in enumerate(self.chains)}
        listed = sorted(range(len(self.rules)), key=lambda i: (position[self.rules[i].chain], i))
        for index in listed:  # listed chain by chain, in creation order
            rule = self.rules[index]
            body = {"family": "ip", "table": "kube-proxy", "chain": rule.chain}
            body["handle"] = handles[index]
            if rule.comment is not None:
                body["comment"] = rule.comment
            body["expr"] = list(rule.expr)
            objects.append({"rule": body})
        return json.dumps({"nftables": objects}) + "\n"


def _written_element(element: Element) -> str:
    key = " . ".join(str(part) for part in element.key)
    return key if element.goto is None else f"{key} : goto {element.goto}"


def _listed_element(element: Element) -> Any:
    key: Any = element.key[0] if len(element.key) == 1 else {"concat": list(element.key)}
    if element.goto is None:
        return key
    return [key, {"goto": {"target": element.goto}}]


# --- the expressions nft -j lists for kube-proxy's rule shapes --------------------------------


def payload(protocol: str, name: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": name}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def match(op: str, left: Expr, right: Any) -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def prefix(network: str) -> Expr:
    address, _, length = network.partition("/")
    return {"prefix": {"addr": address, "len": int(length)}}


def concat(*parts: Expr) -> Expr:
    return {"concat": list(parts)}


CT_NEW = match("in", {"ct": {"key": "state"}}, "new")
DADDR_PROTO_PORT = concat(payload("ip", "daddr"), meta("l4proto"), payload("th", "dport"))
PROTO_PORT = concat(meta("l4proto"), payload("th", "dport"))
MARK_FOR_MASQUERADE = {"mangle": {"key": meta("mark"), "value": {"|": [meta("mark"), MARK]}}}
REJECT = {"reject": {"type": "icmp", "expr": "port-unreachable"}}
MASQUERADE = {"masquerade": {"flags": "fully-random"}}


def jump(kind: str, target: str) -> Expr:
    return {kind: {"target": target}}


def vmap(key: Expr, name: str) -> Expr:
    return {"vmap": {"key": key, "data": f"@{name}"}}


def dnat_map(protocol: str, targets: list[tuple[str, int]]) -> tuple[str, tuple[Expr, ...]]:
    """`meta l4proto tcp dnat ip addr . port to numgen random mod N map { 0 : IP . port , ... }`
    (kubernetes/kubernetes@736e3b684ef1 pkg/proxy/nftables/proxier.go), written and listed."""
    entries = " , ".join(f"{i} : {a} . {p}" for i, (a, p) in enumerate(targets))
    written = (
        f"meta l4proto {protocol} dnat ip addr . port to numgen random mod {len(targets)} "
        f"map {{ {entries} }}"
    )
    numgen = {"numgen": {"mode": "random", "mod": len(targets), "offset": 0}}
    data = {"set": [[i, {"concat": [a, p]}] for i, (a, p) in enumerate(targets)]}
    expr = (
        match("==", meta("l4proto"), protocol),
        {"dnat": {"family": "ip", "addr": {"map": {"key": numgen, "data": data}}}},
    )
    return written, expr
