"""A live run keeps each node's files on disk as it arrives (NodeSpool, issue 22): the raw text of
no node stays in memory, so a live run's memory grows as a replay's does, with Services."""

from __future__ import annotations

import gc
import os
import stat
import tempfile
import tracemalloc

import pytest

from vipcheck.checks import SYSCTL_KEYS
from vipcheck.facts import Facts
from vipcheck.gather.live import gather
from vipcheck.gather.nodes import Keep, in_memory
from vipcheck.options import GatherOptions
from vipcheck.snapshot import NodeSnapshot, NodeSpool, SnapshotError, lines_with
from vipcheck.transport import NodeTarget, RunResult

ROW = "TCP 0A000001 0050 0A600001 0050 0A000002 0050 SYN_RECV 50\n"
UNAME = "6.1.0-25-amd64\n"


def test_kept_files_read_back_as_gathered_and_stream() -> None:
    spool = NodeSpool()
    files = {"uname.txt": UNAME, "ip_vs_conn.txt": "Pro FromIP\n" + ROW * 3}
    kept = spool.keep(NodeSnapshot("node-1", files, missing={"sysctl.txt": "not installed"}))
    assert dict(kept.files) == files
    assert kept.missing == {"sysctl.txt": "not installed"}
    assert not isinstance(kept.files, dict)  # read from disk when asked, not held
    table = lines_with(kept.files, "ip_vs_conn.txt", "SYN_RECV")
    assert table.kept == 3
    assert stat.S_IMODE(spool.root.stat().st_mode) == 0o700
    assert [path.name for path in spool.root.iterdir()] == ["0"]  # a number, not the node's name


def test_a_file_name_outside_the_format_is_refused_before_anything_is_written() -> None:
    spool = NodeSpool()
    with pytest.raises(SnapshotError, match=r"node-1: file \.\./x: not one of the format's"):
        spool.keep(NodeSnapshot("node-1", {"uname.txt": UNAME, "../x": "x"}))
    assert list(spool.root.iterdir()) == []


def test_a_node_without_files_is_kept_as_it_is() -> None:
    unobserved = NodeSnapshot("node-1", error="ssh: Connection refused")
    assert NodeSpool().keep(unobserved) is unobserved


def test_the_spool_goes_when_its_files_are_let_go() -> None:
    spool = NodeSpool()
    kept = spool.keep(NodeSnapshot("node-1", {"uname.txt": UNAME}))
    root = spool.root
    del spool
    gc.collect()
    assert (root / "0" / "uname.txt").read_text() == UNAME  # the files still hold it
    del kept
    gc.collect()
    assert not root.exists()


def test_a_forked_process_leaves_the_spool_to_its_maker() -> None:
    """A judging worker is forked from the run: its end must not remove the run's files."""
    spool = NodeSpool()
    kept = spool.keep(NodeSnapshot("node-1", {"uname.txt": UNAME}))
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        del kept, spool
        gc.collect()
        os._exit(0)
    os.waitpid(child, 0)
    assert kept.files["uname.txt"] == UNAME


def test_a_file_over_the_limit_is_refused_when_read_as_a_replayed_one_is() -> None:
    files = {"uname.txt": "x" * 2048, "ip_vs_conn.txt": ROW * 100}
    kept = NodeSpool(max_file_bytes=1024).keep(NodeSnapshot("node-1", files))
    with pytest.raises(SnapshotError, match=r"0/uname\.txt: 2 KiB, more than the 1 KiB a snapshot"):
        kept.files["uname.txt"]
    assert lines_with(kept.files, "ip_vs_conn.txt", "SYN_RECV").kept == 100  # streamed


def test_a_spool_that_cannot_be_written_says_where() -> None:
    spool = NodeSpool()
    spool.root.rmdir()
    spool.root.write_text("not a directory any more")  # what root cannot write through either
    try:
        with pytest.raises(SnapshotError, match=r"node-1: cannot keep its files in .*: Not a dir"):
            spool.keep(NodeSnapshot("node-1", {"uname.txt": UNAME}))
    finally:
        spool.root.unlink()


class BigNodes:
    """A NodeRunner whose every node prints a 2 MB IPVS table."""

    TABLE = (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.96.0.1:443 rr\n"
        + "".join(
            f"  -> 10.0.{index // 250}.{index % 250 + 1}:6443        Masq    1      0          0\n"
            for index in range(30_000)
        )
    )

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        frames = f"===vipcheck:file=ipvsadm-Ln.txt\n{self.TABLE}\n===vipcheck:rc=0\n"
        return RunResult(0, frames + "===vipcheck:end\n", "")


def _held_after_gathering(keep: Keep, nodes: int) -> int:
    """Bytes Python still holds once `nodes` nodes were gathered and kept."""
    hosts = tuple(f"ssh://node-{index}" for index in range(nodes))
    tracemalloc.start()
    try:
        snapshot = gather(
            GatherOptions(hosts=hosts, parallel=4),
            lambda _line: None,
            runner=BigNodes(),
            read_cluster=lambda *_args: {},
            sysctl_keys=SYSCTL_KEYS,
            keep=keep,
        )
        gc.collect()
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(snapshot.nodes) == nodes
    facts = Facts.from_snapshot(snapshot)
    assert all(len(facts.nodes[name].ipvs.services) == 1 for name in snapshot.nodes)
    return held


def test_a_live_run_holds_no_node_s_text() -> None:
    """20 nodes of 2 MB each: 40 MB held in memory, under 4 MB on disk (NodeSpool)."""
    table = len(BigNodes.TABLE)
    in_ram = _held_after_gathering(in_memory, 20)
    spooled = _held_after_gathering(NodeSpool().keep, 20)
    assert in_ram > 20 * table
    assert spooled < 2 * table, f"{spooled:,} bytes held with the spool, {in_ram:,} without"


def test_a_temp_directory_that_cannot_be_made_says_where(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(prefix: str) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(SnapshotError, match=r"cannot keep the nodes' files in .*: No space left"):
        NodeSpool()
