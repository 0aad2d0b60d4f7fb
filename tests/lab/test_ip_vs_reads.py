"""/proc/net/ip_vs, the table of nodes without ipvsadm, read whole on a kernel that loses to cat.

The lab's nodes are network namespaces of one Linux 6.1 kernel, as kind's are containers of one
host. That kernel keeps one IPVS service table for all namespaces: a read of /proc/net/ip_vs
that takes several records resumes past services of the reader's namespace, so `cat` loses some
once a node's table outgrows one page. The `big` scenario (2,104 virtual services per node)
shows it; the node script reads the file 16 bytes at a time and must get what ipvsadm lists.
"""

from __future__ import annotations

import pytest

from fixtures.lab.running import LabPool, RunningLab
from vipcheck.gather import gather
from vipcheck.model.node import IpvsTable
from vipcheck.options import GatherOptions
from vipcheck.parse.ipvsadm import parse_ipvsadm_list
from vipcheck.parse.procfs import parse_proc_ip_vs
from vipcheck.snapshot import Snapshot

NODES = ("node-1", "node-2", "node-3")


@pytest.fixture(scope="module")
def lab(labs: LabPool) -> RunningLab:
    return labs.get("big")


@pytest.fixture(scope="module")
def snapshot(lab: RunningLab) -> Snapshot:
    options = GatherOptions(
        kubeconfig=str(lab.workdir / "kubeconfig"), ssh_config=str(lab.workdir / "ssh_config")
    )
    return gather(options, print)


def table(services: IpvsTable) -> dict[object, frozenset[object]]:
    """Each virtual service's key and its real servers' keys and weights."""
    return {
        vs.key: frozenset((rs.key, rs.weight) for rs in vs.real_servers) for vs in services.services
    }


@pytest.mark.parametrize("node", NODES)
def test_the_proc_table_read_by_the_script_is_ipvsadms(snapshot: Snapshot, node: str) -> None:
    files = snapshot.nodes[node].files
    listed = parse_ipvsadm_list(files["ipvsadm-Ln.txt"], f"{node}/ipvsadm-Ln.txt")
    read = parse_proc_ip_vs(files["proc-ip_vs.txt"], f"{node}/proc-ip_vs.txt")
    assert len(listed.services) == 2104
    assert table(read) == table(listed)


def test_cat_loses_services_on_this_kernel(lab: RunningLab) -> None:
    # Why the script does not `cat` the file: were this to pass with cat whole, the kernel would
    # no longer show the fault, and the test above would prove nothing.
    catted = lab.ssh("node-1", "cat /proc/net/ip_vs")
    services = sum(1 for line in catted.splitlines() if line.startswith(("TCP ", "UDP ")))
    assert services < 2104, f"cat read all {services} virtual services of node-1"
