"""A port's judgement is reused on a node only where it reads the very same objects (issue 19).

The map and chain judges run once per port and node; JudgeMemo hands an empty judgement to the
next node whose table gives the judge the same chain and set objects, and judges anew where
anything it read differs, or where the judgement found something (it names its node).
"""

from __future__ import annotations

import dataclasses

from tests.unit.nftables.test_expected_nftables import (
    NEW,
    POD_A,
    POD_B,
    faithful,
    redis,
    rules_of,
    slices,
)
from vipcheck.checks import nftables
from vipcheck.checks.base import Violation
from vipcheck.checks.kube_proxy import NotShown
from vipcheck.checks.nft_reads import JudgeMemo, TableReads
from vipcheck.datapath.nftables import PortRules

RULES = rules_of(redis(), slices((POD_A, "node-1"), (POD_B, "node-2")), NEW)
CALLS: list[str] = []


def counted(node: str, table: TableReads, rules: PortRules) -> list[Violation | NotShown]:
    """The chain judge, counting the nodes it really ran on."""
    CALLS.append(node)
    return nftables._judge_chains(node, table, rules)


def test_an_empty_judgement_serves_the_nodes_that_read_the_same_objects() -> None:
    CALLS.clear()
    memo: JudgeMemo[Violation | NotShown] = JudgeMemo()
    table = faithful(RULES)
    same_chains = dataclasses.replace(table, chains=dict(table.chains))  # another node's table
    assert memo.judged(counted, "node-1", table, RULES) == []
    assert memo.judged(counted, "node-2", same_chains, RULES) == []
    assert CALLS == ["node-1"]


def test_a_node_whose_chain_differs_is_judged_and_its_finding_names_it() -> None:
    CALLS.clear()
    memo: JudgeMemo[Violation | NotShown] = JudgeMemo()
    table = faithful(RULES)
    [chain_name] = RULES.policy_chains
    emptied = dataclasses.replace(table.chains[chain_name], rules=())
    broken = dataclasses.replace(table, chains={**table.chains, chain_name: emptied})
    assert memo.judged(counted, "node-1", table, RULES) == []
    found = memo.judged(counted, "node-2", broken, RULES)
    assert [v.node for v in found if isinstance(v, Violation)] == ["node-2"]
    again = memo.judged(counted, "node-3", broken, RULES)  # a finding is never handed on
    assert [v.node for v in again if isinstance(v, Violation)] == ["node-3"]
    assert CALLS == ["node-1", "node-2", "node-3"]
