"""The snapshot: raw outputs exactly as gathered, the boundary between gathering and checking.

Live runs build one in memory; `--save-snapshot` writes it; `--from-snapshot` reads it back (or one
assembled by hand with kubectl and ssh). Every file is optional: what is missing is reported by
the checks that need it, naming the file and the command that produces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import vipcheck

FORMAT_VERSION = 1

# File under cluster/ -> the command that produces it.
CLUSTER_FILES: Mapping[str, str] = {
    "services.json": "kubectl get services -A -o json",
    "endpointslices.json": "kubectl get endpointslices -A -o json",
    "nodes.json": "kubectl get nodes -o json",
    "kube-proxy.json": "kubectl -n kube-system get configmap kube-proxy -o json",
    "kube-proxy-daemonset.json": "kubectl -n kube-system get daemonset kube-proxy -o json",
}
# Where a node has no `sysctl`: the keys the checks read, straight from /proc/sys.
PROC_SYS_COMMAND = (
    "grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/tcp_timestamps "
    "/proc/sys/net/ipv4/tcp_tw_recycle /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv4/vs/* "
    "/proc/sys/net/netfilter/nf_conntrack_count /proc/sys/net/netfilter/nf_conntrack_max"
)
# Where a node has no `ip` at all: names, flags and kinds of its interfaces (no IPv4 addresses).
SYS_CLASS_NET_COMMAND = (
    "grep -H . /sys/class/net/*/ifindex /sys/class/net/*/flags /sys/class/net/*/operstate "
    "/sys/class/net/*/type /sys/class/net/*/uevent"
)
# File under nodes/<node>/ -> the command that produces it, on the node, in the host netns.
NODE_FILES: Mapping[str, str] = {
    "ipvsadm-Ln.txt": "ipvsadm -Ln --exact",
    "proc-ip_vs.txt": "cat /proc/net/ip_vs",
    "ipvsadm-timeout.txt": "ipvsadm -L --timeout",
    "ip_vs_conn.txt": "cat /proc/net/ip_vs_conn",
    "ipvsadm-Lnc.txt": "ipvsadm -Lnc",
    "sysctl.txt": "sysctl -a",
    "proc-sys.txt": PROC_SYS_COMMAND,
    "ip-addr.json": "ip -j addr",
    "ip-link.json": "ip -j -d link",
    "ip-addr.txt": "ip addr show",
    "ip-link.txt": "ip -d link show",
    "sys-class-net.txt": SYS_CLASS_NET_COMMAND,
    "uname.txt": "uname -r",
}
# Under probes/: the handshake probe's plan and each vantage point's raw output, per round.
PROBE_DIR = "probes"
PROBE_PLAN = "plan.json"
PROBE_FILES: Mapping[str, str] = {
    PROBE_PLAN: "vipcheck's probe plan (written with the probe outputs)",
    "<vantage>/vip.txt": "vipcheck's probe script, connecting to every VIP",
    "<vantage>/vip.error.txt": "vipcheck, when the vantage point could not probe the VIPs: why",
    "<vantage>/real-server.txt": "vipcheck's probe script, connecting to real servers",
    "<vantage>/real-server.error.txt": "vipcheck, when it could not probe the real servers: why",
    "after/<node>/ip_vs_conn.txt": "cat /proc/net/ip_vs_conn, after the probes",
}
# Written beside a node's files when it could not be observed; its text says why.
NODE_ERROR_FILE = "error.txt"
# Written beside a node's files: `file: why it is missing` (e.g. ipvsadm not installed).
NODE_MISSING_FILE = "missing.txt"
# Written beside a node's files: `file: note`, for output kept from a command that failed late
# (`sysctl -a` exiting 1 on one unreadable key).
NODE_NOTES_FILE = "notes.txt"


class SnapshotError(Exception):
    """A snapshot directory that cannot be read or written, with the path to blame."""


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node's raw outputs, why any is missing, or why the node could not be observed."""

    name: str
    files: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    missing: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one run observed, as raw text keyed by snapshot file name."""

    cluster: Mapping[str, str]
    nodes: Mapping[str, NodeSnapshot]
    meta: Mapping[str, Any] = field(default_factory=dict)
    cluster_error: str | None = None
    probes: Mapping[str, str] | None = None  # path under probes/ -> text; None: never probed


def new_meta(target: str) -> dict[str, Any]:
    """meta.json for a live run: what was observed, when, by which vipcheck."""
    return {
        "format": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "vipcheck": vipcheck.__version__,
        "target": target,
    }


def save_snapshot(snapshot: Snapshot, directory: Path) -> None:
    """Write the snapshot as plain files a person can read, diff and attach to a bug report."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        meta = dict(snapshot.meta)
        if snapshot.cluster_error:
            meta["cluster_error"] = snapshot.cluster_error
        (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name, text in snapshot.cluster.items():
            _write(directory / "cluster" / name, text)
        for node in snapshot.nodes.values():
            for name, text in node.files.items():
                _write(directory / "nodes" / node.name / name, text)
            if node.error:
                _write(directory / "nodes" / node.name / NODE_ERROR_FILE, node.error + "\n")
            if node.missing:
                lines = "".join(f"{name}: {why}\n" for name, why in node.missing.items())
                _write(directory / "nodes" / node.name / NODE_MISSING_FILE, lines)
            if node.notes:
                lines = "".join(f"{name}: {note}\n" for name, note in node.notes.items())
                _write(directory / "nodes" / node.name / NODE_NOTES_FILE, lines)
    except OSError as error:
        raise SnapshotError(f"cannot write snapshot to {directory}: {error}") from error
    if snapshot.probes is not None:
        save_probes(snapshot.probes, directory)


def save_probes(probes: Mapping[str, str], directory: Path) -> None:
    """Write probe files under DIR/probes, as they run lazily after the rest was saved."""
    root = directory / PROBE_DIR
    try:
        for name, text in probes.items():
            path = root / name
            if root.resolve() not in path.resolve().parents:
                raise SnapshotError(f"probe file {name!r} would leave {root}")
            _write(path, text)
    except OSError as error:
        raise SnapshotError(f"cannot write probes to {root}: {error}") from error


def load_snapshot(directory: Path) -> Snapshot:
    """Read a snapshot directory; files not in the format are ignored, missing ones are absent."""
    if not directory.is_dir():
        raise SnapshotError(f"{directory}: not a snapshot directory")
    meta: dict[str, Any] = {}
    meta_path = directory / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, OSError) as error:
            raise SnapshotError(f"{meta_path}: {error}") from error
        if not isinstance(meta, dict):
            raise SnapshotError(f"{meta_path}: expected a JSON object")
    cluster = _read_known(directory / "cluster", CLUSTER_FILES)
    nodes: dict[str, NodeSnapshot] = {}
    nodes_dir = directory / "nodes"
    if nodes_dir.is_dir():
        for node_dir in sorted(p for p in nodes_dir.iterdir() if p.is_dir()):
            files = _read_known(node_dir, NODE_FILES)
            error_path = node_dir / NODE_ERROR_FILE
            node_error = _read(error_path).strip() if error_path.exists() else None
            missing_path = node_dir / NODE_MISSING_FILE
            missing = _read_missing(missing_path) if missing_path.exists() else {}
            notes_path = node_dir / NODE_NOTES_FILE
            notes = _read_missing(notes_path) if notes_path.exists() else {}
            nodes[node_dir.name] = NodeSnapshot(node_dir.name, files, node_error, missing, notes)
    if not cluster and not nodes:
        raise SnapshotError(
            f"{directory}: no cluster/*.json and no nodes/<node>/ files; "
            "see docs/snapshot.md for the layout"
        )
    return Snapshot(cluster, nodes, meta, meta.get("cluster_error"), _read_probes(directory))


def _read_probes(directory: Path) -> dict[str, str] | None:
    """Every file under probes/, by relative path; None when the run did not probe."""
    root = directory / PROBE_DIR
    if not (root / PROBE_PLAN).is_file():
        return None
    return {
        path.relative_to(root).as_posix(): _read(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _read_known(directory: Path, known: Mapping[str, str]) -> Mapping[str, str]:
    if not directory.is_dir():
        return {}
    return _FilesOnDisk({name: directory / name for name in known if (directory / name).is_file()})


class _FilesOnDisk(Mapping[str, str]):
    """A snapshot directory's files, read when a fact parses them and not kept: at 100 nodes the
    raw text alone was hundreds of MB beside the parsed facts. A file that vanished since the
    snapshot was loaded raises SnapshotError then."""

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self._paths = dict(paths)

    def __getitem__(self, name: str) -> str:
        return _read(self._paths[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths


def _read_missing(path: Path) -> dict[str, str]:
    """`file: text` lines (missing.txt, notes.txt) for the files of the format."""
    missing = {}
    for line in _read(path).splitlines():
        name, _, why = line.partition(":")
        if name.strip() in NODE_FILES:
            missing[name.strip()] = why.strip()
    return missing


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as error:
        raise SnapshotError(f"{path}: {error}") from error


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
