"""vipcheck-node against the node script, on this host's kernel, in a network namespace.

Both run in one fresh namespace (unshare -n) holding a bridge, a veth pair, a VXLAN device,
IPv4 and IPv6 addresses (one with a peer) and kube-proxy's nftables table: the reader's frames
and the script's must give the same files, the same `missing` lines and the same facts, each
parsed by vipcheck's own parsers. This kernel has no ip_vs (the script and the reader both say
so, in the same words); the IPVS part is proven on the lab.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.nft_kernel import DATA, require_kernel_nft
from vipcheck.checks import SYSCTL_KEYS
from vipcheck.facts import NodeFacts
from vipcheck.gather.node_script import NodeFrames, build_node_script, split_node_frames
from vipcheck.model.nftables import NftFamily
from vipcheck.model.xtables import IptablesFamily
from vipcheck.node_reader.same_facts import VOLATILE_SYSCTLS
from vipcheck.parse.sysctl import keys_named, parse_sysctl
from vipcheck.snapshot import NodeSnapshot

READER = Path(sys.executable).with_name("vipcheck-node")
# Links and addresses of kinds this kernel has built in (it loads no modules: dummy and ipip
# are not there), with the cases `ip` prints apart: a lower link down (M-DOWN), a port of a
# bridge, a peer address, IPv6, an address on a link that is down.
SETUP = """
ip link set lo up
ip link add br0 type bridge
ip link add veth0 type veth peer name veth1
ip link set veth0 master br0
ip link set br0 up
ip link set veth0 up
ip link add vxlan5 type vxlan id 5 dstport 4789
ip addr add 10.96.0.20/32 dev br0
ip addr add 192.168.58.13/24 brd + dev br0
ip addr add 10.0.0.1 peer 10.0.0.2/32 dev veth1
ip -6 addr add fd00:10:96::20/128 dev br0 nodad
ip addr add 10.96.0.30/32 dev vxlan5
"""
# Run in the namespace: SETUP, the ruleset, the node script, the reader, `sysctl -a` again.
IN_NAMESPACE = (
    'set -e; eval "$0"; printf "%s" "$1" | nft -f -; sh -c "$2" >"$4/script.out";'
    ' "$3" >"$4/reader.out"; sysctl -a >"$4/sysctl-after.txt" 2>/dev/null'
)


@dataclass(frozen=True)
class Outputs:
    script: NodeFrames
    reader: NodeFrames
    sysctl_after: str


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    require_kernel_nft()
    if not READER.exists():
        pytest.skip(f"{READER} is not installed (pip install -e .)")
    directory = tmp_path_factory.mktemp("namespace")
    ruleset = (DATA / "endpoint-chains.nft").read_text()
    arguments = [SETUP, ruleset, build_node_script(), str(READER), str(directory)]
    script, reader = script_and_reader(["-n"], IN_NAMESPACE, arguments, directory)
    return Outputs(script, reader, (directory / "sysctl-after.txt").read_text())


def script_and_reader(
    namespaces: list[str], in_namespace: str, arguments: list[str], directory: Path
) -> tuple[NodeFrames, NodeFrames]:
    """Run in_namespace by sh in new namespaces (unshare's flags); the frames it left in
    directory's script.out and reader.out."""
    result = subprocess.run(
        ["unshare", *namespaces, "sh", "-c", in_namespace, *arguments],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    script, reader = (
        split_node_frames((directory / name).read_text(errors="surrogateescape"))
        for name in ("script.out", "reader.out")
    )
    return script, reader


def facts(frames: NodeFrames) -> NodeFacts:
    snapshot = NodeSnapshot("node-1", frames.files, missing=frames.missing, notes=frames.notes)
    return NodeFacts(snapshot, sysctl_keys=keys_named(SYSCTL_KEYS))


def test_same_files_and_missing_lines(outputs: Outputs) -> None:
    assert outputs.reader.complete
    assert set(outputs.reader.files) == set(outputs.script.files)
    assert outputs.reader.missing == outputs.script.missing
    assert "ip_vs module not loaded" in outputs.reader.missing["ipvsadm-Ln.txt"]
    assert outputs.reader.notes == outputs.script.notes == {}


def test_same_interfaces(outputs: Outputs) -> None:
    reader, script = facts(outputs.reader).interfaces, facts(outputs.script).interfaces
    assert reader.interfaces == script.interfaces
    names = {interface.name for interface in reader.interfaces}
    assert {"lo", "br0", "veth0", "veth1", "vxlan5"} <= names
    veth0 = next(i for i in reader.interfaces if i.name == "veth0")
    assert "M-DOWN" in veth0.flags  # its peer is down: `ip` says so, and so must the reader


def test_same_nftables(outputs: Outputs) -> None:
    reader, script = facts(outputs.reader), facts(outputs.script)
    assert reader.nft_tables == script.nft_tables
    assert ("ip", "kube-proxy") in reader.nft_tables
    table = "nft-ip-kube-proxy.json"  # the same command's output: byte for byte
    assert outputs.reader.files[table] == outputs.script.files[table]
    for family in NftFamily:
        assert reader.nftables(family) == script.nftables(family)
    assert reader.nft_version == script.nft_version
    for iptables in IptablesFamily:
        assert reader.iptables(iptables) == script.iptables(iptables)
    assert reader.kernel_release == script.kernel_release


def test_same_sysctls(outputs: Outputs) -> None:
    """The keys the checks read are equal; so is every key of `sysctl -a` and every value of
    this namespace's own (net.*) but the conntrack entry count: the links' IPv6 neighbour
    discovery goes through kube-proxy's table, whose `ct` rules track it, while the test runs."""
    stable = re.compile(r"(?!net\.netfilter\.nf_conntrack_count$)net\..*")
    assert {"net.netfilter.nf_conntrack_count"} == VOLATILE_SYSCTLS
    reader, script = (facts(frames).sysctls.values for frames in (outputs.reader, outputs.script))
    assert set(reader) == set(script)
    assert {k: v for k, v in reader.items() if stable.fullmatch(k)} == {
        k: v for k, v in script.items() if stable.fullmatch(k)
    }
    everything = [
        parse_sysctl(text, name, stable)
        for name, text in (
            ("reader", outputs.reader.files["sysctl.txt"]),
            ("script", outputs.script.files["sysctl.txt"]),
            ("after", outputs.sysctl_after),
        )
    ]
    assert everything[0].values == everything[1].values == everything[2].values
    assert len(everything[0].values) > 100

    def keys(text: str) -> set[str]:
        return {line.partition(" = ")[0] for line in text.splitlines()}

    assert keys(outputs.reader.files["sysctl.txt"]) == keys(outputs.script.files["sysctl.txt"])


def test_without_proc_sys_both_say_sysctl_could_not_read_it(tmp_path: Path) -> None:
    """A procfs of processes only (the lab's no-ipvs node) has no /proc/sys: the reader leaves
    sysctl.txt to the script, whose `sysctl -a` says why, not an empty file (no key set)."""
    if not READER.exists():
        pytest.skip(f"{READER} is not installed (pip install -e .)")
    hidden = (
        'mount -t proc -o subset=pid proc /proc && sh -c "$0" >"$2/script.out";'
        ' "$1" >"$2/reader.out"'
    )
    arguments = [build_node_script(), str(READER), str(tmp_path)]
    script, reader = script_and_reader(["-n", "-m"], hidden, arguments, tmp_path)
    assert "sysctl.txt" not in reader.files
    assert reader.missing["sysctl.txt"] == script.missing["sysctl.txt"]
    assert "/proc/sys" in reader.missing["sysctl.txt"]
