"""kube-proxy's nftables mode on the real kernel: the table on every node, handshakes that reach
the endpoints through its DNAT (no IPVS, no VIP on any interface), and the incidents' faces.

Two boots, shared by every test here, one per rule layout: healthy booted `--mode nftables`
(the lab's kube-proxy v1.30.4: endpoint chains), and seed-incidents-nftables (v1.36.2: numgen
maps, no endpoint chains).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.connect import Outcome, connect_attempts
from fixtures.lab.guest_script import Runtime
from fixtures.lab.nftables_rules import hash_and_truncate
from fixtures.lab.running import LabPool, RunningLab
from fixtures.lab.scenario import ProxyMode
from tests.lab.test_kind_lab import kind_names, run_kind

NFT = ProxyMode.NFTABLES
CHAINS = {
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "filter-input",
    "filter-forward",
    "services",
    "masquerading",
    "reject-chain",
    "cluster-ips-check",
}
MAPS = {"service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports"}
# (name, ClusterIP, port, pods answering) of the healthy Services
REDIS = ("redis", "10.96.0.20", 6379, {"redis-0"})
WEB = ("web", "10.96.0.30", 80, {"web-1", "web-2"})
API = ("api", "10.96.0.40", 80, {"api-0"})
WEB_NODE_PORT = 30080


def listed(lab: RunningLab, node: str) -> dict[str, set[str]]:
    """The chain, set and map names `nft -j list table ip kube-proxy` gives on a node."""
    document = json.loads(lab.ssh(node, "nft -j list table ip kube-proxy"))
    names: dict[str, set[str]] = {"chain": set(), "set": set(), "map": set()}
    for item in document["nftables"]:
        for kind, found in names.items():
            if kind in item:
                found.add(item[kind]["name"])
    return names


def replies(lab: RunningLab, host: str, address: str, port: int, count: int) -> Counter[str]:
    attempts = connect_attempts(lab.workdir / "ssh_config", host, address, port, count=count)
    return Counter(a.reply if a.outcome is Outcome.CONNECTED else a.outcome.value for a in attempts)


def from_pod(lab: RunningLab, node: str, pod: str, address: str, port: int) -> str:
    """One connection from a pod's network namespace (entered from its node's session)."""
    script = f'exec 3<>"/dev/tcp/{address}/{port}" && read -t 2 -r reply <&3 && echo "$reply"'
    command = f"ip netns exec pod-default-{pod} timeout 5 bash -c '{script}' || echo failed"
    return lab.ssh(node, command).strip()


@pytest.fixture(scope="module")
def healthy(labs: LabPool) -> RunningLab:
    return labs.get("healthy", mode=NFT)


@pytest.fixture(scope="module")
def incidents(labs: LabPool) -> RunningLab:
    lab = labs.get("seed-incidents-nftables")
    assert lab.scenario.kube_proxy.mode is NFT
    return lab


@pytest.mark.parametrize("newer", [False, True], ids=["v1.30-layout", "v1.36-layout"])
def test_every_node_holds_kube_proxys_table_and_nothing_of_ipvs(
    healthy: RunningLab, incidents: RunningLab, newer: bool
) -> None:
    lab = incidents if newer else healthy
    for node in ("node-1", "node-2", "node-3"):
        names = listed(lab, node)
        assert names["chain"] >= CHAINS, (node, CHAINS - names["chain"])
        assert names["map"] >= MAPS, node
        assert {"cluster-ips", "nodeport-ips"} <= names["set"], node
        redis = hash_and_truncate("default/redis/tcp/redis")
        assert f"service-{redis}" in names["chain"], node
        endpoint_chains = {c for c in names["chain"] if c.startswith("endpoint-")}
        assert bool(endpoint_chains) is not newer, (node, endpoint_chains)
        assert ("mark-for-masquerade" in names["chain"]) is not newer, node
        assert ("hairpin-connections" in names["set"]) is newer, node
        state = lab.ssh(
            node,
            # kubelet's iptables-nft chains add tables ip nat, filter and mangle (not kube-proxy's)
            "nft list tables | grep kube-proxy; ipvsadm -Ln | tail -n +4 | wc -l;"
            " ip -4 -o addr | grep -c 10.96."
            " || true; ip link show kube-ipvs0 2>&1 | head -1",
        ).splitlines()
        assert state[:3] == ["table ip kube-proxy", "0", "0"], (node, state)
        assert "does not exist" in state[3], (node, state)


@pytest.mark.parametrize("service", [REDIS, WEB, API], ids=lambda s: s[0])
def test_clusterip_handshakes_from_the_client_reach_the_endpoints(
    healthy: RunningLab, service: tuple[str, str, int, set[str]]
) -> None:
    _, vip, port, pods = service
    seen = replies(healthy, "client", vip, port, count=6)
    assert set(seen) <= pods, seen
    # No VIP is on any interface and IPVS is empty: only kube-proxy's DNAT can have answered,
    # and node-1's conntrack shows the ClusterIP translated to a pod.
    table = healthy.ssh("node-1", "cat /proc/net/nf_conntrack")
    assert any(f"dst={vip} " in line and f"dport={port} " in line for line in table.splitlines())


def test_nodeport_handshakes_from_the_client_reach_the_endpoints(healthy: RunningLab) -> None:
    for address in ("192.168.58.11", "192.168.58.13"):
        seen = replies(healthy, "client", address, WEB_NODE_PORT, count=4)
        assert set(seen) <= WEB[3], (address, seen)


def test_pods_reach_clusterips_and_nodeports_through_the_rules(healthy: RunningLab) -> None:
    # web-1 runs on node-1, api-0 on node-2: across the IPIP tunnel both ways.
    assert from_pod(healthy, "node-1", "web-1", API[1], API[2]) == "api-0"
    assert from_pod(healthy, "node-2", "api-0", REDIS[1], REDIS[2]) == "redis-0"
    assert from_pod(healthy, "node-1", "web-1", "192.168.58.12", WEB_NODE_PORT) in WEB[3]


@pytest.mark.parametrize("newer", [False, True], ids=["v1.30-layout", "v1.36-layout"])
def test_a_pod_reaches_itself_through_its_service_hairpin_masqueraded(
    healthy: RunningLab, incidents: RunningLab, newer: bool
) -> None:
    """web-1 to web's ClusterIP: when the random pick is web-1 itself, only the hairpin
    masquerade (the endpoint chain's rule, or the newer hairpin-connections set) lets the
    reply come back through the node."""
    lab = incidents if newer else healthy
    seen = Counter(from_pod(lab, "node-1", "web-1", WEB[1], WEB[2]) for _ in range(12))
    assert set(seen) <= WEB[3], seen
    assert seen["web-1"] > 0, seen  # 12 fair coins all landing on web-2: 1 in 4096


def test_the_stale_endpoint_refuses_about_half_the_connections(incidents: RunningLab) -> None:
    seen = replies(incidents, "client", REDIS[1], REDIS[2], count=20)
    # numgen random over {pod:6379, the stale pod:80}: a fair coin per connection.
    assert 3 <= seen[Outcome.REFUSED.value] <= 17, seen
    assert seen[Outcome.REFUSED.value] + seen["redis-0"] == 20, seen
    # kube-proxy v1.36 left the stale endpoint as an element of the service chain's DNAT map.
    chain = hash_and_truncate("default/redis/tcp/redis")
    rules = incidents.ssh("node-2", f"nft list chain ip kube-proxy service-{chain}")
    assert "dnat ip to numgen random mod 2 map" in rules, rules
    assert "10.244.3.10 . 80" in rules, rules


def test_incidents_keep_kernel_conntrack_timeouts_and_strict_rp_filter(
    incidents: RunningLab, healthy: RunningLab
) -> None:
    keys = (
        "net.netfilter.nf_conntrack_tcp_timeout_established"
        " net.netfilter.nf_conntrack_tcp_timeout_close_wait"
    )
    assert incidents.ssh("node-1", f"sysctl -n {keys}").split() == ["432000", "60"]
    assert healthy.ssh("node-1", f"sysctl -n {keys}").split() == ["86400", "3600"]
    config = incidents.api_get("/api/v1/namespaces/kube-system/configmaps/kube-proxy")
    assert "mode: nftables" in config["data"]["config.conf"]
    assert "tcpCloseWaitTimeout: 1h0m0s" in config["data"]["config.conf"]
    assert incidents.ssh("node-2", "sysctl -n net.ipv4.conf.tunl0.rp_filter").strip() == "1"


def run_vipcheck(lab: RunningLab, out: Path) -> tuple[int, dict[str, Any], str]:
    """`vipcheck` against the lab as a user runs it, probes included; exit code, summary, output."""
    summary = out / "summary.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli",
            "--kubeconfig", str(lab.workdir / "kubeconfig"),
            "--ssh-config", str(lab.workdir / "ssh_config"),
            "--vipcheck-json", str(summary),
            "--probe-timeout", "5",  # software emulation: 2 s flakes on a busy host
            "-q", "-rfE",
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=out,
    )  # fmt: skip
    return result.returncode, json.loads(summary.read_text()), result.stdout + result.stderr


def flagged(summary: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (r["check"], r["subject"])
        for r in summary["results"]
        if r["outcome"] in ("failed", "error")
    }


def test_vipcheck_flags_nothing_on_healthy_in_nftables_mode(
    healthy: RunningLab, tmp_path: Path
) -> None:
    code, summary, output = run_vipcheck(healthy, tmp_path)
    assert (code, flagged(summary)) == (0, set()), output
    judged = {r["check"] for r in summary["results"] if r["outcome"] == "passed"}
    assert {"kube-proxy-mode", "nft-service-maps", "nft-trace-reaches-endpoints"} <= judged


# The founding incidents in nftables mode, each found by what judges it there: the stale
# endpoint (pod:80 after the port moved to 6379) by the chain check, the trace and the probe;
# the closing-connection pile-up by conntrack's timeouts; strict rp_filter as in IPVS mode.
REDIS_PORT = "default/redis:6379/TCP"
INCIDENTS_NFTABLES = {
    ("nft-chains-reach-endpoints", REDIS_PORT),
    ("nft-trace-reaches-endpoints", REDIS_PORT),
    ("vip-handshake", REDIS_PORT),
    *(("conntrack-timeouts", f"node-{n}") for n in (1, 2, 3)),
    ("rp-filter-not-strict", "node-2/tunl0"),
}


def test_vipcheck_finds_the_three_founding_incidents_in_nftables_mode(
    incidents: RunningLab, tmp_path: Path
) -> None:
    code, summary, output = run_vipcheck(incidents, tmp_path)
    assert (code, flagged(summary)) == (1, INCIDENTS_NFTABLES), output
    [stale] = [
        r for r in summary["results"]
        if r["check"] == "nft-chains-reach-endpoints" and r["outcome"] == "failed"
    ]  # fmt: skip
    evidence = " ".join(e for v in stale["violations"] for e in v["evidence"])
    assert "10.244.3.10 . 80" in evidence, evidence
    # The probe's failures are attributed to the stale endpoint in the rules, not to IPVS.
    [handshake] = [
        r for r in summary["results"]
        if r["check"] == "vip-handshake" and r["outcome"] == "failed"
    ]  # fmt: skip
    causes = " ".join(v["observed"] for v in handshake["violations"])
    assert "stale endpoint 10.244.3.10:80 in the nftables rules" in causes, causes
    assert "IPVS" not in causes, causes


def test_kind_nodes_in_nftables_mode_show_the_same_incidents(
    labs: LabPool, docker_cli: str, tmp_path: Path
) -> None:
    """The kind-shaped lab (node containers, docker inside the VM) in nftables mode: `vipcheck
    --kind` reads each node container's kube-proxy table and finds the same incidents, named by
    the containers' node names."""
    lab = labs.get("seed-incidents-nftables", Runtime.DOCKER)
    names = kind_names(lab)
    code, summary, output, _ = run_kind(
        lab, tmp_path, docker_cli,
        "--hosts", "ssh://client", "--ssh-config", str(lab.workdir / "ssh_config"),
        "--probe-timeout", "5",
    )  # fmt: skip
    renamed = {(check, names.get(subject, subject)) for check, subject in INCIDENTS_NFTABLES}
    renamed = {
        (check, subject.replace("node-2/", f"{names['node-2']}/")) for check, subject in renamed
    }
    assert (code, flagged(summary)) == (1, renamed), output
