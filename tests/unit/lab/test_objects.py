"""API objects: what the stand-in API server serves must read like a real cluster's objects."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from fixtures.lab.objects import api_objects, go_duration
from fixtures.lab.scenario import load_scenario


def named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["metadata"]["name"] == name)


def slices_of(objects: dict[str, list[dict[str, Any]]], service: str) -> list[dict[str, Any]]:
    return [
        item
        for item in objects["endpointslices"]
        if item["metadata"]["labels"]["kubernetes.io/service-name"] == service
    ]


@pytest.fixture(scope="module")
def healthy() -> dict[str, list[dict[str, Any]]]:
    return api_objects(load_scenario("healthy"))


def test_resources_and_kinds(healthy: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {resource: {item["kind"] for item in items} for resource, items in healthy.items()}
    assert kinds == {
        "services": {"Service"},
        "endpointslices": {"EndpointSlice"},
        "nodes": {"Node"},
        "configmaps": {"ConfigMap"},
        "daemonsets": {"DaemonSet"},
    }


def test_named_target_port_is_resolved_in_the_web_slice(
    healthy: dict[str, list[dict[str, Any]]],
) -> None:
    (web,) = slices_of(healthy, "web")
    assert web["metadata"]["name"].startswith("web-")
    assert len(web["metadata"]["name"]) == len("web-") + 5
    assert web["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert named(healthy["services"], "web")["spec"]["ports"][0]["targetPort"] == "http"


def test_unready_pod_is_listed_not_ready(healthy: dict[str, list[dict[str, Any]]]) -> None:
    (web,) = slices_of(healthy, "web")
    conditions = {e["targetRef"]["name"]: e["conditions"] for e in web["endpoints"]}
    assert conditions["web-3"] == {"ready": False, "serving": False, "terminating": False}
    assert conditions["web-1"] == {"ready": True, "serving": True, "terminating": False}
    web_3 = next(e for e in web["endpoints"] if e["targetRef"]["name"] == "web-3")
    assert web_3["addresses"] == ["10.244.2.11"]
    assert web_3["nodeName"] == "node-2"


def test_slice_labels_and_owner(healthy: dict[str, list[dict[str, Any]]]) -> None:
    (redis,) = slices_of(healthy, "redis")
    assert redis["apiVersion"] == "discovery.k8s.io/v1"
    assert redis["addressType"] == "IPv4"
    assert redis["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslice-controller.k8s.io"
    )
    owner = redis["metadata"]["ownerReferences"][0]
    assert owner["uid"] == named(healthy["services"], "redis")["metadata"]["uid"]


def test_headless_has_a_slice_and_external_name_none(
    healthy: dict[str, list[dict[str, Any]]],
) -> None:
    (headless,) = slices_of(healthy, "redis-headless")
    assert headless["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert [e["targetRef"]["name"] for e in headless["endpoints"]] == ["redis-0"]
    assert slices_of(healthy, "external-db") == []
    headless_spec = named(healthy["services"], "redis-headless")["spec"]
    assert (headless_spec["clusterIP"], headless_spec["clusterIPs"]) == ("None", ["None"])
    external = named(healthy["services"], "external-db")["spec"]
    assert external == {
        "type": "ExternalName",
        "sessionAffinity": "None",
        "externalName": "db.example.com",
    }


def test_service_specs(healthy: dict[str, list[dict[str, Any]]]) -> None:
    web = named(healthy["services"], "web")
    assert web["spec"]["externalTrafficPolicy"] == "Cluster"
    assert web["spec"]["ports"][0]["nodePort"] == 30080
    redis = named(healthy["services"], "redis")
    assert "externalTrafficPolicy" not in redis["spec"]
    assert redis["spec"]["ipFamilies"] == ["IPv4"]
    assert redis["spec"]["ipFamilyPolicy"] == "SingleStack"
    assert redis["metadata"]["generation"] == 1


def test_stale_real_server_is_not_in_the_api(healthy: dict[str, list[dict[str, Any]]]) -> None:
    stale = api_objects(load_scenario("stale-real-server"))
    redis = named(stale["services"], "redis")
    assert [(p["port"], p["targetPort"]) for p in redis["spec"]["ports"]] == [(6379, 6379)]
    assert slices_of(stale, "redis")[0]["ports"] == [
        {"name": "redis", "port": 6379, "protocol": "TCP"}
    ]
    assert redis["metadata"]["generation"] == 2
    healthy_redis = named(healthy["services"], "redis")
    assert int(redis["metadata"]["resourceVersion"]) > int(
        healthy_redis["metadata"]["resourceVersion"]
    )
    assert isinstance(redis["metadata"]["resourceVersion"], str)


def test_objects_are_deterministic() -> None:
    assert api_objects(load_scenario("healthy")) == api_objects(load_scenario("healthy"))


def test_nodes(healthy: dict[str, list[dict[str, Any]]]) -> None:
    node = named(healthy["nodes"], "node-2")
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-2"
    assert node["spec"] == {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]}
    assert {"address": "192.168.58.12", "type": "InternalIP"} in node["status"]["addresses"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert node["status"]["nodeInfo"]["kernelVersion"] == "6.1.0-lab"


def test_kube_proxy_config_map(healthy: dict[str, list[dict[str, Any]]]) -> None:
    (config_map,) = healthy["configmaps"]
    assert (config_map["metadata"]["namespace"], config_map["metadata"]["name"]) == (
        "kube-system",
        "kube-proxy",
    )
    config = yaml.safe_load(config_map["data"]["config.conf"])
    assert config["kind"] == "KubeProxyConfiguration"
    assert config["mode"] == "ipvs"
    assert config["ipvs"]["tcpFinTimeout"] == "30s"
    assert config["ipvs"]["scheduler"] == "rr"
    assert config["nodePortAddresses"] == ["192.168.58.0/24"]
    assert config["conntrack"]["maxPerCore"] == 0  # the nodes cannot write nf_conntrack_max


def test_tcpfin_default_config_says_zero() -> None:
    (config_map,) = api_objects(load_scenario("tcpfin-default"))["configmaps"]
    assert yaml.safe_load(config_map["data"]["config.conf"])["ipvs"]["tcpFinTimeout"] == "0s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (900, "15m0s"), (3600, "1h0m0s"), (5430, "1h30m30s")],
)
def test_go_duration(seconds: int, text: str) -> None:
    assert go_duration(seconds) == text
