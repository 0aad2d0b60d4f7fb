"""Gathering what IPVS mode leaves behind: nft's version, ipset names, each backend's iptables
chains. The node script's frames under dash, read back by the facts.

The real ipset, iptables-legacy-save and iptables-nft-save run in a network namespace of their
own with IPVS mode's sets and chains loaded (tests/unit/parse/data/leftovers/ipvs-mode.*, their
output recorded beside). Stub tools (named as such: shell scripts on PATH that log each call)
stand in where the test needs a node this host is not: ip_set or ip_tables not loaded, a tool
missing or failing. /proc/modules, /sys/module, /lib/modules and /proc/net are pointed at files
the test writes through the script's path variables, as test_nft_gather.py does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fake_kernel import run_on_fake_kernel
from vipcheck.facts import MissingInput, NodeFacts
from vipcheck.gather.node_script import build_node_script, split_node_frames
from vipcheck.model.xtables import IptablesBackend, IptablesFamily
from vipcheck.parse.tool_outputs import parse_nft_version
from vipcheck.snapshot import IP_SET_NOT_LOADED, IP_SET_UNKNOWN, NODE_FILES, NodeSnapshot

DATA = Path(__file__).resolve().parents[1] / "parse" / "data" / "leftovers"
FILES = ("nft-version.txt", "ipset-list-names.txt", "iptables-chains.txt", "ip6tables-chains.txt")
SCRIPT = build_node_script({name: NODE_FILES[name] for name in FILES}, path_suffix="")
IPV4, IPV6 = IptablesFamily.IPV4, IptablesFamily.IPV6


def _require_namespace_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for unshare -n (a network namespace of its own)")
    for tool in ("unshare", "ipset", "iptables-legacy-restore", "ip6tables-nft-restore", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make deps installs it)")


def gather_in_namespace(scenario: str) -> NodeSnapshot:
    """The node script's leftovers files in a fresh network namespace holding the scenario's
    sets (DATA/<scenario>.ipsets), IPv4 chains in the legacy backend (.v4.rules) and IPv6
    chains in iptables-nft's (.v6.rules), as the real tools list them."""
    _require_namespace_tools()
    setup = (
        f"ipset restore < {scenario}.ipsets && iptables-legacy-restore < {scenario}.v4.rules && "
        f"ip6tables-nft-restore < {scenario}.v6.rules && "
    )
    script = build_node_script({name: NODE_FILES[name] for name in FILES})
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", setup + 'eval "$0"', script],
        cwd=DATA, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    frames = split_node_frames(result.stdout)
    assert frames.complete
    assert frames.missing == {}
    return NodeSnapshot("node-1", frames.files)


@pytest.mark.parametrize("scenario", ["ipvs-mode", "kubelet-only"])
def test_the_recorded_outputs_are_the_kernels(scenario: str) -> None:
    """DATA/<scenario>.<file> is what the real tools print for the scenario (checks' unit tests
    read them): `ipset list -n` and each family's cut iptables-save."""
    snapshot = gather_in_namespace(scenario)
    for name in FILES[1:]:
        assert snapshot.files[name] == (DATA / f"{scenario}.{name}").read_text(), name


def test_ipvs_modes_leftovers_are_gathered_from_the_kernel() -> None:
    """IPVS mode's sets (both families, and keepalived's), its IPv4 chains in the legacy backend
    and its IPv6 ones in iptables-nft's, read back with the jumps that must go before each chain
    can."""
    node = NodeFacts(gather_in_namespace("ipvs-mode"))
    version = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=True)
    assert node.nft_version == parse_nft_version(version.stdout, "nft --version") >= (1,)
    assert "KEEPALIVED-VIPS" in node.ipset_names
    assert {"KUBE-CLUSTER-IP", "KUBE-6-CLUSTER-IP", "KUBE-6-NODE-PORT-TCP"} <= node.ipset_names
    v4, v6 = node.iptables(IPV4), node.iptables(IPV6)
    # Both backends are read (nf_tables is in this kernel): each family's tables are in one.
    tables = {"nat", "filter", "mangle"}
    assert {b.backend: set(b.chains) for b in v4.backends} == {
        IptablesBackend.LEGACY: tables,
        IptablesBackend.NF_TABLES: set(),
    }
    assert {b.backend: set(b.chains) for b in v6.backends} == {IptablesBackend.NF_TABLES: tables}
    assert node.iptables_chains(IPV4)["nat"] >= {"KUBE-SERVICES", "KUBE-MARK-MASQ", "PREROUTING"}
    assert "KUBE-FIREWALL" not in node.iptables_chains(IPV6)["filter"]
    jumps = {(j.table, j.chain, j.target, j.spec[-1]) for j in v4.backends[0].jumps}
    assert ("nat", "PREROUTING", "KUBE-SERVICES", "KUBE-SERVICES") in jumps
    assert ("filter", "OUTPUT", "KUBE-FIREWALL", "KUBE-FIREWALL") in jumps
    # Only jumps from other chains are kept: a KUBE-* chain's own rules go when it is flushed.
    assert not [j for j in v4.backends[0].jumps if j.chain.startswith("KUBE-")]
    assert v4.unread == v6.unread == ()


def stub(directory: Path, name: str, body: str) -> None:
    """A stub tool: logs its name and arguments to `calls`, then runs body."""
    tool = directory / name
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{directory}/calls"\n{body}\n')
    tool.chmod(0o755)


def run(
    directory: Path,
    *,
    proc_modules: str | None = None,
    builtin: str | None = None,
    ip_tables_names: str | None = None,
) -> NodeSnapshot:
    """The script on the kernel the test writes (None: absent), the stubs in directory."""
    return run_on_fake_kernel(
        SCRIPT,
        directory,
        proc_modules=proc_modules,
        builtin=builtin,
        ip_tables_names=ip_tables_names,
    )


def calls(directory: Path) -> list[str]:
    path = directory / "calls"
    return (
        [c for c in path.read_text().splitlines() if not c.startswith("uname")]
        if path.exists()
        else []
    )


LOADED = (
    "ip_vs 200704 6 ip_vs_rr, Live 0x0\nip_set 61440 1 xt_set, Live 0x0\n"
    "nf_tables 352256 1 nft_chain_nat, Live 0x0\n"
)
NOTHING_BUILT_IN = "kernel/net/netfilter/nf_conntrack.ko\n"
SAVED = (
    "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n"
    ":KUBE-SERVICES - [0:0]\nCOMMIT\n"
)


def test_ipset_is_not_run_where_it_would_load_ip_set(tmp_path: Path) -> None:
    """No ip_set in the kernel: no set can exist, so the facts read none, and ipset never ran."""
    stub(tmp_path, "ipset", "echo KUBE-CLUSTER-IP")
    snapshot = run(tmp_path, proc_modules="ip_vs 1 0 - Live 0x0\n", builtin=NOTHING_BUILT_IN)
    assert calls(tmp_path) == []
    assert snapshot.missing["ipset-list-names.txt"] == IP_SET_NOT_LOADED
    assert NodeFacts(snapshot).ipset_names == frozenset()


def test_ipset_is_not_run_where_a_built_in_ip_set_cannot_be_told(tmp_path: Path) -> None:
    stub(tmp_path, "ipset", "echo KUBE-CLUSTER-IP")
    snapshot = run(tmp_path, proc_modules="ip_vs 1 0 - Live 0x0\n")
    assert calls(tmp_path) == []
    assert snapshot.missing["ipset-list-names.txt"] == IP_SET_UNKNOWN
    with pytest.raises(MissingInput, match=r"modules\.builtin"):
        NodeFacts(snapshot).ipset_names  # noqa: B018 (a property that raises)


@pytest.mark.parametrize(
    ("proc_modules", "builtin"),
    [(LOADED, NOTHING_BUILT_IN), ("", "kernel/net/netfilter/ipset/ip_set.ko\n"), (None, None)],
    ids=["loaded", "built in", "no modules"],
)
def test_ipset_runs_where_ip_set_is_in_the_kernel(
    tmp_path: Path, proc_modules: str | None, builtin: str | None
) -> None:
    stub(tmp_path, "ipset", "printf 'KUBE-CLUSTER-IP\\nKUBE-6-CLUSTER-IP\\n'")
    snapshot = run(tmp_path, proc_modules=proc_modules, builtin=builtin)
    assert "ipset list -n" in calls(tmp_path)
    assert NodeFacts(snapshot).ipset_names == {"KUBE-CLUSTER-IP", "KUBE-6-CLUSTER-IP"}


def test_no_ipset_where_ip_set_is_loaded_is_a_missing_input(tmp_path: Path) -> None:
    snapshot = run(tmp_path, proc_modules=LOADED)
    with pytest.raises(MissingInput, match="ipset not installed"):
        NodeFacts(snapshot).ipset_names  # noqa: B018 (a property that raises)


def test_no_nft_is_a_missing_version(tmp_path: Path) -> None:
    snapshot = run(tmp_path, proc_modules=LOADED)
    with pytest.raises(
        MissingInput, match=r"nft-version.txt \(`nft --version`\).*nft not installed"
    ):
        NodeFacts(snapshot).nft_version  # noqa: B018 (a property that raises)


def test_nft_version_runs_even_where_nf_tables_is_not_loaded(tmp_path: Path) -> None:
    stub(tmp_path, "nft", "echo 'nftables v1.0.1 (Fearless Fosdick #3)'")
    snapshot = run(tmp_path, proc_modules="ip_vs 1 0 - Live 0x0\n", builtin=NOTHING_BUILT_IN)
    assert calls(tmp_path) == ["nft --version"]
    assert NodeFacts(snapshot).nft_version == (1, 0, 1)


def test_neither_backend_is_read_where_its_tables_are_not_in_the_kernel(tmp_path: Path) -> None:
    """ip_tables names no table and nf_tables is a module not loaded: no -save runs (each would
    load its module), and the node has no chains, which is no gap."""
    for tool in ("iptables-legacy-save", "iptables-nft-save", "iptables-save"):
        stub(tmp_path, tool, f"printf '{SAVED}'")
    snapshot = run(
        tmp_path, proc_modules="ip_vs 1 0 - Live 0x0\n", builtin=NOTHING_BUILT_IN,
        ip_tables_names="",
    )  # fmt: skip
    assert calls(tmp_path) == []
    dump = NodeFacts(snapshot).iptables(IPV4)
    assert dump.backends == ()
    assert dump.unread == ()


def test_each_backend_whose_tables_are_there_is_read_by_its_own_save(tmp_path: Path) -> None:
    stub(tmp_path, "iptables-legacy-save", f"printf '{SAVED}'")
    stub(
        tmp_path,
        "iptables-nft-save",
        "printf '*filter\\n:INPUT ACCEPT [0:0]\\n:KUBE-FORWARD - [0:0]\\n'",
    )
    snapshot = run(tmp_path, proc_modules=LOADED, ip_tables_names="nat\n")
    assert calls(tmp_path) == ["iptables-legacy-save ", "iptables-nft-save "]
    node = NodeFacts(snapshot)
    backends = node.iptables(IPV4).backends
    assert [b.backend for b in backends] == [IptablesBackend.LEGACY, IptablesBackend.NF_TABLES]
    assert node.iptables_chains(IPV4) == {
        "nat": {"PREROUTING", "KUBE-SERVICES"},
        "filter": {"INPUT", "KUBE-FORWARD"},
    }


@pytest.mark.parametrize(
    ("version", "read"),
    [
        ("iptables-save v1.8.9 (nf_tables)", ["nf_tables"]),
        ("iptables-save v1.8.9 (legacy)", ["legacy"]),
        ("iptables-save v1.6.1", ["legacy"]),  # before 1.8, only legacy existed
    ],
)
def test_the_plain_save_stands_in_for_the_backend_its_version_names(
    tmp_path: Path, version: str, read: list[str]
) -> None:
    """A node with only `iptables-save`: it reads the backend its --version names; the other,
    if its tables may be there, is unread, and says so."""
    stub(
        tmp_path,
        "iptables-save",
        f'if [ "$1" = --version ]; then echo "{version}"; else printf \'{SAVED}\'; fi',
    )
    snapshot = run(tmp_path, proc_modules=LOADED, ip_tables_names="nat\n")
    dump = NodeFacts(snapshot).iptables(IPV4)
    assert [b.backend.value for b in dump.backends if b.backend] == read
    other = "legacy" if read == ["nf_tables"] else "nf_tables"
    save = "iptables-legacy-save" if other == "legacy" else "iptables-nft-save"
    assert dump.unread == (f"{other} tables: no {save} here to read them",)


def test_a_failing_save_is_unread_with_its_status_and_message(tmp_path: Path) -> None:
    stub(
        tmp_path,
        "iptables-nft-save",
        "echo 'iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: "
        "Permission denied (you must be root)' >&2; exit 4",
    )
    snapshot = run(tmp_path, proc_modules=LOADED, ip_tables_names="")
    dump = NodeFacts(snapshot).iptables(IPV4)
    assert dump.unread == (
        "nf_tables tables: iptables-nft-save exited 4: iptables-nft-save v1.8.9 (nf_tables): "
        "Could not fetch rule set generation id: Permission denied (you must be root)",
    )
    assert dump.chains() == {}


def test_no_iptables_at_all_is_a_missing_input(tmp_path: Path) -> None:
    snapshot = run(tmp_path, proc_modules=LOADED, ip_tables_names="nat\n")
    with pytest.raises(MissingInput, match="iptables not installed"):
        NodeFacts(snapshot).iptables_chains(IPV6)
