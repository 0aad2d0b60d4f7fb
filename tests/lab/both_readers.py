"""The node script and the node reader, each gathering a lab's nodes as vipcheck gathers a node
(gather_nodes: one ssh each, in parallel, framed output), and their facts compared
(vipcheck.node_reader.same_facts). The reader is this checkout's, pushed into the VM and run
by the guest's python3 (fixtures/lab/reader.py); the tests of issue 21's equivalence use this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fixtures.lab.running import RunningLab
from vipcheck.checks import SYSCTL_KEYS
from vipcheck.gather.node_script import build_node_script
from vipcheck.gather.nodes import gather_nodes
from vipcheck.node_reader.same_facts import node_fact_differences
from vipcheck.snapshot import Snapshot, save_snapshot
from vipcheck.transport import HOST_SPEC_RUNNER, NodeRunner, NodeTarget

SCRIPT = build_node_script(sysctl_keys=SYSCTL_KEYS)  # what vipcheck's gather sends
TIMEOUT_S = 240.0  # per node: big's nodes under software emulation, beside the other labs


@dataclass
class Compared:
    """A lab's nodes read both ways: the nodes each observed, and the differences."""

    nodes: list[str]
    directory: Path
    observed: dict[str, list[str]] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)


def snapshot_of(
    lab: RunningLab, nodes: list[str], runner: NodeRunner, directory: Path
) -> list[str]:
    """Gather the nodes with runner into a snapshot directory of node files; the nodes observed."""
    ssh_config = str(lab.workdir / "ssh_config")
    targets = [NodeTarget(node, f"ssh://{node}", ssh_config) for node in nodes]
    gathered = gather_nodes(targets, TIMEOUT_S, lambda _line: None, script=SCRIPT, runner=runner)
    save_snapshot(Snapshot({}, gathered), directory)
    return sorted(name for name, node in gathered.items() if node.error is None)


def compare(lab: RunningLab, nodes: list[str], runner: NodeRunner, directory: Path) -> Compared:
    """The nodes read by the script, then by runner (the reader), and compared."""
    script, reader = directory / "script", directory / "reader"
    result = Compared(sorted(nodes), directory)
    result.observed["script"] = snapshot_of(lab, nodes, HOST_SPEC_RUNNER, script)
    result.observed["reader"] = snapshot_of(lab, nodes, runner, reader)
    result.differences = node_fact_differences(script, reader)
    return result
