"""The trace memo gives exactly the traces a full run gives, node after node (issue 19).

The bench's nftables snapshot holds what makes nodes' tables differ: each node's own addresses
(NodePorts on a local destination), pod sources and hairpin elements, a stale DNAT target in
one node's service chain, a ClusterIP missing from one node's service-ips, a stale chain that
shifts every later rule's line on another.
"""

from __future__ import annotations

import gc
import sys
from ipaddress import ip_address
from pathlib import Path

from bench.synth import Mode, Shape, generate
from vipcheck.datapath.ipvs import node_port_candidates
from vipcheck.datapath.nft_trace import OUTSIDE_CLIENT, Origin, Packet, TraceMemo, Tracer
from vipcheck.facts import Facts
from vipcheck.model.nftables import NftFamily
from vipcheck.model.node import L4Protocol
from vipcheck.snapshot import load_snapshot

SHAPE = Shape(nodes=8, services=30, connections=10, node_port_share=0.3, mode=Mode.NFTABLES)


def test_memoized_traces_equal_full_traces_on_every_node(tmp_path: Path) -> None:
    facts = Facts.from_snapshot(load_snapshot(generate(SHAPE, tmp_path)))
    cluster = facts.cluster.cluster
    memo = TraceMemo()
    seen: dict[int, object] = {}  # the branches of every trace made so far, kept alive, by id
    reused = later = 0
    for index, name in enumerate(sorted(facts.nodes)):
        node = facts.nodes[name]
        table = node.nftables(NftFamily.IP)
        assert table is not None
        local = node_port_candidates(node, cluster.node(name))
        memoized, full = Tracer(table, local, memo), Tracer(table, local)
        pod = ip_address(f"10.128.{4 * index}.2")  # the node's first pod: an endpoint
        vips = [(s.cluster_ips[0], p.port, p.protocol) for s in cluster.services for p in s.ports]
        vips += [(a, p.node_port, p.protocol) for s in cluster.services for p in s.ports
                 if p.node_port for a in local]  # fmt: skip
        vips += [(ip_address("10.96.255.1"), 80, L4Protocol.TCP)]  # no such Service
        for address, port, protocol in vips:
            for source, origin in ((OUTSIDE_CLIENT, Origin.OUTSIDE), (pod, Origin.POD)):
                packet = Packet(source, address, protocol, port or 0, origin)
                traced = memoized.trace(packet)
                assert traced == full.trace(packet), (name, packet)
                if index > 0:
                    later += 1
                    reused += id(traced.branches) in seen
                seen[id(traced.branches)] = traced.branches
    assert reused > later * 0.8  # most of the later nodes' traces were not run again


def test_a_reused_trace_is_the_packets_own(tmp_path: Path) -> None:
    """Two nodes, the same ClusterIP from each node's own pod: the second trace names its own
    packet, and where the source is the endpoint itself (hairpin) the masquerade is its own."""
    facts = Facts.from_snapshot(load_snapshot(generate(SHAPE, tmp_path)))
    cluster = facts.cluster.cluster
    memo = TraceMemo()
    service = cluster.services[0]
    traces = []
    for name in ("node-001", "node-002"):
        node = facts.nodes[name]
        table = node.nftables(NftFamily.IP)
        assert table is not None
        tracer = Tracer(table, node_port_candidates(node, cluster.node(name)), memo)
        source = ip_address("10.128.0.2")  # node-001's first pod, endpoint 0 of svc-00000
        packet = Packet(source, service.cluster_ips[0], L4Protocol.TCP, 80, Origin.POD)
        traces.append(tracer.trace(packet))
        assert traces[-1].packet == packet
        assert traces[-1] == Tracer(table, node_port_candidates(node, cluster.node(name))).trace(
            packet
        )
    assert traces[0].masquerade  # node-001 holds the hairpin element for its own pod
    assert not traces[1].masquerade  # node-002 does not: the memo re-read the set


def test_the_memo_keeps_no_table_alive(tmp_path: Path) -> None:
    """A node's table can go once its tracer is done: the memo's entries keep chains and sets,
    never a tracer or a table (what a replay of 100 nodes holds at once)."""
    facts = Facts.from_snapshot(load_snapshot(generate(SHAPE, tmp_path)))
    cluster = facts.cluster.cluster
    memo = TraceMemo()
    node = facts.nodes["node-001"]
    table = node.nftables(NftFamily.IP)
    assert table is not None
    before = sys.getrefcount(table)
    tracer = Tracer(table, node_port_candidates(node, cluster.node("node-001")), memo)
    for service in cluster.services:
        for source, origin in (
            (OUTSIDE_CLIENT, Origin.OUTSIDE),
            (ip_address("10.128.0.2"), Origin.POD),
        ):
            tracer.trace(Packet(source, service.cluster_ips[0], L4Protocol.TCP, 80, origin))
    assert sys.getrefcount(table) > before  # the tracer holds it
    del tracer
    gc.collect()
    assert sys.getrefcount(table) == before
