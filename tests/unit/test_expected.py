"""Expected IPVS state: what a correct kube-proxy programs per node, from the lab and by hand."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario, scenario_names
from fixtures.lab.service_endpoints import (
    expected_virtual_services as lab_expected_virtual_services,
)
from fixtures.lab.service_endpoints import node_local_addresses
from vipcheck.expected import (
    SCHEDULER_PROBE,
    ExpectedVirtualService,
    Explained,
    Explanation,
    Rule,
    VirtualServiceKind,
    excluding_cidr,
    expected_cluster_ips,
    expected_virtual_services,
    explain_virtual_services,
    node_port_addresses,
)
from vipcheck.model.cluster import (
    AddressType,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    IPAddress,
    KubeProxyConfig,
    KubeRelease,
    Node,
    NodePortKeyword,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse.kube import (
    parse_endpoint_slices,
    parse_kube_proxy_config,
    parse_kube_release,
    parse_nodes,
    parse_services,
)

RECORDED = Path(__file__).resolve().parents[2] / "fixtures/recorded/seed-incidents/cluster"
TCP = L4Protocol.TCP


def ip(text: str) -> IPAddress:
    return ip_address(text)


def rs(*servers: str) -> frozenset[HostPort]:
    """Real servers from "address:port" (IPv6 as "[addr]:port")."""
    result = set()
    for server in servers:
        address, _, port = server.rpartition(":")
        result.add(HostPort(ip(address.strip("[]")), int(port)))
    return frozenset(result)


def by_key(
    virtual_services: Sequence[ExpectedVirtualService],
) -> dict[tuple[str, IPAddress, int], ExpectedVirtualService]:
    keyed = {vs.key: vs for vs in virtual_services}
    assert len(keyed) == len(virtual_services), "a VS is expected twice"
    return keyed


def recorded_cluster() -> Cluster:
    def text(name: str) -> str:
        return (RECORDED / name).read_text()

    return Cluster(
        services=parse_services(text("services.json"), "services.json"),
        endpoint_slices=parse_endpoint_slices(text("endpointslices.json"), "endpointslices.json"),
        nodes=parse_nodes(text("nodes.json"), "nodes.json"),
        kube_proxy=parse_kube_proxy_config(text("kube-proxy.json"), "kube-proxy.json"),
    )


# node-1's own addresses outside kube-ipvs0 in the lab: underlay, pod gateway, client gateway.
NODE_1_ADDRESSES = (ip("192.168.58.11"), ip("10.244.1.0"), ip("169.254.1.1"), ip("10.10.0.1"))


# --- the recorded seed-incidents cluster --------------------------------------------------------


@pytest.fixture(scope="module")
def node_1() -> dict[tuple[str, IPAddress, int], ExpectedVirtualService]:
    return by_key(expected_virtual_services(recorded_cluster(), "node-1", NODE_1_ADDRESSES))


def test_recorded_node_1_expects_exactly_these_virtual_services(
    node_1: dict[tuple[str, IPAddress, int], ExpectedVirtualService],
) -> None:
    assert set(node_1) == {
        ("TCP", ip("10.96.0.20"), 6379),
        ("TCP", ip("10.96.0.30"), 80),
        ("TCP", ip("10.96.0.40"), 80),
        ("TCP", ip("192.168.58.11"), 30080),
    }
    assert {vs.service_key for vs in node_1.values()} == {
        "default/redis",
        "default/web",
        "default/api",
    }


def test_recorded_redis_expects_6379_not_the_stale_80(
    node_1: dict[tuple[str, IPAddress, int], ExpectedVirtualService],
) -> None:
    redis = node_1["TCP", ip("10.96.0.20"), 6379]
    assert redis.real_servers == rs("10.244.3.10:6379")
    assert HostPort(ip("10.244.3.10"), 80) not in redis.real_servers
    assert redis.kind is VirtualServiceKind.CLUSTER_IP
    assert str(redis.port_key) == "default/redis:6379/TCP"
    assert (redis.scheduler, redis.persistent_timeout) == ("rr", None)


def test_recorded_web_resolves_named_target_port_and_drops_unready(
    node_1: dict[tuple[str, IPAddress, int], ExpectedVirtualService],
) -> None:
    web = node_1["TCP", ip("10.96.0.30"), 80]
    assert web.real_servers == rs("10.244.1.10:8080", "10.244.3.11:8080")
    assert web.port_name == "http"
    node_port = node_1["TCP", ip("192.168.58.11"), 30080]
    assert node_port.kind is VirtualServiceKind.NODE_PORT
    assert str(node_port.port_key) == "default/web:80/TCP"
    assert node_port.real_servers == web.real_servers


def test_recorded_kube_ipvs0_addresses() -> None:
    assert expected_cluster_ips(recorded_cluster().services) == {
        ip("10.96.0.20"),
        ip("10.96.0.30"),
        ip("10.96.0.40"),
    }


def test_recorded_orphan_explanations() -> None:
    explanations = explain_virtual_services(recorded_cluster())
    assert explanations.explain(TCP, ip("10.96.0.20"), 6379) == Explained(
        Explanation.SERVICE, "default/redis:6379/TCP"
    )
    assert explanations.explain(TCP, ip("172.17.0.1"), 30080) == Explained(
        Explanation.NODE_PORT, "default/web:80/TCP nodePort"
    )
    probe = explanations.explain(*SCHEDULER_PROBE)
    assert probe is not None
    assert probe.why is Explanation.SCHEDULER_PROBE
    # A stale port, a deleted Service's VIP, the wrong protocol: orphans.
    assert explanations.explain(TCP, ip("10.96.0.20"), 80) is None
    assert explanations.explain(TCP, ip("10.96.0.99"), 80) is None
    assert explanations.explain(L4Protocol.UDP, ip("10.96.0.20"), 6379) is None
    # The headless Service has no VIP to explain.
    assert explanations.explain(TCP, ip("10.244.3.10"), 6379) is None


@pytest.mark.parametrize("scenario_name", scenario_names())
def test_agrees_with_what_the_lab_programs(scenario_name: str) -> None:
    """The lab's setup script and vipcheck must agree on a correct kube-proxy, node by node."""
    scenario = load_scenario(scenario_name)
    objects = api_objects(scenario)

    def listed(resource: str) -> str:
        return json.dumps({"kind": "List", "items": objects[resource]})

    cluster = Cluster(
        services=parse_services(listed("services"), "services"),
        endpoint_slices=parse_endpoint_slices(listed("endpointslices"), "endpointslices"),
        nodes=parse_nodes(listed("nodes"), "nodes"),
        kube_proxy=parse_kube_proxy_config(json.dumps(objects["configmaps"][0]), "kube-proxy"),
    )
    for node in scenario.nodes:
        ours = {
            vs.key: vs.real_servers
            for vs in expected_virtual_services(
                cluster, node.name, node_local_addresses(scenario, node)
            )
        }
        lab = {
            (str(vs.service_port.protocol), vs.address, vs.port): frozenset(
                HostPort(server.address, server.port) for server in vs.real_servers
            )
            for vs in lab_expected_virtual_services(scenario, node)
        }
        assert ours == lab, node.name
        assert ours, f"{node.name}: no VS at all makes this comparison vacuous"


# --- hand-written clusters ----------------------------------------------------------------------

HTTP = ServicePort("http", 80, TCP, "http", node_port=30080)


WEB = Service(
    "default", "web", ServiceType.NODE_PORT, cluster_ips=(ip("10.96.0.30"),), ports=(HTTP,)
)


def web_service(**changes: Any) -> Service:
    """default/web, a NodePort Service on 10.96.0.30:80 (nodePort 30080), with changes."""
    return replace(WEB, **changes)


def web_slice(
    *endpoints: Endpoint,
    address_type: AddressType = AddressType.IPV4,
    ports: tuple[EndpointPort, ...] = (EndpointPort("http", 8080, TCP),),
    name: str = "web-abcde",
) -> EndpointSlice:
    return EndpointSlice("default", name, "web", address_type, endpoints, ports)


def endpoint(
    address: str,
    node: str,
    *,
    ready: bool = True,
    serving: bool = True,
    terminating: bool = False,
) -> Endpoint:
    return Endpoint((ip(address),), ready, serving, terminating, node)


ON_NODE_1 = endpoint("10.244.1.10", "node-1")
ON_NODE_2 = endpoint("10.244.2.10", "node-2")
NODE_1 = Node("node-1", internal_ips=(ip("192.168.58.11"),))


def release(version: str | None) -> KubeRelease | None:
    return None if version is None else parse_kube_release(version)


def expected(
    services: Sequence[Service],
    slices: Sequence[EndpointSlice],
    *,
    config: KubeProxyConfig | None = None,
    addresses: Sequence[IPAddress] = (ip("192.168.58.11"),),
    node: Node = NODE_1,
) -> dict[tuple[str, IPAddress, int], ExpectedVirtualService]:
    cluster = Cluster(tuple(services), tuple(slices), (node,), config)
    return by_key(expected_virtual_services(cluster, "node-1", addresses))


CLUSTER_IP_KEY = ("TCP", ip("10.96.0.30"), 80)
NODE_PORT_KEY = ("TCP", ip("192.168.58.11"), 30080)


@pytest.mark.parametrize(
    ("service", "cluster_ip_servers", "node_port_servers"),
    [
        pytest.param(
            web_service(),
            rs("10.244.1.10:8080", "10.244.2.10:8080"),
            rs("10.244.1.10:8080", "10.244.2.10:8080"),
            id="both-cluster",
        ),
        pytest.param(
            web_service(external_traffic_policy=TrafficPolicy.LOCAL),
            rs("10.244.1.10:8080", "10.244.2.10:8080"),
            rs("10.244.1.10:8080"),
            id="etp-local-filters-only-the-node-port",
        ),
        pytest.param(
            web_service(internal_traffic_policy=TrafficPolicy.LOCAL),
            rs("10.244.1.10:8080"),
            rs("10.244.1.10:8080", "10.244.2.10:8080"),
            id="itp-local-filters-only-the-cluster-ip",
        ),
    ],
)
def test_traffic_policies(
    service: Service,
    cluster_ip_servers: frozenset[HostPort],
    node_port_servers: frozenset[HostPort],
) -> None:
    virtual_services = expected([service], [web_slice(ON_NODE_1, ON_NODE_2)])
    assert virtual_services[CLUSTER_IP_KEY].real_servers == cluster_ip_servers
    assert virtual_services[NODE_PORT_KEY].real_servers == node_port_servers


@pytest.mark.parametrize(
    ("version", "node_port_servers", "rule"),
    [
        pytest.param(None, rs("10.244.2.10:8080"), Rule.LOCAL_FALLBACK, id="unknown-falls-back"),
        pytest.param("v1.21.0", rs("10.244.2.10:8080"), Rule.LOCAL_FALLBACK, id="1.21-falls-back"),
        pytest.param("v1.20.15", frozenset(), Rule.NO_LOCAL_ENDPOINT, id="1.20-none"),
    ],
)
def test_etp_local_without_local_endpoint_falls_back_to_cluster_endpoints_from_1_21(
    version: str | None, node_port_servers: frozenset[HostPort], rule: Rule
) -> None:
    """syncEndpoint (kubernetes#97081): local pods keep access; 1.20 programmed no server."""
    node = replace(NODE_1, kube_proxy_version=version, kube_proxy_release=release(version))
    virtual_services = expected(
        [web_service(external_traffic_policy=TrafficPolicy.LOCAL)],
        [web_slice(ON_NODE_2)],
        node=node,
    )
    node_port = virtual_services[NODE_PORT_KEY]
    assert node_port.real_servers == node_port_servers
    assert [because.rule for because in node_port.because] == [rule]
    assert "node-1 has no local endpoint (externalTrafficPolicy Local)" in node_port.why
    assert virtual_services[CLUSTER_IP_KEY].real_servers == rs("10.244.2.10:8080")
    assert virtual_services[CLUSTER_IP_KEY].because == ()


def test_service_without_endpoints_still_gets_its_virtual_services() -> None:
    virtual_services = expected([web_service()], [])
    assert set(virtual_services) == {CLUSTER_IP_KEY, NODE_PORT_KEY}
    assert all(not vs.real_servers for vs in virtual_services.values())


@pytest.mark.parametrize(
    ("endpoints", "servers"),
    [
        pytest.param(
            (
                endpoint("10.244.1.10", "node-1", ready=False, terminating=True),
                endpoint("10.244.2.10", "node-2", ready=False, serving=False, terminating=True),
                endpoint("10.244.3.10", "node-3", ready=False, serving=True, terminating=False),
            ),
            rs("10.244.1.10:8080"),
            id="no-ready-falls-back-to-serving-terminating",
        ),
        pytest.param(
            (
                endpoint("10.244.1.10", "node-1", ready=False, terminating=True),
                endpoint("10.244.2.10", "node-2"),
            ),
            rs("10.244.2.10:8080"),
            id="a-ready-endpoint-wins-over-terminating",
        ),
        pytest.param(
            (endpoint("10.244.1.10", "node-1", ready=False, serving=False, terminating=True),),
            frozenset(),
            id="terminating-not-serving-never",
        ),
    ],
)
def test_terminating_fallback(
    endpoints: tuple[Endpoint, ...], servers: frozenset[HostPort]
) -> None:
    virtual_services = expected([web_service()], [web_slice(*endpoints)])
    assert virtual_services[CLUSTER_IP_KEY].real_servers == servers


def test_etp_local_falls_back_among_local_endpoints() -> None:
    """Remote ready pods do not stop a local serving+terminating pod serving node traffic."""
    local_terminating = endpoint("10.244.1.10", "node-1", ready=False, terminating=True)
    virtual_services = expected(
        [web_service(external_traffic_policy=TrafficPolicy.LOCAL)],
        [web_slice(local_terminating, ON_NODE_2)],
    )
    assert virtual_services[NODE_PORT_KEY].real_servers == rs("10.244.1.10:8080")
    assert virtual_services[CLUSTER_IP_KEY].real_servers == rs("10.244.2.10:8080")


def test_ports_match_by_name_and_protocol_across_slices() -> None:
    dns = Service(
        "kube-system",
        "dns",
        ServiceType.CLUSTER_IP,
        (ip("10.96.0.10"),),
        (
            ServicePort("dns", 53, L4Protocol.UDP, "dns"),
            ServicePort("dns-tcp", 53, TCP, "dns-tcp"),
        ),
    )
    slices = [
        EndpointSlice(
            "kube-system",
            "dns-1",
            "dns",
            AddressType.IPV4,
            (endpoint("10.244.1.5", "node-1"),),
            (EndpointPort("dns", 5353, L4Protocol.UDP), EndpointPort("dns-tcp", 5354, TCP)),
        ),
        # Another Service's slice, and one with the right name but TCP: neither contributes to UDP.
        EndpointSlice(
            "default",
            "dns-2",
            "dns",
            AddressType.IPV4,
            (endpoint("10.244.2.5", "node-2"),),
            (EndpointPort("dns", 53, L4Protocol.UDP),),
        ),
        EndpointSlice(
            "kube-system",
            "dns-3",
            "dns",
            AddressType.IPV4,
            (endpoint("10.244.3.5", "node-3"),),
            (EndpointPort("dns", 53, TCP), EndpointPort("dns-tcp", None, TCP)),
        ),
    ]
    virtual_services = expected([dns], slices)
    assert virtual_services["UDP", ip("10.96.0.10"), 53].real_servers == rs("10.244.1.5:5353")
    assert virtual_services["TCP", ip("10.96.0.10"), 53].real_servers == rs("10.244.1.5:5354")
    assert str(virtual_services["UDP", ip("10.96.0.10"), 53].port_key) == "kube-system/dns:53/UDP"


@pytest.mark.parametrize(
    ("timeout", "expected_timeout"), [(None, 10800), (60, 60)], ids=["default", "custom"]
)
def test_client_ip_affinity_makes_every_vs_persistent(
    timeout: int | None, expected_timeout: int
) -> None:
    fields: dict[str, Any] = {
        "session_affinity": SessionAffinity.CLIENT_IP,
        "external_ips": (ip("203.0.113.5"),),
    }
    if timeout is not None:
        fields["session_affinity_timeout"] = timeout
    virtual_services = expected([web_service(**fields)], [web_slice(ON_NODE_1)])
    assert len(virtual_services) == 3
    assert {vs.persistent_timeout for vs in virtual_services.values()} == {expected_timeout}


def test_no_affinity_is_not_persistent() -> None:
    virtual_services = expected([web_service()], [web_slice(ON_NODE_1)])
    assert {vs.persistent_timeout for vs in virtual_services.values()} == {None}


def test_external_and_load_balancer_addresses_follow_etp() -> None:
    service = web_service(
        type=ServiceType.LOAD_BALANCER,
        external_ips=(ip("203.0.113.5"),),
        lb_ingress_ips=(ip("198.51.100.7"),),
        external_traffic_policy=TrafficPolicy.LOCAL,
    )
    virtual_services = expected([service], [web_slice(ON_NODE_1, ON_NODE_2)])
    kinds = {key: vs.kind for key, vs in virtual_services.items()}
    assert kinds == {
        CLUSTER_IP_KEY: VirtualServiceKind.CLUSTER_IP,
        ("TCP", ip("203.0.113.5"), 80): VirtualServiceKind.EXTERNAL_IP,
        ("TCP", ip("198.51.100.7"), 80): VirtualServiceKind.LOAD_BALANCER,
        NODE_PORT_KEY: VirtualServiceKind.NODE_PORT,
    }
    for key in (("TCP", ip("203.0.113.5"), 80), ("TCP", ip("198.51.100.7"), 80), NODE_PORT_KEY):
        assert virtual_services[key].real_servers == rs("10.244.1.10:8080"), key
    assert expected_cluster_ips((service,)) == {
        ip("10.96.0.30"),
        ip("203.0.113.5"),
        ip("198.51.100.7"),
    }


def test_cluster_ip_type_gets_no_node_port_vs() -> None:
    virtual_services = expected([web_service(type=ServiceType.CLUSTER_IP)], [])
    assert set(virtual_services) == {CLUSTER_IP_KEY}


def test_dual_stack_gets_one_vs_per_family_with_that_family_s_endpoints() -> None:
    service = web_service(
        cluster_ips=(ip("10.96.0.30"), ip("fd00:96::30")),
        external_ips=(ip("2001:db8::5"),),
    )
    slices = [
        web_slice(ON_NODE_1, name="web-v4"),
        web_slice(
            endpoint("fd00:244:1::10", "node-1"),
            address_type=AddressType.IPV6,
            name="web-v6",
        ),
    ]
    virtual_services = expected(
        [service], slices, addresses=(ip("192.168.58.11"), ip("fd00:58::11"))
    )
    assert {key: vs.real_servers for key, vs in virtual_services.items()} == {
        CLUSTER_IP_KEY: rs("10.244.1.10:8080"),
        NODE_PORT_KEY: rs("10.244.1.10:8080"),
        ("TCP", ip("fd00:96::30"), 80): rs("[fd00:244:1::10]:8080"),
        ("TCP", ip("2001:db8::5"), 80): rs("[fd00:244:1::10]:8080"),
        ("TCP", ip("fd00:58::11"), 30080): rs("[fd00:244:1::10]:8080"),
    }


def test_single_stack_service_ignores_other_family_addresses() -> None:
    service = web_service(external_ips=(ip("2001:db8::5"),))
    virtual_services = expected([service], [], addresses=(ip("192.168.58.11"), ip("fd00:58::11")))
    assert set(virtual_services) == {CLUSTER_IP_KEY, NODE_PORT_KEY}
    assert expected_cluster_ips((service,)) == {ip("10.96.0.30")}


@pytest.mark.parametrize(
    "service",
    [
        pytest.param(
            web_service(labels={"service.kubernetes.io/service-proxy-name": "kube-router"}),
            id="service-proxy-name",
        ),
        pytest.param(web_service(type=ServiceType.CLUSTER_IP, cluster_ips=()), id="headless"),
        pytest.param(
            web_service(type=ServiceType.EXTERNAL_NAME, cluster_ips=(), ports=()),
            id="external-name",
        ),
    ],
)
def test_services_kube_proxy_leaves_alone(service: Service) -> None:
    assert expected([service], [web_slice(ON_NODE_1)]) == {}
    assert expected_cluster_ips((service,)) == frozenset()


def test_another_proxys_service_is_explained_not_orphaned() -> None:
    service = web_service(labels={"service.kubernetes.io/service-proxy-name": "kube-router"})
    explained = explain_virtual_services(Cluster(services=(service,))).explain(
        TCP, ip("10.96.0.30"), 80
    )
    assert explained == Explained(
        Explanation.OTHER_PROXY, "default/web:80/TCP (service-proxy-name kube-router)"
    )


@pytest.mark.parametrize(
    ("selectors", "selected"),
    [
        pytest.param((), ("192.168.58.11", "10.0.0.1", "fd00:58::11"), id="empty-selects-all"),
        # A family the entries name no CIDR of matches all its addresses (NewNodePortAddresses).
        pytest.param(
            (NodePortKeyword.PRIMARY,), ("192.168.58.11", "fd00:58::11"), id="primary-v6-open"
        ),
        pytest.param((ip_network("10.0.0.0/8"),), ("10.0.0.1", "fd00:58::11"), id="cidr-v6-open"),
        pytest.param(
            (ip_network("fd00::/16"),),
            ("192.168.58.11", "10.0.0.1", "fd00:58::11"),
            id="ipv6-cidr-v4-open",
        ),
        pytest.param(
            (ip_network("10.0.0.0/8"), ip_network("fd00:99::/32")),
            ("10.0.0.1",),
            id="both-families-listed",
        ),
        pytest.param(
            (NodePortKeyword.PRIMARY, ip_network("10.0.0.0/8")),
            ("192.168.58.11", "10.0.0.1", "fd00:58::11"),
            id="primary-and-cidr",
        ),
    ],
)
def test_node_port_addresses(
    selectors: tuple[NodePortKeyword, ...], selected: tuple[str, ...]
) -> None:
    config = KubeProxyConfig(node_port_addresses=selectors)
    cluster = Cluster(nodes=(NODE_1,), kube_proxy=config)
    candidates = (ip("192.168.58.11"), ip("10.0.0.1"), ip("fd00:58::11"))
    assert node_port_addresses(cluster, "node-1", candidates) == tuple(ip(a) for a in selected)


def test_primary_node_port_vs_sits_on_the_node_s_internal_ip() -> None:
    config = KubeProxyConfig(node_port_addresses=(NodePortKeyword.PRIMARY,))
    virtual_services = expected(
        [web_service()], [], config=config, addresses=(ip("10.0.0.1"), ip("192.168.58.11"))
    )
    assert set(virtual_services) == {CLUSTER_IP_KEY, NODE_PORT_KEY}


def test_scheduler_comes_from_the_config() -> None:
    virtual_services = expected([web_service()], [], config=KubeProxyConfig(scheduler="wrr"))
    assert {vs.scheduler for vs in virtual_services.values()} == {"wrr"}


def test_exclude_cidrs_explain_other_agents_vss() -> None:
    config = KubeProxyConfig(exclude_cidrs=(ip_network("10.10.0.0/16"),))
    explanations = explain_virtual_services(Cluster(kube_proxy=config))
    assert explanations.explain(TCP, ip("10.10.3.4"), 443) == Explained(
        Explanation.EXCLUDE_CIDRS, "10.10.0.0/16"
    )
    assert explanations.explain(TCP, ip("10.11.3.4"), 443) is None
    assert excluding_cidr(config.exclude_cidrs, ip("10.10.0.1")) == ip_network("10.10.0.0/16")
    assert excluding_cidr(config.exclude_cidrs, ip("fd00::1")) is None
