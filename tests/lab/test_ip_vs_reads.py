"""/proc/net/ip_vs, the table of nodes without ipvsadm, read whole on a kernel that loses to cat.

The lab's nodes are network namespaces of one Linux 6.1 kernel, as kind's are containers of one
host. That kernel keeps one IPVS service table for all namespaces: a read of /proc/net/ip_vs
that takes several records resumes past services of the reader's namespace, so `cat` loses some
once a node's table outgrows one page. The `big` scenario (2,104 virtual services per node)
shows it; the node script's read must get what ipvsadm lists. Where ipvsadm lists the table,
the script does not read the file at all.
"""

from __future__ import annotations

import shlex

import pytest

from fixtures.lab.running import LabPool, RunningLab
from vipcheck.checks import SYSCTL_KEYS
from vipcheck.gather.live import gather
from vipcheck.gather.node_script import build_node_script, split_node_output
from vipcheck.model.node import IpvsTable
from vipcheck.options import GatherOptions
from vipcheck.parse.ipvsadm import parse_ipvsadm_list
from vipcheck.parse.procfs import parse_proc_ip_vs
from vipcheck.snapshot import NODE_FILES, Snapshot

NODES = ("node-1", "node-2", "node-3")
# The script's own read of the file, alone: where ipvsadm is missing, it runs so.
PROC_ONLY = build_node_script({"proc-ip_vs.txt": NODE_FILES["proc-ip_vs.txt"]})


@pytest.fixture(scope="module")
def lab(labs: LabPool) -> RunningLab:
    return labs.get("big")


@pytest.fixture(scope="module")
def snapshot(lab: RunningLab) -> Snapshot:
    options = GatherOptions(
        kubeconfig=str(lab.workdir / "kubeconfig"), ssh_config=str(lab.workdir / "ssh_config")
    )
    return gather(options, print, sysctl_keys=SYSCTL_KEYS)


def table(services: IpvsTable) -> dict[object, frozenset[object]]:
    """Each virtual service's key and its real servers' keys and weights."""
    return {
        vs.key: frozenset((rs.key, rs.weight) for rs in vs.real_servers) for vs in services.services
    }


@pytest.mark.parametrize("node", NODES)
def test_the_scripts_read_of_the_proc_table_is_ipvsadms_list(
    lab: RunningLab, snapshot: Snapshot, node: str
) -> None:
    files = snapshot.nodes[node].files
    assert "proc-ip_vs.txt" not in files  # ipvsadm listed it: not read twice
    listed = parse_ipvsadm_list(files["ipvsadm-Ln.txt"], f"{node}/ipvsadm-Ln.txt")
    output = lab.ssh(node, f"sh -c {shlex.quote(PROC_ONLY)}")
    read, missing = split_node_output(output)
    assert missing == {}
    assert len(listed.services) == 2104
    assert table(parse_proc_ip_vs(read["proc-ip_vs.txt"], f"{node}/proc-ip_vs.txt")) == table(
        listed
    )


def test_cat_loses_services_on_this_kernel(lab: RunningLab) -> None:
    # Why the script does not `cat` the file: were this to pass with cat whole, the kernel would
    # no longer show the fault, and the test above would prove nothing.
    catted = lab.ssh("node-1", "cat /proc/net/ip_vs")
    services = sum(1 for line in catted.splitlines() if line.startswith(("TCP ", "UDP ")))
    assert services < 2104, f"cat read all {services} virtual services of node-1"
