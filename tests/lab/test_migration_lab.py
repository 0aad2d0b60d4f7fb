"""The move from IPVS to nftables mode on the real kernel, node by node: docs/migration.md's
rehearsal, its commands run as written.

The block under "Rehearse it on the lab" is read from the runbook and each line run with bash,
in order, from a directory of its own that holds the checkout's `.venv` and `fixtures` (linked)
and an empty `reports/`: one boot of the `migration` scenario (a healthy IPVS cluster; node-2
also runs another agent's virtual server, 192.168.58.100:443, kept from kube-proxy by
ipvs.excludeCIDRs), readiness, a snapshot before, node-1 moved, node-3 moved with its IPVS
cleanup skipped as in kubernetes PR 131243, node-2 moved, a snapshot after, the diff across the
switch, the cleanup script applied, a last run, and `down` (run whatever happened before it).
The tests then read what each step wrote and returned.

Once the switch is done (after the snapshot "after", before the cleanup), every node is read by
the node script and by the node reader too (issue 21: the same facts on every scenario): all
three in nftables mode, node-3 with everything its skipped IPVS cleanup left.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.errors import LabError
from fixtures.lab.reader import READER_RUNNER, push_reader, reader_bundle
from fixtures.lab.running import LabPool, RunningLab
from fixtures.lab.scenario import load_scenario
from tests.lab.both_readers import Compared, compare

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "migration.md"
SKIPPED = "node-3"  # its IPVS cleanup returned early (PR 131243)
FOREIGN = "192.168.58.100:443"  # node-2's keepalived-style virtual server
# What kube-proxy's skipped IPVS cleanup leaves on a node, one check each.
LEFTOVERS = {
    "ipvs-leftover-virtual-servers",
    "ipvs-leftover-kube-ipvs0",
    "ipvs-leftover-ipsets",
    "iptables-leftover-chains",
}
SYSCTLS = "ipvs-leftover-sysctls"  # what no cleanup reverts, on every node that ran IPVS mode
READ_BOTH_AFTER = "migration-after.json"  # the step after which both readers read every node


def rehearsal() -> list[str]:
    """The runbook's rehearsal commands, one per line, as a person would paste them."""
    section = RUNBOOK.read_text().split("## Rehearse it on the lab\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@dataclass
class Rehearsal:
    root: Path
    codes: dict[str, int]  # the step's report name (or command) -> its exit status
    output: str
    readers: Compared | str  # both readers after the switch, or why they could not be compared

    def summary(self, name: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.root / "reports" / name).read_text())
        return document

    def failed(self, name: str) -> set[tuple[str, str]]:
        """(check, node or subject) of each failed item of a step's JSON summary."""
        return {
            (r["check"], r.get("node") or r["subject"])
            for r in self.summary(name)["results"]
            if r["outcome"] == "failed"
        }


def _step_name(command: str) -> str:
    """A step by the report it writes (`migration-after.json`), else by its command."""
    for word in command.split():
        if word.startswith("reports/"):
            return word.removeprefix("reports/")
    return command


@pytest.fixture(scope="module")
def rehearsed(labs: LabPool, tmp_path_factory: pytest.TempPathFactory) -> Rehearsal:
    """Every step run once; `labs` is asked for its skip (no qemu here) and boots nothing."""
    root = tmp_path_factory.mktemp("runbook")
    for name in (".venv", "fixtures"):
        (root / name).symlink_to(REPO / name)
    (root / "reports").mkdir()
    *steps, down = rehearsal()
    assert down.startswith(".venv/bin/python -m fixtures.lab down ")
    workdir = root / down.split("--workdir ", 1)[1].split()[0]
    codes: dict[str, int] = {}
    output = []
    readers: Compared | str = "the rehearsal stopped before the switch was done"
    try:
        for command in steps:
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            codes[_step_name(command)] = result.returncode
            output.append(f"$ {command}\n{result.stdout}{result.stderr}")
            if _step_name(command) == READ_BOTH_AFTER:
                readers = _both_readers(workdir, tmp_path_factory.mktemp("readers"))
    finally:
        subprocess.run(
            ["bash", "-c", down], cwd=root, capture_output=True, timeout=120, check=False
        )
    return Rehearsal(root, codes, "\n".join(output), readers)


def _both_readers(workdir: Path, directory: Path) -> Compared | str:
    """Every node read by the script and by the pushed reader; a failure is kept as its words,
    for the one test that asks (the rehearsal's other steps still run)."""
    lab = RunningLab(load_scenario("migration"), workdir)
    try:
        push_reader(workdir / "ssh_config", "client", reader_bundle())
        return compare(lab, [node.name for node in lab.scenario.nodes], READER_RUNNER, directory)
    except (LabError, OSError, subprocess.SubprocessError) as error:
        return f"reading the nodes both ways failed: {error}"


@pytest.mark.lab_changes
def test_every_step_of_the_rehearsal_ran(rehearsed: Rehearsal) -> None:
    codes = rehearsed.codes
    assert codes[rehearsal()[0]] == 0, rehearsed.output  # up
    assert codes["migration-before.json"] == 0, rehearsed.output
    # Findings fail a run (exit 1), never an error (exit 2+), and the diff's new failures too.
    for step in ("readiness", "during", "after", "diff"):
        assert codes[f"migration-{step}.json"] == 1, rehearsed.output
    assert codes["migration-cleanup.sh"] == 0, rehearsed.output
    assert codes["migration-cleaned.json"] == 0, rehearsed.output
    migrations = [command for command in codes if " migrate " in command]
    assert [codes[command] for command in migrations] == [0, 0, 0], rehearsed.output


@pytest.mark.lab_changes
def test_readiness_names_the_foreign_virtual_server(rehearsed: Rehearsal) -> None:
    summary = rehearsed.summary("migration-readiness.json")
    found = [
        r
        for r in summary["results"]
        if r["check"] == "migration-foreign-virtual-servers" and r["outcome"] == "failed"
    ]
    assert [r["node"] for r in found] == ["node-2"], rehearsed.output
    assert FOREIGN in json.dumps(found[0]), rehearsed.output
    assert all(r["check"].startswith("migration-") for r in summary["results"])
    # Critical and warning findings close the gate (info ones say what changes): one here.
    blocking = {
        (r["check"], r["node"])
        for r in summary["results"]
        if r["outcome"] == "failed" and r["severity"] != "info"
    }
    assert blocking == {("migration-foreign-virtual-servers", "node-2")}, rehearsed.output


@pytest.mark.lab_changes
def test_before_the_switch_every_check_passes(rehearsed: Rehearsal) -> None:
    assert rehearsed.failed("migration-before.json") == set(), rehearsed.output


@pytest.mark.lab_changes
def test_during_the_switch_the_nodes_not_moved_yet_are_named(rehearsed: Rehearsal) -> None:
    found = rehearsed.failed("migration-during.json")
    assert {f for f in found if f[0] != SYSCTLS} == {
        ("kube-proxy-mode", "node-2"),
        ("kube-proxy-mode", "node-3"),
    }, rehearsed.output
    assert {node for check, node in found if check == SYSCTLS} == {"node-1"}


@pytest.mark.lab_changes
def test_after_the_switch_the_skipped_cleanup_is_caught_with_exactly_its_leftovers(
    rehearsed: Rehearsal,
) -> None:
    found = rehearsed.failed("migration-after.json")
    assert {check for check, node in found if node == SKIPPED} == LEFTOVERS | {
        "kube-proxy-mode",
        SYSCTLS,
    }, rehearsed.output
    # node-2's foreign virtual server went with the cleanup, as readiness warned.
    assert {(check, node) for check, node in found if node != SKIPPED} == {
        (SYSCTLS, "node-1"),
        (SYSCTLS, "node-2"),
    }, rehearsed.output


@pytest.mark.lab_changes
def test_the_diff_across_the_switch_is_equivalent_with_nothing_lost(rehearsed: Rehearsal) -> None:
    equivalence = rehearsed.summary("migration-diff.json")["equivalence"]
    assert (equivalence["before_mode"], equivalence["after_mode"]) == ("ipvs", "nftables")
    assert equivalence["lost"] == [], rehearsed.output
    assert equivalence["counts"]["equivalent"] > 0, rehearsed.output
    assert ", 0 lost, " in rehearsed.output


@pytest.mark.lab_changes
def test_the_cleanup_script_leaves_nothing_of_ipvs(rehearsed: Rehearsal) -> None:
    assert rehearsed.failed("migration-cleaned.json") == set(), rehearsed.output


@pytest.mark.lab_changes
def test_after_the_switch_both_readers_give_the_same_facts(rehearsed: Rehearsal) -> None:
    """nftables tables, IPVS leftovers (virtual servers, kube-ipvs0, ipsets, iptables chains):
    the node reader's files and the node script's give the same facts on every node."""
    compared = rehearsed.readers
    assert isinstance(compared, Compared), compared
    assert compared.observed == {"script": compared.nodes, "reader": compared.nodes}
    assert compared.nodes == ["node-1", "node-2", "node-3"]
    assert compared.differences == []
