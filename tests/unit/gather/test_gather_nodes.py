"""Nodes in parallel, one round trip each; gather() keeps every node, even unobserved ones."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from vipcheck.checks import SYSCTL_KEYS
from vipcheck.gather.cluster import ClusterError
from vipcheck.gather.live import gather, node_inventory
from vipcheck.gather.node_script import END, FALLBACK_FILES, build_node_script
from vipcheck.gather.nodes import gather_nodes
from vipcheck.options import GatherOptions
from vipcheck.snapshot import NODE_FILES, NodeSnapshot, Snapshot, SnapshotError, save_snapshot
from vipcheck.transport import NodeTarget, RunResult, TransportError

# The script a live run sends: with the catalogue's sysctl keys.
SCRIPT = build_node_script(sysctl_keys=SYSCTL_KEYS)
FRAMES = (
    "===vipcheck:file=uname.txt\n6.1.0-25-amd64\n\n===vipcheck:rc=0\n"
    "===vipcheck:missing=ipvsadm-Ln.txt:ipvsadm not installed\n"
    "===vipcheck:end\n"
)


class FakeNodes:
    """A NodeRunner that counts round trips, and answers, fails or refuses per node."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        with self.lock:
            self.calls[target.node] += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.01)
        with self.lock:
            self.running -= 1
        if target.node == "node-2":
            raise TransportError(f"{target.describe()}: ssh failed (exit 255): Connection refused")
        if target.node == "node-3":
            return RunResult(1, "", "sudo: a password is required\n")
        return RunResult(0, FRAMES, "")


class WatchingNodes(FakeNodes):
    """FakeNodes that signals once a node has been gathered (to show gathering overlaps the API)."""

    def __init__(self) -> None:
        super().__init__()
        self.gathered = threading.Event()

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        result = super().run(target, script, timeout_s)
        self.gathered.set()
        return result


@pytest.fixture
def fake() -> FakeNodes:
    return FakeNodes()


def test_each_node_once_and_failures_kept(fake: FakeNodes) -> None:
    targets = [NodeTarget(f"node-{i}", f"ssh://node-{i}") for i in (1, 2, 3)]
    lines: list[str] = []
    nodes = gather_nodes(targets, 5, lines.append, parallel=2, runner=fake, script=SCRIPT)
    assert fake.calls == {"node-1": 1, "node-2": 1, "node-3": 1}
    assert fake.most_at_once <= 2
    assert list(nodes) == ["node-1", "node-2", "node-3"]
    assert nodes["node-1"].files == {"uname.txt": "6.1.0-25-amd64\n"}
    assert nodes["node-1"].missing == {"ipvsadm-Ln.txt": "ipvsadm not installed"}
    assert (
        nodes["node-2"].error == "node-2 (ssh://node-2): ssh failed (exit 255): Connection refused"
    )
    assert nodes["node-3"].error == (
        "node-3 (ssh://node-3): the gather script exited 1: sudo: a password is required"
    )
    assert any(
        line.startswith("node-1: gathered 1 files in ")
        and line.endswith(" s, 1 missing (ipvsadm-Ln.txt)")
        for line in lines
    )
    assert "node-2: not observed: node-2 (ssh://node-2): ssh failed" in "\n".join(lines)


def test_gather_options_bound_how_many_nodes_at_once(fake: FakeNodes) -> None:
    hosts = tuple(f"ssh://node-{i}" for i in range(10, 20))
    gather(
        GatherOptions(hosts=hosts, parallel=3),
        lambda _line: None,
        runner=fake,
        read_cluster=no_cluster,
        sysctl_keys=SYSCTL_KEYS,
    )
    assert sum(fake.calls.values()) == 10
    assert fake.most_at_once <= 3
    assert GatherOptions().parallel == 32


def test_the_real_script_on_this_machine() -> None:
    lines: list[str] = []
    nodes = gather_nodes([NodeTarget("here", "local://")], 60, lines.append, script=SCRIPT)
    here = nodes["here"]
    assert here.error is None
    no_ip_vs = set() if Path("/proc/net/ip_vs").exists() else {"proc-ip_vs.txt"}  # both missing
    assert set(here.files) | set(here.missing) == (set(NODE_FILES) - FALLBACK_FILES) | no_ip_vs
    assert "sysctl.txt" in here.files
    assert lines[0].startswith(f"here: gathered {len(here.files)} files in ")


def no_cluster(*_args: object) -> dict[str, str]:
    return {}


def nodes_json(*nodes: tuple[str, str]) -> str:
    items: list[dict[str, Any]] = [
        {
            "metadata": {"name": name},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": ip},
                    {"type": "ExternalIP", "address": "203.0.113.9"},
                    {"type": "Hostname", "address": f"{name}.example"},
                ]
            },
        }
        for name, ip in nodes
    ]
    return json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": items})


def test_node_inventory_takes_internal_ips_and_hostnames() -> None:
    names, addresses = node_inventory(nodes_json(("node-1", "10.0.0.11")))
    assert names == ["node-1"]
    assert addresses == {"node-1": ["10.0.0.11", "node-1.example"]}
    assert node_inventory(None) == ([], {})


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "{not json",
        '{"kind": "NodeList", "items": [{"metadata": {}}]}',
        '{"kind": "NodeList", "items": [{"metadata": {"name": "n"}, "status": {"addresses": 3}}]}',
    ],
)
def test_a_node_list_that_does_not_parse_is_no_inventory(text: str) -> None:
    assert node_inventory(text) == ([], {})


def test_gather_with_a_malformed_node_list_keeps_the_cluster_files(fake: FakeNodes) -> None:
    cluster = {"nodes.json": "{not json"}
    snapshot = gather(
        GatherOptions(hosts=("ssh://node-1",)),
        lambda _line: None,
        runner=fake,
        read_cluster=lambda *_args: cluster,
        sysctl_keys=SYSCTL_KEYS,
    )
    assert snapshot.cluster == cluster
    assert list(snapshot.nodes) == ["node-1"]
    assert fake.calls == {"node-1": 1}


def test_gather_reports_nodes_not_given(fake: FakeNodes) -> None:
    cluster = {"nodes.json": nodes_json(("node-1", "10.0.0.11"), ("node-4", "10.0.0.14"))}
    lines: list[str] = []
    options = GatherOptions(kubeconfig="kc", hosts=("ssh://10.0.0.11", "ssh://stray"))
    snapshot = gather(
        options,
        lines.append,
        runner=fake,
        read_cluster=lambda *_args: cluster,
        sysctl_keys=SYSCTL_KEYS,
    )
    assert snapshot.cluster == cluster
    assert snapshot.cluster_error is None
    assert list(snapshot.nodes) == ["node-1", "node-4"]
    assert snapshot.nodes["node-1"].files == {"uname.txt": "6.1.0-25-amd64\n"}
    assert snapshot.nodes["node-4"].error is not None
    assert snapshot.nodes["node-4"].error.startswith("not given: ")
    assert snapshot.meta["unknown_hosts"] == ["ssh://stray"]
    assert snapshot.meta["target"] == "kubeconfig kc, hosts ssh://10.0.0.11,ssh://stray"
    assert any(line.startswith("--hosts ssh://stray: matches no node") for line in lines)
    # Every spec is gathered while the API is listed, under its host name until paired.
    assert fake.calls == {"10.0.0.11": 1, "stray": 1}


def test_hosts_are_gathered_while_the_api_is_listed(fake: FakeNodes) -> None:
    cluster = {"nodes.json": nodes_json(("node-1", "10.0.0.11"), ("node-4", "10.0.0.14"))}
    watching = WatchingNodes()

    def slow_api(*_args: object) -> dict[str, str]:
        assert watching.gathered.wait(5), "no node was gathered while the API was being listed"
        return cluster

    options = GatherOptions(hosts=("ssh://10.0.0.11", "ssh://10.0.0.14"))
    snapshot = gather(
        options, lambda _line: None, runner=watching, read_cluster=slow_api, sysctl_keys=SYSCTL_KEYS
    )
    assert list(snapshot.nodes) == ["node-1", "node-4"]
    assert snapshot.nodes["node-4"].name == "node-4"
    assert snapshot.nodes["node-4"].files == {"uname.txt": "6.1.0-25-amd64\n"}


def test_without_hosts_the_api_says_which_nodes_to_gather(fake: FakeNodes, tmp_path: Any) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host node-*\n  User root\nHost client\n")
    cluster = {"nodes.json": nodes_json(("node-1", "10.0.0.11"))}
    options = GatherOptions(ssh_config=str(ssh_config))
    snapshot = gather(
        options,
        lambda _line: None,
        runner=fake,
        read_cluster=lambda *_a: cluster,
        sysctl_keys=SYSCTL_KEYS,
    )
    assert list(snapshot.nodes) == ["node-1"]
    assert fake.calls == {"node-1": 1}  # not the client, which is no node


def test_unreadable_cluster_still_gathers_the_hosts(fake: FakeNodes) -> None:
    def refused(*_args: object) -> dict[str, str]:
        raise ClusterError("https://10.0.0.1:6443: cannot connect for services.json: refused")

    lines: list[str] = []
    options = GatherOptions(hosts=("ssh://root@node-1", "node-2"))
    snapshot = gather(
        options, lines.append, runner=fake, read_cluster=refused, sysctl_keys=SYSCTL_KEYS
    )
    assert snapshot.cluster == {}
    assert snapshot.cluster_error == (
        "https://10.0.0.1:6443: cannot connect for services.json: refused"
    )
    assert list(snapshot.nodes) == ["node-1", "node-2"]
    assert snapshot.nodes["node-1"].error is None
    assert snapshot.nodes["node-2"].error is not None
    assert lines[0].startswith("cluster not read: https://10.0.0.1:6443")


class CutOutput:
    """A NodeRunner whose node's output stops mid-file, as when the connection drops."""

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        whole = FRAMES.removesuffix(END + "\n")
        return RunResult(
            0, whole + "===vipcheck:file=sysctl.txt\nnet.ipv4.ip_forward = 1\nnet.", ""
        )


class Answers:
    """A NodeRunner answering with the given output and exit status 0, as `head -c N` does."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        return RunResult(0, self.stdout, "")


def gather_one(stdout: str) -> tuple[Any, list[str]]:
    lines: list[str] = []
    target = NodeTarget("node-1", "ssh://node-1")
    [node] = gather_nodes([target], 5, lines.append, runner=Answers(stdout), script=SCRIPT).values()
    return node, lines


def test_a_cut_output_is_never_parsed_as_whole() -> None:
    lines: list[str] = []
    [node] = gather_nodes(
        [NodeTarget("node-1", "ssh://node-1")], 5, lines.append, runner=CutOutput(), script=SCRIPT
    ).values()
    assert node.files == {}
    assert node.error == (
        "node-1 (ssh://node-1): output truncated: sysctl.txt: output cut off before its end "
        "(connection lost?)"
    )
    assert lines == [f"node-1: not observed: {node.error}"]


@pytest.mark.parametrize(
    ("stdout", "last"),
    [
        pytest.param(FRAMES.partition("===vipcheck:missing")[0], "uname.txt", id="after-a-file"),
        pytest.param(FRAMES.removesuffix(END + "\n"), "ipvsadm-Ln.txt", id="after-missing"),
        pytest.param(FRAMES.removesuffix("\n"), "ipvsadm-Ln.txt", id="inside-the-end-marker"),
    ],
)
def test_an_output_cut_exactly_between_frames_is_truncated(stdout: str, last: str) -> None:
    # Every frame read is whole; only the end marker's absence tells the rest was never sent.
    node, lines = gather_one(stdout)
    assert node.files == {}
    assert node.error == (
        f"node-1 (ssh://node-1): output truncated: output cut off after {last}, "
        "before the end marker (connection lost?)"
    )
    assert lines == [f"node-1: not observed: {node.error}"]


def test_a_whole_output_ends_with_the_marker_and_is_observed() -> None:
    node, _ = gather_one(FRAMES + "logout banner after the script\n")
    assert node.error is None
    assert node.files == {"uname.txt": "6.1.0-25-amd64\n"}


def test_without_hosts_nodes_are_gathered_once_listed_while_the_rest_is(
    fake: FakeNodes, tmp_path: Any
) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host node-*\n  User root\n")
    nodes = nodes_json(("node-1", "10.0.0.11"), ("node-4", "10.0.0.14"))
    watching = WatchingNodes()

    def api(_kubeconfig: object, _context: object, _progress: object, listed: Any) -> Any:
        listed(nodes)  # the Nodes first; the Services and EndpointSlices take longer
        assert watching.gathered.wait(5), "no node was gathered while the Services were listed"
        return {"nodes.json": nodes, "services.json": "{}"}

    options = GatherOptions(ssh_config=str(ssh_config))
    snapshot = gather(
        options, lambda _line: None, runner=watching, read_cluster=api, sysctl_keys=SYSCTL_KEYS
    )
    assert list(snapshot.nodes) == ["node-1", "node-4"]
    assert snapshot.nodes["node-4"].files == {"uname.txt": "6.1.0-25-amd64\n"}
    assert snapshot.cluster["services.json"] == "{}"
    assert watching.calls == {"node-1": 1, "node-4": 1}  # gathered once, not again when paired


class WritingNode:
    """A node whose output names files outside the format: paths that would leave a snapshot."""

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        frames = "".join(
            f"===vipcheck:file={name}\n{name} from the node\n\n===vipcheck:rc=0\n"
            for name in ("../../../escaped.txt", str(self.outside), "uname.txt")
        )
        missing = "===vipcheck:missing=../missing.txt:why\n"
        return RunResult(0, frames + missing + "===vipcheck:end\n", "")

    def __init__(self, outside: Path) -> None:
        self.outside = outside


def test_a_node_names_no_file_outside_the_snapshot(tmp_path: Path) -> None:
    """A node's frame names are its own text: only the format's are kept, so --save-snapshot
    (and xdist's shared snapshot) writes nothing outside its directory."""
    outside = tmp_path / "absolute.txt"
    target = NodeTarget("node-1", "ssh://node-1")
    lines: list[str] = []
    nodes = gather_nodes([target], 5, lines.append, runner=WritingNode(outside), script=SCRIPT)
    node = nodes["node-1"]
    assert dict(node.files) == {"uname.txt": "uname.txt from the node\n"}
    assert dict(node.missing) == {}
    save_snapshot(Snapshot({}, nodes), tmp_path / "a" / "b" / "snapshot")
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.txt"))
    assert written == ["a/b/snapshot/nodes/node-1/uname.txt"]


@pytest.mark.parametrize(
    ("node", "said"),
    [
        (NodeSnapshot("node-1", {"../../x.txt": "x"}), "file ../../x.txt: not one of the format's"),
        (NodeSnapshot("node-1", {}, missing={"/etc/x": "y"}), "file /etc/x: not one of"),
        (NodeSnapshot("..", {"uname.txt": "6.1\n"}), "node ..: not a Kubernetes Node's name"),
        (NodeSnapshot("../etc", {"uname.txt": "6.1\n"}), "node ../etc: not a Kubernetes Node"),
    ],
)
def test_saving_refuses_a_name_that_would_leave_the_snapshot(
    tmp_path: Path, node: NodeSnapshot, said: str
) -> None:
    with pytest.raises(SnapshotError, match=re.escape(said)):
        save_snapshot(Snapshot({}, {node.name: node}), tmp_path / "snapshot")
    assert list(tmp_path.iterdir()) == []
