"""A node's iptables chains, as `iptables-save` names them: what a switch to nftables mode may
leave behind of kube-proxy's IPVS (and iptables) mode.

Two backends can hold them at once: the legacy x_tables one and iptables-nft's, whose tables are
nftables tables of family ip/ip6 named nat, filter, mangle. Each is deleted with its own tool
(`iptables-legacy`, `iptables-nft`), so the chains are kept per backend.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class IptablesFamily(enum.Enum):
    """An address family of iptables, valued as its tool is named."""

    IPV4 = "iptables"
    IPV6 = "ip6tables"


class IptablesBackend(enum.Enum):
    """Where a dump's tables live, as `iptables -V` names it."""

    LEGACY = "legacy"
    NF_TABLES = "nf_tables"


@dataclass(frozen=True, slots=True)
class IptablesJump:
    """A rule jumping from one chain to a KUBE-* one, as iptables-save printed it: deleting it
    (`-D CHAIN SPEC...`) is what lets the target chain be deleted."""

    table: str
    chain: str
    target: str
    spec: tuple[str, ...]  # the rule's arguments after `-A CHAIN`, unquoted
    line: int


@dataclass(frozen=True, slots=True)
class IptablesTables:
    """One backend's tables: each table's chain names, and the jumps into KUBE-* chains."""

    backend: IptablesBackend | None  # None: a dump that does not say (iptables before 1.8)
    chains: Mapping[str, frozenset[str]]
    jumps: tuple[IptablesJump, ...] = ()


@dataclass(frozen=True, slots=True)
class IptablesDump:
    """One family's iptables chains on a node, every backend read, and the backends that may
    hold tables but were not read (no -save for them), with why: never taken for empty."""

    source: str
    backends: tuple[IptablesTables, ...] = ()
    unread: tuple[str, ...] = ()

    def chains(self) -> dict[str, frozenset[str]]:
        """Every table's chain names, all backends together."""
        merged: dict[str, frozenset[str]] = {}
        for backend in self.backends:
            for table, names in backend.chains.items():
                merged[table] = merged.get(table, frozenset()) | names
        return merged
