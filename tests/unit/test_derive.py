"""Values derived from a node's facts are computed once per node, failures included."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipcheck.checks.kube_proxy import expected_for_port, node_port_candidates
from vipcheck.expected import expected_virtual_services
from vipcheck.facts import Facts, MissingInput, NodeFacts
from vipcheck.snapshot import NodeSnapshot, load_snapshot

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "seed-incidents"


def test_a_derived_value_is_computed_once() -> None:
    node = NodeFacts(NodeSnapshot("node-1"))
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert [node.derive("n", compute) for _ in range(3)] == [1, 1, 1]
    assert node.derive("other", compute) == 2


def test_a_failed_derivation_is_raised_again_without_recomputing() -> None:
    node = NodeFacts(NodeSnapshot("node-1"))
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        raise MissingInput("node-1", ("ip-addr.json",))

    depths = []
    for _ in range(3):
        with pytest.raises(MissingInput, match=r"ip-addr\.json") as raised:
            node.derive("n", compute)
        depth, tb = 0, raised.value.__traceback__
        while tb is not None:
            depth, tb = depth + 1, tb.tb_next
        depths.append(depth)
    assert len(calls) == 1
    assert depths[0] == depths[-1]  # the kept error's traceback does not grow per raise


def test_expected_for_port_is_the_node_expected_state_of_that_port() -> None:
    """Nodes share what they agree on (ClusterIPs) and keep their own NodePorts."""
    facts = Facts.from_snapshot(load_snapshot(SEED))
    cluster = facts.cluster.cluster
    for name, node in facts.nodes.items():
        every = expected_virtual_services(
            cluster, name, node_port_candidates(node, cluster.node(name))
        )
        assert every
        for vs in every:
            found = expected_for_port(cluster, node, vs.port_key)
            assert set(found) == {other for other in every if other.port_key == vs.port_key}
