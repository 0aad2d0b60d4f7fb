"""`vipcheck diff` across the IPVS -> nftables switch (issue 20): equivalence, offline.

The IPVS side is the lab's seed-incidents scenario as vipcheck saved it with its probes
(fixtures/snapshots/seed-incidents-probed); the nftables side is the same scenario in nftables
mode, each node's table loaded into and listed by the host kernel
(fixtures/lab/nftables_snapshot.py), in both of kube-proxy's rule layouts, with the same probe
outputs (what the probe saw does not depend on the mode). Both sides carry the scenario's stale
endpoint (redis:80 behind the redis Service), so the switch itself changes nothing: equivalent.
Then one thing is changed on the nftables side at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.nftables_snapshot import write_snapshot
from fixtures.lab.scenario import ProxyMode, Scenario, load_scenario
from vipcheck.diff import Loaded, compare_loaded
from vipcheck.equivalence import (
    LOCAL_FALLBACK_WHY,
    Compared,
    Equivalence,
    Handshake,
    SideRecord,
    Verdict,
    Vip,
    compare_sides,
)
from vipcheck.model.cluster import ProxyMode as Mode
from vipcheck.model.node import HostPort

ROOT = Path(__file__).parents[2]
IPVS_SIDE = ROOT / "fixtures" / "snapshots" / "seed-incidents-probed"
VIPCHECK = [sys.executable, "-m", "vipcheck.cli"]
OLD, NEW = "v1.30.4", "v1.36.2"  # endpoint chains; numgen DNAT maps
WEB_CHAIN = "service-SUSTUHLJ-default/web/tcp/http"
WEB = "default/web:80/TCP"
# The web Service's two endpoints, behind ClusterIP 10.96.0.30:80 and NodePort 30080.
WEB_ENDPOINTS = ("10.244.1.10", "10.244.3.11")

needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nft")),
    reason="needs root, unshare and nft: each node's table is loaded into its own namespace",
)


def in_nftables_mode(scenario: Scenario, version: str = NEW) -> Scenario:
    proxy = dataclasses.replace(scenario.kube_proxy, version=version, mode=ProxyMode.NFTABLES)
    return dataclasses.replace(scenario, kube_proxy=proxy)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The seed-incidents scenario in nftables mode at a release, built once per layout, with
    the IPVS side's probes."""
    made: dict[str, Path] = {}

    def build(version: str) -> Path:
        if version not in made:
            out = tmp_path_factory.mktemp(f"nft-{version}") / "snapshot"
            write_snapshot(in_nftables_mode(load_scenario("seed-incidents"), version), out)
            shutil.copytree(IPVS_SIDE / "probes", out / "probes")
            made[version] = out
        return made[version]

    return build


@pytest.fixture
def nft_side(built: Callable[[str], Path], tmp_path: Path) -> Path:
    """A copy of the v1.36 nftables side, to change."""
    return Path(shutil.copytree(built(NEW), tmp_path / "after"))


def diff(before: Path, after: Path, cwd: Path) -> tuple[int, str, dict[str, Any]]:
    """`vipcheck diff BEFORE AFTER --json diff.json` as a user runs it."""
    result = subprocess.run(
        [*VIPCHECK, "diff", str(before), str(after), "--json", "diff.json"],
        cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    document = json.loads((cwd / "diff.json").read_text()) if result.returncode in (0, 1) else {}
    return result.returncode, result.stdout, document


def subjects(document: dict[str, Any], verdict: str) -> set[tuple[str, str | None]]:
    return {(c["subject"], c["node"]) for c in document["equivalence"][verdict]}


def edit_table(snapshot: Path, node: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change one rule expression of web's service chain in the node's listed table."""
    path = snapshot / "nodes" / node / "nft-ip-kube-proxy.json"
    document = json.loads(path.read_text())
    rules = [o["rule"] for o in document["nftables"] if o.get("rule", {}).get("chain") == WEB_CHAIN]
    [dnat] = [e["dnat"] for rule in rules for e in rule["expr"] if "dnat" in e]
    edit(dnat["addr"]["map"])
    path.write_text(json.dumps(document))


def numgen(entries: list[tuple[str, int]]) -> Callable[[dict[str, Any]], None]:
    """An edit making the numgen map pick among these endpoints."""

    def edit(picked: dict[str, Any]) -> None:
        picked["key"]["numgen"]["mod"] = len(entries)
        picked["data"]["set"] = [[i, {"concat": [a, p]}] for i, (a, p) in enumerate(entries)]

    return edit


@needs_nft
@pytest.mark.parametrize("version", [OLD, NEW], ids=["v1.30-endpoint-chains", "v1.36-maps"])
def test_the_same_scenario_in_both_modes_is_equivalent_and_exits_0(
    built: Callable[[str], Path], version: str, tmp_path: Path
) -> None:
    code, out, document = diff(IPVS_SIDE, built(version), tmp_path)
    assert code == 0, out
    equivalence = document["equivalence"]
    assert (equivalence["before_mode"], equivalence["after_mode"]) == ("ipvs", "nftables")
    # 3 TCP Service ports on 3 nodes, and the 24 VIP targets the probe made from 4 vantage points.
    assert equivalence["counts"] == {"equivalent": 33, "lost": 0, "gained": 0, "incomparable": 0}
    assert "equivalence: 33 equivalent, 0 lost, 0 gained, 0 incomparable" in out.splitlines()
    assert out.splitlines()[-2].endswith("nothing new: exit 0")


@needs_nft
def test_an_endpoint_the_nftables_side_dropped_is_lost_and_exits_1(
    nft_side: Path, tmp_path: Path
) -> None:
    # node-2's rules pick only web's first endpoint; the cluster still lists both.
    edit_table(nft_side, "node-2", numgen([(WEB_ENDPOINTS[0], 8080)]))
    code, out, document = diff(IPVS_SIDE, nft_side, tmp_path)
    assert code == 1, out
    assert subjects(document, "lost") == {(WEB, "node-2")}
    [lost] = document["equivalence"]["lost"]
    assert lost["detail"] == (
        f"ClusterIP 10.96.0.30:80 no longer sent to {WEB_ENDPOINTS[1]}:8080; "
        f"NodePort 192.168.58.12:30080 no longer sent to {WEB_ENDPOINTS[1]}:8080"
    )
    assert document["equivalence"]["counts"]["equivalent"] == 32
    assert f"  {WEB} on node-2: ClusterIP 10.96.0.30:80 no longer sent to" in out
    assert out.splitlines()[-2].endswith("lost across the switch: exit 1")


@needs_nft
def test_a_handshake_that_fails_after_the_switch_is_lost(nft_side: Path, tmp_path: Path) -> None:
    vip = nft_side / "probes" / "client" / "vip.txt"
    connected = "ATTEMPT 10.96.0.30 80 3 CONNECTED 198"
    assert connected in vip.read_text()
    refused = "ATTEMPT 10.96.0.30 80 3 REFUSED 198 connect: Connection refused"
    vip.write_text(vip.read_text().replace(connected, refused))
    code, out, document = diff(IPVS_SIDE, nft_side, tmp_path)
    assert code == 1, out
    assert document["equivalence"]["lost"] == [
        {
            "subject": f"{WEB} ClusterIP 10.96.0.30:80",
            "node": "client",
            "detail": f"handshake 1 of 8 failed (1 REFUSED) in {nft_side}",
        }
    ]


@needs_nft
def test_an_extra_endpoint_is_gained_not_lost(nft_side: Path, tmp_path: Path) -> None:
    extra = [(WEB_ENDPOINTS[0], 8080), (WEB_ENDPOINTS[1], 8080), ("10.244.2.99", 8080)]
    edit_table(nft_side, "node-3", numgen(extra))
    code, out, document = diff(IPVS_SIDE, nft_side, tmp_path)
    assert subjects(document, "lost") == set()
    assert subjects(document, "gained") == {(WEB, "node-3")}
    [gained] = document["equivalence"]["gained"]
    assert (
        "ClusterIP 10.96.0.30:80 now sent to 10.244.2.99:8080 (no endpoint of it in"
        in (gained["detail"])
    )
    assert code == 0, out


@needs_nft
def test_a_service_on_one_side_only_and_nodes_unobserved_or_not_switched_are_incomparable(
    tmp_path: Path,
) -> None:
    scenario = load_scenario("seed-incidents")
    without_api = dataclasses.replace(
        scenario, services=tuple(s for s in scenario.services if s.name != "api")
    )
    after = tmp_path / "after"
    write_snapshot(in_nftables_mode(without_api), after)
    # node-3 has no kube-proxy table: kube-proxy there still runs IPVS, or nothing.
    (after / "nodes" / "node-3" / "nft-ip-kube-proxy.json").unlink()
    (after / "nodes" / "node-3" / "nft-tables.txt").write_text("")
    # node-2 could not be observed after.
    (after / "nodes" / "node-2" / "error.txt").write_text("ssh: connect timed out\n")
    code, out, document = diff(IPVS_SIDE, after, tmp_path)
    assert subjects(document, "incomparable") == {
        ("default/api:80/TCP", None),
        ("node-2", None),
        ("node-3", None),
        ("handshakes", None),
    }
    why = {(c["subject"]): c["detail"] for c in document["equivalence"]["incomparable"]}
    assert why["default/api:80/TCP"] == f"only in {IPVS_SIDE}"
    assert why["node-3"] == (
        f"{after}: node-3 shows no kube-proxy mode, not nftables (kube-proxy-mode): its traffic "
        "is not this mode's to compare"
    )
    assert why["node-2"] == f"{after}: node-2 could not be observed: ssh: connect timed out"
    assert why["handshakes"] == f"{after}: no handshake probes: this run did not probe"
    # redis and web on node-1 are still compared.
    assert document["equivalence"]["counts"]["equivalent"] == 2
    assert document["equivalence"]["counts"]["lost"] == 0
    assert code == 0, out


@needs_nft
def test_a_diff_of_one_mode_has_no_equivalence(
    built: Callable[[str], Path], tmp_path: Path
) -> None:
    nft = built(NEW)
    code, out, document = diff(nft, nft, tmp_path)
    assert code == 0, out
    assert "equivalence" not in document
    assert "equivalence" not in out


@needs_nft
def test_summaries_of_two_modes_say_the_equivalence_needs_snapshots(
    built: Callable[[str], Path], tmp_path: Path
) -> None:
    for name, snapshot in (("before.json", IPVS_SIDE), ("after.json", built(NEW))):
        subprocess.run(
            [*VIPCHECK, "--from-snapshot", str(snapshot), "--vipcheck-json", name, "-q",
             "-p", "no:cacheprovider"],
            cwd=tmp_path, capture_output=True, check=False, timeout=300,
        )  # fmt: skip
    code, out, document = diff(Path("before.json"), built(NEW), tmp_path)
    assert code == 0, out
    assert document["equivalence"] == {
        "before_mode": "ipvs",
        "after_mode": "nftables",
        "unavailable": "needs two snapshots (vipcheck --save-snapshot DIR); before.json is a "
        "JSON summary, which holds verdicts, not the endpoints each node sends a VIP to",
    }
    assert (
        "equivalence across the switch (ipvs -> nftables): not compared: needs two snapshots" in out
    )
    code, out, document = diff(Path("before.json"), Path("after.json"), tmp_path)
    assert "before.json and after.json are JSON summaries" in document["equivalence"]["unavailable"]


def vips(*found: tuple[str, tuple[str, ...], tuple[str, ...], str]) -> tuple[Vip, ...]:
    def endpoints(texts: tuple[str, ...]) -> frozenset[HostPort]:
        found = (text.rpartition(":") for text in texts)
        return frozenset(HostPort(ip_address(a), int(p)) for a, _, p in found)

    return tuple(
        Vip(name, endpoints(sent), endpoints(wanted), why) for name, sent, wanted, why in found
    )


def side(mode: Mode, found: tuple[Vip, ...]) -> SideRecord:
    return SideRecord(mode, ports={"node-1": {WEB: found}}, no_probes="not probed")


def compared(before: tuple[Vip, ...], after: tuple[Vip, ...]) -> Iterator[Compared]:
    result: Equivalence = compare_sides(
        side(Mode.IPVS, before), side(Mode.NFTABLES, after), ("before", "after")
    )
    for verdict in (Verdict.EQUIVALENT, Verdict.LOST, Verdict.GAINED):
        yield from result.found[verdict]
    yield from (c for c in result.found[Verdict.INCOMPARABLE] if c.subject != "handshakes")


def test_a_local_policy_fallback_differs_by_design_never_lost() -> None:
    """IPVS keeps a Local policy's fallback to cluster endpoints as real servers; nftables drops
    traffic from outside there: not a loss."""
    node_port = "NodePort 192.168.58.11:30080"
    before = vips((node_port, ("10.244.3.11:8080",), ("10.244.3.11:8080",), LOCAL_FALLBACK_WHY))
    after = vips((node_port, (), ("10.244.3.11:8080",), LOCAL_FALLBACK_WHY))
    [found] = compared(before, after)
    assert found.verdict is Verdict.INCOMPARABLE
    assert found.detail == f"{node_port}: {{10.244.3.11:8080}} -> {{}}: {LOCAL_FALLBACK_WHY}"


def test_an_endpoint_that_left_the_cluster_is_not_lost() -> None:
    cluster_ip = "ClusterIP 10.96.0.30:80"
    before = vips((cluster_ip, ("10.244.1.10:8080", "10.244.3.11:8080"), ("10.244.1.10:8080",), ""))
    after = vips((cluster_ip, ("10.244.1.10:8080",), ("10.244.1.10:8080",), ""))
    [found] = compared(before, after)
    assert found.verdict is Verdict.INCOMPARABLE
    assert "10.244.3.11:8080 is no endpoint of it here in after" in found.detail


def test_a_loaded_pair_of_one_mode_is_the_plain_diff() -> None:
    summary: dict[str, Any] = {"results": []}
    plain = compare_loaded(Loaded(summary, Mode.IPVS), Loaded(summary, Mode.IPVS), ("a", "b"))
    assert plain.equivalence is None
    assert "equivalence" not in plain.as_json()
    unknown = compare_loaded(Loaded(summary, None), Loaded(summary, Mode.NFTABLES), ("a", "b"))
    assert unknown.equivalence is None


def test_a_handshake_the_time_cap_left_unjudged_is_incomparable_never_lost() -> None:
    key = (WEB, "ClusterIP 10.96.0.30:80", "client")
    before = SideRecord(Mode.IPVS, handshakes={key: Handshake(True)})
    after = SideRecord(Mode.NFTABLES, handshakes={key: Handshake(None, "6 attempt(s) not made")})
    result = compare_sides(before, after, ("before", "after"))
    assert result.lost == []
    assert [c.text() for c in result.found[Verdict.INCOMPARABLE]] == [
        f"{WEB} ClusterIP 10.96.0.30:80 on client: not judged in after: 6 attempt(s) not made"
    ]
