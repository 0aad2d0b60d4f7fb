"""The bench's synthetic snapshots: read as real outputs, and exactly the injected faults fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.floor import read_and_split
from bench.synth import IPVS_FAULTS, RECORDED, Fault, Shape, expected_failures, generate
from vipcheck.cases import Outcome, cases_for, run_case
from vipcheck.checks import CATALOGUE, MIGRATION_CHECKS
from vipcheck.facts import Facts
from vipcheck.model.node import Connection
from vipcheck.parse.procfs import parse_proc_ip_vs_conn
from vipcheck.settings import Settings
from vipcheck.snapshot import load_snapshot

SMALL = Shape(nodes=5, services=24, connections=40)


def _failed(directory: Path) -> tuple[set[tuple[str, str]], set[Outcome]]:
    facts = Facts.from_snapshot(load_snapshot(directory))
    failed, outcomes = set(), set()
    # As the bench replays: without -m naming them, the readiness checks are left out.
    for check in (check for check in CATALOGUE if check not in MIGRATION_CHECKS):
        for case in cases_for(check, facts):
            result = run_case(case, facts, Settings())
            outcomes.add(result.outcome)
            if result.outcome is Outcome.FAILED:
                failed.add((check.id, case.id))
    return failed, outcomes


@pytest.mark.parametrize(
    "faults",
    [(), IPVS_FAULTS, (Fault.STALE_REAL_SERVER,), (Fault.STRICT_RP_FILTER, Fault.TCPFIN_120)],
    ids=["none", "all", "stale", "rp-filter+tcpfin"],
)
def test_exactly_the_injected_faults_fail(tmp_path: Path, faults: tuple[Fault, ...]) -> None:
    shape = Shape(nodes=5, services=24, connections=40, faults=faults)
    failed, outcomes = _failed(generate(shape, tmp_path))
    assert failed == expected_failures(shape)
    assert Outcome.ERROR not in outcomes  # every generated file parses
    assert len(expected_failures(shape)) >= len(faults)


def test_the_shape_decides_what_is_written(tmp_path: Path) -> None:
    shape = Shape(nodes=3, services=20, node_port_share=0.5, big_table_node=1, big_table=300)
    generate(shape, tmp_path)
    facts = Facts.from_snapshot(load_snapshot(tmp_path))
    assert sorted(facts.nodes) == ["node-001", "node-002", "node-003"]
    ports = sum(len(service.ports) for service in facts.cluster.services)
    assert ports == 20 + int(20 * shape.two_port_share)
    assert len(_connections(tmp_path, "node-002")) == 300
    assert len(_connections(tmp_path, "node-001")) == shape.connections
    node_ports = [vs for vs in facts.nodes["node-001"].ipvs.services if (vs.port or 0) >= 30000]
    assert len(node_ports) == sum(
        1 for service in facts.cluster.services for port in service.ports if port.node_port
    )
    kube_ipvs0 = facts.nodes["node-003"].interfaces["kube-ipvs0"]
    assert len(kube_ipvs0.addresses or ()) == 20


def test_ipvsadm_lines_have_the_printf_widths_of_the_recording(tmp_path: Path) -> None:
    generate(SMALL, tmp_path)
    recorded = (RECORDED / "ipvsadm-Ln.txt").read_text().splitlines()
    generated = (tmp_path / "nodes/node-001/ipvsadm-Ln.txt").read_text().splitlines()
    assert generated[:3] == recorded[:3]
    dest = re.compile(r"  -> (?P<rs>\S+) +(?P<fwd>Masq) +\d+ +\d+ +\d+ +")

    def columns(line: str) -> tuple[int, int]:
        match = dest.fullmatch(line)
        assert match is not None, line
        return match.start("fwd"), len(line)

    recorded_columns = {
        columns(line) for line in recorded if line.startswith("  -> ") and "Forward" not in line
    }
    generated_columns = {
        columns(line) for line in generated if line.startswith("  -> ") and "Forward" not in line
    }
    assert generated_columns == recorded_columns


def test_the_floor_reads_every_line(tmp_path: Path) -> None:
    generate(SMALL, tmp_path)
    files, lines = read_and_split(tmp_path)
    on_disk = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert files == len(on_disk)
    assert lines == sum(len(path.read_text().splitlines()) for path in on_disk)


def test_real_server_counters_count_the_nodes_connection_entries(tmp_path: Path) -> None:
    shape = Shape(nodes=3, services=30, connections=200, faults=())
    generate(shape, tmp_path)
    facts = Facts.from_snapshot(load_snapshot(tmp_path))
    for name, node in facts.nodes.items():
        servers = [rs for vs in node.ipvs.services for rs in vs.real_servers]
        connections = _connections(tmp_path, name)
        established = sum(1 for c in connections if c.state_name == "ESTABLISHED")
        assert sum(rs.active_conns or 0 for rs in servers) == established
        assert sum(rs.inact_conns or 0 for rs in servers) == shape.connections - established
        assert any(rs.active_conns == rs.inact_conns == 0 for rs in servers)  # idle ones


def _connections(snapshot: Path, node: str) -> tuple[Connection, ...]:
    """A generated node's whole connection table, parsed."""
    path = snapshot / "nodes" / node / "ip_vs_conn.txt"
    return parse_proc_ip_vs_conn(path.read_text(), str(path))
