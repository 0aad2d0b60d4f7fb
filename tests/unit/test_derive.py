"""Values derived from a node's facts are computed once per node, failures included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vipcheck.datapath.ipvs import ExpectedState, node_port_candidates
from vipcheck.expected import expected_virtual_services
from vipcheck.facts import Facts, MissingInput, NodeFacts
from vipcheck.model.cluster import (
    ZONE_LABEL,
    Cluster,
    KubeProxyImage,
    KubeRelease,
    TrafficPolicy,
)
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


def test_for_port_is_the_node_expected_state_of_that_port() -> None:
    """Nodes share what they agree on (ClusterIPs) and keep their own NodePorts."""
    facts = Facts.from_snapshot(load_snapshot(SEED))
    cluster = facts.cluster.cluster
    for name, node in facts.nodes.items():
        every = expected_virtual_services(
            cluster, name, node_port_candidates(node, cluster.node(name))
        )
        assert every
        for vs in every:
            found = ExpectedState.of(facts).for_port(node, vs.port_key)
            assert set(found) == {other for other in every if other.port_key == vs.port_key}


def _local_policies(cluster: Cluster) -> Cluster:
    """Every Service Local, internally and externally: each node's real servers are its own."""
    local = TrafficPolicy.LOCAL
    services = tuple(
        replace(service, external_traffic_policy=local, internal_traffic_policy=local)
        for service in cluster.services
    )
    return replace(cluster, services=services)


def _old_kube_proxy(cluster: Cluster) -> Cluster:
    """The same objects, with a kube-proxy DaemonSet of a release that has no Local fallback."""
    image = KubeProxyImage("registry.k8s.io/kube-proxy:v1.22.0", KubeRelease(1, 22))
    return replace(cluster, kube_proxy_image=image)


def _zoned(cluster: Cluster) -> Cluster:
    """Each Node in its own zone (a label the expected state reads for topology hints)."""
    nodes = tuple(
        replace(node, labels={**node.labels, ZONE_LABEL: f"zone-{index}"})
        for index, node in enumerate(cluster.nodes)
    )
    return replace(cluster, nodes=nodes)


def test_each_cluster_gets_its_own_expected_state() -> None:
    """Per node, the index is the node's own expected state of its cluster, whatever another
    cluster's state held: Service policies (node-dependent real servers and reasons), the
    kube-proxy release, zones; states of the variants made in turn share nothing."""
    facts = Facts.from_snapshot(load_snapshot(SEED))
    seed = facts.cluster.cluster
    local = _local_policies(seed)
    variants = [seed, local, _old_kube_proxy(local), _zoned(local), seed]
    differing = 0
    for cluster in variants:
        state = ExpectedState(cluster, facts.nodes)
        for name, node in facts.nodes.items():
            every = expected_virtual_services(
                cluster, name, node_port_candidates(node, cluster.node(name))
            )
            differing += every != expected_virtual_services(
                seed, name, node_port_candidates(node, seed.node(name))
            )
            for vs in every:
                found = state.for_port(node, vs.port_key)
                assert found == tuple(other for other in every if other.port_key == vs.port_key)
    assert differing  # the variants do change some node's expected state
