"""`local://` nodes are read by the netlink reader, every other node by the node script.

Proven in a fresh network and mount namespace (unshare -n -m) where `ip` is a stub that logs its
calls and fails: the reader still lists the namespace's links and addresses (over rtnetlink)
and never runs it, where the script, run the way other nodes run it, does and cannot. That both
give the same facts where both can read is for tests/unit/node_reader/test_reader_in_namespace.py
and the lab to prove.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nft_kernel import require_kernel_nft

SETUP = "ip link set lo up; ip link add br0 type bridge; ip addr add 10.96.0.20/32 dev br0"
RUN_BOTH = """
import json
from vipcheck.gather.local_reader import NODE_GATHER_RUNNER
from vipcheck.gather.node_script import build_node_script, split_node_frames
from vipcheck.transport import HOST_SPEC_RUNNER, NodeTarget

script = build_node_script()
for target in (NodeTarget("here", "local://"), NodeTarget("here", "local://?sudo=false")):
    for name, runner in (("gather", NODE_GATHER_RUNNER), ("script", HOST_SPEC_RUNNER)):
        result = runner.run(target, script, 60)
        frames = split_node_frames(result.stdout)
        print(json.dumps({
            "runner": name, "rc": result.rc, "stderr": result.stderr,
            "addr": frames.files.get("ip-addr.json"), "missing": frames.missing,
        }))
"""


IP_STUB = '#!/bin/sh\necho "ip $*" >>{log}\nexit 1\n'


def test_local_nodes_are_read_over_netlink_and_others_by_the_script(tmp_path: Path) -> None:
    require_kernel_nft()  # root and unshare -n, as the namespace tests need
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    ip = Path(shutil.which("ip") or "/usr/bin/ip").resolve()
    stub = tmp_path / "ip"
    log = tmp_path / "ip.log"
    stub.write_text(IP_STUB.format(log=log))
    stub.chmod(0o755)
    in_namespace = f'set -e; {SETUP}; mount --bind "$2" "$3"; exec "$0" -c "$1"'
    result = subprocess.run(
        ["unshare", "-n", "-m", "sh", "-c", in_namespace, sys.executable, RUN_BOTH, stub, ip],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    # Only the script ran `ip` (its probe for `-j`, then its fallbacks): once per target.
    assert log.read_text().count("ip -j link show lo") == 2, log.read_text()
    assert [run["runner"] for run in runs] == ["gather", "script"] * 2
    for run in runs:
        assert run["rc"] == 0, run
        if run["runner"] == "gather":
            addresses = json.loads(run["addr"])
            links = {entry["ifname"]: entry for entry in addresses}
            assert set(links) == {"lo", "br0"}, addresses
            assert [a["local"] for a in links["br0"]["addr_info"]] == ["10.96.0.20"]
            assert "ip-addr.json" not in run["missing"], run
        else:
            assert run["addr"] is None, run  # the script needs `ip`, which fails here
            assert "ip-addr.json" in run["missing"], run
