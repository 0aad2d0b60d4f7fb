"""Vantage points: every node with a host spec, and hosts outside the cluster from the inventory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vipcheck.gather.vantage_points import ProbeError, vantage_points
from vipcheck.options import GatherOptions

NODES = json.dumps(
    {
        "items": [
            {
                "metadata": {"name": f"node-{n}"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.58.1{n}"}]},
            }
            for n in (1, 2, 3)
        ]
    }
)


@pytest.fixture
def ssh_config(tmp_path: Path) -> str:
    path = tmp_path / "ssh_config"
    path.write_text(
        "".join(f"Host {name}\n    Port 22\n" for name in ("node-1", "node-2", "node-3", "client"))
        + "Host *.example.com !bastion\n    User x\n"
    )
    return str(path)


def test_nodes_then_ssh_config_hosts_that_are_no_node(ssh_config: str) -> None:
    points = vantage_points(GatherOptions(ssh_config=ssh_config), NODES)
    assert [(p.vantage.name, p.vantage.node, p.target.spec) for p in points] == [
        ("node-1", "node-1", "ssh://node-1"),
        ("node-2", "node-2", "ssh://node-2"),
        ("node-3", "node-3", "ssh://node-3"),
        ("client", None, "ssh://client"),
    ]
    assert all(p.target.ssh_config == ssh_config for p in points)


def test_hosts_specs_matching_no_node_probe_from_outside() -> None:
    options = GatherOptions(hosts=("ssh://root@192.168.58.11", "ssh://probe.example.com:2222"))
    points = vantage_points(options, NODES)
    assert [(p.vantage.name, p.vantage.node) for p in points] == [
        ("node-1", "node-1"),
        ("probe.example.com", None),
    ]


def test_probe_from_limits_and_names_unknown_vantage_points(ssh_config: str) -> None:
    options = GatherOptions(ssh_config=ssh_config)
    chosen = vantage_points(options, NODES, ("client", "node-2"))
    assert [p.vantage.name for p in chosen] == ["node-2", "client"]
    with pytest.raises(ProbeError, match=r"--probe-from node-9: no such vantage point \(known: "):
        vantage_points(options, NODES, ("node-9",))
