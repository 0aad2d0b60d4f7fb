"""The datapath seam: chosen by kube-proxy's mode; the checks and the probe read one expected
state, kept by the snapshot's Facts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from vipcheck import expected
from vipcheck.cases import cases_for, run_case
from vipcheck.checks import CATALOGUE
from vipcheck.datapath import DATAPATHS, datapath_for
from vipcheck.datapath import ipvs as ipvs_module
from vipcheck.datapath.ipvs import IPVS
from vipcheck.expected import ExpectedVirtualService, VirtualServiceKind
from vipcheck.facts import Facts
from vipcheck.handshake_rounds import plan_vips
from vipcheck.model.cluster import Cluster, ProxyMode
from vipcheck.model.handshakes import ProbeSettings, Vantage
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import NODE_FILES, load_snapshot

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "seed-incidents"


def _with_mode(tmp_path: Path, mode: str | None) -> Facts:
    copy = tmp_path / "snapshot"
    shutil.copytree(SEED, copy)
    config = copy / "cluster" / "kube-proxy.json"
    if mode is None:
        config.unlink()
    else:
        data = json.loads(config.read_text())
        text = data["data"]["config.conf"]
        assert "mode: ipvs" in text
        data["data"]["config.conf"] = text.replace("mode: ipvs", f"mode: {mode}")
        config.write_text(json.dumps(data))
    return Facts.from_snapshot(load_snapshot(copy))


@pytest.mark.parametrize("mode", ["ipvs", None, "iptables"])
def test_the_datapath_is_chosen_by_kube_proxys_mode(tmp_path: Path, mode: str | None) -> None:
    """IPVS for mode ipvs; without the ConfigMap, or for a mode with no datapath yet, IPVS's
    expected state too (kube-proxy's Service semantics: the probe plans from it)."""
    facts = _with_mode(tmp_path, mode)
    assert datapath_for(facts.cluster) is IPVS
    assert DATAPATHS[ProxyMode.IPVS] is IPVS


def test_every_datapath_reads_gathered_node_files() -> None:
    for datapath in DATAPATHS.values():
        for node_input in datapath.node_inputs:
            assert set(node_input.files) <= set(NODE_FILES), datapath.mode


def test_the_probe_reads_the_expected_state_the_checks_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the checks have judged every node, planning the probe computes no expected VS again:
    each node's NodePorts at its Node addresses are among those of its own state."""
    facts = Facts.from_snapshot(load_snapshot(SEED))
    for check in CATALOGUE:
        for case in cases_for(check, facts):
            run_case(case, facts, DEFAULTS)
    computed: list[str] = []
    real = expected.expected_virtual_services

    def counted(cluster: Cluster, node: str, *rest: Any) -> tuple[ExpectedVirtualService, ...]:
        computed.append(node)
        return real(cluster, node, *rest)

    monkeypatch.setattr(ipvs_module, "expected_virtual_services", counted)
    vantages = [Vantage(name, name, f"ssh://{name}") for name in sorted(facts.nodes)]
    targets = plan_vips(facts, vantages, ProbeSettings())
    assert computed == []
    state = IPVS.expected(facts)
    node_ports = {
        (str(vs.address), vs.port)
        for name in facts.nodes
        for vs in state.reached_at(name)
        if vs.kind is VirtualServiceKind.NODE_PORT
    }
    assert node_ports  # the seed has NodePorts, probed at the nodes' InternalIPs only
    assert {(str(t.address.address), t.address.port) for t in targets} >= node_ports
    assert all(address.startswith("192.168.58.") for address, _ in node_ports)
