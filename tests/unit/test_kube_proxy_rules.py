"""Expected state where kube-proxy's rules are not obvious, and where they depend on its release.

Each rule is read in kubernetes/kubernetes: the Local-policy fallback in
pkg/proxy/ipvs/proxier.go syncEndpoint (#97081), shouldBind in syncProxyRules, topology in
pkg/proxy/topology.go, nodePortAddresses per family and GetNodeIPs (kube-ipvs0's addresses
included) in pkg/proxy/util/nodeport_addresses.go, ipMode in pkg/proxy/util/utils.go IsVIPMode.
"""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import ip_address, ip_network
from types import MappingProxyType

import pytest

from vipcheck.expected import (
    VERSION_RULES,
    ExpectedVirtualService,
    Rule,
    TopologyGate,
    expected_cluster_ips,
    expected_virtual_services,
    explain_virtual_services,
    kube_proxy_rules,
    node_port_addresses,
    unbound_node_addresses,
)
from vipcheck.model.cluster import (
    ZONE_LABEL,
    AddressType,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    IPAddress,
    KubeProxyConfig,
    KubeProxyImage,
    KubeRelease,
    Node,
    Service,
    ServicePort,
    ServiceType,
    TrafficPolicy,
)
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse import ParseError
from vipcheck.parse.kube import parse_kube_proxy_daemonset, parse_kube_release, parse_services

TCP = L4Protocol.TCP
HTTP = ServicePort("http", 80, TCP, 8080, node_port=30080)
WEB = Service("default", "web", ServiceType.NODE_PORT, (ip_address("10.96.0.30"),), (HTTP,))
NODE_1_IP = ip_address("192.168.58.11")


def ip(text: str) -> IPAddress:
    return ip_address(text)


def hp(address: str, port: int = 8080) -> HostPort:
    return HostPort(ip(address), port)


def node_1(version: str | None = None, zone: str | None = "zone-a") -> Node:
    labels = MappingProxyType({ZONE_LABEL: zone} if zone else {})
    release = None if version is None else parse_kube_release(version)
    return Node(
        "node-1",
        internal_ips=(NODE_1_IP,),
        kube_proxy_version=version,
        kube_proxy_release=release,
        labels=labels,
    )


def endpoint(address: str, node: str, *zones: str, ready: bool = True) -> Endpoint:
    return Endpoint((ip(address),), ready, ready, False, node, zone_hints=zones)


def web_slice(*endpoints: Endpoint, family: AddressType = AddressType.IPV4) -> EndpointSlice:
    return EndpointSlice(
        "default", f"web-{family}", "web", family, endpoints, (EndpointPort("http", 8080, TCP),)
    )


def on_node_1(
    service: Service,
    *slices: EndpointSlice,
    node: Node | None = None,
    addresses: tuple[IPAddress, ...] = (NODE_1_IP,),
    config: KubeProxyConfig | None = None,
) -> dict[tuple[str, IPAddress, int], ExpectedVirtualService]:
    cluster = Cluster((service,), slices, (node or node_1(),), config)
    return {vs.key: vs for vs in expected_virtual_services(cluster, "node-1", addresses)}


CLUSTER_IP = ("TCP", ip("10.96.0.30"), 80)
NODE_PORT = ("TCP", NODE_1_IP, 30080)


# --- the release table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fallback", "terminating", "topology", "node_hints"),
    [
        ("v1.20.15", False, False, TopologyGate.NEVER, False),
        ("v1.21.0", True, False, TopologyGate.NEVER, False),
        ("v1.24.17", True, False, TopologyGate.AUTO_ANNOTATION, False),
        ("v1.26.1", True, True, TopologyGate.AUTO_ANNOTATION, False),
        ("v1.27.3", True, True, TopologyGate.ANNOTATION, False),
        ("v1.30.4", True, True, TopologyGate.ANNOTATION, False),
        ("v1.31.0+k3s1", True, True, TopologyGate.HINTS, False),
        ("v1.34.1-eks-113cf36", True, True, TopologyGate.HINTS, True),
        (None, True, True, TopologyGate.HINTS, True),
    ],
)
def test_rules_by_release(
    version: str | None, fallback: bool, terminating: bool, topology: TopologyGate, node_hints: bool
) -> None:
    rules = kube_proxy_rules(None if version is None else parse_kube_release(version))
    assert (rules.local_fallback, rules.terminating_fallback, rules.topology, rules.node_hints) == (
        fallback,
        terminating,
        topology,
        node_hints,
    )


def test_unknown_release_is_said_in_messages() -> None:
    assert "version unknown" in kube_proxy_rules(None).who
    assert kube_proxy_rules(KubeRelease(1, 30)).who == "kube-proxy 1.30"


def test_every_version_rule_says_what_unknown_assumes() -> None:
    assert len(VERSION_RULES) == 5
    assert all(rule.unknown and rule.since and rule.before for rule in VERSION_RULES)


@pytest.mark.parametrize(
    ("text", "release"),
    [
        ("v1.30.4", KubeRelease(1, 30)),
        ("1.9", KubeRelease(1, 9)),
        ("v1.31.0+k3s1", KubeRelease(1, 31)),
        ("v1.28.5-eks-5e0fdde", KubeRelease(1, 28)),
        ("v0.0.0-master+$Format:%H$", KubeRelease(0, 0)),
        ("latest", None),
        ("", None),
    ],
)
def test_parse_kube_release(text: str, release: KubeRelease | None) -> None:
    assert parse_kube_release(text) == release


# --- 1. Local traffic policy without a local endpoint -----------------------------------------


def test_itp_local_on_a_service_reachable_from_outside_falls_back() -> None:
    service = replace(WEB, internal_traffic_policy=TrafficPolicy.LOCAL)
    vs = on_node_1(service, web_slice(endpoint("10.244.2.10", "node-2")))[CLUSTER_IP]
    assert vs.real_servers == {hp("10.244.2.10")}
    assert vs.follows(Rule.LOCAL_FALLBACK)
    assert "internalTrafficPolicy Local" in vs.why


def test_itp_local_on_a_cluster_ip_only_service_has_nothing_to_fall_back_to() -> None:
    """TestTestInternalTrafficPolicyE2E: 'internalTrafficPolicy is local with zero local
    endpoints' programs no real server (the port never UsesClusterEndpoints)."""
    service = replace(
        WEB,
        type=ServiceType.CLUSTER_IP,
        ports=(replace(HTTP, node_port=None),),
        internal_traffic_policy=TrafficPolicy.LOCAL,
    )
    vs = on_node_1(service, web_slice(endpoint("10.244.2.10", "node-2")))[CLUSTER_IP]
    assert vs.real_servers == frozenset()
    assert vs.follows(Rule.NO_LOCAL_ENDPOINT)


def test_local_fallback_takes_the_topology_filtered_cluster_endpoints() -> None:
    service = replace(WEB, external_traffic_policy=TrafficPolicy.LOCAL)
    virtual_services = on_node_1(
        service,
        web_slice(
            endpoint("10.244.2.10", "node-2", "zone-a"),
            endpoint("10.244.3.10", "node-3", "zone-b"),
        ),
    )
    node_port = virtual_services[NODE_PORT]
    assert node_port.real_servers == {hp("10.244.2.10")}
    assert [b.rule for b in node_port.because] == [Rule.LOCAL_FALLBACK, Rule.TOPOLOGY]


# --- 2. an externalIP that is one of the node's own addresses ---------------------------------


def test_external_ip_on_a_node_address_gets_its_vs_but_is_not_bound() -> None:
    service = replace(WEB, external_ips=(ip("10.10.0.1"),))
    own = (NODE_1_IP, ip("10.10.0.1"))
    virtual_services = on_node_1(
        service, web_slice(endpoint("10.244.1.10", "node-1")), addresses=own
    )
    assert ("TCP", ip("10.10.0.1"), 80) in virtual_services
    assert expected_cluster_ips((service,), own) == {ip("10.96.0.30")}
    assert unbound_node_addresses((service,), own) == {ip("10.10.0.1"): "ExternalIP of default/web"}
    # On a node that does not own it, kube-proxy binds it like any externalIP.
    assert expected_cluster_ips((service,), (ip("192.168.58.12"),)) == {
        ip("10.96.0.30"),
        ip("10.10.0.1"),
    }


def test_a_cluster_ip_is_bound_even_if_the_node_has_it_elsewhere() -> None:
    assert expected_cluster_ips((WEB,), (ip("10.96.0.30"),)) == {ip("10.96.0.30")}


# --- 3. topology-aware routing ----------------------------------------------------------------

ZONED = (
    endpoint("10.244.1.10", "node-1", "zone-a"),
    endpoint("10.244.2.10", "node-2", "zone-b"),
    endpoint("10.244.3.10", "node-3", "zone-a"),
)
ALL = {hp("10.244.1.10"), hp("10.244.2.10"), hp("10.244.3.10")}
ZONE_A = {hp("10.244.1.10"), hp("10.244.3.10")}
MODE_AUTO = MappingProxyType({"service.kubernetes.io/topology-mode": "Auto"})
HINTS_AUTO = MappingProxyType({"service.kubernetes.io/topology-aware-hints": "Auto"})
DISABLED = MappingProxyType({"service.kubernetes.io/topology-mode": "Disabled"})
NO_ANNOTATION: MappingProxyType[str, str] = MappingProxyType({})


@pytest.mark.parametrize(
    ("version", "annotations", "distribution", "servers"),
    [
        pytest.param("v1.23.17", HINTS_AUTO, None, ALL, id="1.23-hints-off"),
        pytest.param("v1.25.16", HINTS_AUTO, None, ZONE_A, id="1.25-aware-hints-auto"),
        pytest.param("v1.25.16", MODE_AUTO, None, ALL, id="1.25-topology-mode-unknown"),
        pytest.param("v1.30.4", MODE_AUTO, None, ZONE_A, id="1.30-topology-mode"),
        pytest.param("v1.30.4", HINTS_AUTO, None, ZONE_A, id="1.30-old-annotation"),
        pytest.param("v1.30.4", DISABLED, None, ALL, id="1.30-disabled"),
        pytest.param("v1.30.4", NO_ANNOTATION, "PreferClose", ALL, id="1.30-field-needs-gate"),
        pytest.param("v1.31.0", NO_ANNOTATION, "PreferClose", ZONE_A, id="1.31-prefer-close"),
        pytest.param("v1.31.0", DISABLED, None, ZONE_A, id="1.31-hints-whatever-annotation"),
        pytest.param(None, NO_ANNOTATION, None, ZONE_A, id="unknown-newest"),
    ],
)
def test_zone_hints_by_release(
    version: str | None,
    annotations: MappingProxyType[str, str],
    distribution: str | None,
    servers: set[HostPort],
) -> None:
    service = replace(WEB, annotations=annotations, traffic_distribution=distribution)
    virtual_services = on_node_1(service, web_slice(*ZONED), node=node_1(version))
    vs = virtual_services[CLUSTER_IP]
    assert vs.real_servers == servers
    assert vs.follows(Rule.TOPOLOGY) == (servers == ZONE_A)
    if servers == ZONE_A:
        assert "zone zone-a" in vs.why
        assert "node-1 is labelled topology.kubernetes.io/zone=zone-a" in vs.why


@pytest.mark.parametrize(
    ("node", "endpoints"),
    [
        pytest.param(node_1(zone=None), ZONED, id="node-without-zone-label"),
        pytest.param(
            node_1(),
            (*ZONED[:2], endpoint("10.244.3.10", "node-3")),
            id="one-ready-endpoint-without-hint",
        ),
        pytest.param(
            node_1(zone="zone-c"),
            ZONED,
            id="no-endpoint-hinted-for-the-zone",
        ),
    ],
)
def test_zone_hints_are_ignored_unless_safe(node: Node, endpoints: tuple[Endpoint, ...]) -> None:
    vs = on_node_1(WEB, web_slice(*endpoints), node=node)[CLUSTER_IP]
    assert vs.real_servers == {HostPort(e.addresses[0], 8080) for e in endpoints}
    assert not vs.follows(Rule.TOPOLOGY)


def test_an_unready_endpoint_without_hint_does_not_disable_topology() -> None:
    unready = endpoint("10.244.4.10", "node-4", ready=False)
    vs = on_node_1(WEB, web_slice(*ZONED, unready))[CLUSTER_IP]
    assert vs.real_servers == ZONE_A


def test_node_hints_from_1_34() -> None:
    endpoints = tuple(
        replace(e, node_hints=(e.node_name or "",)) for e in ZONED
    )  # PreferSameNode hints each endpoint for its own node
    newest = on_node_1(WEB, web_slice(*endpoints), node=node_1("v1.34.0"))[CLUSTER_IP]
    older = on_node_1(WEB, web_slice(*endpoints), node=node_1("v1.33.0"))[CLUSTER_IP]
    assert newest.real_servers == {hp("10.244.1.10")}
    assert "hinted for node node-1" in newest.why
    assert older.real_servers == ZONE_A


def test_etp_local_keeps_local_endpoints_whatever_the_hints() -> None:
    service = replace(WEB, external_traffic_policy=TrafficPolicy.LOCAL)
    endpoints = (
        endpoint("10.244.1.10", "node-1", "zone-b"),
        endpoint("10.244.2.10", "node-2", "zone-a"),
    )
    node_port = on_node_1(service, web_slice(*endpoints))[NODE_PORT]
    assert node_port.real_servers == {hp("10.244.1.10")}
    assert node_port.because == ()


# --- 4. nodePortAddresses per family ----------------------------------------------------------


def test_dual_stack_node_port_on_every_ipv6_address_when_only_ipv4_cidrs_are_listed() -> None:
    service = replace(WEB, cluster_ips=(ip("10.96.0.30"), ip("fd00:96::30")))
    config = KubeProxyConfig(node_port_addresses=(ip_network("192.168.58.0/24"),))
    addresses = (NODE_1_IP, ip("10.10.0.1"), ip("fd00:58::11"), ip("2001:db8::11"))
    virtual_services = on_node_1(
        service,
        web_slice(endpoint("10.244.1.10", "node-1")),
        web_slice(endpoint("fd00:244:1::10", "node-1"), family=AddressType.IPV6),
        addresses=addresses,
        config=config,
    )
    node_ports = {key: vs for key, vs in virtual_services.items() if key[2] == 30080}
    assert set(node_ports) == {
        NODE_PORT,
        ("TCP", ip("fd00:58::11"), 30080),
        ("TCP", ip("2001:db8::11"), 30080),
    }
    v6 = node_ports["TCP", ip("fd00:58::11"), 30080]
    assert v6.real_servers == {HostPort(ip("fd00:244:1::10"), 8080)}
    assert v6.follows(Rule.NODE_PORT_FAMILY_UNLISTED)
    assert "lists no IPv6 CIDR" in v6.why
    assert not node_ports[NODE_PORT].because


# --- 5. nodePortAddresses CIDRs holding kube-ipvs0's addresses -------------------------------

NODE_SUBNET = KubeProxyConfig(node_port_addresses=(ip_network("192.168.58.0/24"),))
LB_IP = ip("192.168.58.200")  # a load-balancer IP (MetalLB, kube-vip) in the node subnet
LB = Service(
    "default",
    "lb",
    ServiceType.LOAD_BALANCER,
    (ip_address("10.96.0.40"),),
    (ServicePort("http", 80, TCP, 8080, node_port=30081),),
    lb_ingress_ips=(LB_IP,),
)


def on_node_1_with_lb(
    config: KubeProxyConfig, addresses: tuple[IPAddress, ...] = (NODE_1_IP,)
) -> dict[tuple[str, IPAddress, int], ExpectedVirtualService]:
    cluster = Cluster((WEB, LB), (web_slice(endpoint("10.244.1.10", "node-1")),), (node_1(),))
    cluster = replace(cluster, kube_proxy=config)
    return {vs.key: vs for vs in expected_virtual_services(cluster, "node-1", addresses)}


def test_node_ports_on_a_load_balancer_ip_bound_inside_the_cidrs() -> None:
    """GetNodeIPs reads every interface's addresses, kube-ipvs0's too: each nodePort gets a VS on
    the LB IP, judged like those on the node's own address."""
    virtual_services = on_node_1_with_lb(NODE_SUBNET)
    web_on_lb = virtual_services["TCP", LB_IP, 30080]
    assert web_on_lb.real_servers == {hp("10.244.1.10")}
    assert web_on_lb.real_servers == virtual_services[NODE_PORT].real_servers
    assert web_on_lb.follows(Rule.NODE_PORT_ON_KUBE_IPVS0)
    assert (
        "192.168.58.0/24, which holds 192.168.58.200 (LoadBalancer of default/lb" in web_on_lb.why
    )
    assert ("TCP", LB_IP, 30081) in virtual_services
    assert not virtual_services[NODE_PORT].because
    cluster = Cluster((LB,), nodes=(node_1(),), kube_proxy=NODE_SUBNET)
    assert node_port_addresses(cluster, "node-1", (NODE_1_IP,)) == (NODE_1_IP, LB_IP)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(KubeProxyConfig(), id="no-cidrs"),
        pytest.param(
            KubeProxyConfig(node_port_addresses=(ip_network("0.0.0.0/0"),)), id="zero-cidr"
        ),
        pytest.param(
            KubeProxyConfig(node_port_addresses=(ip_network("fd00::/8"),)), id="ipv4-unlisted"
        ),
    ],
)
def test_no_node_ports_on_kube_ipvs0_when_every_address_is_matched(
    config: KubeProxyConfig,
) -> None:
    """A family matched whole (MatchAll: no CIDR of it, or a zero CIDR) takes nodeAddressSet,
    every address but kube-ipvs0's."""
    virtual_services = on_node_1_with_lb(config)
    assert {key for key in virtual_services if key[1] == LB_IP} == {("TCP", LB_IP, 80)}


def test_a_cluster_ip_inside_the_cidrs_gets_node_ports_too() -> None:
    wide = KubeProxyConfig(node_port_addresses=(ip_network("10.0.0.0/8"),))
    virtual_services = on_node_1_with_lb(wide, addresses=(NODE_1_IP, ip("10.0.0.11")))
    assert {key for key in virtual_services if key[2] == 30080} == {
        ("TCP", ip("10.0.0.11"), 30080),
        ("TCP", ip("10.96.0.30"), 30080),
        ("TCP", ip("10.96.0.40"), 30080),
    }
    assert virtual_services["TCP", ip("10.96.0.40"), 30080].follows(Rule.NODE_PORT_ON_KUBE_IPVS0)
    assert not virtual_services["TCP", ip("10.0.0.11"), 30080].because


def test_a_load_balancer_ip_the_node_owns_is_no_kube_ipvs0_address() -> None:
    """shouldBind: the node's own address stays off kube-ipvs0; its NodePorts are its own."""
    virtual_services = on_node_1_with_lb(NODE_SUBNET, addresses=(NODE_1_IP, LB_IP))
    assert not virtual_services["TCP", LB_IP, 30080].because


# --- 6. ipMode Proxy load-balancer IPs --------------------------------------------------------

PROXIED_IP = ip("203.0.113.9")
PROXIED = replace(
    WEB,
    type=ServiceType.LOAD_BALANCER,
    lb_ingress_ips=(ip("203.0.113.8"),),
    lb_proxy_mode_ips=(PROXIED_IP,),
)


@pytest.mark.parametrize(
    ("version", "programmed"),
    [("v1.29.7", True), ("v1.30.0", False), ("v1.32.1", False), (None, False)],
)
def test_an_ip_mode_proxy_address_is_a_vip_before_1_30(
    version: str | None, programmed: bool
) -> None:
    """IsVIPMode returns true for every ingress while LoadBalancerIPMode is off (before 1.30)."""
    cluster = Cluster(
        (PROXIED,),
        (web_slice(endpoint("10.244.1.10", "node-1")),),
        (node_1(version),),
    )
    virtual_services = {
        vs.key: vs for vs in expected_virtual_services(cluster, "node-1", (NODE_1_IP,))
    }
    assert (("TCP", PROXIED_IP, 80) in virtual_services) == programmed
    assert ("TCP", ip("203.0.113.8"), 80) in virtual_services
    release = None if version is None else parse_kube_release(version)
    assert (PROXIED_IP in expected_cluster_ips((PROXIED,), (NODE_1_IP,), release)) == programmed
    assert kube_proxy_rules(release).lb_ip_mode != programmed
    if programmed:
        vs = virtual_services["TCP", PROXIED_IP, 80]
        assert vs.real_servers == {hp("10.244.1.10")}
        assert vs.follows(Rule.LB_PROXY_MODE_AS_VIP)
        assert "kube-proxy 1.29 treats 203.0.113.9" in vs.why


def test_an_ip_mode_proxy_ingress_read_from_the_api_is_a_vs_on_a_1_29_node() -> None:
    document = {
        "kind": "Service",
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.30",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": str(PROXIED_IP), "ipMode": "Proxy"}]}},
    }
    (service,) = parse_services(json.dumps(document), "svc.json")
    slices = (web_slice(endpoint("10.244.1.10", "node-1")),)
    for version, programmed in (("v1.29.7", True), ("v1.30.0", False)):
        cluster = Cluster((service,), slices, (node_1(version),))
        keys = {vs.key for vs in expected_virtual_services(cluster, "node-1", (NODE_1_IP,))}
        assert (("TCP", PROXIED_IP, 80) in keys) == programmed, version


def test_an_ip_mode_proxy_address_is_explained_on_every_node() -> None:
    """The orphan check reads no release: a VS on such an IP is the Service's wherever it is."""
    explained = explain_virtual_services(Cluster(services=(PROXIED,))).explain(TCP, PROXIED_IP, 80)
    assert explained is not None
    assert explained.detail == "default/web:80/TCP"


# --- where the release comes from -------------------------------------------------------------


def daemon_set(*containers: dict[str, str]) -> str:
    return json.dumps(
        {
            "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "spec": {"template": {"spec": {"containers": list(containers)}}},
        }
    )


@pytest.mark.parametrize(
    ("image", "release"),
    [
        ("registry.k8s.io/kube-proxy:v1.30.4", KubeRelease(1, 30)),
        ("registry.k8s.io/kube-proxy:v1.31.0@sha256:0123abcd", KubeRelease(1, 31)),
        ("rancher/hardened-kube-proxy:v1.29.3-rke2r1-build20240315", KubeRelease(1, 29)),
        ("localhost:5000/kube-proxy", None),
        ("kube-proxy:latest", None),
    ],
)
def test_release_from_the_daemon_set_image_tag(image: str, release: KubeRelease | None) -> None:
    sidecar = {"name": "log-shipper", "image": "busybox:1.36"}
    parsed = parse_kube_proxy_daemonset(
        daemon_set(sidecar, {"name": "kube-proxy", "image": image}), "ds.json"
    )
    assert (parsed.image, parsed.release) == (image, release)


def test_a_daemon_set_without_containers_names_the_field() -> None:
    with pytest.raises(ParseError) as caught:
        parse_kube_proxy_daemonset(daemon_set(), "ds.json")
    assert caught.value.message == "kube-system/kube-proxy: spec.template.spec.containers: missing"


def test_the_image_tag_wins_over_the_node_s_kube_proxy_version() -> None:
    """kubeProxyVersion is deprecated (newer kubelets leave it unset or report their own)."""
    service = replace(WEB, external_traffic_policy=TrafficPolicy.LOCAL)
    image = KubeProxyImage("registry.k8s.io/kube-proxy:v1.20.15", KubeRelease(1, 20))
    cluster = Cluster(
        (service,),
        (web_slice(endpoint("10.244.2.10", "node-2")),),
        (node_1("v1.30.4"),),
        kube_proxy_image=image,
    )
    assert cluster.kube_proxy_release("node-1") == KubeRelease(1, 20)
    (node_port,) = (
        vs
        for vs in expected_virtual_services(cluster, "node-1", (NODE_1_IP,))
        if vs.key == NODE_PORT
    )
    assert node_port.real_servers == frozenset()
    assert "kube-proxy 1.20 programs no real server" in node_port.why
    unknown_tag = replace(cluster, kube_proxy_image=replace(image, release=None))
    assert unknown_tag.kube_proxy_release("node-1") == KubeRelease(1, 30)
