"""The nftables stand-in: kube-proxy's names, both layouts, and every scenario's table loaded by the
host kernel's nftables (`unshare -n`), read back with `nft -j` as vipcheck reads it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from typing import Any

import pytest

from fixtures.lab.guest_script import Runtime, node_sysctls, setup_script
from fixtures.lab.nftables_rules import (
    ENDPOINT_CHAINS,
    ENDPOINT_MAPS,
    hash_and_truncate,
    layout_for,
    ruleset,
)
from fixtures.lab.objects import api_objects
from fixtures.lab.runtimes import kind_scenario
from fixtures.lab.scenario import (
    ProxyMode,
    Scenario,
    SessionAffinity,
    load_scenario,
    scenario_names,
    with_mode,
)

OLD, NEW = "v1.30.4", "v1.36.2"
FIXED_CHAINS = {
    "filter-prerouting-pre-dnat",
    "filter-output-pre-dnat",
    "filter-input",
    "filter-forward",
    "filter-output",
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "services",
    "service-endpoints-check",
    "nodeport-endpoints-check",
    "firewall-check",
    "cluster-ips-check",
    "masquerading",
    "reject-chain",
}
MAPS = {"service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports"}


def at_version(scenario: Scenario, version: str) -> Scenario:
    proxy = dataclasses.replace(scenario.kube_proxy, version=version, mode=ProxyMode.NFTABLES)
    return dataclasses.replace(scenario, kube_proxy=proxy)


def load_and_list(text: str) -> dict[str, Any]:
    """Load a ruleset into a fresh network namespace's kernel and list it as JSON."""
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", "nft -f - && nft -j list table ip kube-proxy"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed: dict[str, Any] = json.loads(result.stdout)
    return listed


def objects(listed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {item[kind]["name"]: item[kind] for item in listed["nftables"] if kind in item}


def rules(listed: dict[str, Any], chain: str) -> list[dict[str, Any]]:
    return [i["rule"] for i in listed["nftables"] if "rule" in i and i["rule"]["chain"] == chain]


def test_chain_names_are_kube_proxys() -> None:
    # Test vectors of kube-proxy's Test_servicePortChainNameBase and
    # Test_servicePortEndpointChainNameBase (pkg/proxy/nftables/proxier_test.go).
    assert hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert hash_and_truncate("ns1/svc1/tcp/p80__10.180.0.1/80") == (
        "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    )
    long = hash_and_truncate("n" * 300)
    assert len(long) == 240
    assert long.endswith("...")


@pytest.mark.parametrize(
    ("version", "layout"),
    [("v1.30.4", ENDPOINT_CHAINS), ("v1.35.9", ENDPOINT_CHAINS), ("v1.36.0", ENDPOINT_MAPS)],
)
def test_the_release_picks_the_layout(version: str, layout: object) -> None:
    assert layout_for(version) is layout


@pytest.mark.parametrize("version", [OLD, NEW])
@pytest.mark.parametrize("name", scenario_names())
def test_every_scenario_loads_into_the_kernel(name: str, version: str) -> None:
    scenario = at_version(load_scenario(name), version)
    for node in scenario.nodes[:3]:
        listed = load_and_list(ruleset(scenario, node))
        chains = set(objects(listed, "chain"))
        assert chains >= FIXED_CHAINS, (node.name, FIXED_CHAINS - chains)
        assert set(objects(listed, "map")) >= MAPS, node.name
        assert ("mark-for-masquerade" in chains) is (version == OLD)
        endpoint_chains = {c for c in chains if c.startswith("endpoint-")}
        assert bool(endpoint_chains) is (version == OLD), node.name


def redis_targets(version: str, scenario_name: str) -> list[dict[str, Any]]:
    scenario = at_version(load_scenario(scenario_name), version)
    listed = load_and_list(ruleset(scenario, scenario.node("node-1")))
    redis = hash_and_truncate("default/redis/tcp/redis")
    return rules(listed, f"service-{redis}")


@pytest.mark.parametrize("version", [OLD, NEW])
def test_the_stale_endpoint_sits_beside_the_live_one(version: str) -> None:
    healthy = json.dumps(redis_targets(version, "healthy"))
    stale = json.dumps(redis_targets(version, "stale-real-server"))
    assert '"mod": 1' in healthy
    assert '"mod": 2' in stale
    if version == OLD:
        assert "__10.244.3.10/80" in stale
        assert "__10.244.3.10/80" not in healthy
    else:
        assert '{"concat": ["10.244.3.10", 80]}' in stale
        assert '{"concat": ["10.244.3.10", 80]}' not in healthy


def test_the_newer_layout_keeps_endpoint_chains_for_client_ip_affinity() -> None:
    scenario = at_version(load_scenario("healthy"), NEW)
    services = tuple(
        dataclasses.replace(
            s, session_affinity=SessionAffinity.CLIENT_IP, session_affinity_timeout=60
        )
        if s.name == "api"
        else s
        for s in scenario.services
    )
    listed = load_and_list(
        ruleset(dataclasses.replace(scenario, services=services), scenario.nodes[0])
    )
    api = hash_and_truncate("default/api/tcp/http__10.244.2.10/8080")
    assert f"affinity-{api}" in objects(listed, "set")
    texts = json.dumps(rules(listed, f"endpoint-{api}"))
    assert '"update"' in texts
    assert '"dnat"' in texts
    assert "mark" not in texts


def test_nftables_mode_programs_no_ipvs() -> None:
    script = setup_script(with_mode(load_scenario("seed-incidents"), ProxyMode.NFTABLES))
    assert "ipvsadm -R <<" not in script
    assert "link add kube-ipvs0" not in script
    assert "kube-proxy-masquerade" not in script
    assert script.count("table ip kube-proxy {") == 3
    ipvs = setup_script(load_scenario("seed-incidents"))
    assert "table ip kube-proxy {" not in ipvs
    assert "ipvsadm -R <<" in ipvs


def test_the_kind_shaped_lab_loads_the_table_into_each_node_container() -> None:
    scenario = kind_scenario(with_mode(load_scenario("healthy"), ProxyMode.NFTABLES), "lab")
    script = setup_script(scenario, Runtime.DOCKER, "lab")
    for node in ("lab-control-plane", "lab-worker", "lab-worker2"):
        assert f"ip netns exec {node} nft -f - <<'EOF'\n# {node}: kube-proxy" in script
    assert "ipvsadm -R <<" not in script


@pytest.mark.parametrize("mode", list(ProxyMode))
def test_the_tcpfin_incident_leaves_conntrack_timeouts_in_nftables_mode_only(
    mode: ProxyMode,
) -> None:
    scenario = with_mode(load_scenario("tcpfin-default"), mode)
    keys = {key for key, _ in node_sysctls(scenario, scenario.nodes[0])}
    applied = "net.netfilter.nf_conntrack_tcp_timeout_established" in keys
    assert applied is (mode is ProxyMode.IPVS)
    healthy = with_mode(load_scenario("healthy"), mode)
    assert ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", "3600") in node_sysctls(
        healthy, healthy.nodes[0]
    )


def test_the_api_says_the_mode_the_version_and_the_conntrack_config() -> None:
    scenario = with_mode(load_scenario("seed-incidents"), ProxyMode.NFTABLES)
    served = api_objects(scenario)
    config = served["configmaps"][0]["data"]["config.conf"]
    assert "mode: nftables" in config
    assert "tcpCloseWaitTimeout: 1h0m0s" in config
    assert "tcpEstablishedTimeout: 24h0m0s" in config
    image = served["daemonsets"][0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.k8s.io/kube-proxy:v1.30.4"
    assert (
        "mode: ipvs"
        in api_objects(load_scenario("healthy"))["configmaps"][0]["data"]["config.conf"]
    )
