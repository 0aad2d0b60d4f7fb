"""Scenario loading: shipped scenarios load; every mistake names its file, line and field."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from fixtures.lab.scenario import (
    SCENARIO_DIR,
    ConntrackTimeoutsUnappliedFault,
    Protocol,
    ProxyMode,
    ScenarioError,
    ServiceType,
    StaleRealServerFault,
    SysctlFault,
    Traffic,
    load_scenario,
    parse_go_duration,
    scenario_names,
)

SHIPPED = [
    "big",
    "faulty-nodes",
    "healthy",
    "healthy-old-node",
    "kube-proxy-rules",
    "migration",
    "rp-filter-strict",
    "seed-incidents",
    "seed-incidents-nftables",
    "seed-incidents-old-node",
    "stale-real-server",
    "tcpfin-default",
]

BASE = """\
description: a small cluster
nodes:
  - name: node-1
    underlayIP: 192.168.58.11
    podCIDR: 10.244.1.0/24
  - name: node-2
    underlayIP: 192.168.58.12
    podCIDR: 10.244.2.0/24
pods:
  - namespace: default
    name: redis-0
    node: node-2
    ip: 10.244.2.10
    labels: {app: redis}
    ports: [{name: redis, port: 6379}]
services:
  - namespace: default
    name: redis
    clusterIP: 10.96.0.20
    selector: {app: redis}
    ports:
      - name: redis
        port: 6379
client:
  address: 10.10.0.36/24
  gateway: node-1
  gatewayIP: 10.10.0.1
  mgmtIP: 192.168.58.30
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the n-th line containing needle, so tests do not hard-code lines."""
    hits = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def error_for(path: Path) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(path))
    return str(caught.value)


def test_scenario_names_lists_the_shipped_files() -> None:
    assert scenario_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_loads(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.path == SCENARIO_DIR / f"{name}.yaml"
    names = [node.name for node in scenario.nodes]
    # faulty-nodes adds a broken node per fault to the three every scenario has.
    extra = [f"node-{i}" for i in range(4, 9)] if name == "faulty-nodes" else []
    assert names == ["node-1", "node-2", "node-3", *extra]
    assert scenario.client.gateway == "node-1"


def test_healthy_matches_the_brief() -> None:
    scenario = load_scenario("healthy")
    web = scenario.service("default", "web")
    assert web.type is ServiceType.NODE_PORT
    assert web.ports[0].target_port == "http"
    assert web.ports[0].node_port == 30080
    assert scenario.service("default", "redis-headless").cluster_ip is None
    assert scenario.service("default", "external-db").external_name == "db.example.com"
    assert not next(pod for pod in scenario.pods if pod.name == "web-3").ready
    config = scenario.kube_proxy
    assert (config.tcp_timeout, config.tcp_fin_timeout, config.udp_timeout) == (0, 30, 0)
    assert config.node_port_addresses == (IPv4Network("192.168.58.0/24"),)
    assert scenario.node("node-2").sysctls == (
        ("net.ipv4.conf.all.rp_filter", "2"),
        ("net.ipv4.conf.tunl0.rp_filter", "0"),
        ("net.ipv4.conf.eth0.rp_filter", "2"),
    )
    assert scenario.client.mgmt_ip == IPv4Address("192.168.58.30")
    assert scenario.faults == ()
    assert scenario.traffic == ()


def test_incident_scenarios_extend_healthy_with_their_fault() -> None:
    assert load_scenario("stale-real-server").faults == (
        StaleRealServerFault("default", "redis", 6379, Protocol.TCP, 80),
    )
    tcpfin = load_scenario("tcpfin-default")
    assert tcpfin.kube_proxy.tcp_fin_timeout == 0
    assert tcpfin.kube_proxy.sync_period == 30  # merged from healthy, not reset
    assert tcpfin.traffic == (Traffic("client", "default", "web", 80, 30),)
    assert load_scenario("rp-filter-strict").faults == (
        SysctlFault("node-2", "net.ipv4.conf.all.rp_filter", "1"),
        SysctlFault("node-2", "net.ipv4.conf.tunl0.rp_filter", "1"),
    )
    assert len(load_scenario("seed-incidents").faults) == 4
    assert tcpfin.faults == (ConntrackTimeoutsUnappliedFault(ProxyMode.NFTABLES),)
    assert tcpfin.kube_proxy.conntrack_tcp_close_wait_timeout == 3600


def test_bad_userland_names_file_line_and_choices(tmp_path: Path) -> None:
    text = BASE.replace(
        "    podCIDR: 10.244.2.0/24\n", "    podCIDR: 10.244.2.0/24\n    userland: centos7\n"
    )
    path = write(tmp_path, "bad", text)
    assert error_for(path).startswith(
        f"{path}:{line_of(text, 'userland')}: nodes[1].userland: expected one of modern, old"
    )


def test_unknown_name_lists_the_known_ones() -> None:
    known = r".*healthy, healthy-old-node, kube-proxy-rules, migration, rp-filter-strict"
    with pytest.raises(ScenarioError, match=rf"unknown scenario 'nope' {known}"):
        load_scenario("nope")


def test_valid_base_loads(tmp_path: Path) -> None:
    scenario = load_scenario(str(write(tmp_path, "base", BASE)))
    assert scenario.name == "base"
    assert scenario.services[0].ports[0].target_port == 6379  # defaults to port


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        pytest.param(
            "        port: 6379\n",
            "        port: abc\n",
            "port: abc",
            r"services\[0\]\.ports\[0\]\.port: expected an integer 1-65535 \(got 'abc'\)",
            id="bad-port",
        ),
        pytest.param(
            "    podCIDR: 10.244.1.0/24\n",
            "    podCIDR: 10.244.1.0/24\n    sysclts: {}\n",
            "sysclts",
            r"nodes\[0\]\.sysclts: unknown key \(expected one of: name, underlayIP",
            id="unknown-key",
        ),
        pytest.param(
            "    node: node-2\n",
            "    node: node-9\n",
            "node: node-9",
            r"pods\[0\]\.node: no such node \(nodes: node-1, node-2\) \(got 'node-9'\)",
            id="pod-on-missing-node",
        ),
        pytest.param(
            "    ip: 10.244.2.10\n",
            "    ip: 10.244.1.10\n",
            "ip: 10.244.1.10",
            r"pods\[0\]\.ip: expected a host address in node-2's pod CIDR 10\.244\.2\.0/24",
            id="pod-ip-outside-node-cidr",
        ),
        pytest.param(
            "    clusterIP: 10.96.0.20\n",
            "    clusterIP: 192.168.58.11\n",
            "clusterIP: 192.168.58.11",
            r"services\[0\]\.clusterIP: address already used by nodes\[0\]\.underlayIP",
            id="duplicate-address",
        ),
        pytest.param(
            "  - name: node-2\n",
            "  - name: node-1  # again\n",
            "# again",
            r"nodes\[1\]\.name: node name already used \(got 'node-1'\)",
            id="duplicate-node",
        ),
        pytest.param(
            "  gateway: node-1\n",
            "  gateway: node-7\n",
            "gateway: node-7",
            r"client\.gateway: no such node",
            id="client-gateway-missing",
        ),
        pytest.param(
            "    underlayIP: 192.168.58.12\n",
            "    underlayIP: 192.168.58.2\n",
            "underlayIP: 192.168.58.2",
            r"nodes\[1\]\.underlayIP: expected a host address in 192\.168\.58\.0/24 other than",
            id="underlay-is-the-gateway",
        ),
        pytest.param(
            "        port: 6379\n",
            "        port: 6379\n        nodePort: 30080\n",
            "nodePort: 30080",
            r"services\[0\]\.ports\[0\]\.nodePort: a ClusterIP Service has no nodePort",
            id="node-port-on-cluster-ip",
        ),
    ],
)
def test_validation_errors_name_file_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str, expected: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    path = write(tmp_path, "bad", text)
    message = error_for(path)
    assert message.startswith(f"{path}:{line_of(text, needle)}: "), message
    assert re.search(expected, message), message


def test_missing_required_key_points_at_its_mapping(tmp_path: Path) -> None:
    text = BASE.replace("    underlayIP: 192.168.58.12\n", "")
    path = write(tmp_path, "bad", text)
    line = line_of(text, "- name: node-2")
    assert error_for(path) == f"{path}:{line}: nodes[1]: missing required key 'underlayIP'"


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace("    name: redis-0\n", "    name: redis-0\n    name: redis-1\n")
    path = write(tmp_path, "bad", text)
    message = error_for(path)
    assert message == f"{path}:{line_of(text, 'name: redis-1')}: pods[0].name: duplicate key"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = BASE + "traffic: [\n"
    path = write(tmp_path, "bad", text)
    message = error_for(path)
    assert message.startswith(f"{path}:{len(text.splitlines()) + 1}: invalid YAML:"), message


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(
            "{kind: stale-real-server, service: default/nope, port: 6379, staleTargetPort: 80}",
            r"faults\[0\]\.service: no such Service \(services: default/redis\)",
            id="missing-service",
        ),
        pytest.param(
            "{kind: stale-real-server, service: default/redis, port: 80, staleTargetPort: 80}",
            r"faults\[0\]\.port: default/redis has no TCP port 80",
            id="missing-port",
        ),
        pytest.param(
            "{kind: sysctl, node: node-4, key: net.ipv4.conf.all.rp_filter, value: 1}",
            r"faults\[0\]\.node: no such node",
            id="sysctl-missing-node",
        ),
        pytest.param(
            "{kind: foreign-virtual-server, node: node-9, address: 192.168.58.100, port: 443,"
            " realServer: 192.168.58.11, realPort: 8443}",
            r"faults\[0\]\.node: no such node",
            id="foreign-virtual-server-missing-node",
        ),
        pytest.param(
            "{kind: foreign-virtual-server, node: node-1, address: nowhere, port: 443,"
            " realServer: 192.168.58.11, realPort: 8443}",
            r"faults\[0\]\.address: ",
            id="foreign-virtual-server-bad-address",
        ),
        pytest.param(
            "{kind: reboot, node: node-1}",
            r"faults\[0\]\.kind: expected one of stale-real-server, sysctl,"
            r" conntrack-timeouts-unapplied, foreign-virtual-server \(got 'reboot'\)",
            id="unknown-kind",
        ),
    ],
)
def test_fault_cross_references(tmp_path: Path, fault: str, expected: str) -> None:
    text = BASE + f"faults:\n  - {fault}\n"
    path = write(tmp_path, "bad", text)
    message = error_for(path)
    assert message.startswith(f"{path}:{len(text.splitlines())}: "), message
    assert re.search(expected, message), message


def test_traffic_needs_a_proxied_tcp_port(tmp_path: Path) -> None:
    text = BASE + "traffic:\n  - {from: client, to: default/redis:80, connections: 3}\n"
    path = write(tmp_path, "bad", text)
    assert error_for(path) == (
        f"{path}:{len(text.splitlines())}: traffic[0].to: default/redis has no TCP port 80"
        " (got 'default/redis:80')"
    )


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    write(tmp_path, "parent", BASE + "kubeProxy: {tcpFinTimeout: 30s, syncPeriod: 1m}\n")
    child = write(
        tmp_path,
        "child",
        "extends: parent\n"
        "kubeProxy: {tcpFinTimeout: 0s}\n"
        "pods:\n"
        "  - {namespace: default, name: redis-1, node: node-1, ip: 10.244.1.5}\n",
    )
    scenario = load_scenario(str(child))
    assert scenario.name == "child"
    assert scenario.description == "a small cluster"
    assert scenario.kube_proxy.tcp_fin_timeout == 0
    assert scenario.kube_proxy.sync_period == 60
    assert [pod.name for pod in scenario.pods] == ["redis-1"]


def test_errors_in_a_merged_value_point_at_the_file_that_wrote_it(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent", BASE)
    child = write(tmp_path, "child", "extends: parent\nkubeProxy:\n  tcpFinTimeout: 30\n")
    assert error_for(child) == (
        f"{child}:3: kubeProxy.tcpFinTimeout: expected a Go duration in whole seconds"
        ' (e.g. "30s", "15m", "0s") (got 30)'
    )
    broken_parent = BASE.replace("    node: node-2\n", "    node: node-9\n")
    parent.write_text(broken_parent)
    child.write_text("extends: parent\nkubeProxy:\n  tcpFinTimeout: 30s\n")
    assert error_for(child).startswith(f"{parent}:{line_of(broken_parent, 'node: node-9')}: ")


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a", "extends: b\n")
    path = write(tmp_path, "b", "extends: a\n")
    assert "extends: scenarios extend each other in a cycle" in error_for(path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("0s", 0),
        ("30s", 30),
        ("15m", 900),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("500ms", 0.5),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "s", "3x", "1m 2s", "-5s"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(text)}$"):
        parse_go_duration(text)


def test_bad_fault_names_file_line_and_choices(tmp_path: Path) -> None:
    text = BASE.replace(
        "    podCIDR: 10.244.2.0/24\n", "    podCIDR: 10.244.2.0/24\n    fault: flaky\n"
    )
    path = write(tmp_path, "bad", text)
    assert error_for(path).startswith(
        f"{path}:{line_of(text, 'fault')}: nodes[1].fault: expected one of sshd-hang, "
        "port-closed, cut-output, no-ipvs, sudo-password"
    )


# --- bulk: generated Services (the big scenario) -------------------------------------------------

BULK = """\
bulk:
  - count: 3
    namespace: default
    name: app
    clusterIPs: 10.100.0.0/29
    selector: {app: redis}
    ports: [{name: redis, port: 6379}]
  - count: 2
    namespace: default
    name: edge
    type: NodePort
    firstNodePort: 31000
    clusterIPs: 10.101.0.0/29
    selector: {app: redis}
    ports: [{name: a, port: 80, targetPort: 6379}, {name: b, port: 53, protocol: UDP}]
"""


def test_bulk_generates_numbered_services_after_the_written_ones(tmp_path: Path) -> None:
    scenario = load_scenario(str(write(tmp_path, "bulk", BASE + BULK)))
    names = [f"{s.namespace}/{s.name}" for s in scenario.services]
    assert names == [
        "default/redis",
        "default/app-1",
        "default/app-2",
        "default/app-3",
        "default/edge-1",
        "default/edge-2",
    ]
    assert [s.cluster_ip for s in scenario.services[1:4]] == [
        IPv4Address("10.100.0.1"),
        IPv4Address("10.100.0.2"),
        IPv4Address("10.100.0.3"),
    ]
    edge = scenario.service("default", "edge-2")
    assert edge.type is ServiceType.NODE_PORT
    assert [(p.port, p.protocol, p.node_port) for p in edge.ports] == [
        (80, Protocol.TCP, 31002),
        (53, Protocol.UDP, 31003),
    ]
    assert scenario.service("default", "app-1").ports[0].node_port is None


def test_big_is_healthy_with_two_thousand_services_and_udp_traffic() -> None:
    big, healthy = load_scenario("big"), load_scenario("healthy")
    generated = big.services[len(healthy.services) :]
    assert big.services[: len(healthy.services)] == healthy.services
    assert len(generated) == 2000
    assert big.nodes == healthy.nodes
    assert big.pods == healthy.pods
    assert big.faults == ()
    assert {s.name.rsplit("-", 1)[0] for s in generated} == {"app", "edge", "dns"}
    assert big.service("default", "app-0001").cluster_ip == IPv4Address("10.100.0.1")
    node_ports = [p.node_port for s in generated for p in s.ports if p.node_port is not None]
    assert node_ports == list(range(31000, 31100))
    assert big.traffic == (Traffic("client", "default", "dns-001", 53, 3000, Protocol.UDP),)
    assert big.kube_proxy.udp_timeout == 900  # UDP entries outlive a bench run


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        pytest.param(
            "  - count: 3\n",
            "  - count: 5001\n",
            "count: 5001",
            r"bulk\[0\]\.count: expected an integer 1-5000 \(got 5001\)",
            id="count-too-large",
        ),
        pytest.param(
            "    clusterIPs: 10.100.0.0/29\n",
            "    clusterIPs: 10.100.0.0/31\n",
            "clusterIPs: 10.100.0.0/31",
            r"bulk\[0\]\.clusterIPs: has 2 host addresses, fewer than count 3",
            id="too-few-cluster-ips",
        ),
        pytest.param(
            "  - count: 3\n    namespace: default\n    name: app\n    clusterIPs: 10.100.0.0/29\n",
            "  - count: 30\n    namespace: default\n    name: app\n    clusterIPs: 10.96.0.0/24\n",
            "clusterIPs: 10.96.0.0/24",
            r"bulk\[0\]\.clusterIPs: address already used by services\[0\]\.clusterIP",
            id="cluster-ip-taken",
        ),
        pytest.param(
            "    clusterIPs: 10.101.0.0/29\n",
            "    clusterIPs: 10.100.0.0/29  # overlaps\n",
            "# overlaps",
            r"bulk\[1\]\.clusterIPs: address already used by bulk\[0\]\.clusterIPs",
            id="groups-overlap",
        ),
        pytest.param(
            "    name: edge\n",
            "    name: app  # again\n",
            "# again",
            r"bulk\[1\]\.name: default/app-1 is already defined at bulk\[0\]",
            id="name-taken",
        ),
        pytest.param(
            "    ports: [{name: redis, port: 6379}]\n",
            "    ports: [{name: redis, port: 6379, nodePort: 30001}]\n",
            "nodePort: 30001",
            r"bulk\[0\]\.ports\[0\]\.nodePort: a bulk group's nodePorts are allocated from",
            id="node-port-written",
        ),
        pytest.param(
            "    name: app\n",
            "    name: app\n    firstNodePort: 30500\n",
            "firstNodePort: 30500",
            r"bulk\[0\]\.firstNodePort: only a NodePort group has nodePorts",
            id="first-node-port-on-cluster-ip",
        ),
        pytest.param(
            "    firstNodePort: 31000\n",
            "    firstNodePort: 32765\n",
            "firstNodePort: 32765",
            r"bulk\[1\]\.firstNodePort: 4 nodePorts from 32765 run past 32767",
            id="node-ports-overflow",
        ),
        pytest.param(
            "    type: NodePort\n",
            "    type: LoadBalancer\n",
            "type: LoadBalancer",
            r"bulk\[1\]\.type: expected one of ClusterIP, NodePort",
            id="bad-type",
        ),
        pytest.param(
            "    selector: {app: redis}\n",
            "    selecter: {app: redis}\n",
            "selecter",
            r"bulk\[0\]\.selecter: unknown key \(expected one of: count, namespace, name",
            id="unknown-key",
        ),
    ],
)
def test_bulk_errors_name_file_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str, expected: str
) -> None:
    assert old in BULK
    text = BASE + BULK.replace(old, new, 1)
    path = write(tmp_path, "bad", text)
    message = error_for(path)
    assert message.startswith(f"{path}:{line_of(text, needle)}: "), message
    assert re.search(expected, message), message


def test_bulk_node_ports_cannot_reuse_a_written_one(tmp_path: Path) -> None:
    text = BASE.replace(
        "    clusterIP: 10.96.0.20\n", "    type: NodePort\n    clusterIP: 10.96.0.20\n"
    ).replace("        port: 6379\n", "        port: 6379\n        nodePort: 31002\n")
    text += BULK
    path = write(tmp_path, "bad", text)
    assert error_for(path) == (
        f"{path}:{line_of(text, 'firstNodePort')}: bulk[1].firstNodePort: default/edge-2 would"
        " get nodePort 31002, already used by services[0].ports[0].nodePort (got 31000)"
    )


def test_traffic_protocol_is_tcp_or_udp(tmp_path: Path) -> None:
    text = BASE + "traffic:\n  - {from: client, to: default/redis:6379, protocol: SCTP,"
    text += " connections: 3}\n"
    path = write(tmp_path, "bad", text)
    assert error_for(path) == (
        f"{path}:{len(text.splitlines())}: traffic[0].protocol: expected one of TCP, UDP"
        " (got 'SCTP')"
    )
