"""A loaded snapshot reads a file when a fact needs it, and keeps no copy of the raw text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vipcheck.snapshot import NODE_FILES, SnapshotError, load_snapshot

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "seed-incidents"


def test_files_are_read_on_use_not_at_load(tmp_path: Path) -> None:
    shutil.copytree(SEED, tmp_path / "snap")
    snapshot = load_snapshot(tmp_path / "snap")
    timeout = tmp_path / "snap/nodes/node-1/ipvsadm-timeout.txt"
    timeout.write_text("Timeout (tcp tcpfin udp): 900 30 300\n")
    node = snapshot.nodes["node-1"]
    assert node.files["ipvsadm-timeout.txt"] == "Timeout (tcp tcpfin udp): 900 30 300\n"
    assert "ipvsadm-timeout.txt" in node.files
    assert "no-such.txt" not in node.files
    assert dict(node.files) == {
        name: (tmp_path / "snap/nodes/node-1" / name).read_text() for name in node.files
    }
    timeout.unlink()
    with pytest.raises(SnapshotError, match="ipvsadm-timeout"):
        node.files["ipvsadm-timeout.txt"]


def test_snapshot_md_names_every_node_file_and_its_command() -> None:
    """docs/snapshot.md is what a person assembling a snapshot by hand reads: every node file
    the format knows is there, with the command that produces it (the nft ones included)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "snapshot.md").read_text()
    assert [name for name in NODE_FILES if name not in page] == []
    named = [command for command in NODE_FILES.values() if command.startswith("nft")]
    assert [command for command in named if command not in page] == []
