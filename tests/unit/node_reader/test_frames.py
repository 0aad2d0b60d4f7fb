"""The reader's frames, cut back by the node script's own splitter."""

from __future__ import annotations

import io
from collections.abc import Iterator

from vipcheck.gather.node_script import END, split_node_frames
from vipcheck.node_reader.frames import FrameWriter
from vipcheck.node_reader.messages import ReadError


def test_whole_failed_and_missing_files_read_back_as_the_scripts_do() -> None:
    out = io.BytesIO()
    frames = FrameWriter(out)

    def fails_midway() -> Iterator[str]:
        yield "TCP  10.96.0.1:443 rr\n"
        raise ReadError("netlink IPVS_CMD_GET_DEST dump: Operation not permitted\nsecond line")

    assert frames.file("uname.txt", lambda: ["6.1.0\n"])
    assert not frames.file("ipvsadm-Ln.txt", fails_midway)
    frames.file("ip_vs_conn.txt", lambda: [b"Pro FromIP\n", b"TCP 0A000001\n"])
    frames.missing("nft-tables.txt", "nft not installed")
    out.write(f"{END}\n".encode())
    split = split_node_frames(out.getvalue().decode())
    assert split.complete
    assert split.files == {"uname.txt": "6.1.0\n", "ip_vs_conn.txt": "Pro FromIP\nTCP 0A000001\n"}
    assert split.missing == {
        "ipvsadm-Ln.txt": "netlink IPVS_CMD_GET_DEST dump: Operation not permitted\\nsecond line",
        "nft-tables.txt": "nft not installed",
    }
