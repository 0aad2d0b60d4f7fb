"""Kubernetes API parsers: recorded lists, kubectl's shapes, errors naming file, object, field."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from vipcheck.model.cluster import (
    AddressType,
    Endpoint,
    EndpointPort,
    IPFamily,
    KubeProxyConfig,
    KubeRelease,
    NodePortKeyword,
    ProxyExclusion,
    ProxyMode,
    ServicePort,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from vipcheck.model.node import L4Protocol
from vipcheck.parse import ParseError
from vipcheck.parse.kube import (
    parse_endpoint_slices,
    parse_go_duration,
    parse_kube_proxy_config,
    parse_nodes,
    parse_services,
)

RECORDED = Path(__file__).resolve().parents[3] / "fixtures/recorded/seed-incidents/cluster"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def service(name: str = "redis", **spec: Any) -> dict[str, Any]:
    """A minimal v1 Service as the API returns it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 6379}], **spec},
    }


def endpoint_slice(**fields: Any) -> dict[str, Any]:
    """A minimal discovery.k8s.io/v1 EndpointSlice."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "redis-abcde",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "redis"},
        },
        "addressType": "IPv4",
        **fields,
    }


# --- recorded lab lists -------------------------------------------------------------------------


def test_recorded_services() -> None:
    services = {s.key: s for s in parse_services(recorded("services.json"), "services.json")}
    assert sorted(services) == [
        "default/api",
        "default/external-db",
        "default/redis",
        "default/redis-headless",
        "default/web",
    ]
    redis = services["default/redis"]
    assert redis.cluster_ips == (ip_address("10.96.0.20"),)
    assert redis.ip_families == (IPFamily.IPV4,)
    assert redis.ports == (ServicePort("redis", 6379, L4Protocol.TCP, 6379),)
    assert redis.resource_version == "7735"
    assert redis.exclusion is None
    web = services["default/web"]
    assert web.type is ServiceType.NODE_PORT
    assert web.ports == (ServicePort("http", 80, L4Protocol.TCP, "http", 30080),)
    assert web.external_traffic_policy is TrafficPolicy.CLUSTER
    assert services["default/redis-headless"].cluster_ips == ()
    assert services["default/redis-headless"].exclusion is ProxyExclusion.HEADLESS
    assert services["default/external-db"].type is ServiceType.EXTERNAL_NAME
    assert services["default/external-db"].exclusion is ProxyExclusion.EXTERNAL_NAME


def test_recorded_endpoint_slices() -> None:
    slices = {
        s.name: s
        for s in parse_endpoint_slices(recorded("endpointslices.json"), "endpointslices.json")
    }
    assert sorted(slices) == ["api-mn68p", "redis-f8dqp", "redis-headless-77wjs", "web-ngmcc"]
    web = slices["web-ngmcc"]
    assert web.service_key == "default/web"
    assert web.address_type is AddressType.IPV4
    assert web.ports == (EndpointPort("http", 8080, L4Protocol.TCP),)
    assert web.endpoints[2] == Endpoint(
        (ip_address("10.244.2.11"),), ready=False, serving=False, node_name="node-2"
    )
    assert [e.node_name for e in web.endpoints] == ["node-1", "node-3", "node-2"]


def test_recorded_nodes() -> None:
    nodes = parse_nodes(recorded("nodes.json"), "nodes.json")
    assert [n.name for n in nodes] == ["node-1", "node-2", "node-3"]
    node_1 = nodes[0]
    assert node_1.internal_ips == (ip_address("192.168.58.11"),)
    assert node_1.primary_ips == (ip_address("192.168.58.11"),)
    assert node_1.hostname == "node-1"
    assert node_1.pod_cidrs == (ip_network("10.244.1.0/24"),)
    assert node_1.kernel_version == "6.1.0-lab"
    assert node_1.kube_proxy_version == "v1.30.4"


def test_recorded_kube_proxy_config() -> None:
    config = parse_kube_proxy_config(recorded("kube-proxy.json"), "kube-proxy.json")
    assert config == KubeProxyConfig(
        mode=ProxyMode.IPVS,
        scheduler="rr",
        sync_period=30.0,
        min_sync_period=0.0,
        tcp_timeout=0,
        tcp_fin_timeout=0,
        udp_timeout=0,
        strict_arp=False,
        exclude_cidrs=(),
        node_port_addresses=(ip_network("192.168.58.0/24"),),
        cluster_cidrs=(ip_network("10.244.0.0/16"),),
    )


# --- list shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(service(), id="single-object"),
        pytest.param(
            {"kind": "ServiceList", "apiVersion": "v1", "items": [service() | {"kind": None}]},
            id="api-list-items-without-kind",
        ),
        pytest.param(
            {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [service()]},
            id="kubectl-List",
        ),
        pytest.param({"items": [service()]}, id="list-without-kind"),
    ],
)
def test_service_document_shapes(document: dict[str, Any]) -> None:
    (parsed,) = parse_services(json.dumps(document), "svc.json")
    assert parsed.key == "default/redis"
    assert parsed.ports == (ServicePort("", 6379, L4Protocol.TCP, 6379),)


def test_empty_list() -> None:
    assert parse_nodes('{"kind": "List", "items": null}', "nodes.json") == ()


# --- Service fields -----------------------------------------------------------------------------


def test_service_external_addresses_affinity_and_policies() -> None:
    document = service(
        type="LoadBalancer",
        clusterIPs=["10.96.0.20", "fd00::20"],
        ipFamilies=["IPv4", "IPv6"],
        externalIPs=["203.0.113.5"],
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
        externalTrafficPolicy="Local",
        internalTrafficPolicy="Local",
        ports=[
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "53", "nodePort": 31053}
        ],
    )
    document["status"] = {
        "loadBalancer": {
            "ingress": [
                {"ip": "198.51.100.7", "ipMode": "VIP"},
                {"ip": "198.51.100.8", "ipMode": "Proxy"},
                {"hostname": "lb.example.com"},
            ]
        }
    }
    (parsed,) = parse_services(json.dumps(document), "svc.json")
    assert parsed.cluster_ips == (ip_address("10.96.0.20"), ip_address("fd00::20"))
    assert parsed.ip_families == (IPFamily.IPV4, IPFamily.IPV6)
    assert parsed.external_ips == (ip_address("203.0.113.5"),)
    assert parsed.lb_ingress_ips == (ip_address("198.51.100.7"),)
    assert parsed.lb_proxy_mode_ips == (ip_address("198.51.100.8"),)
    assert parsed.session_affinity is SessionAffinity.CLIENT_IP
    assert parsed.session_affinity_timeout == 60
    assert parsed.external_traffic_policy is TrafficPolicy.LOCAL
    assert parsed.internal_traffic_policy is TrafficPolicy.LOCAL
    assert parsed.ports == (ServicePort("dns", 53, L4Protocol.UDP, 53, 31053),)


def test_service_defaults_and_legacy_cluster_ip() -> None:
    document = service(sessionAffinity="ClientIP")
    document["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "kube-router"}
    (parsed,) = parse_services(json.dumps(document), "svc.json")
    assert parsed.cluster_ips == (ip_address("10.96.0.20"),)
    assert parsed.ip_families == (IPFamily.IPV4,)
    assert parsed.type is ServiceType.CLUSTER_IP
    assert parsed.session_affinity_timeout == 10800
    assert parsed.exclusion is ProxyExclusion.OTHER_PROXY


# --- EndpointSlice fields -----------------------------------------------------------------------


def test_placeholder_slice_with_null_endpoints_and_ports() -> None:
    (parsed,) = parse_endpoint_slices(
        json.dumps(endpoint_slice(endpoints=None, ports=None)), "eps.json"
    )
    assert (parsed.endpoints, parsed.ports) == ((), ())


def test_endpoint_conditions_default_as_kube_proxy_reads_them() -> None:
    document = endpoint_slice(
        endpoints=[
            {"addresses": ["10.244.3.10"]},
            {"addresses": ["10.244.3.11"], "conditions": {"ready": False, "terminating": True}},
        ],
        ports=[{"port": 6379}, {"name": "all", "port": None, "protocol": "SCTP"}],
    )
    (parsed,) = parse_endpoint_slices(json.dumps(document), "eps.json")
    assert parsed.endpoints == (
        Endpoint((ip_address("10.244.3.10"),), ready=True, serving=True, terminating=False),
        Endpoint((ip_address("10.244.3.11"),), ready=False, serving=True, terminating=True),
    )
    assert parsed.ports == (
        EndpointPort("", 6379, L4Protocol.TCP),
        EndpointPort("all", None, L4Protocol.SCTP),
    )


def test_fqdn_slice_keeps_no_endpoints() -> None:
    document = endpoint_slice(
        addressType="FQDN", endpoints=[{"addresses": ["db.example.com"]}], ports=[]
    )
    (parsed,) = parse_endpoint_slices(json.dumps(document), "eps.json")
    assert parsed.address_type is AddressType.FQDN
    assert parsed.endpoints == ()


def test_slice_without_service_label() -> None:
    document = endpoint_slice(endpoints=[])
    document["metadata"]["labels"] = {}
    (parsed,) = parse_endpoint_slices(json.dumps(document), "eps.json")
    assert parsed.service_name is None
    assert parsed.service_key is None


def test_topology_fields_kube_proxy_reads() -> None:
    """Zone and node hints (hints.forZones/forNodes), the topology annotations, the field."""
    slice_document = endpoint_slice(
        endpoints=[
            {
                "addresses": ["10.244.3.10"],
                "hints": {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-3"}]},
            },
            {"addresses": ["10.244.3.11"], "hints": {}},
        ]
    )
    (parsed,) = parse_endpoint_slices(json.dumps(slice_document), "eps.json")
    assert [(e.zone_hints, e.node_hints) for e in parsed.endpoints] == [
        (("zone-a",), ("node-3",)),
        ((), ()),
    ]
    document = service(trafficDistribution="PreferClose")
    document["metadata"]["annotations"] = {"service.kubernetes.io/topology-aware-hints": "Auto"}
    (parsed_service,) = parse_services(json.dumps(document), "svc.json")
    assert parsed_service.traffic_distribution == "PreferClose"
    assert parsed_service.hints_annotation == "Auto"
    document["metadata"]["annotations"]["service.kubernetes.io/topology-mode"] = "Disabled"
    (parsed_service,) = parse_services(json.dumps(document), "svc.json")
    assert parsed_service.hints_annotation == "Disabled"  # topology-mode wins, as in 1.27+


def test_node_zone_label_and_kube_proxy_release() -> None:
    document = {
        "kind": "Node",
        "metadata": {"name": "node-9", "labels": {"topology.kubernetes.io/zone": "zone-b"}},
        "status": {"nodeInfo": {"kubeProxyVersion": "v1.29.3-eks-ae9a62a"}},
    }
    (node,) = parse_nodes(json.dumps(document), "nodes.json")
    assert node.zone == "zone-b"
    assert node.kube_proxy_version == "v1.29.3-eks-ae9a62a"
    assert node.kube_proxy_release == KubeRelease(1, 29)
    document["status"] = {}
    (node,) = parse_nodes(json.dumps(document), "nodes.json")
    assert (node.kube_proxy_release, node.zone) == (None, "zone-b")


# --- Node fields --------------------------------------------------------------------------------


def test_node_legacy_pod_cidr_and_primary_ips() -> None:
    document = {
        "kind": "Node",
        "metadata": {"name": "node-9"},
        "spec": {"podCIDR": "10.244.9.0/24"},
        "status": {
            "addresses": [
                {"type": "ExternalIP", "address": "203.0.113.9"},
                {"type": "InternalIP", "address": "fd00::9"},
                {"type": "InternalIP", "address": "192.168.58.19"},
                {"type": "InternalIP", "address": "192.168.59.19"},
            ]
        },
    }
    (node,) = parse_nodes(json.dumps(document), "nodes.json")
    assert node.pod_cidrs == (ip_network("10.244.9.0/24"),)
    assert node.hostname is None
    assert node.kernel_version is None
    assert node.primary_ips == (ip_address("fd00::9"), ip_address("192.168.58.19"))


# --- kube-proxy configuration -------------------------------------------------------------------

BARE_CONFIG = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
ipvs:
  scheduler: ""
  syncPeriod: 0s
  minSyncPeriod: 1.5s
  tcpTimeout: 15m
  tcpFinTimeout: 30s
  udpTimeout: 1h2m3s
  strictARP: true
  excludeCIDRs: [10.10.0.0/16]
nodePortAddresses: [primary]
"""


def test_bare_config_conf_with_kube_proxy_defaults() -> None:
    config = parse_kube_proxy_config(BARE_CONFIG, "config.conf")
    assert config == KubeProxyConfig(
        mode=ProxyMode.IPVS,
        scheduler="rr",
        sync_period=30.0,
        min_sync_period=1.5,
        tcp_timeout=900,
        tcp_fin_timeout=30,
        udp_timeout=3723,
        strict_arp=True,
        exclude_cidrs=(ip_network("10.10.0.0/16"),),
        node_port_addresses=(NodePortKeyword.PRIMARY,),
        cluster_cidrs=(ip_network("10.244.0.0/16"), ip_network("fd00:10:244::/56")),
    )


def test_config_map_as_yaml_and_v1alpha2_sync_periods() -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-proxy, namespace: kube-system}\n"
        "data:\n  config.conf: |\n    kind: KubeProxyConfiguration\n    mode: ''\n"
        "    syncPeriod: 1m\n    minSyncPeriod: 500ms\n    ipvs: {scheduler: wrr}\n"
    )
    config = parse_kube_proxy_config(text, "kube-proxy.yaml")
    assert config.mode is ProxyMode.IPTABLES
    assert config.scheduler == "wrr"
    assert (config.sync_period, config.min_sync_period) == (60.0, 0.5)
    assert config.node_port_addresses == ()


def test_conntrack_defaults_are_kube_proxys_where_the_config_says_nothing_or_null() -> None:
    # The recorded ConfigMap writes maxPerCore and min out, and nulls the TCP timeouts: kube-proxy
    # defaults those (pointers) to 24h and 1h, and leaves the UDP ones (plain durations) at 0.
    for text in (recorded("kube-proxy.json"), "kind: KubeProxyConfiguration\n"):
        config = parse_kube_proxy_config(text, "kube-proxy.json")
        assert (
            config.conntrack_section,
            config.conntrack_max_per_core,
            config.conntrack_min,
            config.conntrack_tcp_established_timeout,
            config.conntrack_tcp_close_wait_timeout,
            config.conntrack_tcp_be_liberal,
            config.conntrack_udp_timeout,
            config.conntrack_udp_stream_timeout,
        ) == ("conntrack", 32768, 131072, 86400, 3600, False, 0, 0)


def test_conntrack_values_in_whole_seconds_and_zero_kept_as_leave_alone() -> None:
    text = (
        "kind: KubeProxyConfiguration\nconntrack:\n  maxPerCore: 0\n  min: 0\n"
        "  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 1m59.9s\n  tcpBeLiberal: true\n"
        "  udpTimeout: 1m\n  udpStreamTimeout: 2h\n"
    )
    config = parse_kube_proxy_config(text, "config.conf")
    # kube-proxy hands the kernel int(d / time.Second): 119.9 s is 119.
    assert (
        config.conntrack_max_per_core,
        config.conntrack_min,
        config.conntrack_tcp_established_timeout,
        config.conntrack_tcp_close_wait_timeout,
        config.conntrack_tcp_be_liberal,
        config.conntrack_udp_timeout,
        config.conntrack_udp_stream_timeout,
    ) == (0, 0, 0, 119, True, 60, 7200)


def test_v1alpha2_keeps_conntrack_under_linux() -> None:
    text = (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n"
        "linux:\n  conntrack:\n    maxPerCore: 65536\n    tcpEstablishedTimeout: 2h\n"
    )
    config = parse_kube_proxy_config(text, "config.conf")
    assert config.conntrack_section == "linux.conntrack"
    assert (config.conntrack_max_per_core, config.conntrack_min) == (65536, 131072)
    assert config.conntrack_tcp_established_timeout == 7200


@pytest.mark.parametrize(
    ("conntrack", "message"),
    [
        pytest.param(
            "conntrack: {maxPerCore: -1}",
            "conntrack.maxPerCore: expected 0 to 2147483647, got -1",
            id="negative-max-per-core",
        ),
        pytest.param(
            "conntrack: {min: 2147483648}",
            "conntrack.min: expected 0 to 2147483647, got 2147483648",
            id="min-beyond-int32",
        ),
        pytest.param(
            "conntrack: {min: '131072'}",
            "conntrack.min: expected an integer, got a string",
            id="min-as-string",
        ),
        pytest.param(
            "conntrack: {tcpEstablishedTimeout: 86400}",
            "conntrack.tcpEstablishedTimeout: expected a string, got a number",
            id="timeout-as-number",
        ),
        pytest.param(
            "conntrack: {tcpCloseWaitTimeout: -1h}",
            "conntrack.tcpCloseWaitTimeout: must not be negative, got '-1h'",
            id="negative-timeout",
        ),
        pytest.param(
            "conntrack: {udpStreamTimeout: 2 minutes}",
            "conntrack.udpStreamTimeout: not a Go duration: '2 minutes'",
            id="bad-udp-duration",
        ),
        pytest.param(
            "conntrack: {tcpBeLiberal: 'yes'}",
            "conntrack.tcpBeLiberal: expected true or false, got a string",
            id="be-liberal-as-string",
        ),
        pytest.param(
            "linux: {conntrack: {udpTimeout: 30}}",
            "linux.conntrack.udpTimeout: expected a string, got a number",
            id="v1alpha2-path",
        ),
        pytest.param(
            "conntrack: [maxPerCore]",
            "conntrack: expected an object, got a list",
            id="section-as-list",
        ),
    ],
)
def test_bad_conntrack_values_name_the_field(conntrack: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_kube_proxy_config(f"kind: KubeProxyConfiguration\n{conntrack}\n", "config.conf")
    assert str(caught.value) == f"config.conf: kube-proxy configuration: {message}"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("0s", 0.0),
        ("0", 0.0),
        ("15m", 900.0),
        ("15m0s", 900.0),
        ("1h2m3s", 3723.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("-1s", -1.0),
    ],
)
def test_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "1x", "1h 2m", "1s2"])
def test_not_a_go_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a Go duration"):
        parse_go_duration(text)


# --- errors -------------------------------------------------------------------------------------


def without(document: dict[str, Any], *path: str | int) -> dict[str, Any]:
    """The document with the field at path removed."""
    parent: Any = document
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return document


@pytest.mark.parametrize(
    ("parse", "text", "source", "line", "message"),
    [
        pytest.param(
            parse_services,
            '{\n  "kind": "ServiceList",\n  "items": [,]\n}',
            "services.json",
            3,
            "Expecting value",
            id="malformed-json-line",
        ),
        pytest.param(
            parse_services,
            json.dumps(
                {"kind": "ServiceList", "items": [without(service(), "spec", "ports", 0, "port")]}
            ),
            "services.json",
            None,
            "default/redis: spec.ports[0].port: missing",
            id="missing-port",
        ),
        pytest.param(
            parse_services,
            json.dumps(without(service(), "spec")),
            "svc.json",
            None,
            "default/redis: spec: missing",
            id="missing-spec",
        ),
        pytest.param(
            parse_services,
            json.dumps({"items": [without(service(), "metadata", "name")]}),
            "svc.json",
            None,
            "items[0]: metadata.name: missing",
            id="unnamed-item",
        ),
        pytest.param(
            parse_services,
            recorded("nodes.json"),
            "nodes.json",
            None,
            "expected a Service or ServiceList, got NodeList",
            id="wrong-list-kind",
        ),
        pytest.param(
            parse_nodes,
            json.dumps({"kind": "List", "items": [service()]}),
            "nodes.json",
            None,
            "items[0] (default/redis): expected a Node, got Service",
            id="wrong-item-kind",
        ),
        pytest.param(
            parse_services,
            json.dumps(service(clusterIPs=["10.96.0.300"])),
            "svc.json",
            None,
            "default/redis: spec.clusterIPs[0]: not an IP address: '10.96.0.300'",
            id="bad-ip",
        ),
        pytest.param(
            parse_services,
            json.dumps(service(type="Ingress")),
            "svc.json",
            None,
            "default/redis: spec.type: expected one of ClusterIP, NodePort, LoadBalancer, "
            "ExternalName, got 'Ingress'",
            id="bad-enum",
        ),
        pytest.param(
            parse_services,
            json.dumps(service(ports=[{"port": "6379"}])),
            "svc.json",
            None,
            "default/redis: spec.ports[0].port: expected an integer, got a string",
            id="port-as-string",
        ),
        pytest.param(
            parse_services,
            json.dumps(service(ports=[{"port": 53, "protocol": "ICMP"}])),
            "svc.json",
            None,
            "default/redis: spec.ports[0].protocol: expected one of TCP, UDP, SCTP, got 'ICMP'",
            id="bad-protocol",
        ),
        pytest.param(
            parse_endpoint_slices,
            json.dumps(endpoint_slice(endpoints=[{"addresses": []}])),
            "eps.json",
            None,
            "default/redis-abcde: endpoints[0].addresses: missing",
            id="endpoint-without-address",
        ),
        pytest.param(
            parse_endpoint_slices,
            json.dumps(without(endpoint_slice(), "addressType")),
            "eps.json",
            None,
            "default/redis-abcde: addressType: missing",
            id="missing-address-type",
        ),
        pytest.param(
            parse_kube_proxy_config,
            "kind: KubeProxyConfiguration\nipvs:\n  tcpFinTimeout: 30\n",
            "config.conf",
            None,
            "kube-proxy configuration: ipvs.tcpFinTimeout: expected a string, got a number",
            id="duration-as-number",
        ),
        pytest.param(
            parse_kube_proxy_config,
            "kind: KubeProxyConfiguration\nipvs:\n  tcpTimeout: 15 minutes\n",
            "config.conf",
            None,
            "kube-proxy configuration: ipvs.tcpTimeout: not a Go duration: '15 minutes'",
            id="bad-duration",
        ),
        pytest.param(
            parse_kube_proxy_config,
            "kind: KubeProxyConfiguration\nipvs:\n  udpTimeout: -5s\n",
            "config.conf",
            None,
            "kube-proxy configuration: ipvs.udpTimeout: must not be negative, got '-5s'",
            id="negative-duration",
        ),
        pytest.param(
            parse_kube_proxy_config,
            "kind: KubeProxyConfiguration\nmode: userspace\n",
            "config.conf",
            None,
            "kube-proxy configuration: mode: expected one of iptables, ipvs, nftables, "
            "kernelspace, got 'userspace'",
            id="bad-mode",
        ),
        pytest.param(
            parse_kube_proxy_config,
            "kind: KubeProxyConfiguration\nnodePortAddresses: [primary, 10.0.0.0/33]\n",
            "config.conf",
            None,
            "kube-proxy configuration: nodePortAddresses[1]: not a CIDR: '10.0.0.0/33'",
            id="bad-node-port-cidr",
        ),
        pytest.param(
            parse_kube_proxy_config,
            "kind: KubeProxyConfiguration\nmode: [ipvs\n",
            "config.conf",
            3,
            "expected ',' or ']', but got '<stream end>'",
            id="malformed-yaml-line",
        ),
        pytest.param(
            parse_kube_proxy_config,
            json.dumps({"kind": "ConfigMap", "data": {"config.conf": "mode: [ipvs\n"}}),
            "kube-proxy.json",
            None,
            "data[config.conf] line 2: expected ',' or ']', but got '<stream end>'",
            id="malformed-embedded-yaml",
        ),
        pytest.param(
            parse_kube_proxy_config,
            json.dumps(
                {
                    "kind": "ConfigMap",
                    "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                    "data": {"kubeconfig.conf": ""},
                }
            ),
            "kube-proxy.json",
            None,
            "kube-system/kube-proxy: data[config.conf]: missing",
            id="config-map-without-config",
        ),
        pytest.param(
            parse_kube_proxy_config,
            json.dumps(
                {
                    "kind": "ConfigMap",
                    "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                    "data": {"config.conf": "ipvs: {scheduler: [rr]}"},
                }
            ),
            "kube-proxy.json",
            None,
            "kube-system/kube-proxy data[config.conf]: ipvs.scheduler: "
            "expected a string, got a list",
            id="embedded-field-error",
        ),
        pytest.param(
            parse_kube_proxy_config,
            recorded("nodes.json"),
            "nodes.json",
            None,
            "expected a kube-proxy ConfigMap or KubeProxyConfiguration, got kind 'NodeList'",
            id="wrong-kind-config",
        ),
        pytest.param(
            parse_nodes,
            json.dumps(
                {
                    "kind": "Node",
                    "metadata": {"name": "node-9"},
                    "status": {"nodeInfo": {"kubeProxyVersion": "latest"}},
                }
            ),
            "nodes.json",
            None,
            "node-9: status.nodeInfo.kubeProxyVersion: not a Kubernetes version (like v1.30.4): "
            "'latest'",
            id="kube-proxy-version",
        ),
        pytest.param(
            parse_endpoint_slices,
            json.dumps(
                endpoint_slice(endpoints=[{"addresses": ["10.0.0.1"], "hints": {"forZones": [{}]}}])
            ),
            "eps.json",
            None,
            "default/redis-abcde: endpoints[0].hints.forZones[0].name: missing",
            id="zone-hint-without-name",
        ),
    ],
)
def test_errors_name_source_line_object_and_field(
    parse: Any, text: str, source: str, line: int | None, message: str
) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text, source)
    assert (caught.value.source, caught.value.line, caught.value.message) == (source, line, message)
    where = source if line is None else f"{source}:{line}"
    assert str(caught.value) == f"{where}: {message}"
