"""Scenario loading: shipped scenarios load; every mistake names its file, line and field."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from fixtures.lab.scenario import (
    SCENARIO_DIR,
    Protocol,
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
    "healthy",
    "healthy-old-node",
    "kube-proxy-rules",
    "rp-filter-strict",
    "seed-incidents",
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
    assert [node.name for node in scenario.nodes] == ["node-1", "node-2", "node-3"]
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
    assert len(load_scenario("seed-incidents").faults) == 3


def test_bad_userland_names_file_line_and_choices(tmp_path: Path) -> None:
    text = BASE.replace(
        "    podCIDR: 10.244.2.0/24\n", "    podCIDR: 10.244.2.0/24\n    userland: centos7\n"
    )
    path = write(tmp_path, "bad", text)
    assert error_for(path).startswith(
        f"{path}:{line_of(text, 'userland')}: nodes[1].userland: expected one of modern, old"
    )


def test_unknown_name_lists_the_known_ones() -> None:
    known = r".*healthy, healthy-old-node, kube-proxy-rules, rp-filter-strict"
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
            "{kind: reboot, node: node-1}",
            r"faults\[0\]\.kind: expected one of stale-real-server, sysctl \(got 'reboot'\)",
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
