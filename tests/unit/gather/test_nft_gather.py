"""Gathering a node's nftables tables: the node script's nft frames under dash, read by the facts.

Stub `nft` executables (named as such: shell scripts on PATH printing what a given nft build
prints) stand in for builds this host does not have: one without JSON (k3s, rke2), one that
crashes, none at all. The real nft runs in a network namespace of its own with kube-proxy's
tables loaded.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fake_kernel import run_on_fake_kernel
from tests.nft_kernel import DATA, in_namespace
from vipcheck.facts import MissingInput, NodeFacts
from vipcheck.gather.node_script import build_node_script, split_node_frames
from vipcheck.model.cluster import ProxyMode
from vipcheck.model.nftables import NftFamily, NftTable
from vipcheck.parse import ParseError
from vipcheck.parse.nft import parse_nft_json
from vipcheck.snapshot import (
    NF_TABLES_NOT_LOADED,
    NF_TABLES_UNKNOWN,
    NFT_NOT_INSTALLED,
    NODE_FILES,
    NodeSnapshot,
)

# The tables' files (nft-version.txt is test_leftovers_gather.py's).
NFT_FILES = [name for name in NODE_FILES if name.startswith("nft-") and name != "nft-version.txt"]
# The script for the nft files alone, finding tools on the test's PATH only.
SCRIPT = build_node_script({name: NODE_FILES[name] for name in NFT_FILES}, path_suffix="")
IP_JSON = (DATA / "endpoint-chains.json").read_text()
IP_TEXT = (DATA / "endpoint-chains.txt").read_text()
TABLES = "table ip kube-proxy\ntable inet firewalld\n"


def stub_nft(directory: Path, cases: dict[str, str]) -> None:
    """A stub nft (a shell script): each `case` pattern of its arguments runs its sh body; any
    other invocation fails as nft does on an unknown command, and is logged."""
    for name in ("tables.txt", "ip.json", "ip.txt"):
        (directory / name).write_text({"tables.txt": TABLES, "ip.json": IP_JSON}.get(name, IP_TEXT))
    arms = "".join(f'    "{pattern}") {body} ;;\n' for pattern, body in cases.items())
    script = (
        f'#!/bin/sh\necho "$*" >> "{directory}/calls"\ncase "$*" in\n{arms}'
        '    *) echo "Error: syntax error" >&2; exit 1 ;;\nesac\n'
    )
    (directory / "nft").write_text(script)
    (directory / "nft").chmod(0o755)
    cat = shutil.which("cat")
    assert cat is not None
    (directory / "cat").symlink_to(cat)


def run(directory: Path) -> NodeSnapshot:
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("dash is not installed")
    result = subprocess.run(
        [dash, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(directory)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    frames = split_node_frames(result.stdout)
    assert frames.complete
    return NodeSnapshot("node-1", frames.files, missing=frames.missing)


def calls(directory: Path) -> list[str]:
    path = directory / "calls"
    return path.read_text().splitlines() if path.exists() else []


def placeless(table: NftTable | None) -> NftTable:
    assert table is not None
    chains = {
        name: dataclasses.replace(
            chain,
            line=0,
            rules=tuple(dataclasses.replace(r, line=0, handle=None) for r in chain.rules),
        )
        for name, chain in table.chains.items()
    }
    sets = {name: dataclasses.replace(s, line=0) for name, s in table.sets.items()}
    return dataclasses.replace(table, chains=chains, sets=sets)


JSON_OK = {
    "list tables": "cat tables.txt",
    "-j list tables": "echo '{\"nftables\": []}'",
    "-j list table ip kube-proxy": "cat ip.json",
}


def test_nft_with_json_lists_the_tables_then_only_kube_proxys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stub_nft(tmp_path, JSON_OK)
    snapshot = run(tmp_path)
    assert set(snapshot.files) == {"nft-tables.txt", "nft-ip-kube-proxy.json"}
    assert snapshot.missing == {}
    # never `list ruleset`, never another table; the tables first
    assert calls(tmp_path)[0] == "list tables"
    assert "list ruleset" not in calls(tmp_path)
    assert not any("firewalld" in call for call in calls(tmp_path))
    node = NodeFacts(snapshot)
    assert node.nftables(NftFamily.IP) == parse_nft_json(
        IP_JSON, "nodes/node-1/nft-ip-kube-proxy.json"
    )
    assert node.nftables(NftFamily.IP6) is None  # nft listed no ip6 kube-proxy table
    assert node.nft_tables == {("ip", "kube-proxy"), ("inet", "firewalld")}


def test_nft_without_json_gives_the_text_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k3s's and rke2's nft builds: `nft -j` answers `JSON support not compiled-in`."""
    monkeypatch.chdir(tmp_path)
    no_json = "echo 'Error: JSON support not compiled-in' >&2; exit 1"
    stub_nft(
        tmp_path,
        {
            "list tables": "cat tables.txt",
            "-j list tables": no_json,
            "list table ip kube-proxy": "cat ip.txt",
        },
    )
    snapshot = run(tmp_path)
    assert set(snapshot.files) == {"nft-tables.txt", "nft-ip-kube-proxy.txt"}
    assert snapshot.missing == {
        "nft-ip-kube-proxy.json": "nft without JSON support: nft-ip-kube-proxy.txt holds the text"
    }
    table = NodeFacts(snapshot).nftables(NftFamily.IP)
    assert placeless(table) == placeless(parse_nft_json(IP_JSON, "j"))


@pytest.mark.parametrize(
    ("cases", "fact", "message"),
    [
        pytest.param(
            {
                **JSON_OK,
                "-j list table ip kube-proxy": "kill -SEGV $$",
                "list table ip kube-proxy": "kill -SEGV $$",
            },
            "table",
            "nodes/node-1/nft-ip-kube-proxy.json: cannot read: Segmentation fault",
            id="table-listing-crashes",
        ),
        pytest.param(
            {
                **JSON_OK,
                "list tables": "echo 'netlink: Error: cache initialization failed' >&2; exit 1",
            },
            "tables",
            "nodes/node-1/nft-tables.txt: cannot read: netlink: Error: cache initialization failed",
            id="tables-listing-fails",
        ),
    ],
)
def test_nft_failing_is_cannot_read_never_an_empty_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: dict[str, str], fact: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    stub_nft(tmp_path, cases)
    node = NodeFacts(run(tmp_path))
    with pytest.raises(ParseError) as raised:
        node.nftables(NftFamily.IP)
    assert str(raised.value) == message
    with pytest.raises(ParseError, match="cannot read"):
        node.observed_mode  # noqa: B018 (a property that raises)
    if fact == "tables":
        with pytest.raises(ParseError, match="cannot read"):
            node.nftables(NftFamily.IP6)


def test_the_json_listing_failing_falls_back_to_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stub_nft(
        tmp_path,
        {
            **JSON_OK,
            "-j list table ip kube-proxy": "echo 'Error: unknown set type' >&2; exit 1",
            "list table ip kube-proxy": "cat ip.txt",
        },
    )
    snapshot = run(tmp_path)
    assert snapshot.missing == {"nft-ip-kube-proxy.json": "Error: unknown set type"}
    assert NodeFacts(snapshot).nftables(NftFamily.IP) is not None


def test_no_nft_is_a_missing_input_naming_why(tmp_path: Path) -> None:
    (tmp_path / "calls").write_text("")
    snapshot = run(tmp_path)
    assert snapshot.files == {}
    assert snapshot.missing == dict.fromkeys(NFT_FILES, NFT_NOT_INSTALLED)
    node = NodeFacts(snapshot)
    with pytest.raises(MissingInput, match="nft not installed"):
        node.nftables(NftFamily.IP)
    mode = node.observed_mode
    assert ProxyMode.NFTABLES in mode.unknown
    assert mode.seen == {}


def test_real_nft_in_a_namespace_gathers_both_families() -> None:
    ruleset = (DATA / "endpoint-chains.nft").read_text() + (DATA / "ip6.nft").read_text()
    output = in_namespace(ruleset, SCRIPT.replace("exit 0\n", ""))
    frames = split_node_frames(output)
    assert set(frames.files) == {
        "nft-tables.txt",
        "nft-ip-kube-proxy.json",
        "nft-ip6-kube-proxy.json",
    }
    node = NodeFacts(NodeSnapshot("node-1", frames.files, missing=frames.missing))
    for family, recorded in ((NftFamily.IP, "endpoint-chains.json"), (NftFamily.IP6, "ip6.json")):
        expected = parse_nft_json((DATA / recorded).read_text(), recorded)
        assert placeless(node.nftables(family)) == placeless(expected)
    assert node.observed_mode.seen == {
        ProxyMode.NFTABLES: "table ip kube-proxy, table ip6 kube-proxy"
    }


def test_a_crash_without_a_message_is_named_by_its_signal() -> None:
    """A shell that reports no `Segmentation fault` line still gives the status, 128 + 11."""
    frames = split_node_frames(
        "===vipcheck:file=nft-tables.txt\n\n===vipcheck:rc=139\n"
        "===vipcheck:file=b.txt\n\n===vipcheck:rc=3\n===vipcheck:end\n"
    )
    assert frames.missing == {
        "nft-tables.txt": "killed by SIGSEGV (exit status 139)",
        "b.txt": "exited 3 without a message",
    }


def run_with_modules(
    directory: Path, proc_modules: str | None, builtin: str | None, loaded_dir: bool = False
) -> NodeSnapshot:
    """The script on a kernel with loadable modules as the test writes it (None: absent)."""
    return run_on_fake_kernel(
        SCRIPT,
        directory,
        proc_modules=proc_modules,
        builtin=builtin,
        sys_modules=["nf_tables"] if loaded_dir else [],
    )


IPVS_ONLY_MODULES = "ip_vs 200704 6 ip_vs_rr, Live 0x0\nnf_conntrack 188416 2 ip_vs, Live 0x0\n"
BUILTIN = "kernel/net/netfilter/nf_conntrack.ko\n"


@pytest.mark.parametrize(
    ("proc_modules", "builtin", "loaded_dir"),
    [
        (IPVS_ONLY_MODULES + "nf_tables 352256 1 nft_chain_nat, Live 0x0\n", BUILTIN, False),
        (IPVS_ONLY_MODULES, BUILTIN + "kernel/net/netfilter/nf_tables.ko\n", False),
        (IPVS_ONLY_MODULES, BUILTIN, True),
        (None, None, False),  # a kernel without loadable modules: nothing nft could load
    ],
    ids=["loaded", "built in", "in /sys/module", "no modules"],
)
def test_nft_runs_where_nf_tables_is_in_the_kernel(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proc_modules: str | None,
    builtin: str | None,
    loaded_dir: bool,
) -> None:
    monkeypatch.chdir(tmp_path)
    stub_nft(tmp_path, JSON_OK)
    snapshot = run_with_modules(tmp_path, proc_modules, builtin, loaded_dir)
    assert set(snapshot.files) == {"nft-tables.txt", "nft-ip-kube-proxy.json"}
    assert calls(tmp_path)[0] == "list tables"


def test_nft_is_not_run_where_it_would_load_nf_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IPVS node with nf_tables a module not loaded (iptables-legacy): nft would load it, and
    gathering only reads. kube-proxy's nftables mode would have loaded it, so the node has no
    kube-proxy table: the facts read none, and the mode seen is IPVS's alone."""
    monkeypatch.chdir(tmp_path)
    stub_nft(tmp_path, JSON_OK)
    snapshot = run_with_modules(tmp_path, IPVS_ONLY_MODULES, BUILTIN)
    assert calls(tmp_path) == []
    assert snapshot.missing == {"nft-tables.txt": NF_TABLES_NOT_LOADED}
    node = NodeFacts(snapshot)
    assert node.nft_tables == frozenset()
    assert node.nftables(NftFamily.IP) is None


def test_nft_is_not_run_where_a_built_in_nf_tables_cannot_be_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stub_nft(tmp_path, JSON_OK)
    snapshot = run_with_modules(tmp_path, IPVS_ONLY_MODULES, None)
    assert calls(tmp_path) == []
    assert snapshot.missing == {"nft-tables.txt": NF_TABLES_UNKNOWN}
    with pytest.raises(MissingInput, match=r"modules\.builtin"):
        NodeFacts(snapshot).nftables(NftFamily.IP)
