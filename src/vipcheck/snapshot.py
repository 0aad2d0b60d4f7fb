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
    "proc-ip_vs.txt": "dd if=/proc/net/ip_vs bs=16",
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
# The connection tables: a busy director's reach a million lines (100+ MB). They are never read
# whole from disk: only the lines a fact needs are kept (lines_with), so no size limit applies.
STREAMED_FILES = frozenset({"ip_vs_conn.txt", "ipvsadm-Lnc.txt"})
# Any other snapshot file is read whole, once, when a fact first needs it: one larger than this is
# refused when the snapshot is loaded (--vipcheck-max-file-size raises it). The largest at 100
# nodes x 5,000 Services, endpointslices.json, is 16 MB.
MAX_FILE_BYTES = 64 << 20
# A streamed file's line longer than this is no connection table line (those are ~100 bytes).
MAX_STREAMED_LINE = 64 << 10
_CHUNK = 1 << 20

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


def load_snapshot(directory: Path, max_file_bytes: int = MAX_FILE_BYTES) -> Snapshot:
    """Read a snapshot directory; files not in the format are ignored, missing ones are absent.

    Files are read when a fact needs them; one larger than max_file_bytes (a connection table
    excepted, as it is streamed) is refused here, before anything is read.
    """
    if not directory.is_dir():
        raise SnapshotError(f"{directory}: not a snapshot directory")
    _refuse_oversized(directory, max_file_bytes)
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


def _refuse_oversized(directory: Path, limit: int) -> None:
    """SnapshotError naming the first file over the limit, what it is, and what to do."""
    for path in _snapshot_files(directory):
        if path.name in STREAMED_FILES or not path.is_file():
            continue
        try:
            size = path.stat().st_size
        except OSError as error:
            raise SnapshotError(f"{path}: {error.strerror or error}") from error
        if size > limit:
            raise SnapshotError(
                f"{path}: {_size(size)}, more than the {_size(limit)} a snapshot file may hold "
                f"(it would be read whole into memory); check that it is the output of "
                f"`{_command_of(path)}`, or raise the limit with --vipcheck-max-file-size "
                f"{_size(2 * size, unit=True)}"
            )


def _snapshot_files(directory: Path) -> Iterator[Path]:
    """Every file load_snapshot may read: meta.json, cluster/*, nodes/*/*, probes/**."""
    yield directory / "meta.json"
    for name in CLUSTER_FILES:
        yield directory / "cluster" / name
    nodes_dir = directory / "nodes"
    if nodes_dir.is_dir():
        for node_dir in sorted(p for p in nodes_dir.iterdir() if p.is_dir()):
            for name in (*NODE_FILES, NODE_ERROR_FILE, NODE_MISSING_FILE, NODE_NOTES_FILE):
                yield node_dir / name
    probes = directory / PROBE_DIR
    if probes.is_dir():
        yield from sorted(probes.rglob("*"))


def _command_of(path: Path) -> str:
    return NODE_FILES.get(path.name) or CLUSTER_FILES.get(path.name) or "the command that wrote it"


def _size(size: int, *, unit: bool = False) -> str:
    """Bytes in MiB, or KiB below one, rounded up (`65 MiB`); unit=True: as the option takes it."""
    shift, name = (20, "M") if size >= 1 << 20 else (10, "K")
    rounded = -(-size // (1 << shift))
    return f"{rounded}{name}" if unit else f"{rounded} {name}iB"


def parse_size(text: str) -> int:
    """A size in bytes from `64M`, `1G`, `512K` or a plain number of bytes (for the option)."""
    number, unit = text.strip(), ""
    if number[-1:].upper() in ("K", "M", "G"):
        number, unit = number[:-1], number[-1].upper()
    if not number.isdigit() or int(number) <= 0:
        raise ValueError(f"expected a size above 0 such as 64M, 1G or 512K: {text!r}")
    return int(number) << {"": 0, "K": 10, "M": 20, "G": 30}[unit]


def lines_with(files: Mapping[str, str], name: str, needle: str) -> tuple[str, bool]:
    """The file's text with every line not containing needle blanked (line numbers are kept),
    and whether the file held anything but whitespace; for the connection tables, of which the
    checks read only the SYN_RECV rows.

    A file on disk is streamed in chunks, never held whole: memory stays within a chunk, the
    longest line (at most MAX_STREAMED_LINE, else SnapshotLineError) and the lines kept.
    """
    if isinstance(files, _FilesOnDisk):
        return files.lines_with(name, needle)
    return _kept_lines_of_text(files[name], needle)


class SnapshotLineError(SnapshotError):
    """A streamed file's line too long to be what the format says: the 1-based line number."""

    def __init__(self, path: Path, line: int, limit: int) -> None:
        self.line = line
        self.reason = f"a line longer than {limit:,} bytes: not a line of `{_command_of(path)}`"
        super().__init__(f"{path}:{line}: {self.reason}")


def _kept_lines_of_text(text: str, needle: str) -> tuple[str, bool]:
    """lines_with for text already in memory (a live run's): only the kept lines are copied."""
    if not text or text.isspace():  # not strip(): no copy of a 100 MB table
        return "", False
    kept: list[tuple[int, str]] = []
    line, position = 1, 0  # the line number at `position`, which starts a line
    start = text.find(needle)
    while start >= 0:
        newline = text.rfind("\n", position, start)
        line_start = position if newline < 0 else newline + 1
        line += text.count("\n", position, line_start)
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        kept.append((line, text[line_start:line_end]))
        position, line = line_end + 1, line + 1
        start = text.find(needle, position)
    return _blanked(kept), True


def _blanked(kept: list[tuple[int, str]]) -> str:
    """Text holding each (line number, line) at its number, every other line empty."""
    parts, current = [], 1
    for number, line in kept:
        parts += ["\n" * (number - current), line]
        current = number
    return "".join(parts) + "\n"


def _read_probes(directory: Path) -> Mapping[str, str] | None:
    """Every file under probes/, by relative path, read on first use; None when not probed."""
    root = directory / PROBE_DIR
    if not (root / PROBE_PLAN).is_file():
        return None
    return _FilesOnDisk(
        {
            path.relative_to(root).as_posix(): path
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
    )


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

    def lines_with(self, name: str, needle: str) -> tuple[str, bool]:
        """lines_with, streamed: the file is read in chunks and never held whole."""
        path = self._paths[name]
        want = needle.encode()
        kept: list[tuple[int, str]] = []
        nonblank, line, pending = False, 1, b""  # line: the number of pending's first line
        try:
            with path.open("rb") as stream:
                while chunk := stream.read(_CHUNK):
                    nonblank = nonblank or not chunk.isspace()
                    buffer = pending + chunk if pending else chunk
                    cut = buffer.rfind(b"\n") + 1
                    whole, pending = buffer[:cut], buffer[cut:]
                    lines = whole.split(b"\n")[:-1]
                    if len(pending) > MAX_STREAMED_LINE:
                        raise SnapshotLineError(path, line + len(lines), MAX_STREAMED_LINE)
                    if lines and max(map(len, lines)) > MAX_STREAMED_LINE:
                        index = next(i for i, x in enumerate(lines) if len(x) > MAX_STREAMED_LINE)
                        raise SnapshotLineError(path, line + index, MAX_STREAMED_LINE)
                    if want in whole:
                        kept += [(line + i, _text(x)) for i, x in enumerate(lines) if want in x]
                    line += len(lines)
        except OSError as error:
            raise SnapshotError(f"{path}: {error.strerror or error}") from error
        if want in pending:
            kept.append((line, _text(pending)))
        return (_blanked(kept), True) if nonblank else ("", False)


def _text(line: bytes) -> str:
    """A streamed line as read_text would give it (a CRLF file's CR dropped)."""
    return line.removesuffix(b"\r").decode(errors="replace")


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
        raise SnapshotError(f"{path}: {error.strerror or error}") from error


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
