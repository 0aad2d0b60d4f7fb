"""Handshake probes on the live lab: failures attributed to their cause, no probe unasked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fixtures.lab.running import LabPool, RunningLab

HANDSHAKE = "vip-handshake"
CLIENT_HEX = "0A0A0024"  # the lab client's 10.10.0.36 as /proc/net/ip_vs_conn writes it


def run_vipcheck(lab: RunningLab, out: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    summary = out / "summary.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--ssh-config", str(lab.workdir / "ssh_config"),
            "--vipcheck-json", str(summary),
            "-q", "-rfE", *args,
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=out,
    )  # fmt: skip
    return result.returncode, json.loads(summary.read_text()), result.stdout + result.stderr


def handshake_results(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["subject"]: r for r in summary["results"] if r["check"] == HANDSHAKE}


def from_vantage(record: dict[str, Any], vantage: str) -> dict[str, Any]:
    return next(v for v in record["violations"] if v["node"] == vantage)


def test_stale_real_server_refuses_about_half_and_is_named(labs: LabPool, tmp_path: Path) -> None:
    lab = labs.get("stale-real-server")
    _, summary, output = run_vipcheck(lab, tmp_path, "-k", "handshake")
    results = handshake_results(summary)
    redis = results["default/redis:6379/TCP"]
    assert redis["outcome"] == "failed", output
    assert {r["outcome"] for s, r in results.items() if s != "default/redis:6379/TCP"} == {
        "passed"
    }, output
    attempts = {
        v["node"]: [e for e in v["evidence"] if e.startswith(f"{v['node']} -> 10.96.0.20:6379: #")]
        for v in redis["violations"]
    }

    def refused(vantage: str) -> int:
        return sum(" REFUSED " in e for e in attempts.get(vantage, []))

    # Round robin over pod:6379 and the stale pod:80, 8 attempts per vantage point. node-2 and
    # node-3 each have their own scheduler: about half refused. node-1 and the client probe in
    # parallel through node-1's one scheduler, so only their sum is about half (one of them may
    # even see no refusal and pass, which is why it can be missing from the violations).
    for vantage in ("node-2", "node-3"):
        assert len(attempts[vantage]) == 8, attempts
        assert 3 <= refused(vantage) <= 5, attempts
    assert 6 <= refused("node-1") + refused("client") <= 10, attempts
    for violation in redis["violations"]:
        vantage = violation["node"]
        assert "likely cause: stale real server 10.244.3.10:80" in violation["observed"]
        assert "ipvsadm -d -t 10.96.0.20:6379 -r 10.244.3.10:80" in violation["fix"]
        assert any(
            e.startswith(f"{vantage} -> 10.244.3.10:80 (IPVS real server, not an endpoint")
            and "REFUSED" in e
            for e in violation["evidence"]
        ), violation["evidence"]
        assert any(
            e.startswith("[ipvs-real-servers-match-endpoints]") for e in violation["evidence"]
        )


def test_strict_rp_filter_times_out_from_outside_and_names_node_2(
    labs: LabPool, tmp_path: Path
) -> None:
    lab = labs.get("rp-filter-strict")
    _, summary, output = run_vipcheck(lab, tmp_path, "-k", "handshake")
    api = handshake_results(summary)["default/api:80/TCP"]
    assert api["outcome"] == "failed", output
    client = from_vantage(api, "client")
    assert client["subject"] == "ClusterIP 10.96.0.40:80 from client"
    assert client["observed"].startswith("2 of 2 handshakes failed (2 TIMEOUT)"), client
    assert "backend 10.244.2.10:8080 on node-2 TIMEOUT from client" in client["observed"]
    assert "node-2 has strict rp_filter" in client["observed"]
    assert client["fix"].startswith("on node-2: sysctl -w")
    assert any(
        e.startswith("client -> 10.244.2.10:8080 (endpoint, on node-2): TIMEOUT")
        and "from node-2: CONNECTED" in e
        for e in client["evidence"]
    ), client["evidence"]
    assert any(e.startswith("[rp-filter-not-strict] node-2/") for e in client["evidence"])


def test_healthy_every_handshake_passes_and_k_selects_them(labs: LabPool, tmp_path: Path) -> None:
    lab = labs.get("healthy")
    code, summary, output = run_vipcheck(lab, tmp_path, "-k", "handshake")
    assert code == 0, output
    assert {r["check"] for r in summary["results"]} == {HANDSHAKE}
    assert {s: r["outcome"] for s, r in handshake_results(summary).items()} == {
        "default/api:80/TCP": "passed",
        "default/redis:6379/TCP": "passed",
        "default/web:80/TCP": "passed",
    }


def client_entries(lab: RunningLab) -> set[str]:
    """The director's IPVS connection entries from the client, by client port and VIP."""
    table = lab.ssh("node-1", "cat /proc/net/ip_vs_conn")
    return {" ".join(line.split()[1:5]) for line in table.splitlines() if CLIENT_HEX in line}


def ipvs_connections_ever(lab: RunningLab) -> dict[str, int]:
    """Each node's IPVS connection counter (/proc/net/ip_vs_stats, hex): it never goes down.

    Entries of closed probe connections leave ip_vs_conn within seconds (the probe closes with
    the pod's greeting unread: a reset, IPVS's CLOSE state), so the counter is the firm proof.
    """
    counts = {}
    for node in ("node-1", "node-2", "node-3"):
        stats = lab.ssh(node, "cat /proc/net/ip_vs_stats").splitlines()
        counts[node] = int(stats[2].split()[0], 16)
    return counts


def test_not_probe_opens_no_connection(labs: LabPool, tmp_path: Path) -> None:
    lab = labs.get("healthy")
    entries, counts = client_entries(lab), ipvs_connections_ever(lab)
    code, summary, output = run_vipcheck(lab, tmp_path, "-m", "not probe")
    assert code == 0, output
    assert HANDSHAKE not in {r["check"] for r in summary["results"]}
    assert "probing" not in output
    assert client_entries(lab) - entries == set()
    assert ipvs_connections_ever(lab) == counts
    # The same measure sees the probes when they run, so it can fail.
    run_vipcheck(lab, tmp_path, "-k", "handshake and web")
    after = ipvs_connections_ever(lab)
    assert all(after[node] > counts[node] for node in counts), (counts, after)
