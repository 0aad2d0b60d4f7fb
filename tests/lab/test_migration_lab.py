"""The move from IPVS to nftables mode on the real kernel, node by node (docs/migration.md).

One boot of the `migration` scenario (a healthy IPVS cluster; node-2 also runs another agent's
virtual server, 192.168.58.100:443, kept from kube-proxy by ipvs.excludeCIDRs), then, in order,
as an operator would: readiness (`-m migration`) and a snapshot before; the ConfigMap switched
and node-1 moved (node-2 and node-3 still IPVS: the mode check names them); node-3 moved with
its IPVS cleanup skipped as in kubernetes PR 131243 and node-2 moved cleanly; a snapshot after,
whose leftovers are exactly node-3's; the diff across the switch (equivalent, nothing lost); and
the fix script, whose node commands clean node-3 up. The lab is changed, so this runs last
(lab_changes) on a lab of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.migrate import migrate
from fixtures.lab.running import LabPool, RunningLab

NODES = ("node-1", "node-2", "node-3")
SKIPPED = "node-3"  # its IPVS cleanup returned early (PR 131243)
FOREIGN = "192.168.58.100:443"  # node-2's keepalived-style virtual server
# What kube-proxy's skipped IPVS cleanup leaves on a node, one check each.
LEFTOVERS = {
    "ipvs-leftover-virtual-servers",
    "ipvs-leftover-kube-ipvs0",
    "ipvs-leftover-ipsets",
    "iptables-leftover-chains",
}


@dataclass
class Migration:
    """Each stage's JSON summary and output, as the module fixture ran them."""

    lab: RunningLab
    out: Path
    runs: dict[str, tuple[int, dict[str, Any], str]]


def vipcheck(lab: RunningLab, out: Path, name: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    summary = out / f"{name}.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--ssh-config", str(lab.workdir / "ssh_config"),
            "--vipcheck-json", str(summary), "--vipcheck-html", str(out / f"{name}.html"),
            "--probe-timeout", "5", "-q", "-rfE", *extra,
        ],
        capture_output=True, text=True, timeout=300, check=False, cwd=out,
    )  # fmt: skip
    return result.returncode, json.loads(summary.read_text()), result.stdout + result.stderr


def failed(summary: dict[str, Any]) -> set[tuple[str, str]]:
    """(check, node or subject) of each failed item."""
    return {
        (r["check"], r.get("node") or r["subject"])
        for r in summary["results"]
        if r["outcome"] == "failed"
    }


def _print(message: str) -> None:
    print(f"lab: {message}", flush=True)


@pytest.fixture(scope="module")
def migration(labs: LabPool, tmp_path_factory: pytest.TempPathFactory) -> Migration:
    lab = labs.take("migration")
    out = tmp_path_factory.mktemp("migration")
    runs = {"readiness": vipcheck(lab, out, "readiness", "-m", "migration", "--no-probe")}
    runs["before"] = vipcheck(lab, out, "before", "--save-snapshot", str(out / "before"))
    migrate(lab.workdir, _print, nodes=["node-1"])
    runs["during"] = vipcheck(lab, out, "during", "--no-probe")
    migrate(lab.workdir, _print, nodes=[SKIPPED], skip_ipvs_cleanup=True)
    migrate(lab.workdir, _print)
    runs["after"] = vipcheck(
        lab,
        out,
        "after",
        "--save-snapshot",
        str(out / "after"),
        "--vipcheck-fix-script",
        str(out / "fix.sh"),
    )
    return Migration(lab, out, runs)


@pytest.mark.lab_changes
def test_readiness_names_the_foreign_virtual_server(migration: Migration) -> None:
    code, summary, output = migration.runs["readiness"]
    found = [
        r
        for r in summary["results"]
        if r["check"] == "migration-foreign-virtual-servers" and r["outcome"] == "failed"
    ]
    assert [r.get("node") or r["subject"] for r in found] == ["node-2"], output
    assert FOREIGN in json.dumps(found[0]), output
    assert code == 1, output
    checks = {r["check"] for r in summary["results"]}
    assert checks, output
    assert all(check.startswith("migration-") for check in checks), checks


@pytest.mark.lab_changes
def test_before_the_switch_the_ipvs_cluster_is_healthy(migration: Migration) -> None:
    _, summary, output = migration.runs["before"]
    assert not {f for f in failed(summary) if not f[0].startswith("migration-")}, output


@pytest.mark.lab_changes
def test_during_the_switch_the_nodes_not_moved_yet_are_named(migration: Migration) -> None:
    _, summary, output = migration.runs["during"]
    assert failed(summary) == {("kube-proxy-mode", "node-2"), ("kube-proxy-mode", "node-3")}, output


@pytest.mark.lab_changes
def test_after_the_switch_the_skipped_cleanup_is_caught_with_exactly_its_leftovers(
    migration: Migration,
) -> None:
    code, summary, output = migration.runs["after"]
    assert code == 1, output
    found = failed(summary)
    on_skipped = {check for check, node in found if node == SKIPPED}
    assert on_skipped == LEFTOVERS | {"kube-proxy-mode"}, output
    # The cleaned nodes keep only what no cleanup reverts: IPVS mode's sysctls.
    elsewhere = {(check, node) for check, node in found if node != SKIPPED}
    assert {check for check, _ in elsewhere} <= {"ipvs-leftover-sysctls"}, output


@pytest.mark.lab_changes
def test_the_diff_across_the_switch_is_equivalent_with_nothing_lost(migration: Migration) -> None:
    out = migration.out
    diff = subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", "diff", str(out / "before"), str(out / "after"),
         "--json", str(out / "diff.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    document = json.loads((out / "diff.json").read_text())
    equivalence = document["equivalence"]
    assert equivalence["lost"] == [], diff.stdout
    assert equivalence["counts"]["equivalent"] > 0, diff.stdout
    assert "0 lost" in diff.stdout, diff.stdout


@pytest.mark.lab_changes
def test_the_fix_script_cleans_the_skipped_node_up(migration: Migration) -> None:
    lab, out = migration.lab, migration.out
    script = out / "fix.sh"
    applied = subprocess.run(
        ["sh", str(script), "--apply"], capture_output=True, text=True, timeout=300, check=False
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    _, summary, output = vipcheck(lab, out, "fixed", "--no-probe")
    assert not {check for check, node in failed(summary) if check in LEFTOVERS}, output
    assert lab.ssh(SKIPPED, "ipvsadm -Sn").strip() == "", output
