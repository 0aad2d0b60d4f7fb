"""The leftovers checks on offline snapshots: the recorded IPVS lab (fixtures/recorded/
seed-incidents) switched to nftables mode, each node given kube-proxy's nftables table as the
kernel lists it (tests/unit/parse/data) and the leftovers inputs the real tools printed in a
namespace (tests/unit/parse/data/leftovers: IPVS mode's sets and chains, or kubelet's alone).

A switch whose IPVS cleanup was skipped (kubernetes PR 131243) keeps every virtual server,
kube-ipvs0, the KUBE-* chains and ipsets and the IPVS sysctls: each check fails on exactly its
leftover. A clean switch passes them all; an IPVS cluster skips them; a node that has not switched
yet skips them too (kube-proxy-mode's finding). Then the fix script the failures make is held to
shellcheck, and run with --apply in a network namespace holding those sets and chains: after it,
the node's re-gathered state passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.nft_kernel import DATA
from tests.unit.checks.test_checks import kube_proxy_config, only, put, seed
from tests.unit.checks.test_kube_proxy_mode import without_ipvs
from tests.unit.gather.test_leftovers_gather import FILES, gather_in_namespace
from tests.unit.test_fix_script import shellcheck
from vipcheck.cases import Case, Outcome, cases_for, run_case
from vipcheck.checks import CATALOGUE, check_by_id
from vipcheck.checks.base import Check, FindingKind, NodeSubject, Violation
from vipcheck.checks.leftovers import IPVS_SYSCTLS
from vipcheck.facts import Facts
from vipcheck.fix_script import render_fix_script
from vipcheck.model.xtables import IptablesFamily
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import Snapshot
from vipcheck.transport import NodeTarget

LEFTOVERS = DATA / "leftovers"
IDS = (
    "ipvs-leftover-virtual-servers",
    "ipvs-leftover-kube-ipvs0",
    "iptables-leftover-chains",
    "ipvs-leftover-ipsets",
    "ipvs-leftover-sysctls",
)
NODES = ("node-1", "node-2", "node-3")


def switched(snapshot: Snapshot, scenario: str) -> Snapshot:
    """Every node with kube-proxy's ip nftables table and the scenario's leftovers inputs
    (`ipvs-mode`: IPVS mode's sets and chains; `kubelet-only`: kubelet's chains, keepalived's
    set), the ConfigMap in nftables mode."""
    snapshot = kube_proxy_config(snapshot, "mode: ipvs", "mode: nftables")
    for node in NODES:
        path = f"nodes/{node}"
        snapshot = put(snapshot, f"{path}/nft-tables.txt", "table ip kube-proxy\n")
        table = (DATA / "endpoint-chains.json").read_text()
        snapshot = put(snapshot, f"{path}/nft-ip-kube-proxy.json", table)
        for name in FILES[1:]:
            snapshot = put(
                snapshot, f"{path}/{name}", (LEFTOVERS / f"{scenario}.{name}").read_text()
            )
    return snapshot


def skipped_cleanup() -> Snapshot:
    """The switch as PR 131243's skipped cleanup leaves it: IPVS state untouched."""
    return switched(seed(), "ipvs-mode")


def cleaned_up() -> Snapshot:
    """The switch as a cleanup that ran leaves it, the IPVS sysctls reverted by hand too."""
    snapshot = switched(seed(), "kubelet-only")
    for node in NODES:
        snapshot = without_ipvs(snapshot, node)
        sysctl = snapshot.nodes[node].files["sysctl.txt"]
        for key, set_to, default in IPVS_SYSCTLS:
            sysctl = sysctl.replace(f"{key} = {set_to}\n", f"{key} = {default}\n")
        snapshot = put(snapshot, f"nodes/{node}/sysctl.txt", sysctl)
    return snapshot


def outcomes(snapshot: Snapshot, check_id: str) -> dict[str, tuple[Outcome, str]]:
    """Each node's outcome and reason for one check."""
    facts = Facts.from_snapshot(snapshot)
    results = [run_case(case, facts, DEFAULTS) for case in cases_for(check_by_id(check_id), facts)]
    return {str(result.case.subject): (result.outcome, result.reason) for result in results}


@pytest.mark.parametrize("check_id", IDS)
def test_a_clean_switch_passes(check_id: str) -> None:
    assert {node: outcome for node, (outcome, _) in outcomes(cleaned_up(), check_id).items()} == (
        dict.fromkeys(NODES, Outcome.PASSED)
    )


@pytest.mark.parametrize("check_id", IDS)
def test_an_ipvs_cluster_skips_them(check_id: str) -> None:
    """The recorded IPVS cluster holds all of it, in use: one skipped item, not a finding."""
    [(outcome, reason)] = outcomes(seed(), check_id).values()
    assert outcome is Outcome.SKIPPED
    assert "kube-proxy mode is ipvs" in reason


@pytest.mark.parametrize("check_id", IDS)
def test_a_node_not_switched_yet_skips_them(check_id: str) -> None:
    """nftables in the ConfigMap, but node-1 has no kube-proxy table: its kube-proxy has not
    restarted, kube-proxy-mode says so, and its IPVS state is in use, not left over."""
    snapshot = put(skipped_cleanup(), "nodes/node-1/nft-tables.txt", "table inet filter\n")
    snapshot = put(snapshot, "nodes/node-1/nft-ip-kube-proxy.json", None)
    outcome, reason = outcomes(snapshot, check_id)["node-1"]
    assert outcome is Outcome.SKIPPED
    assert "has not switched to nftables mode yet (kube-proxy-mode reports it)" in reason
    assert outcomes(snapshot, check_id)["node-2"][0] is Outcome.FAILED


def test_every_virtual_server_left_is_named_and_kube_proxys_get_their_delete() -> None:
    snapshot = skipped_cleanup()
    listed = Facts.from_snapshot(snapshot).nodes["node-1"].ipvs.services
    violations = only(snapshot, "ipvs-leftover-virtual-servers", "node-1")
    assert [v.subject for v in violations] == [vs.name for vs in listed]
    assert {v.kind for v in violations} == {FindingKind.IPVS_LEFTOVER_VIRTUAL_SERVER}
    [redis] = [v for v in violations if v.subject == "TCP 10.96.0.20:6379"]
    assert "kube-proxy's, for default/redis:6379/TCP" in redis.observed
    assert redis.commands == (("ipvsadm", "-D", "-t", "10.96.0.20:6379"),)


def test_a_virtual_server_no_service_has_is_named_but_not_deleted() -> None:
    """keepalived's VS on a switched node: not kube-proxy's to delete; the person decides."""
    vs = "TCP  192.168.58.250:443 wlc\n  -> 192.168.58.21:443   Route   1      0          0\n"
    snapshot = skipped_cleanup()
    table = snapshot.nodes["node-1"].files["ipvsadm-Ln.txt"] + vs
    snapshot = put(snapshot, "nodes/node-1/ipvsadm-Ln.txt", table)
    [foreign] = [
        v
        for v in only(snapshot, "ipvs-leftover-virtual-servers", "node-1")
        if v.subject == "TCP 192.168.58.250:443"
    ]
    assert "not kube-proxy's (no Service has it" in foreign.observed
    assert foreign.commands == ()
    assert "if no other agent owns it, ipvsadm -D -t 192.168.58.250:443" in foreign.fix


def test_kube_ipvs0_left_fails_with_its_delete() -> None:
    [violation] = only(skipped_cleanup(), "ipvs-leftover-kube-ipvs0", "node-1")
    assert violation.kind is FindingKind.IPVS_LEFTOVER_KUBE_IPVS0
    assert violation.observed.startswith("kube-ipvs0 (dummy) on a node in nftables mode, holding")
    assert violation.commands == (("ip", "link", "del", "kube-ipvs0"),)


def test_both_families_ipsets_left_fail_keepalived_s_does_not() -> None:
    violations = only(skipped_cleanup(), "ipvs-leftover-ipsets", "node-1")
    names = [v.subject.removeprefix("ipset ") for v in violations]
    assert "KUBE-CLUSTER-IP" in names
    assert "KUBE-6-CLUSTER-IP" in names
    assert "KEEPALIVED-VIPS" not in names
    assert len(names) == 12
    [v6] = [v for v in violations if v.subject == "ipset KUBE-6-CLUSTER-IP"]
    assert "destroys IPv4 sets only, so an IPv6 one always stays" in v6.observed
    assert v6.commands == (("ipset", "destroy", "KUBE-6-CLUSTER-IP"),)


def test_chains_left_fail_per_backend_and_table_kubelets_stay() -> None:
    violations = {
        v.subject: v for v in only(skipped_cleanup(), "iptables-leftover-chains", "node-1")
    }
    assert set(violations) == {
        "iptables (legacy) nat",
        "iptables (legacy) filter",
        "ip6tables (nf_tables) nat",
        "ip6tables (nf_tables) filter",
    }
    nat = violations["iptables (legacy) nat"]
    assert nat.observed.startswith(
        "5 KUBE-* chain(s) in iptables (legacy) table nat on a node in nftables mode: "
        "KUBE-LOAD-BALANCER, KUBE-MARK-MASQ, KUBE-NODE-PORT, KUBE-POSTROUTING, KUBE-SERVICES"
    )
    assert nat.commands[:3] == (
        ("iptables-legacy", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment",
         "kubernetes service portals", "-j", "KUBE-SERVICES"),
        ("iptables-legacy", "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment",
         "kubernetes service portals", "-j", "KUBE-SERVICES"),
        ("iptables-legacy", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment",
         "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"),
    )  # fmt: skip
    assert nat.commands[-1] == ("iptables-legacy", "-t", "nat", "-X", "KUBE-SERVICES")
    flat = [" ".join(command) for v in violations.values() for command in v.commands]
    assert not [c for c in flat if "KUBE-FIREWALL" in c or "CANARY" in c or "HINT" in c]
    v6 = [violations[f"ip6tables (nf_tables) {table}"] for table in ("nat", "filter")]
    assert {command[0] for v in v6 for command in v.commands} == {"ip6tables-nft"}


def test_a_backend_not_read_is_never_a_pass() -> None:
    unread = "# vipcheck: unread: nf_tables tables: no iptables-nft-save here to read them\n"
    snapshot = cleaned_up()
    for name in ("iptables-chains.txt", "ip6tables-chains.txt"):
        snapshot = put(snapshot, f"nodes/node-1/{name}", unread)
    outcome, reason = outcomes(snapshot, "iptables-leftover-chains")["node-1"]
    assert outcome is Outcome.SKIPPED
    assert "iptables: nf_tables tables: no iptables-nft-save here to read them" in reason


def test_ipvs_sysctls_kube_proxy_set_are_named_with_the_kernels_default() -> None:
    violations = only(skipped_cleanup(), "ipvs-leftover-sysctls", "node-1")
    assert [(v.subject, v.commands) for v in violations] == [
        ("net.ipv4.vs.conntrack", (("sysctl", "-w", "net.ipv4.vs.conntrack=0"),)),
        ("net.ipv4.vs.expire_nodest_conn", (("sysctl", "-w", "net.ipv4.vs.expire_nodest_conn=0"),)),
        (
            "net.ipv4.vs.expire_quiescent_template",
            (("sysctl", "-w", "net.ipv4.vs.expire_quiescent_template=0"),),
        ),
    ]
    assert check_by_id("ipvs-leftover-sysctls").severity.value == "info"


def test_strict_arp_s_pair_is_named_only_together() -> None:
    snapshot = skipped_cleanup()
    sysctl = snapshot.nodes["node-1"].files["sysctl.txt"]
    one = sysctl.replace("net.ipv4.conf.all.arp_ignore = 0", "net.ipv4.conf.all.arp_ignore = 1")
    both = one.replace("net.ipv4.conf.all.arp_announce = 0", "net.ipv4.conf.all.arp_announce = 2")

    def subjects(text: str) -> set[str]:
        edited = put(snapshot, "nodes/node-1/sysctl.txt", text)
        return {v.subject for v in only(edited, "ipvs-leftover-sysctls", "node-1")}

    assert "net.ipv4.conf.all.arp_ignore" not in subjects(one)
    assert {"net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"} <= subjects(both)


def test_without_ip_vs_there_is_no_ipvs_sysctl_to_judge() -> None:
    snapshot = cleaned_up()
    sysctl = "".join(
        line
        for line in snapshot.nodes["node-1"].files["sysctl.txt"].splitlines(keepends=True)
        if not line.startswith("net.ipv4.vs.")
    )
    snapshot = put(snapshot, "nodes/node-1/sysctl.txt", sysctl)
    outcome, reason = outcomes(snapshot, "ipvs-leftover-sysctls")["node-1"]
    assert outcome is Outcome.SKIPPED
    assert "ip_vs is not loaded" in reason


def test_the_mode_check_s_fix_names_the_skipped_cleanup() -> None:
    [violation] = only(skipped_cleanup(), "kube-proxy-mode", "node-1")
    assert violation.observed.startswith("config says nftables, node-1 runs both nftables")
    assert "modprobe ip_vs` fails in kube-proxy's container, kubernetes PR 131243" in violation.fix


def test_the_leftovers_come_after_the_nftables_checks_chains_before_ipsets() -> None:
    order = [check.id for check in CATALOGUE]
    assert order.index("nft-nodeport-ips") < order.index(IDS[0])
    assert [order.index(check_id) for check_id in IDS] == sorted(order.index(c) for c in IDS)


# --- the fix script the failures make, checked and run -------------------------------------


def failures(snapshot: Snapshot, node: str) -> list[tuple[Check[Any], list[Violation]]]:
    facts = Facts.from_snapshot(snapshot)
    found = [
        (check_by_id(i), Case(check_by_id(i), NodeSubject(node)).run(facts, DEFAULTS)) for i in IDS
    ]
    return [(check, violations) for check, violations in found if violations]


def summary(found: list[tuple[Check[Any], list[Violation]]], node: str) -> dict[str, Any]:
    """The JSON summary's records of those failures, as the fix script reads them."""
    return {
        "results": [
            {
                "check": check.id,
                "subject": node,
                "node": node,
                "outcome": "failed",
                "violations": [
                    {
                        "node": v.node,
                        "observed": v.observed,
                        "fix": v.fix,
                        "commands": [list(command) for command in v.commands],
                    }
                    for v in violations
                ],
            }
            for check, violations in found
        ]
    }


def test_the_fix_script_for_a_skipped_cleanup_passes_shellcheck(tmp_path: Path) -> None:
    found = failures(skipped_cleanup(), "node-1")
    assert [check.id for check, _ in found] == list(IDS)
    text = render_fix_script(summary(found, "node-1"), {}, generated="now", target="lab")
    assert "run ssh -- node-1 'ipvsadm -D -t 10.96.0.20:6379'" in text
    assert (
        "run ssh -- node-1 'iptables-legacy -t nat -D PREROUTING -m comment --comment "
        "'\"'\"'kubernetes service portals'\"'\"' -j KUBE-SERVICES'"
    ) in text
    assert text.index("ip6tables-nft -t filter -X") < text.index("ipset destroy KUBE-CLUSTER-IP")
    script = tmp_path / "fix.sh"
    script.write_text(text)
    shellcheck(script)


def test_a_hostile_chain_and_set_reach_the_tools_as_text(tmp_path: Path) -> None:
    """A rule whose comment holds `$(...)` and backquotes, a chain and a set named with `$(...)`:
    the fix script with --apply (local transport, stub tools that log their arguments) hands
    each name over as it is, and runs none of what it names."""
    chains = (
        "# vipcheck: backend legacy (iptables-legacy-save)\n*nat\n:PREROUTING ACCEPT [0:0]\n"
        ":KUBE-$(reboot) - [0:0]\n"
        '-A PREROUTING -m comment --comment "`id`;$(reboot)" -j KUBE-$(reboot)\n'
    )
    snapshot = put(skipped_cleanup(), "nodes/node-1/iptables-chains.txt", chains)
    snapshot = put(snapshot, "nodes/node-1/ipset-list-names.txt", "KUBE-$(touch_x)\n")
    text = render_fix_script(
        summary(failures(snapshot, "node-1"), "node-1"),
        {"node-1": NodeTarget("node-1", "local://")},
        generated="now",
        target="lab",
    )
    script = tmp_path / "fix.sh"
    script.write_text(text)
    shellcheck(script)
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.log"
    bin_dir.mkdir()
    for tool in ("iptables-legacy", "ip6tables-nft", "ipset", "ipvsadm", "ip", "sysctl"):
        (bin_dir / tool).write_text(f'#!/bin/sh\nprintf "%s|" "$0" "$@" >> {log}\necho >> {log}\n')
    for trap in ("reboot", "touch_x", "id"):
        (bin_dir / trap).write_text(f"#!/bin/sh\ntouch {tmp_path}/ran-{trap}\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    result = subprocess.run(
        ["sh", str(script), "--apply"], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(tmp_path.glob("ran-*")) == []
    calls = log.read_text().splitlines()
    assert (
        f"{bin_dir}/iptables-legacy|-t|nat|-D|PREROUTING|-m|comment|--comment|`id`;$(reboot)|"
        "-j|KUBE-$(reboot)|"
    ) in calls
    assert f"{bin_dir}/iptables-legacy|-t|nat|-X|KUBE-$(reboot)|" in calls
    assert f"{bin_dir}/ipset|destroy|KUBE-$(touch_x)|" in calls


def _require_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for unshare -n (a network namespace of its own)")
    for tool in ("unshare", "ipset", "iptables-legacy", "ip6tables-nft", "shellcheck"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make deps installs it)")


def test_applying_the_fix_script_leaves_a_clean_node(tmp_path: Path) -> None:
    """The chains' and ipsets' commands, run by the fix script with --apply (local transport) in
    a namespace holding IPVS mode's sets and chains: none fails, and the state gathered after
    passes both checks, kubelet's chains and keepalived's set still there."""
    _require_root_tools()
    node = gather_in_namespace("ipvs-mode")
    snapshot = skipped_cleanup()
    for name in FILES[1:]:
        snapshot = put(snapshot, f"nodes/node-1/{name}", node.files[name])
    found = [
        (check, violations)
        for check, violations in failures(snapshot, "node-1")
        if check.id in ("iptables-leftover-chains", "ipvs-leftover-ipsets")
    ]
    text = render_fix_script(
        summary(found, "node-1"),
        {"node-1": NodeTarget("node-1", "local://")},
        generated="now",
        target="namespace",
    )
    script = tmp_path / "fix.sh"
    script.write_text(text)
    after = tmp_path / "after"
    collect = (
        f"sh {script} --apply && ipset list -n > {after}.ipsets && "
        f"iptables-legacy-save > {after}.v4 && ip6tables-nft-save > {after}.v6"
    )
    setup = (
        "ipset restore < ipvs-mode.ipsets && iptables-legacy-restore < ipvs-mode.v4.rules && "
        "ip6tables-nft-restore < ipvs-mode.v6.rules && "
    )
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", setup + collect],
        cwd=LEFTOVERS, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "done: 0 command(s) failed" in result.stdout
    files = {
        "ipset-list-names.txt": (tmp_path / "after.ipsets").read_text(),
        "iptables-chains.txt": (tmp_path / "after.v4").read_text(),
        "ip6tables-chains.txt": (tmp_path / "after.v6").read_text(),
    }
    for name, text in files.items():
        snapshot = put(snapshot, f"nodes/node-1/{name}", text)
    for check_id in ("iptables-leftover-chains", "ipvs-leftover-ipsets"):
        assert only(snapshot, check_id, "node-1") == [], check_id
    facts = Facts.from_snapshot(snapshot).nodes["node-1"]
    assert facts.ipset_names == {"KEEPALIVED-VIPS"}
    assert "KUBE-FIREWALL" in facts.iptables_chains(IptablesFamily.IPV4)["filter"]
    assert json.dumps(sorted(facts.iptables_chains(IptablesFamily.IPV4)["mangle"])) == (
        '["FORWARD", "INPUT", "KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "OUTPUT", '
        '"POSTROUTING", "PREROUTING"]'
    )
