"""The node reader and the node script give the same facts on the lab's real IPVS kernel
(issue 21): vipcheck-node (netlink, run by the guest's python3 from this checkout,
fixtures/lab/reader.py) against the node script, each gathered as vipcheck gathers a node (one
ssh, frames), compared by vipcheck.node_reader.same_facts; and on `big`'s director, every netlink
message the reader sends is a read, and its IPVS file is what `ipvsadm -Ln --exact` lists.

Every node a reader can get through, of every shipped scenario's lab as the other tests booted
it (these tests run after them and before the lab_changes ones: the `lab_revisits` marker,
tests/lab/conftest.py), and of the nftables-mode variant the suite boots. `migration`, booted
by its runbook's own `fixtures.lab up`, is compared in the middle of that rehearsal
(test_migration_lab.py); the docker-runtime labs' nodes read themselves through their agent
pods (test_agents_lab.py).
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fixtures.lab.reader import READER_PATH, READER_RUNNER, push_reader, reader_bundle
from fixtures.lab.running import LabPool, RunningLab
from fixtures.lab.scenario import Node, NodeFault, ProxyMode, Userland, scenario_names
from tests.lab.both_readers import Compared, compare
from tests.unit.node_reader import record_requests
from tests.unit.node_reader.record_requests import (
    GENL_ID_CTRL,
    IPVS_FAMILY,
    NETLINK_GENERIC,
    READS,
    refused,
)
from vipcheck.checks import SYSCTL_KEYS
from vipcheck.facts import Facts, MissingInput
from vipcheck.gather.node_script import END
from vipcheck.snapshot import load_snapshot
from vipcheck.transport import HOST_SPEC_RUNNER, NodeTarget, RunResult

NOT_POOLED = {"migration"}  # booted by its runbook (docs/migration.md), not by the pool
LABS = [(name, None) for name in scenario_names() if name not in NOT_POOLED] + [
    ("healthy", ProxyMode.NFTABLES)
]
BIG = "big"
# Nodes no reader gets through, whatever it runs: sshd hangs, nothing listens, the session's
# output is cut off (faulty-nodes; test_faulty_nodes.py proves each is one error).
UNREADABLE = {NodeFault.SSHD_HANG, NodeFault.PORT_CLOSED, NodeFault.CUT_OUTPUT}
# The no-ipvs node stands for a kernel without ip_vs by a procfs of processes only; the IPVS
# family still answers over netlink there (the VM's kernel has ip_vs), so the reader reads the
# node's empty IPVS table where the script finds no /proc/net/ip_vs. On a kernel without ip_vs
# the reader falls back to the script's words (tests/unit/node_reader): these facts differ
# only through the lab's stand-in.
SEEN_THROUGH = {NodeFault.NO_IPVS: ("IPVS table", "IPVS absence", "IPVS timeouts")}
# A node of an old userland (no ipvsadm, busybox's ip) cannot tell the script what netlink tells
# the reader: the IPVS timeouts (only ipvsadm reads them) and each link's kind and operational
# state (busybox's `ip` text has neither); and its `ip` marks M-DOWN a veth whose peer is in
# another namespace (it looks the peer's index up in its own: print_linkinfo in busybox's
# ipaddress.c ignores IFLA_LINK_NETNSID). Checked apart (old_userland_untold).
UNTOLD_BY_OLD_USERLAND = ("IPVS timeouts", "interfaces")
LABS_AT_ONCE = 4
IPVS_CMD_GET_DEST = 8  # include/uapi/linux/ip_vs.h
STABLE_TRIES = 3  # big's expiring entries move its director's counters; read it again if they did


def lab_id(lab: tuple[str, ProxyMode | None]) -> str:
    name, mode = lab
    return name if mode is None else f"{name}-{mode.value}"


def nodes_to_read(lab: RunningLab) -> list[str]:
    """Every node a reader can get through (not faulty-nodes' unreachable ones)."""
    return [node.name for node in lab.scenario.nodes if node.fault not in UNREADABLE]


def expected_differences(nodes: list[Node]) -> list[str]:
    def facts(node: Node) -> tuple[str, ...]:
        seen_through = SEEN_THROUGH.get(node.fault, ()) if node.fault is not None else ()
        untold = UNTOLD_BY_OLD_USERLAND if node.userland is Userland.OLD else ()
        return (*seen_through, *untold)

    return [f"{node.name}: {fact}: different" for node in nodes for fact in facts(node)]


def old_userland_untold(directory: Path, node: str, director: str) -> None:
    """What differs on an old node is only what its userland cannot tell: the script has no
    timeouts, saying why, and the reader has the director's (kube-proxy sets them alike on every
    node); the interfaces are the same but for the kind and state busybox's `ip` does not say,
    and its M-DOWN."""
    script, reader = (
        Facts.from_snapshot(load_snapshot(directory / side), sysctl_keys=SYSCTL_KEYS).nodes
        for side in ("script", "reader")
    )
    with pytest.raises(MissingInput, match="ipvsadm not installed"):
        _ = script[node].timeouts
    assert reader[node].timeouts == script[director].timeouts
    assert [i.kind for i in script[node].interfaces.interfaces] == [None] * len(
        script[node].interfaces.interfaces
    )
    assert [replace(i, kind=None, operstate=None) for i in reader[node].interfaces.interfaces] == [
        replace(i, flags=tuple(f for f in i.flags if f != "M-DOWN"))
        for i in script[node].interfaces.interfaces
    ]


@pytest.fixture(scope="module")
def pushed(labs: LabPool) -> dict[str, RunningLab]:
    """Every lab, by lab_id, with this checkout's reader pushed into its VM."""
    running = {lab_id(lab): labs.get(lab[0], mode=lab[1]) for lab in LABS}  # this thread boots
    bundle = reader_bundle()

    def push(lab: RunningLab) -> None:
        push_reader(lab.workdir / "ssh_config", "client", bundle)

    with ThreadPoolExecutor(len(running)) as pool:
        list(pool.map(push, running.values()))
    return running


@dataclass
class RecordingRunner:
    """Runs record_requests.py (the reader, its netlink sends recorded) where the node script
    would run; keeps each node's output: the frames, the end marker, then the records as JSON."""

    outputs: dict[str, str] = field(default_factory=dict)

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        source = Path(record_requests.__file__).read_text()
        command = (
            f't=$(mktemp) && {READER_PATH} python3 - "$t" <<"EOF"\n{source}\nEOF\n'
            'rc=$?; cat "$t"; rm -f "$t"; exit $rc'
        )
        result = HOST_SPEC_RUNNER.run(target, command, timeout_s)
        self.outputs[target.node] = result.stdout
        return result


@dataclass
class BigRead:
    """big's nodes read both ways, its director by the recording reader, with ipvsadm before
    and after."""

    compared: Compared
    records: list[dict[str, int]]  # the director's
    reader_ipvs: str  # the director's
    before: str
    after: str


def read_big(lab: RunningLab, directory: Path) -> BigRead:
    """big's director by the recording reader, read again (alone) while its table moved between
    the ipvsadm listings around the read; beside it, its other nodes once by the reader."""
    director = lab.scenario.client.gateway
    others = [node for node in nodes_to_read(lab) if node != director]
    with ThreadPoolExecutor(1) as pool:
        rest = pool.submit(compare, lab, others, READER_RUNNER, directory / "others")
        for attempt in range(STABLE_TRIES):
            runner = RecordingRunner()
            before = lab.ssh(director, "ipvsadm -Ln --exact")
            alone = compare(lab, [director], runner, directory / str(attempt))
            after = lab.ssh(director, "ipvsadm -Ln --exact")
            if ipvs_listing(before) == ipvs_listing(after):
                break
        others_compared = rest.result()
    compared = Compared(
        sorted([director, *others]),
        directory,
        {
            side: sorted([*alone.observed[side], *others_compared.observed[side]])
            for side in alone.observed
        },
        [*alone.differences, *others_compared.differences],
    )
    records = json.loads(runner.outputs[director].rpartition(f"{END}\n")[2])
    reader_ipvs = directory / str(attempt) / "reader" / "nodes" / director / "ipvsadm-Ln.txt"
    return BigRead(compared, records, reader_ipvs.read_text(), before, after)


@pytest.fixture(scope="module")
def compared(
    pushed: dict[str, RunningLab], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Compared], BigRead]:
    """Every lab's nodes compared, LABS_AT_ONCE labs at a time (the nodes of each in parallel);
    big's director by the recording reader."""
    root = tmp_path_factory.mktemp("reader")

    def each(name: str) -> Compared | BigRead:
        lab = pushed[name]
        if name == BIG:
            return read_big(lab, root / name)
        return compare(lab, nodes_to_read(lab), READER_RUNNER, root / name)

    names = sorted(pushed, key=lambda name: name != BIG)  # the longest first, beside the others
    with ThreadPoolExecutor(LABS_AT_ONCE) as pool:
        done = dict(zip(names, pool.map(each, names), strict=True))
    big = done.pop(BIG)
    assert isinstance(big, BigRead)
    labs = {name: result for name, result in done.items() if isinstance(result, Compared)}
    return {**labs, BIG: big.compared}, big


@pytest.mark.lab_revisits
@pytest.mark.parametrize("name", [lab_id(lab) for lab in LABS])
def test_the_reader_and_the_node_script_give_the_same_facts(
    name: str,
    pushed: dict[str, RunningLab],
    compared: tuple[dict[str, Compared], BigRead],
) -> None:
    lab, result = pushed[name], compared[0][name]
    # Both read every readable node (so no comparison is of two errors) ...
    assert result.observed == {"script": result.nodes, "reader": result.nodes}
    # ... and give the same facts there, but what the lab's no-ipvs stand-in shows netlink.
    chosen = [node for node in lab.scenario.nodes if node.name in result.nodes]
    assert result.differences == expected_differences(chosen)
    for node in chosen:
        if node.userland is Userland.OLD:
            old_userland_untold(result.directory, node.name, lab.scenario.client.gateway)


def ipvs_listing(text: str) -> tuple[list[str], Counter[tuple[str, tuple[str, ...]]]]:
    """`ipvsadm -Ln` as its header and its services, each with its real servers: in no order,
    as ipvsadm's own sort cannot be reproduced (vipcheck.node_reader.ipvs_text says why)."""
    lines = text.splitlines()
    services: Counter[tuple[str, tuple[str, ...]]] = Counter()
    service, servers = None, []
    for line in [*lines[3:], ""]:
        if line.startswith("  -> "):
            servers.append(line)
            continue
        if service is not None:
            services[service, tuple(sorted(servers))] += 1
        service, servers = line, []
    return lines[:3], services


@pytest.mark.lab_revisits
def test_the_reader_sends_only_reads_on_a_real_ipvs_kernel(
    compared: tuple[dict[str, Compared], BigRead],
) -> None:
    """On big's director: every netlink message the reader sent is a GET or a DUMP, the IPVS
    ones included (a unit test's kernel has none), and each virtual service's real servers
    were dumped, once."""
    big = compared[1]
    records = big.records
    assert [(record, refused(record)) for record in records if refused(record)] == []
    family = {r["type"] for r in records if r["protocol"] == NETLINK_GENERIC} - {GENL_ID_CTRL}
    assert len(family) == 1, family  # the IPVS family, by the id this kernel gave it
    [ipvs] = family
    counts = Counter((r["protocol"], r["type"], r.get("cmd")) for r in records)
    services = sum(ipvs_listing(big.before)[1].values())
    assert services > 2000
    assert counts[NETLINK_GENERIC, ipvs, IPVS_CMD_GET_DEST] == services
    assert {(p, IPVS_FAMILY if t == ipvs else t, c) for p, t, c in counts} == set(READS)


@pytest.mark.lab_revisits
def test_the_readers_ipvs_file_is_what_ipvsadm_lists(
    compared: tuple[dict[str, Compared], BigRead],
) -> None:
    """The same header, services, real servers and counters as `ipvsadm -Ln --exact` read just
    before and after it (when those two agree: expiring entries move the counters)."""
    big = compared[1]
    assert ipvs_listing(big.before) == ipvs_listing(big.after), "the table kept changing"
    assert ipvs_listing(big.reader_ipvs) == ipvs_listing(big.before)
