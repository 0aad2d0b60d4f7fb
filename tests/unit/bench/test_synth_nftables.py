"""The bench's nftables-mode snapshots: the kernel lists the generated table as generated, and
exactly the injected faults fail (issue 19)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.synth import Fault, Mode, Shape, expected_failures, generate, nftables_ruleset
from tests.nft_kernel import in_namespace
from tests.unit.bench.test_synth import _failed
from vipcheck.cases import Outcome
from vipcheck.facts import Facts
from vipcheck.model.cluster import KubeRelease, ProxyMode
from vipcheck.model.nftables import NftFamily, NftTable
from vipcheck.parse.nft import parse_nft_json
from vipcheck.snapshot import load_snapshot

SMALL = Shape(nodes=5, services=24, connections=40, mode=Mode.NFTABLES)


def _elements_sorted(table: NftTable) -> NftTable:
    """The table with each set's elements in one order: the kernel lists a hash set's elements
    in its own order, not the order they were added."""
    sets = {
        name: dataclasses.replace(found, elements=tuple(sorted(found.elements, key=str)))
        for name, found in table.sets.items()
    }
    return dataclasses.replace(table, sets=sets)


@pytest.mark.parametrize("node", [0, 1, 2])  # a plain node, one with a stale DNAT, one stale chain
def test_the_kernel_lists_the_generated_table(tmp_path: Path, node: int) -> None:
    """The ruleset loaded with `nft -f` in a namespace of its own: the kernel's `nft -j` listing
    reads to the same model (handles, rule texts, elements) as the generated listing."""
    generate(SMALL, tmp_path)
    name = f"node-{node + 1:03d}"
    generated = (tmp_path / "nodes" / name / "nft-ip-kube-proxy.json").read_text()
    listed = in_namespace(nftables_ruleset(SMALL, node), "nft -j list table ip kube-proxy")
    kernel = parse_nft_json(listed, "kernel")
    assert _elements_sorted(kernel) == _elements_sorted(parse_nft_json(generated, name))
    assert len(kernel.chains["services"].rules) == 3
    assert sum(1 for chain in kernel.chains if chain.startswith("service-")) >= 24


@pytest.mark.parametrize(
    "faults",
    [(), None, (Fault.STALE_DNAT_PORT,), (Fault.MISSING_SERVICE_IP,), (Fault.STALE_CHAIN,)],
    ids=["none", "all", "stale-dnat-port", "missing-service-ip", "stale-chain"],
)
def test_exactly_the_injected_faults_fail(tmp_path: Path, faults: tuple[Fault, ...] | None) -> None:
    shape = dataclasses.replace(SMALL, faults=faults)
    failed, outcomes = _failed(generate(shape, tmp_path))
    assert failed == expected_failures(shape)
    assert Outcome.ERROR not in outcomes  # every generated file parses and traces
    assert len(failed) >= len(shape.injected)


def test_nftables_mode_writes_a_1_36_cluster_without_ipvs(tmp_path: Path) -> None:
    generate(SMALL, tmp_path)
    facts = Facts.from_snapshot(load_snapshot(tmp_path))
    cluster = facts.cluster.cluster
    assert cluster.kube_proxy is not None
    assert cluster.kube_proxy.mode is ProxyMode.NFTABLES
    assert cluster.kube_proxy_release("node-003") == KubeRelease(1, 36)
    files = {path.name for path in (tmp_path / "nodes" / "node-003").iterdir()}
    assert {"nft-tables.txt", "nft-ip-kube-proxy.json"} <= files
    assert not {"ipvsadm-Ln.txt", "ip_vs_conn.txt", "ipvsadm-timeout.txt"} & files
    assert facts.nodes["node-003"].interfaces.get("kube-ipvs0") is None
    table = facts.nodes["node-003"].nftables(NftFamily.IP)
    assert table is not None
    ports = sum(len(service.ports) for service in cluster.services)
    assert len(table.sets["service-ips"].elements) == ports
    assert facts.nodes["node-003"].nftables(NftFamily.IP6) is None
