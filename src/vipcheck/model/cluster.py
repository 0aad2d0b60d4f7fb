"""What the cluster's API says: Services, EndpointSlices, Nodes and kube-proxy's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from types import MappingProxyType
from typing import TypeAlias

from vipcheck.model.node import L4Protocol

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network

SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
TOPOLOGY_MODE_ANNOTATION = "service.kubernetes.io/topology-mode"
TOPOLOGY_AWARE_HINTS_ANNOTATION = "service.kubernetes.io/topology-aware-hints"
DEFAULT_AFFINITY_TIMEOUT = 10800
DEFAULT_SCHEDULER = "rr"
DEFAULT_SYNC_PERIOD = 30.0
# KubeProxyConfiguration's conntrack defaults (SetDefaults_KubeProxyConfiguration in
# pkg/proxy/apis/config/v1alpha1/defaults.go, kubernetes/kubernetes@0d17311; the same in v1alpha2).
DEFAULT_CONNTRACK_MAX_PER_CORE = 32 * 1024
DEFAULT_CONNTRACK_MIN = 128 * 1024
DEFAULT_CONNTRACK_TCP_ESTABLISHED_TIMEOUT = 24 * 3600
DEFAULT_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT = 3600


class ServiceType(StrEnum):
    """spec.type: decides whether a Service gets node ports and load-balancer addresses."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    EXTERNAL_NAME = "ExternalName"


class IPFamily(StrEnum):
    """spec.ipFamilies: each family gets its own virtual services (dual-stack)."""

    IPV4 = "IPv4"
    IPV6 = "IPv6"


class SessionAffinity(StrEnum):
    """spec.sessionAffinity: ClientIP makes kube-proxy mark the VS persistent."""

    NONE = "None"
    CLIENT_IP = "ClientIP"


class TrafficPolicy(StrEnum):
    """spec.external/internalTrafficPolicy: Local keeps only this node's endpoints."""

    CLUSTER = "Cluster"
    LOCAL = "Local"


class AddressType(StrEnum):
    """EndpointSlice addressType: kube-proxy's per-family proxiers read only their own family."""

    IPV4 = "IPv4"
    IPV6 = "IPv6"
    FQDN = "FQDN"


class ProxyMode(StrEnum):
    """KubeProxyConfiguration mode: the IPVS checks apply only to ipvs."""

    IPTABLES = "iptables"
    IPVS = "ipvs"
    NFTABLES = "nftables"
    KERNELSPACE = "kernelspace"


class NodePortKeyword(StrEnum):
    """The non-CIDR value nodePortAddresses accepts: the node's primary IP per family."""

    PRIMARY = "primary"


class ProxyExclusion(StrEnum):
    """Why kube-proxy leaves a Service alone, worded for skip reasons."""

    EXTERNAL_NAME = "type ExternalName (a DNS alias)"
    HEADLESS = "headless (clusterIP None)"
    OTHER_PROXY = f"labelled {SERVICE_PROXY_NAME_LABEL} (another proxy owns it)"


@dataclass(frozen=True, slots=True, order=True)
class KubeRelease:
    """A Kubernetes minor release (v1.30.4 is 1.30): the unit kube-proxy's behaviour changes by."""

    major: int
    minor: int

    def __str__(self) -> str:
        """`1.30`, as release notes name it."""
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True, slots=True)
class ServicePortKey:
    """A Service port's identity, as kube-proxy programs it and messages name it."""

    service_key: str
    port: int
    protocol: L4Protocol

    def __str__(self) -> str:
        """`default/redis:6379/TCP`: what `-k` matches and every message starts with."""
        return f"{self.service_key}:{self.port}/{self.protocol.value}"

    @property
    def node(self) -> None:
        """No node: as a check subject a Service port spans every node."""
        return None


def _no_labels() -> Mapping[str, str]:
    """An immutable empty label set, so hand-built objects need not pass one."""
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One spec.ports item; name is "" when unset, as EndpointSlices spell it."""

    name: str
    port: int
    protocol: L4Protocol
    target_port: int | str
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """A v1 Service, reduced to what decides the virtual services kube-proxy programs."""

    namespace: str
    name: str
    type: ServiceType
    cluster_ips: tuple[IPAddress, ...]
    ports: tuple[ServicePort, ...]
    ip_families: tuple[IPFamily, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    lb_ingress_ips: tuple[IPAddress, ...] = ()
    session_affinity: SessionAffinity = SessionAffinity.NONE
    session_affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    external_traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    internal_traffic_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    labels: Mapping[str, str] = field(default_factory=_no_labels, hash=False)
    resource_version: str = ""
    annotations: Mapping[str, str] = field(default_factory=_no_labels, hash=False)
    traffic_distribution: str | None = None
    # status.loadBalancer.ingress IPs with ipMode Proxy, which lb_ingress_ips leaves out: the load
    # balancer proxies to the nodes itself, so kube-proxy from 1.30 programs nothing for them.
    lb_proxy_mode_ips: tuple[IPAddress, ...] = ()
    # spec.loadBalancerSourceRanges as kube-proxy reads them (parse.kube: trimmed, masked, the
    # entries that are no CIDR left out): the only sources its firewall chains admit to LB IPs.
    load_balancer_source_ranges: tuple[IPNetwork, ...] = ()

    @property
    def key(self) -> str:
        """namespace/name, the subject every message about this Service starts with."""
        return f"{self.namespace}/{self.name}"

    @property
    def hints_annotation(self) -> str:
        """kube-proxy's HintsAnnotation(): topology-mode, else the older topology-aware-hints."""
        return self.annotations.get(TOPOLOGY_MODE_ANNOTATION) or self.annotations.get(
            TOPOLOGY_AWARE_HINTS_ANNOTATION, ""
        )

    @property
    def exclusion(self) -> ProxyExclusion | None:
        """Why kube-proxy does not program this Service, or None when it does."""
        if self.type is ServiceType.EXTERNAL_NAME:
            return ProxyExclusion.EXTERNAL_NAME
        if not self.cluster_ips:
            return ProxyExclusion.HEADLESS
        if SERVICE_PROXY_NAME_LABEL in self.labels:
            return ProxyExclusion.OTHER_PROXY
        return None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One EndpointSlice endpoint; conditions as kube-proxy reads them (unset ready = ready).

    zone_hints and node_hints are hints.forZones[].name and hints.forNodes[].name.
    """

    addresses: tuple[IPAddress, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    zone_hints: tuple[str, ...] = ()
    node_hints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointPort:
    """One EndpointSlice port: the resolved targetPort under the Service port's name."""

    name: str
    port: int | None
    protocol: L4Protocol


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice; FQDN ones keep no endpoints, as kube-proxy ignores them."""

    namespace: str
    name: str
    service_name: str | None
    address_type: AddressType
    endpoints: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]
    # Computed once: each node's expected state groups every slice by it.
    _service_key: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = None if self.service_name is None else f"{self.namespace}/{self.service_name}"
        object.__setattr__(self, "_service_key", key)

    @property
    def service_key(self) -> str | None:
        """namespace/name of the owning Service, matching Service.key."""
        return self._service_key


@dataclass(frozen=True, slots=True)
class Node:
    """A v1 Node: its addresses map hosts to node names and define nodePortAddresses: primary."""

    name: str
    internal_ips: tuple[IPAddress, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    hostname: str | None = None
    pod_cidrs: tuple[IPNetwork, ...] = ()
    kernel_version: str | None = None
    kube_proxy_version: str | None = None
    kube_proxy_release: KubeRelease | None = None
    labels: Mapping[str, str] = field(default_factory=_no_labels, hash=False)

    @property
    def zone(self) -> str | None:
        """The topology.kubernetes.io/zone label, which topology-aware routing keys on."""
        return self.labels.get(ZONE_LABEL) or None

    @property
    def primary_ips(self) -> tuple[IPAddress, ...]:
        """The first address per family, InternalIPs before ExternalIPs, as kube-proxy picks."""
        primary: dict[int, IPAddress] = {}
        for address in (*self.internal_ips, *self.external_ips):
            primary.setdefault(address.version, address)
        return tuple(primary.values())


@dataclass(frozen=True, slots=True)
class KubeProxyConfig:
    """KubeProxyConfiguration (config.conf), defaulted as kube-proxy does; durations in seconds.

    The conntrack_* fields are its conntrack section (`conntrack` in v1alpha1, `linux.conntrack`
    in v1alpha2, conntrack_section saying which), in whole seconds as kube-proxy hands them to
    the kernel; 0 (and tcpBeLiberal false) is what kube-proxy leaves alone.
    """

    mode: ProxyMode = ProxyMode.IPTABLES
    scheduler: str = DEFAULT_SCHEDULER
    sync_period: float = DEFAULT_SYNC_PERIOD
    min_sync_period: float = 0.0
    tcp_timeout: int = 0
    tcp_fin_timeout: int = 0
    udp_timeout: int = 0
    strict_arp: bool = False
    exclude_cidrs: tuple[IPNetwork, ...] = ()
    node_port_addresses: tuple[IPNetwork | NodePortKeyword, ...] = ()
    cluster_cidrs: tuple[IPNetwork, ...] = ()
    conntrack_section: str = "conntrack"
    conntrack_max_per_core: int = DEFAULT_CONNTRACK_MAX_PER_CORE
    conntrack_min: int = DEFAULT_CONNTRACK_MIN
    conntrack_tcp_established_timeout: int = DEFAULT_CONNTRACK_TCP_ESTABLISHED_TIMEOUT
    conntrack_tcp_close_wait_timeout: int = DEFAULT_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT
    conntrack_tcp_be_liberal: bool = False
    conntrack_udp_timeout: int = 0
    conntrack_udp_stream_timeout: int = 0


@dataclass(frozen=True, slots=True)
class KubeProxyImage:
    """The kube-proxy DaemonSet's container image, and the release its tag names (if any)."""

    image: str
    release: KubeRelease | None


@dataclass(frozen=True, slots=True)
class Cluster:
    """Everything read from the API, the input of the expected-state computation."""

    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    nodes: tuple[Node, ...] = ()
    kube_proxy: KubeProxyConfig | None = None
    kube_proxy_image: KubeProxyImage | None = None

    def node(self, name: str) -> Node | None:
        """The Node object of that name, if the API listed it."""
        return next((node for node in self.nodes if node.name == name), None)

    def kube_proxy_release(self, node: str) -> KubeRelease | None:
        """The release kube-proxy runs on the node: its DaemonSet's image tag, else the Node's
        status.nodeInfo.kubeProxyVersion (deprecated, and unset by newer kubelets); None if
        neither says."""
        if self.kube_proxy_image is not None and self.kube_proxy_image.release is not None:
            return self.kube_proxy_image.release
        node_object = self.node(node)
        return None if node_object is None else node_object.kube_proxy_release
