"""The snapshot: raw outputs exactly as gathered, the boundary between gathering and checking.

Live runs build one in memory; `--save-snapshot` writes it; `--from-snapshot` reads it back (or one
assembled by hand with kubectl and ssh). Every file is optional: what is missing is reported by
the checks that need it, naming the file and the command that produces it.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import stat
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import vipcheck
from vipcheck.untrusted import host_name_problem, node_name_problem, printable

FORMAT_VERSION = 1

# File under cluster/ -> the command that produces it.
CLUSTER_FILES: Mapping[str, str] = {
    "services.json": "kubectl get services -A -o json",
    "endpointslices.json": "kubectl get endpointslices -A -o json",
    "nodes.json": "kubectl get nodes -o json",
    "kube-proxy.json": "kubectl -n kube-system get configmap kube-proxy -o json",
    "kube-proxy-daemonset.json": "kubectl -n kube-system get daemonset kube-proxy -o json",
}
# Where a node has no `sysctl`: the keys the checks read, straight from /proc/sys. Each check
# declares its keys (Check.sysctls); gathering is handed the catalogue's, as this layer knows no
# check, so the documented form names them (proc_sys_command gives the command for given keys).
PROC_SYS_COMMAND = "grep -H . /proc/sys/<each key the checks read>"
_KEY_TO_PATH = str.maketrans("./", "/.")
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
    # nftables mode (issue 19): the tables first (`nft list tables` lists no objects, so it
    # cannot crash on sets a newer nft made: kubernetes issue 136786), then each family's
    # kube-proxy table, never the whole ruleset; its text only where nft has no JSON.
    "nft-tables.txt": "nft list tables",
    "nft-ip-kube-proxy.json": "nft -j list table ip kube-proxy",
    "nft-ip-kube-proxy.txt": "nft list table ip kube-proxy",
    "nft-ip6-kube-proxy.json": "nft -j list table ip6 kube-proxy",
    "nft-ip6-kube-proxy.txt": "nft list table ip6 kube-proxy",
    # The IPVS -> nftables migration (issue 20). `nft --version` loads no module, so it runs
    # wherever nft is installed.
    "nft-version.txt": "nft --version",
    # IPVS mode's ipsets (KUBE-*, and KUBE-6-* for IPv6), names only; not run where ip_set is a
    # module not loaded, as ipset would load it.
    "ipset-list-names.txt": "ipset list -n",
    # The chains of each family's iptables tables: `iptables-save` of each backend whose tables
    # the kernel holds (legacy: /proc/net/ip_tables_names; nft: nf_tables in the kernel), cut
    # by the node script to table, chain and jump-to-KUBE-* lines; a whole dump reads the same.
    "iptables-chains.txt": "iptables-save",
    "ip6tables-chains.txt": "ip6tables-save",
}
# Why a node's nft files are missing where nft is not installed (an IPVS or iptables node):
# the facts tell this apart from nft failing, which is "cannot read", never an empty table.
NFT_NOT_INSTALLED = "nft not installed"
# Why nft is not run on a node whose kernel has nf_tables as a module not loaded: nft would load
# it, and gathering only reads (as ipvsadm is not run without ip_vs). kube-proxy in nftables
# mode loads it, so such a node has no kube-proxy table: the facts read no tables, not a gap.
NF_TABLES_NOT_LOADED = "nf_tables not loaded: nft not run, as it would load the module"
# Where that cannot be told (no modules.builtin to say it is built in), nft is not run either.
NF_TABLES_UNKNOWN = (
    "nf_tables not loaded, and no modules.builtin to say it is built in: nft not run, "
    "as it could load the module"
)
# Why a node's ipset names are missing where the ip_set module is not loaded: ipset would load
# it. No set can exist then, so the facts read none, as for nf_tables above.
IP_SET_NOT_LOADED = "ip_set not loaded: ipset not run, as it would load the module"
IP_SET_UNKNOWN = (
    "ip_set not loaded, and no modules.builtin to say it is built in: ipset not run, "
    "as it could load the module"
)
# Why a family's iptables chains are missing where no iptables-save is installed at all.
IPTABLES_NOT_INSTALLED = "iptables not installed"
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
# What lines_with keeps of one, per state a fact reads: its first rows in that state, at most
# this many. A SYN_RECV entry lives 60 s (ip_vs_proto_tcp.c), so 100,000 is more than 1,600
# connections failing every second for a minute, far above what a stuck return path shows (the
# seed incident: tens); a kept row costs about 800 bytes parsed, so at most ~80 MB per state.
# Past it, lines naming the state are counted, not kept, and the facts say the rows were cut.
MAX_KEPT_ROWS = 100_000
# A row is its table's fields (parse/procfs.py, parse/ipvsadm.py: with or without PE name and
# data) in at most MAX_ROW characters (three IPv6 endpoints and 255 bytes of PE data fit).
_ROW_FIELDS = {"ip_vs_conn.txt": frozenset({9, 11}), "ipvsadm-Lnc.txt": frozenset({6, 8})}
MAX_ROW = 1024
# Lines naming the state that are not rows (a pasted prompt, `ipvsadm -Lnc | grep SYN_RECV`):
# kept for the parser, which skips prompts and names the first line that is neither.
MAX_KEPT_OTHERS = 100
# Any other snapshot file is read whole, once, when a fact first needs it: one larger than this is
# refused when the snapshot is loaded (--vipcheck-max-file-size raises it). The largest at 100
# nodes x 5,000 Services, endpointslices.json, is 16 MB.
MAX_FILE_BYTES = 64 << 20
# A streamed file's line longer than this is no connection table line (those are ~100 bytes).
MAX_STREAMED_LINE = 64 << 10
_CHUNK = 1 << 20

CLUSTER_DIR = "cluster"
NODES_DIR = "nodes"
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


def proc_sys_command(keys: Iterable[str]) -> str:
    """proc-sys.txt's command for these sysctl keys: `grep -H .` of each key's file, a `.` of the
    key a `/` of the path and a `/` a `.` (net.ipv4.conf.eth0/100 is .../conf/eth0.100/...)."""
    return " ".join(("grep -H .", *("/proc/sys/" + key.translate(_KEY_TO_PATH) for key in keys)))


def new_meta(target: str) -> dict[str, Any]:
    """meta.json for a live run: what was observed, when, by which vipcheck."""
    return {
        "format": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "vipcheck": vipcheck.__version__,
        "target": target,
    }


def save_snapshot(snapshot: Snapshot, directory: Path) -> None:
    """Write the snapshot as plain files a person can read, diff and attach to a bug report.

    Every name that becomes a path is checked first (saved_name_problem): a node's or a file's
    name that is not the format's is a SnapshotError, and nothing is written outside directory.
    """
    problem = saved_name_problem(snapshot)
    if problem is not None:
        raise SnapshotError(f"cannot write snapshot to {_shown(directory)}: {problem}")
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


def saved_name_problem(snapshot: Snapshot) -> str | None:
    """Why a name in the snapshot cannot be a path under its directory, or None: a cluster file
    or a node's file outside the format, a node named as no Node nor host could be."""
    for name in snapshot.cluster:
        if name not in CLUSTER_FILES:
            return f"cluster file {_shown(name)}: not one of the format's"
    for node in snapshot.nodes.values():
        if node.name in (".", "..") or (
            node_name_problem(node.name) is not None and host_name_problem(node.name) is not None
        ):
            return f"node {_shown(node.name)}: not a Kubernetes Node's name, nor a host's"
        for name in (*node.files, *node.missing, *node.notes):
            if name not in NODE_FILES:
                return f"node {node.name}: file {_shown(name)}: not one of the format's"
    return None


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

    Files are read when a fact needs them, as _Tree reads: regular files inside the directory
    only, none larger than max_file_bytes (a connection table excepted, as it is streamed). Every
    file of the format is looked at here, before any is read, so a link, a FIFO, a device or a
    file too big is a SnapshotError (exit 4) naming it; so is a node directory whose name no Node
    could have (`-oProxyCommand=...`, a newline): it would reach a shell and the fix script.
    """
    if not directory.is_dir():
        raise SnapshotError(f"{_shown(directory)}: not a snapshot directory")
    tree = _Tree(directory, max_file_bytes)
    top = tree.known("", ("meta.json",))
    meta = _meta(tree, top["meta.json"]) if top else {}
    cluster = _FilesOnDisk(tree, tree.known(CLUSTER_DIR, CLUSTER_FILES))
    nodes = {name: _node(tree, name) for name in _node_names(tree)}
    if not cluster and not nodes:
        raise SnapshotError(
            f"{_shown(directory)}: no cluster/*.json and no nodes/<node>/ files; "
            "see docs/snapshot.md for the layout"
        )
    return Snapshot(cluster, nodes, meta, meta.get("cluster_error"), _read_probes(tree))


def _meta(tree: _Tree, path: str) -> dict[str, Any]:
    text = tree.read(path)
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise SnapshotError(f"{tree.shown(path)}: {error}") from None
    except RecursionError:
        raise SnapshotError(f"{tree.shown(path)}: JSON nested too deeply to read") from None
    if not isinstance(meta, dict):
        raise SnapshotError(f"{tree.shown(path)}: expected a JSON object")
    return meta


def _node_names(tree: _Tree) -> list[str]:
    """The directories under nodes/, each named as a Node may be; a link there is refused."""
    names = []
    for name, info in sorted(tree.entries(NODES_DIR).items()):
        path = f"{NODES_DIR}/{name}"
        if stat.S_ISLNK(info.st_mode):
            raise tree.refused(path, info.st_mode, directory=True)
        if not stat.S_ISDIR(info.st_mode):
            continue  # a note left beside the node directories is no node
        problem = node_name_problem(name)
        if problem is not None and host_name_problem(name) is not None:
            # A run without the API names its nodes after their hosts (`MYHOST`, `fd00::11`).
            raise SnapshotError(
                f"{tree.shown(path)}: not a Kubernetes Node's name ({problem}), nor a host's"
            )
        names.append(name)
    return names


def _node(tree: _Tree, name: str) -> NodeSnapshot:
    """One node's files, and what vipcheck wrote beside them (read now: they are small)."""
    written = (NODE_ERROR_FILE, NODE_MISSING_FILE, NODE_NOTES_FILE)
    present = tree.known(f"{NODES_DIR}/{name}", (*NODE_FILES, *written))
    error, missing, notes = (present.get(each) for each in written)
    return NodeSnapshot(
        name,
        _FilesOnDisk(tree, {file: path for file, path in present.items() if file in NODE_FILES}),
        None if error is None else tree.read(error).strip(),
        {} if missing is None else _read_missing(tree.read(missing)),
        {} if notes is None else _read_missing(tree.read(notes)),
    )


def _read_probes(tree: _Tree) -> Mapping[str, str] | None:
    """Every file under probes/, by path under it, read on first use; None when not probed."""
    files = tree.walk(PROBE_DIR)
    return _FilesOnDisk(tree, files) if PROBE_PLAN in files else None


def _shown(path: Path | str) -> str:
    """A path for a message in one line: a snapshot's names are others' text."""
    return printable(str(path), one_line=True)


# Each component below the root is opened from its parent without following a link; a file is
# opened without blocking (a FIFO with no writer) and without becoming a controlling terminal.
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISREG, "a regular file"),
)


def file_kind(mode: int) -> str:
    """What a file is, in words for a message that refuses it (`a FIFO`)."""
    return next((name for test, name in _KINDS if test(mode)), "of an unknown kind")


class _Tree:
    """A snapshot directory read as others wrote it: no file outside it, none but regular files,
    none bigger than the limit.

    Every component below the root is looked at (lstat) and then opened with O_NOFOLLOW from its
    parent's descriptor, so a link anywhere in a path (error.txt -> a secret, nodes/node-1 ->
    /etc) is refused, a FIFO is never opened (it would block the run) and neither is a device
    (/dev/zero as meta.json grew to MemoryError; opening some has effects). The opened file is
    checked again (fstat) and read to at most limit + 1 bytes, so one swapped, grown or lying
    about its size since it was looked at is refused too.
    """

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit

    def shown(self, path: str) -> str:
        """A path under the root for a message: with the root as the user gave it."""
        return _shown(self.root / path)

    def entries(self, directory: str) -> dict[str, os.stat_result]:
        """What a directory holds, each entry as lstat sees it; {} when it does not exist."""
        with self.blame(directory):
            try:
                descriptor = self._open_directory(directory)
            except FileNotFoundError:
                return {}
            try:
                with os.scandir(descriptor) as listing:
                    return {entry.name: entry.stat(follow_symlinks=False) for entry in listing}
            finally:
                os.close(descriptor)

    def known(self, directory: str, names: Iterable[str]) -> dict[str, str]:
        """Each of names present in directory, checked (check): name -> path under the root."""
        entries = self.entries(directory)
        found = {}
        for name in names:
            if name in entries:
                path = f"{directory}/{name}" if directory else name
                self.check(path, entries[name])
                found[name] = path
        return found

    def walk(self, directory: str) -> dict[str, str]:
        """Every file below directory, checked: path under directory -> path under the root."""
        found = {}
        pending = [directory]
        while pending:  # no recursion: a hostile tree may be deep
            current = pending.pop()
            for name, info in self.entries(current).items():
                path = f"{current}/{name}"
                if stat.S_ISDIR(info.st_mode):
                    pending.append(path)
                    continue
                self.check(path, info)
                found[path.removeprefix(f"{directory}/")] = path
        return dict(sorted(found.items()))

    def check(self, path: str, info: os.stat_result) -> None:
        """Refuse what is no regular file, or one over the limit unless it is streamed."""
        if not stat.S_ISREG(info.st_mode):
            raise self.refused(path, info.st_mode)
        if info.st_size > self.limit and PurePosixPath(path).name not in STREAMED_FILES:
            raise self.oversized(path, info.st_size)

    def read(self, path: str) -> str:
        """A file's text, read whole, within the limit whatever its size said when loaded."""
        with self.blame(path), self._open(path) as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > self.limit:
                raise self.oversized(path, size)
            data = stream.read(self.limit + 1)
        if len(data) > self.limit:
            raise self.oversized(path, len(data))
        return _decoded(data)

    def stream(self, path: str) -> BinaryIO:
        """A file opened to be streamed (a connection table): no size limit."""
        with self.blame(path):
            return self._open(path)

    @contextmanager
    def blame(self, path: str) -> Iterator[None]:
        """An OSError as a SnapshotError naming the path (ELOOP: a link swapped in since it was
        looked at)."""
        try:
            yield
        except OSError as error:
            why = _LINK if error.errno == errno.ELOOP else error.strerror or str(error)
            raise SnapshotError(f"{self.shown(path)}: {why}") from None

    def refused(self, path: str, mode: int, *, directory: bool = False) -> SnapshotError:
        if directory:
            why = " where a directory belongs: a snapshot holds directories and regular files only"
        else:
            why = ": a snapshot holds regular files only"
        return SnapshotError(f"{self.shown(path)}: {file_kind(mode)}{why}")

    def oversized(self, path: str, size: int) -> SnapshotError:
        limit, command = format_size(self.limit), _command_of(PurePosixPath(path).name)
        return SnapshotError(
            f"{self.shown(path)}: {format_size(size)}, more than the {limit} a snapshot file may "
            f"hold (it would be read whole into memory); check that it is the output of "
            f"`{command}`, or raise the limit with --vipcheck-max-file-size "
            f"{format_size(2 * size, unit=True)}"
        )

    def _open(self, path: str) -> BinaryIO:
        parent, _, name = path.rpartition("/")
        directory = self._open_directory(parent)
        try:
            self._look(directory, name, path, stat.S_ISREG)
            descriptor = os.open(name, _FILE_FLAGS, dir_fd=directory)
        finally:
            os.close(directory)
        stream = os.fdopen(descriptor, "rb")  # the caller closes it
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            stream.close()
            raise self.refused(path, mode)
        return stream

    def _open_directory(self, path: str) -> int:
        """A descriptor of a directory under the root, reached without following any link."""
        descriptor = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        parts = path.split("/") if path else []
        try:
            for depth, part in enumerate(parts):
                self._look(descriptor, part, "/".join(parts[: depth + 1]), stat.S_ISDIR)
                child = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)
                os.close(descriptor)
                descriptor = child
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def _look(self, directory: int, name: str, path: str, wanted: Callable[[int], bool]) -> None:
        """lstat before open: a link, a FIFO or a device is refused without being opened."""
        mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
        if not wanted(mode):
            raise self.refused(path, mode, directory=wanted is stat.S_ISDIR)


_LINK = "a symbolic link: a snapshot holds regular files only"


def _decoded(data: bytes) -> str:
    """Bytes as read_text gives them: what does not decode replaced, newlines made \\n."""
    text = data.decode(errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _command_of(name: str) -> str:
    return NODE_FILES.get(name) or CLUSTER_FILES.get(name) or "the command that wrote it"


def format_size(size: int, *, unit: bool = False) -> str:
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


@dataclass(frozen=True, slots=True)
class KeptLines:
    """A connection table's lines naming one state, each at its line number (the others blank).

    nonblank: whether the file held anything but whitespace; kept: how many lines were kept; cut:
    how many more named the state past what is kept (MAX_KEPT_ROWS), counted, not kept.
    """

    text: str
    nonblank: bool
    kept: int = 0
    cut: int = 0


def lines_with(files: Mapping[str, str], name: str, needle: str) -> KeptLines:
    """The lines of a connection table naming needle (a state), at most MAX_KEPT_ROWS rows of
    them; for the checks, which read only the SYN_RECV and FIN_WAIT rows.

    A file on disk is streamed in chunks, never held whole: memory stays within a chunk, the
    longest line (at most MAX_STREAMED_LINE, else SnapshotLineError) and the lines kept. A line
    kept must look like a row of its table (its field count, its length); the few that do not (a
    pasted prompt, `| grep SYN_RECV`) are kept for the parser to judge, at most MAX_KEPT_OTHERS.
    """
    if isinstance(files, _FilesOnDisk):
        return files.lines_with(name, needle)
    return _kept_lines_of_text(files[name], name, needle)


class SnapshotLineError(SnapshotError):
    """A streamed file's line too long to be what the format says: the 1-based line number."""

    def __init__(self, shown: str, name: str, line: int, limit: int) -> None:
        self.line = line
        self.reason = f"a line longer than {limit:,} bytes: not a line of `{_command_of(name)}`"
        self._made_of = (shown, name, line, limit)
        super().__init__(f"{shown}:{line}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._made_of)


class _Keeper:
    """Which lines naming the state a table keeps: its first MAX_KEPT_ROWS rows (by field count
    and length) and MAX_KEPT_OTHERS other lines; once either is full, the rest are only counted,
    so the rows kept are always the table's first ones in that state."""

    def __init__(self, name: str) -> None:
        self.fields = _ROW_FIELDS[PurePosixPath(name).name]
        self.kept: list[tuple[int, str]] = []
        self.rows = 0
        self.others = 0
        self.cut = 0

    def offer(self, number: int, line: bytes | str) -> None:
        if self.cut:
            self.cut += 1
            return
        text = _text(line) if isinstance(line, bytes) else line
        if len(text) <= MAX_ROW and len(text.split()) in self.fields:
            self.rows += 1
            full = self.rows > MAX_KEPT_ROWS
        else:
            self.others += 1
            full = self.others > MAX_KEPT_OTHERS
        if full:
            self.cut = 1
        else:
            self.kept.append((number, text))

    def result(self, nonblank: bool) -> KeptLines:
        if not nonblank:
            return KeptLines("", False)
        return KeptLines(_blanked(self.kept), True, len(self.kept), self.cut)


def _kept_lines_of_text(text: str, name: str, needle: str) -> KeptLines:
    """lines_with for text already in memory (a live run's): only the kept lines are copied."""
    keeper = _Keeper(name)
    if not text or text.isspace():  # not strip(): no copy of a 100 MB table
        return keeper.result(nonblank=False)
    line, position = 1, 0  # the line number at `position`, which starts a line
    start = text.find(needle)
    while start >= 0:
        newline = text.rfind("\n", position, start)
        line_start = position if newline < 0 else newline + 1
        line += text.count("\n", position, line_start)
        line_end = text.find("\n", start)
        line_end = len(text) if line_end < 0 else line_end
        keeper.offer(line, text[line_start:line_end])
        position, line = line_end + 1, line + 1
        start = text.find(needle, position)
    return keeper.result(nonblank=True)


def _blanked(kept: list[tuple[int, str]]) -> str:
    """Text holding each (line number, line) at its number, every other line empty."""
    parts, current = [], 1
    for number, line in kept:
        parts += ["\n" * (number - current), line]
        current = number
    return "".join(parts) + "\n"


class _FilesOnDisk(Mapping[str, str]):
    """A snapshot directory's files (name -> path under the root), read when a fact parses them
    and not kept: at 100 nodes the raw text alone was hundreds of MB beside the parsed facts. A
    file that vanished or changed kind since the snapshot was loaded raises SnapshotError then."""

    def __init__(self, tree: _Tree, paths: Mapping[str, str]) -> None:
        self._tree = tree
        self._paths = dict(paths)

    def __getitem__(self, name: str) -> str:
        return self._tree.read(self._paths[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def lines_with(self, name: str, needle: str) -> KeptLines:
        """lines_with, streamed: the file is read in chunks and never held whole."""
        path = self._paths[name]
        shown = self._tree.shown(path)
        want = needle.encode()
        keeper = _Keeper(name)
        nonblank, line, pending = False, 1, b""  # line: the number of pending's first line
        with self._tree.blame(path), self._tree.stream(path) as stream:
            while chunk := stream.read(_CHUNK):
                nonblank = nonblank or not chunk.isspace()
                buffer = pending + chunk if pending else chunk
                cut = buffer.rfind(b"\n") + 1
                whole, pending = buffer[:cut], buffer[cut:]
                lines = whole.split(b"\n")[:-1]
                if len(pending) > MAX_STREAMED_LINE:
                    raise SnapshotLineError(shown, name, line + len(lines), MAX_STREAMED_LINE)
                if lines and max(map(len, lines)) > MAX_STREAMED_LINE:
                    index = next(i for i, x in enumerate(lines) if len(x) > MAX_STREAMED_LINE)
                    raise SnapshotLineError(shown, name, line + index, MAX_STREAMED_LINE)
                if want in whole:
                    for index, each in enumerate(lines):
                        if want in each:
                            keeper.offer(line + index, each)
                line += len(lines)
        if want in pending:
            keeper.offer(line, pending)
        return keeper.result(nonblank)


class NodeSpool:
    """Where a live run keeps each node's files once gathered: on disk, read when a fact parses
    them, as a replay's are (_FilesOnDisk), so a run holds the raw text of no node beside the
    parsed tables of the one being judged, and its memory grows with Services, not with nodes x
    Services (issue 22).

    A private directory (mode 0700) under TMPDIR, one numbered directory per node (a node's name
    is no path here), the format's file names only (gather_node keeps no other). It is removed
    when the last of its files' mappings is let go, or at exit, by the process that made it
    (a judging worker forked from it does not). A file is read within max_file_bytes, as a
    replayed one is; the connection tables are streamed.
    """

    def __init__(self, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        try:
            root = Path(tempfile.mkdtemp(prefix="vipcheck-gathered-"))
        except OSError as error:
            where = _shown(tempfile.gettempdir())
            raise SnapshotError(
                f"cannot keep the nodes' files in {where}: {error.strerror} (TMPDIR names where)"
            ) from None
        self._tree = _Tree(root, max_file_bytes)
        self._slots = itertools.count()
        weakref.finalize(self._tree, _remove_spool, root, os.getpid())

    @property
    def root(self) -> Path:
        return self._tree.root

    def keep(self, node: NodeSnapshot) -> NodeSnapshot:
        """The node with its files on disk; a SnapshotError saying why when they cannot be written
        (a full TMPDIR: exit 4, as a --save-snapshot that cannot be written is)."""
        if not node.files:
            return node
        strange = next((name for name in node.files if name not in NODE_FILES), None)
        if strange is not None:  # a name is a path here: only the format's
            raise SnapshotError(f"{node.name}: file {_shown(strange)}: not one of the format's")
        slot = str(next(self._slots))
        try:
            (self.root / slot).mkdir()
            for name, text in node.files.items():
                (self.root / slot / name).write_text(text, encoding="utf-8")
        except OSError as error:
            raise SnapshotError(
                f"{node.name}: cannot keep its files in {_shown(self.root)}: {error.strerror} "
                "(TMPDIR names where)"
            ) from None
        paths = {name: f"{slot}/{name}" for name in node.files}
        return replace(node, files=_FilesOnDisk(self._tree, paths))


def _remove_spool(root: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(root, ignore_errors=True)


def _text(line: bytes) -> str:
    """A streamed line as read_text would give it (a CRLF file's CR dropped)."""
    return line.removesuffix(b"\r").decode(errors="replace")


def _read_missing(text: str) -> dict[str, str]:
    """`file: text` lines (missing.txt, notes.txt) for the files of the format."""
    missing = {}
    for line in text.splitlines():
        name, _, why = line.partition(":")
        if name.strip() in NODE_FILES:
            missing[name.strip()] = why.strip()
    return missing


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")  # as it is read (_decoded), whatever the locale
