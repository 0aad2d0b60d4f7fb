"""The VM setup script: kube-proxy's programming per node, the faults, and valid bash."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fixtures.lab.guest_script import (
    ipvs_rules,
    masquerade_ruleset,
    node_sysctls,
    pod_netns,
    setup_script,
    ssh_addresses,
)
from fixtures.lab.scenario import TrafficPolicy, Userland, load_scenario, scenario_names
from fixtures.lab.service_endpoints import (
    RealServer,
    VirtualServiceKind,
    expected_real_servers,
    expected_virtual_services,
)

NODES = ("node-1", "node-2", "node-3")


def step(script: str, name: str) -> str:
    """The body of one generated step function (a here-document's "}" does not end it)."""
    lines = script[script.index(f"\n{name}() {{\n") + 1 :].splitlines(keepends=True)
    in_heredoc = False
    for index, line in enumerate(lines):
        if in_heredoc:
            in_heredoc = line != "EOF\n"
        elif line.rstrip().endswith("<<'EOF'"):
            in_heredoc = True
        elif line == "}\n":
            return "\n" + "".join(lines[:index])
    raise AssertionError(f"{name} never ends")


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
    scenario = load_scenario(name)
    old = {node.name for node in scenario.nodes if node.userland is Userland.OLD}
    for host in (*NODES, "client"):
        start = "start_old_sshd" if host in old else "start_sshd"
        assert f"    {start} {host} {host}\n" in script


def heredoc(script: str, command: str) -> list[str]:
    """The lines a command of the script is fed by its here-document."""
    start = script.index(f"    {command} <<'EOF'\n")
    body = script[script.index("\n", start) + 1 :]
    return body[: body.index("\nEOF\n")].splitlines()


def commands(lines: list[str]) -> list[str]:
    """The lines of a batch that are not comments."""
    return [line for line in lines if not line.startswith("#")]


@pytest.mark.parametrize("node", NODES)
def test_healthy_virtual_and_real_servers(node: str) -> None:
    scenario = load_scenario("healthy")
    script = setup_script(scenario)
    underlay = {"node-1": "192.168.58.11", "node-2": "192.168.58.12", "node-3": "192.168.58.13"}
    rules = heredoc(step(script, "program_kube_proxy"), f"ip netns exec {node} ipvsadm -R")
    assert tuple(rules) == ipvs_rules(scenario, scenario.node(node))
    for line in (
        "-A -t 10.96.0.20:6379 -s rr",
        "-a -t 10.96.0.20:6379 -r 10.244.3.10:6379 -m -w 1",
        "-A -t 10.96.0.30:80 -s rr",
        "-a -t 10.96.0.30:80 -r 10.244.1.10:8080 -m -w 1",
        "-a -t 10.96.0.30:80 -r 10.244.3.11:8080 -m -w 1",
        f"-A -t {underlay[node]}:30080 -s rr",
        f"-a -t {underlay[node]}:30080 -r 10.244.3.11:8080 -m -w 1",
        "-A -t 10.96.0.40:80 -s rr",
        "-a -t 10.96.0.40:80 -r 10.244.2.10:8080 -m -w 1",
    ):
        assert line in rules, line
    assert sum(rule.startswith("-A ") for rule in rules) == 4  # three ClusterIPs, one NodePort
    assert "addr add 10.96.0.20/32 dev kube-ipvs0" in heredoc(script, f"ip -n {node} -batch -")
    assert "net.ipv4.vs.expire_nodest_conn=1 \\" in step(script, "apply_sysctls")
    assert "10.244.2.11:8080" not in script  # web-3 is not ready
    assert "10.96.0.50" not in script


def test_one_process_per_namespace_and_task() -> None:
    """A process costs ~0.1 s under emulation: one ip batch per namespace, one of each per node."""
    scenario = load_scenario("healthy")
    script = setup_script(scenario)
    namespaces = [*NODES, "client", *(pod_netns(pod) for pod in scenario.pods)]
    for netns in namespaces:
        assert script.count(f"ip -n {netns} ") == 1, netns
    assert script.count("ip -batch -") == 1
    for node in NODES:
        assert script.count(f"ip netns exec {node} ipvsadm -R") == 1
        assert script.count(f"ip netns exec {node} nft -f -") == 1
        assert script.count(f"set_sysctls {node} ") == 1
    assert "ip netns exec node-1 ip " not in script


def test_headless_and_external_name_get_no_virtual_service() -> None:
    scenario = load_scenario("healthy")
    for node in scenario.nodes:
        names = {vs.service.name for vs in expected_virtual_services(scenario, node)}
        assert names == {"redis", "web", "api"}


def test_stale_real_server_only_in_its_scenario() -> None:
    stale = "-a -t 10.96.0.20:6379 -r 10.244.3.10:80 -m -w 1"
    for name in ("healthy", "tcpfin-default", "rp-filter-strict"):
        assert stale not in setup_script(load_scenario(name))
    script = setup_script(load_scenario("stale-real-server"))
    assert stale not in step(script, "program_kube_proxy")
    faults = step(script, "inject_faults")
    for node in NODES:
        assert heredoc(faults, f"ip netns exec {node} ipvsadm -R") == [stale]


def test_ipvs_timeouts() -> None:
    healthy = load_scenario("healthy")
    for node in healthy.nodes:
        assert ipvs_rules(healthy, node)[0] == "--set 0 30 0"
    tcpfin = load_scenario("tcpfin-default")
    assert not any(rule.startswith("--set") for rule in ipvs_rules(tcpfin, tcpfin.nodes[0]))


def test_strict_rp_filter_only_on_node_2_in_rp_filter_strict() -> None:
    strict = "rp_filter=1"
    for name in ("healthy", "stale-real-server", "tcpfin-default"):
        assert strict not in setup_script(load_scenario(name))
    faults = step(setup_script(load_scenario("rp-filter-strict")), "inject_faults")
    assert faults.count(strict) == 2
    assert (
        "    set_sysctls node-2 \\\n"
        "        net.ipv4.conf.all.rp_filter=1 \\\n"
        "        net.ipv4.conf.tunl0.rp_filter=1\n"
    ) in faults


def test_node_sysctls_come_after_interfaces_and_faults_after_them() -> None:
    scenario = load_scenario("rp-filter-strict")
    script = setup_script(scenario)
    main = step(script, "main")
    order = ["create_namespaces", "configure_nodes", "configure_pods", "configure_client"]
    order += ["program_kube_proxy", "apply_sysctls", "inject_faults", "start_ssh"]
    order += ["send_traffic", "log ready"]
    positions = [main.index(name) for name in order]
    assert positions == sorted(positions)
    assert "net.ipv4.conf.tunl0.rp_filter=0" in step(script, "apply_sysctls")
    sysctls = node_sysctls(scenario, scenario.node("node-2"))
    keys = [key for key, _ in sysctls]
    assert keys.index("net.ipv4.conf.all.rp_filter") > keys.index("net.ipv4.ip_forward")
    assert sum(key.endswith(".proxy_arp") for key in keys) == 2  # api-0 and web-3


def test_traffic_only_where_declared() -> None:
    assert "short_connections client 10.96.0.30 80 30\n" in step(
        setup_script(load_scenario("tcpfin-default")), "send_traffic"
    )
    assert "short_connections client" not in setup_script(load_scenario("healthy"))


def test_big_programs_every_generated_service_in_one_ipvsadm_and_one_ip_batch_per_node() -> None:
    """2,000 Services cost no process each: one ipvsadm -R, one ip -batch (kube-ipvs0) per node."""
    script = setup_script(load_scenario("big"))
    program = step(script, "program_kube_proxy")
    assert program.count("ipvsadm -R <<'EOF'") == 3
    rules = heredoc(script, "ip netns exec node-2 ipvsadm -R")
    assert sum(rule.startswith("-A ") for rule in rules) == 2104  # 2,004 ClusterIPs, 100 NodePorts
    assert sum(rule.startswith("-a ") for rule in rules) == 4206  # web-1, web-2 behind bulk VSs
    assert "-A -u 10.102.0.1:53 -s rr" in rules
    node = heredoc(script, "ip -n node-2 -batch -")
    assert sum(line.startswith("addr add") and "kube-ipvs0" in line for line in node) == 2003
    # The connection entries: datagrams from one bash in the client, not a process each.
    assert "    udp_datagrams client 10.102.0.1 53 3000\n" in step(script, "send_traffic")


def test_topology_lines() -> None:
    script = setup_script(load_scenario("healthy"))
    root = commands(heredoc(script, "ip -batch -"))
    for line in (
        "netns add node-2",
        "link add vnode2 type veth peer name eth0 netns node-2",
        "link set vnode2 master br0 up",
        "link add eth1 netns node-1 type veth peer name eth0 netns client",
        "link add vclient type veth peer name mgmt0 netns client",
        "netns add pod-default-web-3",
    ):
        assert line in root, line
    node_2 = commands(heredoc(script, "ip -n node-2 -batch -"))
    for line in (
        "addr add 192.168.58.12/24 dev eth0",
        "addr add 10.244.2.0/32 dev tunl0",
        "route add 10.244.1.0/24 via 192.168.58.11 dev tunl0 onlink",
        "route add 10.10.0.0/24 via 192.168.58.11 dev eth0",
        "link add kube-ipvs0 type dummy",
    ):
        assert line in node_2, line
    node_1 = commands(heredoc(script, "ip -n node-1 -batch -"))
    assert "addr add 10.10.0.1/24 dev eth1" in node_1
    assert not any(line.startswith("route add 10.10.0.0/24") for line in node_1)  # the gateway
    client = commands(heredoc(script, "ip -n client -batch -"))
    assert client == [
        "link set lo up",
        "addr add 10.10.0.36/24 dev eth0",
        "link set eth0 up",
        "route add default via 10.10.0.1",
        "addr add 192.168.58.30/24 dev mgmt0",
        "link set mgmt0 up",
    ]
    pod = commands(heredoc(script, "ip -n pod-default-api-0 -batch -"))
    assert "addr add 10.244.2.10/32 dev eth0" in pod
    assert "route add default via 169.254.1.1 dev eth0" in pod
    for line in ("serve pod-default-redis-0 redis-0 6379", "serve pod-default-web-3 web-3 8080"):
        assert f"    {line}\n" in script, line


def test_pod_interface_names_fit_the_kernel_limit() -> None:
    script = setup_script(load_scenario("healthy"))
    names = [line.split()[2] for line in heredoc(script, "ip -batch -") if " netns pod-" in line]
    assert len(names) == 5
    for name in names:
        assert name.startswith("cali")
        assert len(name) <= 15


def test_masquerade_node_originated_and_cluster_node_ports() -> None:
    scenario = load_scenario("healthy")
    ruleset = masquerade_ruleset(scenario, scenario.node("node-2"))
    assert "type nat hook postrouting priority srcnat; policy accept;" in ruleset
    assert "ip daddr != 10.244.0.0/16 return" in ruleset
    assert "fib saddr type local masquerade" in ruleset
    node_port = (
        "meta l4proto tcp ct original proto-dst 30080 ct original ip daddr { 192.168.58.12 }"
    )
    assert f"{node_port} masquerade" in ruleset
    assert "10.10.0." not in ruleset  # the client's traffic to ClusterIPs keeps its source
    script = setup_script(scenario)
    assert heredoc(script, "ip netns exec node-2 nft -f -") == ruleset.splitlines()


def test_no_masquerade_for_local_node_ports() -> None:
    scenario = load_scenario("healthy")
    services = tuple(
        dataclasses.replace(service, external_traffic_policy=TrafficPolicy.LOCAL)
        if service.name == "web"
        else service
        for service in scenario.services
    )
    local = dataclasses.replace(scenario, services=services)
    ruleset = masquerade_ruleset(local, local.node("node-1"))
    assert "30080" not in ruleset
    assert "fib saddr type local masquerade" in ruleset


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
    # No web pod on node-2: kube-proxy falls back to the cluster's (kubernetes#97081).
    assert (
        expected_real_servers(scenario, local, port, node_2, VirtualServiceKind.NODE_PORT) == both
    )
    # internalTrafficPolicy Local on a ClusterIP-only Service has nothing to fall back to.
    redis = scenario.service("default", "redis")
    itp_local = dataclasses.replace(redis, internal_traffic_policy=TrafficPolicy.LOCAL)
    assert expected_real_servers(scenario, itp_local, redis.ports[0], node_2) == ()
    assert expected_real_servers(scenario, itp_local, redis.ports[0], scenario.node("node-3")) == (
        RealServer(IPv4Address("10.244.3.10"), 6379),
    )


def test_ssh_addresses() -> None:
    assert ssh_addresses(load_scenario("healthy")) == {
        "node-1": "192.168.58.11",
        "node-2": "192.168.58.12",
        "node-3": "192.168.58.13",
        "client": "192.168.58.30",
    }


def test_an_old_node_gets_busybox_tools_and_no_ipvsadm() -> None:
    scenario = load_scenario("seed-incidents-old-node")
    assert [node.userland for node in scenario.nodes] == [
        Userland.MODERN,
        Userland.OLD,
        Userland.MODERN,
    ]
    script = setup_script(scenario)
    helper = script[script.index("start_old_sshd() {") :]
    helper = helper[: helper.index("\n}\n")]
    assert "rm -f /lab-old/sbin/ipvsadm /lab-old/sbin/sysctl" in helper
    assert "ln -s /usr/bin/busybox /lab-old/sbin/sysctl" in helper
    assert "mount -o bind /usr/bin/busybox /usr/bin/ip" in helper
    # The same cluster otherwise: only the way node-2's sshd starts differs.
    modern = setup_script(load_scenario("seed-incidents"))
    changed = set(script.splitlines()) ^ set(modern.splitlines())
    assert {line for line in changed if "sshd node-2" in line} == {
        "    start_old_sshd node-2 node-2",
        "    start_sshd node-2 node-2",
    }


def test_faulty_nodes_get_their_faulty_sshd_and_no_ipvs_gets_no_ipvs_rules() -> None:
    scenario = load_scenario("faulty-nodes")
    script = setup_script(scenario)
    assert "    start_faulty_sshd node-4 node-4 sshd-hang\n" in script
    assert "    start_sshd node-5 node-5\n" not in script
    assert "start_faulty_sshd node-5" not in script
    assert "    start_faulty_sshd node-6 node-6 cut-output\n" in script
    assert "    start_faulty_sshd node-7 node-7 no-ipvs\n" in script
    assert "    start_faulty_sshd node-8 node-8 sudo-password\n" in script
    assert "ip netns exec node-7 ipvsadm -R" not in script
    assert "ip netns exec node-6 ipvsadm -R" in script
    configure = step(script, "configure_nodes")
    node_7 = configure[configure.index("# node-7:") : configure.index("# node-8:")]
    assert "kube-ipvs0" not in node_7
