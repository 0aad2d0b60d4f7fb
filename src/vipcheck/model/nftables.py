"""One nftables table as the kernel lists it: chains with their rules, sets and maps with elements.

kube-proxy in nftables mode keeps everything in one table per family (`ip kube-proxy`,
`ip6 kube-proxy`). Both ways a node's table reaches vipcheck, `nft -j list table` (JSON) and
`nft list table` (text, where nft has no JSON or a person pasted it), parse to this one model.

A rule is kept as the one line `nft list table` prints for it (statements only: no handle, no
indentation, single spaces), because that is the form kube-proxy writes and its own tests
interpret (pkg/proxy/nftables/helpers_test.go matches rule text with regular expressions), and
the form a person reads as evidence. The JSON parser renders each rule's expressions back into
that text exactly as nft does; tests hold the two parsers equal on tables the kernel listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class NftFamily(StrEnum):
    """The address family of a table: kube-proxy uses `ip` and `ip6`, never `inet`."""

    IP = "ip"
    IP6 = "ip6"


KUBE_PROXY_TABLE = "kube-proxy"


@dataclass(frozen=True, slots=True)
class NftRule:
    """One rule of a chain: its text as `nft list table` prints it, and where it was read."""

    text: str
    line: int  # 1-based line of the file it was read from (JSON: the rule object's position)
    handle: int | None = None
    comment: str | None = None  # the rule's `comment "..."`, kept apart from the text

    def __str__(self) -> str:
        """The rule as evidence: its text, with its comment as nft prints it."""
        return self.text if self.comment is None else f'{self.text} comment "{self.comment}"'


@dataclass(frozen=True, slots=True)
class NftChain:
    """A chain: a base chain has a hook (type, hook, priority), a regular chain none."""

    name: str
    rules: tuple[NftRule, ...] = ()
    hook: str | None = None  # "prerouting", "output", ... for a base chain
    chain_type: str | None = None  # "nat", "filter" for a base chain
    priority: int | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class NftElement:
    """One element of a set or map.

    key: each component of the key as nft prints it, `10.96.0.10`, `tcp`, `53` (a concatenation
    `a . b . c` has three components; a range or prefix stays one, `10.0.0.0/8`).
    value: a map element's value as nft prints it (`goto service-ULMVA6XW-ns1/svc1/tcp/p80`,
    `drop`, `10.180.0.1 . 80`); None in a set.
    """

    key: tuple[str, ...]
    value: str | None = None
    comment: str | None = None
    timeout: int | None = None  # seconds, an element of a set with timeouts (affinity)

    def __str__(self) -> str:
        """The element as nft prints it, for evidence."""
        text = " . ".join(self.key)
        if self.value is not None:
            text += f" : {self.value}"
        if self.comment is not None:
            text += f' comment "{self.comment}"'
        return text


@dataclass(frozen=True, slots=True, weakref_slot=True)  # indexes live as long (kept_with)
class NftSet:
    """A named set, or a map when it has a value type (a verdict map's is `verdict`)."""

    name: str
    key_type: tuple[str, ...]  # ("ipv4_addr", "inet_proto", "inet_service")
    value_type: tuple[str, ...] | None = None  # ("verdict",); None for a set
    elements: tuple[NftElement, ...] = ()
    flags: frozenset[str] = frozenset()  # "interval", "dynamic", "timeout"
    timeout: int | None = None  # seconds, the set's default element timeout
    comment: str | None = None
    line: int = 0

    @property
    def is_map(self) -> bool:
        return self.value_type is not None


@dataclass(frozen=True, slots=True, weakref_slot=True)  # indexes live as long (kept_with)
class NftTable:
    """One table with its chains and its sets and maps, each by name."""

    family: NftFamily
    name: str
    chains: Mapping[str, NftChain]
    sets: Mapping[str, NftSet]  # sets and maps share one namespace in nftables
    comment: str | None = None
    # Why a pasted listing shows only part of the table (a `...` gap, an element list cut by
    # hand), so what it does not show is not called missing; None for a whole listing.
    partial: str | None = None
