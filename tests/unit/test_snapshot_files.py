"""A loaded snapshot reads a file when a fact needs it, and keeps no copy of the raw text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vipcheck.snapshot import SnapshotError, load_snapshot

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
