"""The budget policy of a large cluster: every Service port from one node and every outside
host, within each vantage point's connection limit, and the round's cap grown to fit."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.synth import Shape, generate
from vipcheck.facts import Facts
from vipcheck.handshake_rounds import connection_limit, plan_vips, round_settings
from vipcheck.model.handshakes import ProbeSettings, TargetKind, Vantage
from vipcheck.snapshot import load_snapshot

NODES = 4


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> Facts:
    directory = tmp_path_factory.mktemp("cluster")
    generate(Shape(nodes=NODES, services=60, node_port_share=0.2, faults=()), directory)
    return Facts.from_snapshot(load_snapshot(Path(directory)))


def vantages(facts: Facts) -> list[Vantage]:
    nodes = [Vantage(name, name, f"ssh://{name}") for name in sorted(facts.nodes)]
    return [*nodes, Vantage("client", None, "ssh://client"), Vantage("mon", None, "ssh://mon")]


def tcp_ports(facts: Facts) -> set[str]:
    return {
        f"{s.key}:{p.port}/TCP"
        for s in facts.cluster.services
        for p in s.ports
        if p.protocol.value == "TCP"
    }


def every_vip(facts: Facts) -> set[str]:
    """What a full round covers, from the Services alone: each TCP port on its ClusterIPs, and
    each NodePort on every node's address (the synthetic cluster gives every port endpoints)."""
    node_ips = [ip for node in facts.cluster.nodes for ip in node.internal_ips]
    vips = set()
    for service in facts.cluster.services:
        for port in service.ports:
            if port.protocol.value != "TCP":
                continue
            vips |= {f"{ip}:{port.port}" for ip in service.cluster_ips}
            if port.node_port is not None:
                vips |= {f"{ip}:{port.node_port}" for ip in node_ips}
    return vips


def test_a_small_cluster_is_probed_fully(facts: Facts) -> None:
    targets = plan_vips(facts, vantages(facts), ProbeSettings())
    expected = every_vip(facts)
    assert len(expected) == 132  # 72 TCP ports on ClusterIPs, 15 NodePorts on 4 nodes
    for vantage in vantages(facts):  # every vantage point probes every VIP, once
        mine = [str(t.address) for t in targets if t.vantage == vantage.name]
        assert sorted(mine) == sorted(expected), vantage.name
    assert round_settings(targets, ProbeSettings()) == ProbeSettings()


def test_a_large_cluster_deals_service_ports_and_keeps_every_outside_host(facts: Facts) -> None:
    settings = ProbeSettings(budget_s=3)  # 50 connections per vantage point: too few for all
    limit = connection_limit(settings)
    targets = plan_vips(facts, vantages(facts), settings)
    by_vantage: dict[str, list[str]] = {}
    for target in targets:
        by_vantage.setdefault(target.vantage, []).append(str(target.service))
    on_nodes = [
        port for name, ports in by_vantage.items() if name.startswith("node") for port in ports
    ]
    assert set(on_nodes) == tcp_ports(facts)  # every TCP Service port from a node ...
    for outside in ("client", "mon"):  # ... and from each outside host
        assert set(by_vantage[outside]) == tcp_ports(facts)
    for target in targets:
        if target.kind is TargetKind.NODE_PORT and target.vantage.startswith("node"):
            node_ip = facts.cluster.node(target.vantage).internal_ips[0]  # type: ignore[union-attr]
            assert target.address.address == node_ip  # a node probes its own NodePort
    node_ports = Counter(
        str(t.service) for t in targets if t.kind is TargetKind.NODE_PORT and t.vantage == "client"
    )
    assert node_ports
    assert set(node_ports.values()) == {1}  # one node address per NodePort
    attempts = Counter[str]()
    for target in targets:
        attempts[target.vantage] += target.attempts
    assert all(
        attempts[name] <= limit or all(t.attempts == 1 for t in targets if t.vantage == name)
        for name in attempts
    )
    assert max(attempts.values()) < sum(attempts.values()) / 2  # the work is spread


def test_a_large_round_runs_every_vantage_point_at_once_within_the_total_cap(
    facts: Facts,
) -> None:
    settings = ProbeSettings(budget_s=3)
    targets = plan_vips(facts, vantages(facts), settings)
    grown = round_settings(targets, settings, total_cap_s=40)
    assert grown.parallel == len(vantages(facts))
    assert settings.budget_s < grown.budget_s <= 40 - settings.budget_s  # attribution's round left
    assert round_settings(targets, settings, total_cap_s=4).budget_s == settings.budget_s
