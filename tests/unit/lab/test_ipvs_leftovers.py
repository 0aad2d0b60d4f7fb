"""The lab's IPVS-mode ipsets and iptables chains, and kube-proxy's cleanup of them, run by the
host kernel in a private network namespace (`unshare -n`): what the cleanup leaves, both ways."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.lab import ipvs_leftovers
from fixtures.lab.scenario import load_scenario

KUBELET = {chain for _, chain in ipvs_leftovers.KUBELET_CHAINS}
IPVS_ONLY = {
    chain
    for table, chain in ipvs_leftovers.IPVS_CHAINS
    if (table, chain) not in ipvs_leftovers.IPTABLES_MODE_CLEANUP
}


def _in_private_netns(script: str) -> str:
    for tool in ("unshare", "ipset", "iptables-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (make deps installs it)")
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip("unshare -n needs root")
    assert result.returncode == 0, result.stderr
    return result.stdout


def _after_cleanup(tmp_path: Path, *, skip_ipvs: bool) -> tuple[set[str], set[str]]:
    """The KUBE-* chains and the sets left once the lab's node-1 state is cleaned up."""
    scenario = load_scenario("migration")
    (tmp_path / "sets").write_text(
        "\n".join(ipvs_leftovers.ipset_restore(scenario, scenario.nodes[0])) + "\n"
    )
    chains = ipvs_leftovers.IPVS_CHAINS + ipvs_leftovers.KUBELET_CHAINS
    (tmp_path / "chains").write_text("\n".join(ipvs_leftovers.iptables_restore(chains)) + "\n")
    (tmp_path / "cleanup").write_text(
        # No ip_vs on this host: the IPVS table and kube-ipvs0 are the lab test's to check.
        ipvs_leftovers.cleanup_script(skip_ipvs=skip_ipvs).replace("ipvsadm -C", "true")
    )
    output = _in_private_netns(
        f"ipset restore < {tmp_path}/sets && iptables-restore --noflush < {tmp_path}/chains"
        f" && sh -e {tmp_path}/cleanup && iptables-save && echo '--- sets' && ipset list -n"
    )
    saved, _, sets = output.partition("--- sets\n")
    left = {line[1:].split()[0] for line in saved.splitlines() if line.startswith(":KUBE-")}
    return left, set(sets.split())


def test_the_lab_creates_every_set_and_chain_of_ipvs_mode(tmp_path: Path) -> None:
    scenario = load_scenario("migration")
    lines = ipvs_leftovers.ipset_restore(scenario, scenario.nodes[0])
    assert "add KUBE-CLUSTER-IP 10.96.0.20,6:6379" in lines
    assert "add KUBE-NODE-PORT-TCP 30080" in lines
    output = _in_private_netns(
        "ipset restore <<'EOF'\n" + "\n".join(lines) + "\nEOF\nipset list -n"
    )
    assert set(output.split()) == {name for name, _ in ipvs_leftovers.IPSETS}


def test_full_cleanup_leaves_only_kubelets_chains(tmp_path: Path) -> None:
    chains, sets = _after_cleanup(tmp_path, skip_ipvs=False)
    assert chains == KUBELET
    assert sets == set()


def test_skipped_ipvs_cleanup_leaves_the_ipvs_chains_and_every_set(tmp_path: Path) -> None:
    """PR 131243: only the iptables mode's cleanup ran, which knows none of IPVS's own chains."""
    chains, sets = _after_cleanup(tmp_path, skip_ipvs=True)
    assert chains == KUBELET | IPVS_ONLY
    assert {"KUBE-NODE-PORT", "KUBE-MARK-MASQ", "KUBE-IPVS-FILTER"} <= IPVS_ONLY
    assert "KUBE-SERVICES" not in chains
    assert "KUBE-POSTROUTING" not in chains
    assert sets == {name for name, _ in ipvs_leftovers.IPSETS}
