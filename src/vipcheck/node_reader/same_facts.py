"""Whether two snapshots give the same node facts: the node reader's files against the node
script's, read from the same nodes (issue 21's equivalence, proven on the lab).

Each node's facts are parsed from each snapshot by vipcheck's own parsers, as a run reads them
(the sysctl keys the catalogue reads), and compared fact by fact; a fact that cannot be read
compares by its error, so `missing` on one side and a value on the other differ. What two
reads seconds apart may differ in without either being wrong is left out, and named here:
the IPVS table's order (ipvsadm's sort is not reproducible: services and real servers compare
as sets), the connection entries' expiry counters (the entries compare without them), and the
conntrack entry count (net.netfilter.nf_conntrack_count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from vipcheck.checks import SYSCTL_KEYS
from vipcheck.facts import Facts, MissingInput, NodeFacts, Unobserved
from vipcheck.model.nftables import NftFamily
from vipcheck.model.node import ConnState, InvalidValue
from vipcheck.model.xtables import IptablesFamily
from vipcheck.parse import ParseError
from vipcheck.snapshot import SnapshotError, load_snapshot

VOLATILE_SYSCTLS = frozenset({"net.netfilter.nf_conntrack_count"})
_STATES = (ConnState.SYN_RECV.value, ConnState.FIN_WAIT.value)
_READ_ERRORS = (MissingInput, Unobserved, ParseError, InvalidValue, SnapshotError)


def node_fact_differences(left: Path, right: Path) -> list[str]:
    """`node: fact: different` for every node fact the two snapshot directories do not agree on,
    and for every node only one of them holds; empty where they give identical node facts."""
    facts = [
        Facts.from_snapshot(load_snapshot(side), sysctl_keys=SYSCTL_KEYS) for side in (left, right)
    ]
    names = [set(side.nodes) for side in facts]
    differences = [
        f"{node}: only in {side}"
        for node, side in [
            *((node, left) for node in sorted(names[0] - names[1])),
            *((node, right) for node in sorted(names[1] - names[0])),
        ]
    ]
    for node in sorted(names[0] & names[1]):
        pair = (facts[0].nodes[node], facts[1].nodes[node])
        differences += [
            f"{node}: {fact}: different"
            for fact, read in _FACTS
            if _outcome(read, pair[0]) != _outcome(read, pair[1])
        ]
    return differences


def _outcome(read: Callable[[NodeFacts], object], node: NodeFacts) -> object:
    """The fact, or the error reading it gave (its text names the file)."""
    try:
        return read(node)
    except _READ_ERRORS as error:
        return (type(error).__name__, str(error))


def _ipvs(node: NodeFacts) -> object:
    table = node.ipvs
    services = {
        service.key: (replace(service, real_servers=()), frozenset(service.real_servers))
        for service in table.services
    }
    return (table.version, table.conn_table_size, table.partial, services)


def _connections(node: NodeFacts) -> object:
    return {
        state: frozenset(
            (row.protocol, row.client, row.virtual, row.destination, row.state_name, row.pe_name)
            for row in node.connections_in(state)
        )
        for state in _STATES
    }


def _sysctls(node: NodeFacts) -> object:
    return {key: value for key, value in node.sysctls.values.items() if key not in VOLATILE_SYSCTLS}


def _each_family(node: NodeFacts) -> Iterator[object]:
    yield from (node.nftables(family) for family in NftFamily)
    yield from (node.iptables(family) for family in IptablesFamily)


_FACTS: tuple[tuple[str, Callable[[NodeFacts], object]], ...] = (
    ("observed", lambda node: node.unobserved_reason),
    ("IPVS table", _ipvs),
    ("IPVS absence", lambda node: node.ipvs_absent),
    ("IPVS timeouts", lambda node: node.timeouts),
    ("IPVS connections", _connections),
    ("sysctls", _sysctls),
    ("interfaces", lambda node: node.interfaces),
    ("kernel release", lambda node: node.kernel_release),
    ("nftables tables", lambda node: node.nft_tables),
    ("kube-proxy nftables and iptables tables", lambda node: list(_each_family(node))),
    ("nft version", lambda node: node.nft_version),
    ("ipsets", lambda node: node.ipset_names),
)
