"""Where vipcheck runs on the node itself (`local://`), the node is read by the netlink reader.

The reader (vipcheck-node, vipcheck.node_reader) prints the node script's frames, so a local node
is gathered, parsed and judged as any other node is; it reads IPVS, links and addresses over
netlink, not by running ipvsadm and ip. It is run by this very interpreter
(`python -m vipcheck.node_reader`), through testinfra's local backend as the script would be, so
`local://?sudo=true` and the node timeout apply unchanged. Every other target runs the script.
Probes and the after-probe read of the connection table stay scripts (vantage_points).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from vipcheck.transport import NodeTarget, RunResult, connection_of, run_command_on, run_on

READER_COMMAND = ("%s -m vipcheck.node_reader", sys.executable)


@dataclass(frozen=True, slots=True)
class NodeGatherRunner:
    """Gathers `local://` nodes with the netlink reader, and every other node with the script."""

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        """The reader's frames for a local target (`script` unsent); the script's elsewhere."""
        if connection_of(target) == "local":
            return run_command_on(target, READER_COMMAND, timeout_s)
        return run_on(target, script, timeout_s)


NODE_GATHER_RUNNER = NodeGatherRunner()
