"""The VM setup script: kube-proxy's programming per node, the faults, and valid bash."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fixtures.lab.guest_script import (
    RealServer,
    VirtualServiceKind,
    expected_real_servers,
    expected_virtual_services,
    setup_script,
    ssh_addresses,
)
from fixtures.lab.scenario import TrafficPolicy, load_scenario, scenario_names

NODES = ("node-1", "node-2", "node-3")


def step(script: str, name: str) -> str:
    """The body of one generated step function."""
    start = script.index(f"\n{name}() {{\n")
    return script[start : script.index("\n}\n", start) + 1]


@pytest.mark.parametrize("name", scenario_names())
def test_script_is_valid_bash(name: str, tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    path = tmp_path / "setup.sh"
    path.write_text(setup_script(load_scenario(name)))
    result = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", scenario_names())
def test_script_shape(name: str) -> None:
    script = setup_script(load_scenario(name))
    assert script.startswith("#!/bin/bash\n")
    assert "set -euo pipefail\n" in script
    assert script.rstrip().endswith("main")
    assert step(script, "main").rstrip().endswith("log ready")
    for host in (*NODES, "client"):
        assert f"start_sshd {host} {host}\n" in script


@pytest.mark.parametrize("node", NODES)
def test_healthy_virtual_and_real_servers(node: str) -> None:
    script = setup_script(load_scenario("healthy"))
    underlay = {"node-1": "192.168.58.11", "node-2": "192.168.58.12", "node-3": "192.168.58.13"}
    ipvsadm = f"ip netns exec {node} ipvsadm"
    for line in (
        f"{ipvsadm} -A -t 10.96.0.20:6379 -s rr",
        f"{ipvsadm} -a -t 10.96.0.20:6379 -r 10.244.3.10:6379 -m -w 1",
        f"{ipvsadm} -A -t 10.96.0.30:80 -s rr",
        f"{ipvsadm} -a -t 10.96.0.30:80 -r 10.244.1.10:8080 -m -w 1",
        f"{ipvsadm} -a -t 10.96.0.30:80 -r 10.244.3.11:8080 -m -w 1",
        f"{ipvsadm} -A -t {underlay[node]}:30080 -s rr",
        f"{ipvsadm} -a -t {underlay[node]}:30080 -r 10.244.3.11:8080 -m -w 1",
        f"{ipvsadm} -A -t 10.96.0.40:80 -s rr",
        f"{ipvsadm} -a -t 10.96.0.40:80 -r 10.244.2.10:8080 -m -w 1",
        f"ip -n {node} addr add 10.96.0.20/32 dev kube-ipvs0",
        f"set_sysctl {node} net.ipv4.vs.expire_nodest_conn 1",
    ):
        assert f"    {line}\n" in script, line
    assert "10.244.2.11:8080" not in script  # web-3 is not ready
    assert "10.96.0.50" not in script
    assert script.count("ipvsadm -A") == 3 * 4  # three ClusterIP VSs and one NodePort VS per node


def test_headless_and_external_name_get_no_virtual_service() -> None:
    scenario = load_scenario("healthy")
    for node in scenario.nodes:
        names = {vs.service.name for vs in expected_virtual_services(scenario, node)}
        assert names == {"redis", "web", "api"}


def test_stale_real_server_only_in_its_scenario() -> None:
    stale = "ipvsadm -a -t 10.96.0.20:6379 -r 10.244.3.10:80 -m -w 1"
    for name in ("healthy", "tcpfin-default", "rp-filter-strict"):
        assert stale not in setup_script(load_scenario(name))
    faults = step(setup_script(load_scenario("stale-real-server")), "inject_faults")
    for node in NODES:
        assert f"ip netns exec {node} {stale}\n" in faults


def test_ipvs_timeouts() -> None:
    healthy = setup_script(load_scenario("healthy"))
    for node in NODES:
        assert f"ip netns exec {node} ipvsadm --set 0 30 0\n" in healthy
    assert "--set" not in setup_script(load_scenario("tcpfin-default"))


def test_strict_rp_filter_only_on_node_2_in_rp_filter_strict() -> None:
    strict = "rp_filter 1\n"
    for name in ("healthy", "stale-real-server", "tcpfin-default"):
        assert strict not in setup_script(load_scenario(name))
    faults = step(setup_script(load_scenario("rp-filter-strict")), "inject_faults")
    assert faults.count(strict) == 2
    assert "set_sysctl node-2 net.ipv4.conf.all.rp_filter 1\n" in faults
    assert "set_sysctl node-2 net.ipv4.conf.tunl0.rp_filter 1\n" in faults


def test_node_sysctls_come_after_interfaces_and_faults_after_them() -> None:
    script = setup_script(load_scenario("rp-filter-strict"))
    main = step(script, "main")
    order = ["build_nodes", "build_pods", "connect_client", "program_kube_proxy"]
    order += ["apply_node_sysctls", "inject_faults", "start_ssh", "send_traffic", "log ready"]
    positions = [main.index(name) for name in order]
    assert positions == sorted(positions)
    assert "set_sysctl node-2 net.ipv4.conf.tunl0.rp_filter 0\n" in step(
        script, "apply_node_sysctls"
    )


def test_traffic_only_where_declared() -> None:
    assert "short_connections client 10.96.0.30 80 30\n" in step(
        setup_script(load_scenario("tcpfin-default")), "send_traffic"
    )
    assert "short_connections client" not in setup_script(load_scenario("healthy"))


def test_topology_lines() -> None:
    script = setup_script(load_scenario("healthy"))
    for line in (
        "add_node node-2 192.168.58.12/24 vnode2 vnode2p",
        "add_tunnel node-2 10.244.2.0",
        "ip -n node-2 route add 10.244.1.0/24 via 192.168.58.11 dev tunl0 onlink",
        "ip -n node-2 route add 10.10.0.0/24 via 192.168.58.11 dev eth0",
        "ip -n node-1 addr add 10.10.0.1/24 dev eth1",
        "ip -n client addr add 10.10.0.36/24 dev eth0",
        "ip -n client route add default via 10.10.0.1",
        "ip -n client addr add 192.168.58.30/24 dev mgmt0",
        "serve pod-default-redis-0 redis-0 6379",
        "serve pod-default-web-3 web-3 8080",
    ):
        assert f"    {line}\n" in script, line
    assert "ip -n node-1 route add 10.10.0.0/24" not in script  # the director is the gateway
    assert "route add default via 192.168.58" not in step(script, "connect_client")


def test_pod_interface_names_fit_the_kernel_limit() -> None:
    script = setup_script(load_scenario("healthy"))
    for line in step(script, "build_pods").splitlines():
        words = line.split()
        if words and words[0] == "add_pod":
            assert words[4].startswith("cali")
            assert max(len(words[4]), len(words[5])) <= 15


def test_expected_real_servers_honour_local_traffic_policy() -> None:
    scenario = load_scenario("healthy")
    web = scenario.service("default", "web")
    local = dataclasses.replace(web, external_traffic_policy=TrafficPolicy.LOCAL)
    port = web.ports[0]
    node_1, node_2 = scenario.node("node-1"), scenario.node("node-2")
    both = (
        RealServer(IPv4Address("10.244.1.10"), 8080),
        RealServer(IPv4Address("10.244.3.11"), 8080),
    )
    assert expected_real_servers(scenario, web, port, node_2, VirtualServiceKind.NODE_PORT) == both
    assert expected_real_servers(scenario, local, port, node_2) == both
    assert expected_real_servers(scenario, local, port, node_1, VirtualServiceKind.NODE_PORT) == (
        RealServer(IPv4Address("10.244.1.10"), 8080),
    )
    assert expected_real_servers(scenario, local, port, node_2, VirtualServiceKind.NODE_PORT) == ()


def test_ssh_addresses() -> None:
    assert ssh_addresses(load_scenario("healthy")) == {
        "node-1": "192.168.58.11",
        "node-2": "192.168.58.12",
        "node-3": "192.168.58.13",
        "client": "192.168.58.30",
    }
