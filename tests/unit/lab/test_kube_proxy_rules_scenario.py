"""The kube-proxy-rules scenario: its API objects and what the lab programs, rule by rule."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

import pytest

from fixtures.lab.guest_script import kube_ipvs0_addresses, setup_script
from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import Scenario, TrafficDistribution, load_scenario
from fixtures.lab.service_endpoints import RealServer, VirtualServiceKind, expected_virtual_services

EXTERNAL_IP = IPv4Address("10.10.0.1")  # node-1's client-side gateway address


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario("kube-proxy-rules")


def servers(scenario: Scenario, node: str, service: str, kind: VirtualServiceKind) -> set[str]:
    return {
        f"{rs.address}:{rs.port}"
        for vs in expected_virtual_services(scenario, scenario.node(node))
        if vs.service.name == service and vs.kind is kind
        for rs in vs.real_servers
    }


def test_objects_carry_zones_hints_annotation_and_external_ip(scenario: Scenario) -> None:
    objects = api_objects(scenario)
    zones = {
        node["metadata"]["name"]: node["metadata"]["labels"].get("topology.kubernetes.io/zone")
        for node in objects["nodes"]
    }
    assert zones == {"node-1": "zone-a", "node-2": "zone-b", "node-3": "zone-a"}
    (zoned,) = [s for s in objects["endpointslices"] if s["metadata"]["name"].startswith("zoned-")]
    assert {e["addresses"][0]: e["hints"] for e in zoned["endpoints"]} == {
        "10.244.1.20": {"forZones": [{"name": "zone-a"}]},
        "10.244.2.21": {"forZones": [{"name": "zone-b"}]},
    }
    # The web Service asks for no hints, so its endpoints have a zone but no hints.
    (web,) = [s for s in objects["endpointslices"] if s["metadata"]["name"].startswith("web-")]
    assert all("hints" not in e and "zone" in e for e in web["endpoints"])
    services = {s["metadata"]["name"]: s for s in objects["services"]}
    assert services["ext-on-node"]["spec"]["externalIPs"] == ["10.10.0.1"]
    assert services["zoned"]["metadata"]["annotations"] == {
        "service.kubernetes.io/topology-mode": "Auto"
    }


def test_local_policy_falls_back_to_node_2_s_pod_where_there_is_no_local_one(
    scenario: Scenario,
) -> None:
    node_port = VirtualServiceKind.NODE_PORT
    for node in ("node-1", "node-2", "node-3"):
        assert servers(scenario, node, "local-only", node_port) == {"10.244.2.20:8080"}, node


def test_external_ip_on_node_1_is_served_everywhere_and_bound_only_elsewhere(
    scenario: Scenario,
) -> None:
    for node in ("node-1", "node-2", "node-3"):
        assert servers(scenario, node, "ext-on-node", VirtualServiceKind.EXTERNAL_IP) == {
            "10.244.3.20:8080"
        }
    assert EXTERNAL_IP not in kube_ipvs0_addresses(scenario, scenario.node("node-1"))
    assert EXTERNAL_IP in kube_ipvs0_addresses(scenario, scenario.node("node-2"))
    script = setup_script(scenario)
    assert script.count("addr add 10.10.0.1/32 dev kube-ipvs0") == 2


def test_zone_hints_keep_each_zone_s_pod(scenario: Scenario) -> None:
    cluster_ip = VirtualServiceKind.CLUSTER_IP
    assert servers(scenario, "node-1", "zoned", cluster_ip) == {"10.244.1.20:8080"}
    assert servers(scenario, "node-2", "zoned", cluster_ip) == {"10.244.2.21:8080"}
    assert servers(scenario, "node-3", "zoned", cluster_ip) == {"10.244.1.20:8080"}


def test_without_the_annotation_kube_proxy_1_30_ignores_the_hints(scenario: Scenario) -> None:
    """trafficDistribution alone needs the ServiceTrafficDistribution gate, off in 1.30."""
    services = tuple(
        dataclasses.replace(
            s, annotations=(), traffic_distribution=TrafficDistribution.PREFER_CLOSE
        )
        if s.name == "zoned"
        else s
        for s in scenario.services
    )
    field_only = dataclasses.replace(scenario, services=services)
    both = {"10.244.1.20:8080", "10.244.2.21:8080"}
    assert servers(field_only, "node-2", "zoned", VirtualServiceKind.CLUSTER_IP) == both
    assert RealServer(IPv4Address("10.244.2.21"), 8080) in next(
        vs.real_servers
        for vs in expected_virtual_services(field_only, field_only.node("node-1"))
        if vs.service.name == "zoned"
    )
