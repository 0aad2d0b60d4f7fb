"""Two snapshots' node facts compared: what the lab's equivalence of the two readers uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vipcheck.node_reader.same_facts import node_fact_differences

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded" / "seed-incidents"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(RECORDED, tmp_path / "copy")
    return tmp_path / "copy"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_snapshot_has_the_facts_of_its_copy(copy: Path) -> None:
    assert node_fact_differences(RECORDED, copy) == []


def test_ipvs_order_is_not_a_difference_but_a_weight_is(copy: Path) -> None:
    listing = copy / "nodes" / "node-2" / "ipvsadm-Ln.txt"
    header, services = listing.read_text().split("InActConn\n", 1)
    blocks = ["TCP" + block for block in services.split("TCP")[1:]]
    listing.write_text(header + "InActConn\n" + "".join(reversed(blocks)))
    assert node_fact_differences(RECORDED, copy) == []
    edit(listing, "Masq    1 ", "Masq    0 ")
    assert node_fact_differences(RECORDED, copy) == ["node-2: IPVS table: different"]


def test_real_server_order_is_not_a_difference(copy: Path) -> None:
    """/proc/net/ip_vs lists a service's real servers in the kernel's order, ipvsadm sorts them
    (a node without ipvsadm against the reader)."""
    listing = copy / "nodes" / "node-1" / "ipvsadm-Ln.txt"
    lines = listing.read_text().splitlines(keepends=True)
    first = next(  # a service's first two real servers (after the title's `  -> Remote...`)
        i for i in range(3, len(lines) - 1) if lines[i][:4] == lines[i + 1][:4] == "  ->"
    )
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    listing.write_text("".join(lines))
    assert node_fact_differences(RECORDED, copy) == []


def test_a_missing_file_and_an_address_differ(copy: Path) -> None:
    (copy / "nodes" / "node-1" / "ipvsadm-timeout.txt").unlink()
    edit(copy / "nodes" / "node-3" / "ip-addr.json", '"10.96.0.20"', '"10.96.0.21"')
    assert node_fact_differences(RECORDED, copy) == [
        "node-1: IPVS timeouts: different",
        "node-3: interfaces: different",
    ]


def test_a_node_on_one_side_only(copy: Path) -> None:
    shutil.rmtree(copy / "nodes" / "node-3")
    assert node_fact_differences(RECORDED, copy) == [f"node-3: only in {RECORDED}"]
