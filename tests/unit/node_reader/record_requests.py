"""Run the node reader with every netlink message it sends recorded, as JSON.

    python -m tests.unit.node_reader.record_requests OUT.json     (from the checkout, as root)

Every send of pyroute2 (NetlinkRequest.send, the generic family lookup's sendto, batches)
ends in a method of Python's socket.socket, so the seam is there, below pyroute2: each netlink
message of each buffer is recorded with its protocol, type, flags and, for generic netlink,
its command. The reader's output goes to stdout, as vipcheck-node's does. The commands it runs
(nft, ipset, iptables-save, through the node script) are other processes: not recorded here.
Usable on the lab's IPVS kernel as it is here: the IPVS requests show only there
(tests/lab/test_reader_lab.py runs it there, and compares the output too).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vipcheck.node_reader.cli import read_node

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
NETLINK_ROUTE, NETLINK_GENERIC = 0, 16
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
# The flags a read may carry: REQUEST, ACK, ECHO and DUMP (ROOT | MATCH, the bits a write's
# REPLACE and EXCL are); never CREATE or APPEND.
READ_FLAGS = 0x1 | 0x4 | 0x8 | NLM_F_DUMP
RTM_GETLINK, RTM_GETADDR = 18, 22
GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 16, 3
IPVS_FAMILY = -1  # a generic netlink family's id is the kernel's choice: any but the control's
# Each read the reader means, by (protocol, type, generic command), and whether it is a dump.
# include/uapi/linux/ip_vs.h: GET_SERVICE 4 and GET_DEST 8 are dumps; GET_CONFIG 13 and
# GET_INFO 15 have no dump (doit only).
READS = {
    (NETLINK_ROUTE, RTM_GETLINK, None): True,
    (NETLINK_ROUTE, RTM_GETADDR, None): True,
    (NETLINK_GENERIC, GENL_ID_CTRL, CTRL_CMD_GETFAMILY): False,
    (NETLINK_GENERIC, IPVS_FAMILY, 4): True,
    (NETLINK_GENERIC, IPVS_FAMILY, 8): True,
    (NETLINK_GENERIC, IPVS_FAMILY, 13): False,
    (NETLINK_GENERIC, IPVS_FAMILY, 15): False,
}


def messages(protocol: int, data: bytes) -> list[dict[str, int]]:
    """Each netlink message of one buffer: protocol, type, flags, and its genl command."""
    found = []
    position = 0
    while position + _HEADER.size <= len(data):
        length, kind, flags, _, _ = _HEADER.unpack_from(data, position)
        record = {"protocol": protocol, "type": kind, "flags": flags}
        if protocol == NETLINK_GENERIC and length > _HEADER.size:
            record["cmd"] = data[position + _HEADER.size]
        found.append(record)
        if length < _HEADER.size:
            break
        position += (length + 3) & ~3
    return found


def refused(record: dict[str, int]) -> str | None:
    """Why a request sent is not one of the reads the reader means, or None."""
    protocol, kind, flags = record["protocol"], record["type"], record["flags"]
    if not flags & NLM_F_REQUEST or flags & ~READ_FLAGS:
        return f"flags {flags:#x}: not a GET or DUMP request"
    family = IPVS_FAMILY if protocol == NETLINK_GENERIC and kind != GENL_ID_CTRL else kind
    key = (protocol, family, record.get("cmd"))
    if key not in READS:
        return f"protocol {protocol} type {kind} command {record.get('cmd')}: not a read"
    dump = flags & NLM_F_DUMP == NLM_F_DUMP
    if READS[key] != dump:
        return f"protocol {protocol} type {kind} command {record.get('cmd')}: " + (
            "sent as a dump" if dump else "without NLM_F_DUMP"
        )
    return None


def recording(records: list[dict[str, int]]) -> None:
    """Wrap socket.socket's send methods: a netlink socket's buffers are recorded, then sent."""

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def send(self: socket.socket, data: Any, *args: Any) -> Any:
            if self.family == socket.AF_NETLINK:
                buffers = data if name == "sendmsg" else [data]
                records.extend(messages(self.proto, b"".join(bytes(b) for b in buffers)))
            return original(self, data, *args)

        return send

    for name in ("send", "sendto", "sendall", "sendmsg"):
        setattr(socket.socket, name, wrap(name, getattr(socket.socket, name)))


def main() -> int:
    records: list[dict[str, int]] = []
    recording(records)
    read_node(sys.stdout.buffer)
    Path(sys.argv[1]).write_text(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
