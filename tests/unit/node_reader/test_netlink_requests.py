"""vipcheck-node sends only GET and DUMP requests: every netlink message it sends, recorded.

The reader runs in a network namespace of its own (unshare -n) with every send of its netlink
sockets recorded (record_requests.py: the seam is Python's socket methods, below pyroute2).
This kernel has no ip_vs, so the IPVS family lookup is the only generic netlink request here;
the IPVS dumps and GETs are recorded the same way on the lab's IPVS kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.node_reader.record_requests import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NETLINK_GENERIC,
    NETLINK_ROUTE,
    RTM_GETADDR,
    RTM_GETLINK,
    refused,
)

ROOT = Path(__file__).resolve().parents[3]


def test_only_get_and_dump_requests_are_sent(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare -n (a network namespace of its own)")
    out = tmp_path / "requests.json"
    module = "tests.unit.node_reader.record_requests"
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", module, str(out)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert [(r, refused(r)) for r in records if refused(r)] == []
    sent = {(r["protocol"], r["type"], r.get("cmd")) for r in records}
    assert sent >= {
        (NETLINK_ROUTE, RTM_GETLINK, None),
        (NETLINK_ROUTE, RTM_GETADDR, None),
        (NETLINK_GENERIC, GENL_ID_CTRL, CTRL_CMD_GETFAMILY),
    }


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"protocol": 0, "type": 16, "flags": 0x605}, "flags 0x605"),  # RTM_NEWLINK, create
        ({"protocol": 0, "type": 16, "flags": 0x5}, "type 16 command None: not a read"),
        ({"protocol": 0, "type": 19, "flags": 0x301}, "type 19 command None: not a read"),
        ({"protocol": 16, "type": 30, "flags": 0x5, "cmd": 1}, "command 1: not a read"),
        ({"protocol": 16, "type": 30, "flags": 0x5, "cmd": 17}, "command 17: not a read"),
        ({"protocol": 16, "type": 30, "flags": 0x5, "cmd": 4}, "without NLM_F_DUMP"),
        ({"protocol": 16, "type": 30, "flags": 0x301, "cmd": 13}, "sent as a dump"),
        ({"protocol": 16, "type": 16, "flags": 0x1, "cmd": 1}, "command 1: not a read"),
        ({"protocol": 12, "type": 0xA01, "flags": 0x1}, "protocol 12 type 2561"),
    ],
)
def test_write_requests_are_refused(record: dict[str, int], why: str) -> None:
    reason = refused(record)
    assert reason is not None
    assert why in reason


def test_the_reads_are_allowed() -> None:
    for command, flags in ((4, 0x301), (8, 0x301), (13, 0x5), (15, 0x5)):
        assert refused({"protocol": 16, "type": 30, "flags": flags, "cmd": command}) is None
