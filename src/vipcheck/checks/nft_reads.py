"""A node's nftables table as the Service-port judges read it, so that one judgement serves
every node where it reads the same.

Most Service ports get the same rules on every node (vipcheck.datapath.nftables shares them),
and the parser gives equal chains and sets one object (vipcheck.parse.nft). So a port's map,
chain, firewall or affinity judgement on one node is the judgement on every node whose table
gives the judge the very same objects. TableReads records what a judge reads; JudgeMemo keeps
each judgement that found nothing with its reads and gives it to the next node where every read
gives the identical object again. A judgement that found something names its node, so it is
made anew on each node. 100 nodes x 5,000 Services judge each port about once, not 100 times.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from vipcheck.datapath.nftables import AFFINITY_PREFIX, PortRules
from vipcheck.model.nftables import NftChain, NftSet, NftTable

Verdict = TypeVar("Verdict")
T = TypeVar("T")
_Read = tuple[Callable[["TableReads", str], object], str, object]
"""One read of a table: how (TableReads._chain, ...), of what name, and what it gave."""

_AFFINITY_HASH = re.compile(r"[A-Z2-7]{8}-")


class TableReads:
    """One table as a judge reads it: each chain, set and affinity-set list it asked for, with
    what it got."""

    def __init__(self, table: NftTable) -> None:
        self.table = table
        self.reads: list[_Read] = []

    def chain(self, name: str) -> NftChain | None:
        return self._recorded(TableReads._chain, name)

    def set(self, name: str) -> NftSet | None:
        return self._recorded(TableReads._set, name)

    def affinity_sets(self, port_id: str) -> tuple[str, ...]:
        """The table's affinity sets of one Service port (`ns/svc/tcp/p80__`, from
        `affinity-HASH-ns/svc/tcp/p80__IP/port`), sorted."""
        return self._recorded(TableReads._affinity_sets, port_id)

    def gives_again(self, reads: list[_Read]) -> bool:
        """Whether every read gives here what it gave there: the same object, or (an affinity
        set list) an equal one."""
        for read, name, found in reads:
            here = read(self, name)
            if here is not found and (read is not TableReads._affinity_sets or here != found):
                return False
        return True

    def _recorded(self, read: Callable[[TableReads, str], T], name: str) -> T:
        found = read(self, name)
        self.reads.append((read, name, found))
        return found

    def _chain(self, name: str) -> NftChain | None:
        return self.table.chains.get(name)

    def _set(self, name: str) -> NftSet | None:
        return self.table.sets.get(name)

    def _affinity_sets(self, port_id: str) -> tuple[str, ...]:
        return _affinity_sets_of(self.table).get(port_id, ())


Of = TypeVar("Of")
_KEPT: dict[tuple[int, Callable[..., object]], object] = {}  # by the object's id, and builder
_NOT_BUILT = object()


def kept_with(of: Of, build: Callable[[Of], T]) -> T:
    """build(of), kept as long as `of` lives (found by identity): a node's ports are judged
    one after the other against the same table and maps, so each index is built once per
    node, and goes when the node's table is let go (vipcheck.judging)."""
    key = (id(of), build)
    found = _KEPT.get(key, _NOT_BUILT)
    if found is not _NOT_BUILT:
        return cast(T, found)
    built = _KEPT[key] = build(of)
    weakref.finalize(of, _KEPT.pop, key, None)
    return built


def _affinity_sets_of(table: NftTable) -> dict[str, tuple[str, ...]]:
    """Every affinity set of the table by its Service port."""
    return kept_with(table, _index_affinity_sets)


def _index_affinity_sets(table: NftTable) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for set_name in sorted(table.sets):
        rest = set_name.removeprefix(AFFINITY_PREFIX)
        if rest != set_name and _AFFINITY_HASH.match(rest) and "__" in rest:
            port_id = rest[9:].partition("__")[0] + "__"
            found.setdefault(port_id, []).append(set_name)
    return {port_id: tuple(names) for port_id, names in found.items()}


Judge = Callable[[str, TableReads, PortRules], list[Verdict]]


class JudgeMemo(Generic[Verdict]):
    """The judgements that found nothing, by judge and port rules, with what each read."""

    ENTRIES_PER_KEY = 4

    def __init__(self) -> None:
        # By the rules' id, the rules kept alive beside their entries.
        self._entries: dict[
            tuple[Judge[Verdict], int],
            tuple[PortRules, list[list[_Read]]],
        ] = {}

    def judged(
        self, judge: Judge[Verdict], node: str, table: NftTable, rules: PortRules
    ) -> list[Verdict]:
        """judge(node, table, rules), or an earlier node's empty judgement that reads the same."""
        key = (judge, id(rules))
        kept = self._entries.get(key)
        if kept is None or kept[0] is not rules:
            kept = self._entries[key] = (rules, [])
        reads = TableReads(table)
        for earlier in kept[1]:
            if reads.gives_again(earlier):
                return []
        verdicts = judge(node, reads, rules)
        if not verdicts:
            kept[1].insert(0, reads.reads)
            del kept[1][self.ENTRIES_PER_KEY :]
        return verdicts
