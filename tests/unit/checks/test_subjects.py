"""Subjects: the Service ports kube-proxy programs, the interfaces rp_filter must not drop on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vipcheck.checks.rp_filter import rp_filter_interfaces
from vipcheck.checks.scopes import service_port_subjects
from vipcheck.facts import ClusterFacts, Facts, MissingInput, NodeFacts
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import L4Protocol
from vipcheck.snapshot import NodeSnapshot, load_snapshot

SEED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded" / "seed-incidents"


def test_service_ports_skip_external_name_and_headless() -> None:
    facts = Facts.from_snapshot(load_snapshot(SEED))
    assert service_port_subjects(facts.cluster.services) == [
        ServicePortKey("default/api", 80, L4Protocol.TCP),
        ServicePortKey("default/redis", 6379, L4Protocol.TCP),
        ServicePortKey("default/web", 80, L4Protocol.TCP),
    ]


def test_service_ports_skip_services_another_proxy_owns() -> None:
    snapshot = load_snapshot(SEED)
    services = json.loads(snapshot.cluster["services.json"])
    for service in services["items"]:
        if service["metadata"]["name"] == "api":
            service["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "other"}
    cluster = ClusterFacts({**snapshot.cluster, "services.json": json.dumps(services)})
    subjects = {subject.service_key for subject in service_port_subjects(cluster.services)}
    assert subjects == {"default/redis", "default/web"}


@pytest.mark.parametrize(
    ("node", "expected"), [("node-1", ["tunl0", "eth0"]), ("node-2", ["tunl0", "eth0"])]
)
def test_recorded_nodes_guard_the_tunnel_and_the_internal_ip_interface(
    node: str, expected: list[str]
) -> None:
    facts = Facts.from_snapshot(load_snapshot(SEED))
    assert rp_filter_interfaces(facts.nodes[node], facts.cluster) == expected


def test_without_nodes_json_every_real_interface_with_a_global_address_is_guarded() -> None:
    snapshot = load_snapshot(SEED)
    cluster = {name: text for name, text in snapshot.cluster.items() if name != "nodes.json"}
    facts = Facts.from_snapshot(snapshot)
    # node-1 also has eth1, its client-facing interface, which only the fallback picks.
    assert rp_filter_interfaces(facts.nodes["node-1"], ClusterFacts(cluster)) == [
        "tunl0",
        "eth0",
        "eth1",
    ]


def link(name: str, index: int, kind: str | None, *addresses: str) -> tuple[Any, Any]:
    """One interface as `ip -j -d link` and `ip -j addr` print it."""
    linked = {"ifindex": index, "ifname": name, "flags": ["UP"], "operstate": "UP"}
    if kind:
        linked["linkinfo"] = {"info_kind": kind}
    addr_info = [{"local": a.split("/")[0], "prefixlen": int(a.split("/")[1])} for a in addresses]
    return linked, {**linked, "addr_info": addr_info}


def node_with(*interfaces: tuple[Any, Any]) -> NodeFacts:
    files = {
        "ip-link.json": json.dumps([linked for linked, _ in interfaces]),
        "ip-addr.json": json.dumps([addressed for _, addressed in interfaces]),
    }
    return NodeFacts(NodeSnapshot("node-9", files))


def test_interface_selection_excludes_loopback_kube_ipvs0_and_pod_side_veths() -> None:
    node = node_with(
        link("lo", 1, None, "127.0.0.1/8"),
        link("kube-ipvs0", 2, "dummy", "10.96.0.1/32"),
        link("cali1234", 3, "veth", "169.254.1.1/32"),
        link("veth99", 4, "veth", "10.88.0.1/16"),
        link("lxc_health", 5, "veth", "10.0.0.9/32"),
        link("flannel.1", 6, None, "10.244.0.0/32"),
        link("wg0", 7, "wireguard", "10.99.0.1/24"),
        link("vxlan.calico", 8, "vxlan", "10.244.9.0/32"),
        link("eth0", 9, None, "192.0.2.10/24", "fe80::1/64"),
        link("docker-dummy", 10, "dummy", "192.0.2.200/32"),
    )
    assert rp_filter_interfaces(node, ClusterFacts({})) == [
        "flannel.1",
        "wg0",
        "vxlan.calico",
        "eth0",
    ]


def test_interfaces_not_gathered_are_missing_input() -> None:
    with pytest.raises(MissingInput, match=r"ip-addr\.json"):
        rp_filter_interfaces(NodeFacts(NodeSnapshot("node-9", {})), ClusterFacts({}))
