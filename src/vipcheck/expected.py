"""What a correct kube-proxy in IPVS mode programs on a node, computed from the API objects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from vipcheck.model.cluster import (
    SERVICE_PROXY_NAME_LABEL,
    AddressType,
    Cluster,
    Endpoint,
    EndpointSlice,
    IPAddress,
    IPNetwork,
    KubeProxyConfig,
    NodePortKeyword,
    ProxyExclusion,
    Service,
    ServicePort,
    ServicePortKey,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from vipcheck.model.node import HostPort, Protocol


class VirtualServiceKind(StrEnum):
    """Which Service address a VS serves; it decides which traffic policy filters its servers."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    EXTERNAL_IP = "ExternalIP"
    LOAD_BALANCER = "LoadBalancer"


_AddressKey = tuple[Protocol, IPAddress, int]

SCHEDULER_PROBE: _AddressKey = (Protocol.TCP, IPv4Address("198.51.100.0"), 20000)
"""The VS kube-proxy's canUseIPVSProxier() creates and deletes at start-up (scheduler probe)."""


@dataclass(frozen=True, slots=True)
class ExpectedVirtualService:
    """One VS a correct kube-proxy keeps on a node, with the real servers it needs at weight > 0."""

    protocol: Protocol
    address: IPAddress
    port: int
    kind: VirtualServiceKind
    service_key: str
    port_name: str
    service_port: int
    scheduler: str
    persistent_timeout: int | None
    real_servers: frozenset[HostPort]

    @property
    def key(self) -> tuple[str, IPAddress, int]:
        """The key model.node.VirtualService uses, to look the observed VS up in the IPVS table."""
        return (self.protocol.value, self.address, self.port)

    @property
    def port_key(self) -> ServicePortKey:
        """The Service port this VS serves."""
        return ServicePortKey(self.service_key, self.service_port, self.protocol)


class Explanation(StrEnum):
    """Why a VS may legitimately exist on a node, for the orphan check's verdict and message."""

    SERVICE = "a Service address"
    NODE_PORT = "a Service nodePort"
    OTHER_PROXY = "a Service another proxy owns"
    SCHEDULER_PROBE = "kube-proxy's transient scheduler probe"
    EXCLUDE_CIDRS = "inside ipvs.excludeCIDRs (another agent's)"


@dataclass(frozen=True, slots=True)
class Explained:
    """A reason for a VS and its detail (the Service port subject, or the excluding CIDR)."""

    why: Explanation
    detail: str


@dataclass(frozen=True, slots=True)
class VirtualServiceExplanations:
    """The VSs the cluster accounts for, indexed once so the orphan check stays linear in VSs."""

    by_address: Mapping[_AddressKey, Explained]
    by_node_port: Mapping[tuple[Protocol, int], Explained]
    exclude_cidrs: tuple[IPNetwork, ...]

    def explain(self, protocol: Protocol, address: IPAddress, port: int) -> Explained | None:
        """Why a (non-fwmark) VS may exist, or None for an orphan."""
        found = self.by_address.get((protocol, address, port)) or self.by_node_port.get(
            (protocol, port)
        )
        if found is not None:
            return found
        if (protocol, address, port) == SCHEDULER_PROBE:
            return Explained(Explanation.SCHEDULER_PROBE, "created and deleted at start-up")
        cidr = excluding_cidr(self.exclude_cidrs, address)
        if cidr is not None:
            return Explained(Explanation.EXCLUDE_CIDRS, str(cidr))
        return None


def expected_virtual_services(
    cluster: Cluster, node: str, node_addresses: Sequence[IPAddress]
) -> tuple[ExpectedVirtualService, ...]:
    """Every VS a correct kube-proxy programs on the node, per Service port, family and address.

    node_addresses are the node's own addresses outside kube-ipvs0, the NodePort candidates.
    """
    config = cluster.kube_proxy or KubeProxyConfig()
    slices = _slices_by_service(cluster.endpoint_slices)
    node_port_candidates = node_port_addresses(cluster, node, node_addresses)
    return tuple(
        expected
        for service in cluster.services
        if service.exclusion is None
        for expected in _service_virtual_services(
            service, slices.get(service.key, ()), config.scheduler, node, node_port_candidates
        )
    )


def node_port_addresses(
    cluster: Cluster, node: str, node_addresses: Sequence[IPAddress]
) -> tuple[IPAddress, ...]:
    """The node addresses nodePortAddresses selects; empty selects them all, primary the Node's."""
    selectors = (cluster.kube_proxy or KubeProxyConfig()).node_port_addresses
    if not selectors:
        return tuple(node_addresses)
    node_object = cluster.node(node)
    primary = () if node_object is None else node_object.primary_ips
    return tuple(
        address
        for address in node_addresses
        if any(_selects(selector, address, primary) for selector in selectors)
    )


def _selects(
    selector: IPNetwork | NodePortKeyword, address: IPAddress, primary: Sequence[IPAddress]
) -> bool:
    """Whether one nodePortAddresses entry selects the address."""
    if selector is NodePortKeyword.PRIMARY:
        return address in primary
    return address.version == selector.version and address in selector


def expected_real_servers(
    service: Service,
    port: ServicePort,
    slices: Iterable[EndpointSlice],
    *,
    address_type: AddressType,
    node: str,
    policy: TrafficPolicy,
) -> frozenset[HostPort]:
    """The usable endpoints of a Service port and family, as kube-proxy's CategorizeEndpoints picks.

    Ready endpoints; with none ready, serving+terminating ones. For policy Local the same choice is
    made among this node's endpoints only, so a local terminating pod still serves.
    """
    candidates = [
        (endpoint, endpoint_port)
        for endpoint_slice in slices
        if endpoint_slice.address_type is address_type and endpoint_slice.service_key == service.key
        for endpoint_port in _matching_ports(endpoint_slice, port)
        for endpoint in endpoint_slice.endpoints
        if policy is TrafficPolicy.CLUSTER or endpoint.node_name == node
    ]
    chosen = [(endpoint, number) for endpoint, number in candidates if endpoint.ready] or [
        (endpoint, number) for endpoint, number in candidates if _serving_terminating(endpoint)
    ]
    # kube-proxy uses only an endpoint's first address; the API says the rest are ignored.
    return frozenset(HostPort(endpoint.addresses[0], number) for endpoint, number in chosen)


def expected_cluster_ips(services: Iterable[Service]) -> frozenset[IPAddress]:
    """Addresses kube-proxy binds to kube-ipvs0: ClusterIPs, externalIPs, LB ingress IPs."""
    return frozenset(
        address
        for service in services
        if service.exclusion is None and service.ports
        for _, address in _bound_addresses(service)
    )


def explain_virtual_services(cluster: Cluster) -> VirtualServiceExplanations:
    """Index every VS a Service accounts for on any node, for the orphan check."""
    by_address: dict[_AddressKey, Explained] = {}
    by_node_port: dict[tuple[Protocol, int], Explained] = {}
    for service in cluster.services:
        exclusion = service.exclusion
        if exclusion not in (None, ProxyExclusion.OTHER_PROXY):
            continue
        for port in service.ports:
            subject = str(ServicePortKey(service.key, port.port, port.protocol))
            if exclusion is ProxyExclusion.OTHER_PROXY:
                proxy = service.labels[SERVICE_PROXY_NAME_LABEL]
                address_why = node_port_why = Explained(
                    Explanation.OTHER_PROXY, f"{subject} (service-proxy-name {proxy})"
                )
            else:
                address_why = Explained(Explanation.SERVICE, subject)
                node_port_why = Explained(Explanation.NODE_PORT, f"{subject} nodePort")
            for address in (*service.cluster_ips, *service.external_ips, *service.lb_ingress_ips):
                by_address.setdefault((port.protocol, address, port.port), address_why)
            if port.node_port is not None:
                by_node_port.setdefault((port.protocol, port.node_port), node_port_why)
    config = cluster.kube_proxy or KubeProxyConfig()
    return VirtualServiceExplanations(by_address, by_node_port, config.exclude_cidrs)


def excluding_cidr(exclude_cidrs: Iterable[IPNetwork], address: IPAddress) -> IPNetwork | None:
    """The ipvs.excludeCIDRs entry holding the address (kube-proxy leaves such VSs alone)."""
    return next(
        (cidr for cidr in exclude_cidrs if cidr.version == address.version and address in cidr),
        None,
    )


def _service_virtual_services(
    service: Service,
    slices: Sequence[EndpointSlice],
    scheduler: str,
    node: str,
    node_port_candidates: Sequence[IPAddress],
) -> Iterator[ExpectedVirtualService]:
    """The VSs of one programmed Service: per port, per ClusterIP family, per address kind."""
    persistent_timeout = (
        service.session_affinity_timeout
        if service.session_affinity is SessionAffinity.CLIENT_IP
        else None
    )
    has_node_ports = service.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
    for port in service.ports:
        listeners = [
            (kind, address, port.port, _traffic_policy(service, kind))
            for kind, address in _bound_addresses(service)
        ]
        if has_node_ports and port.node_port is not None:
            listeners += [
                (
                    VirtualServiceKind.NODE_PORT,
                    address,
                    port.node_port,
                    service.external_traffic_policy,
                )
                for address in node_port_candidates
                if _serves_family(service, address)
            ]
        for kind, address, number, policy in listeners:
            yield ExpectedVirtualService(
                protocol=port.protocol,
                address=address,
                port=number,
                kind=kind,
                service_key=service.key,
                port_name=port.name,
                service_port=port.port,
                scheduler=scheduler,
                persistent_timeout=persistent_timeout,
                real_servers=expected_real_servers(
                    service,
                    port,
                    slices,
                    address_type=_address_type(address),
                    node=node,
                    policy=policy,
                ),
            )


def _traffic_policy(service: Service, kind: VirtualServiceKind) -> TrafficPolicy:
    """ITP governs the ClusterIP VS; ETP every VS reached from outside (node, external, LB)."""
    if kind is VirtualServiceKind.CLUSTER_IP:
        return service.internal_traffic_policy
    return service.external_traffic_policy


def _bound_addresses(service: Service) -> Iterator[tuple[VirtualServiceKind, IPAddress]]:
    """The Service's addresses kube-proxy binds, in the families its ClusterIPs give it.

    kube-proxy runs one proxier per family and a proxier ignores a Service without a ClusterIP of
    its family, so an IPv6 externalIP on a single-stack IPv4 Service is never programmed.
    """
    for address in service.cluster_ips:
        yield VirtualServiceKind.CLUSTER_IP, address
    for kind, addresses in (
        (VirtualServiceKind.EXTERNAL_IP, service.external_ips),
        (VirtualServiceKind.LOAD_BALANCER, service.lb_ingress_ips),
    ):
        for address in addresses:
            if _serves_family(service, address):
                yield kind, address


def _address_type(address: IPAddress) -> AddressType:
    """The EndpointSlice addressType whose endpoints can serve a VS on this address."""
    return AddressType.IPV4 if address.version == 4 else AddressType.IPV6


def _serves_family(service: Service, address: IPAddress) -> bool:
    """Whether the Service has a ClusterIP of the address's family (its proxier handles it)."""
    return any(cluster_ip.version == address.version for cluster_ip in service.cluster_ips)


def _slices_by_service(slices: Iterable[EndpointSlice]) -> Mapping[str, list[EndpointSlice]]:
    """EndpointSlices grouped by owning Service key; slices without the label belong to none."""
    grouped: defaultdict[str, list[EndpointSlice]] = defaultdict(list)
    for endpoint_slice in slices:
        if endpoint_slice.service_key is not None:
            grouped[endpoint_slice.service_key].append(endpoint_slice)
    return grouped


def _matching_ports(endpoint_slice: EndpointSlice, port: ServicePort) -> Iterator[int]:
    """The slice's resolved port for a Service port, matched by name and protocol (kube-proxy)."""
    for endpoint_port in endpoint_slice.ports:
        if (
            endpoint_port.name == port.name
            and endpoint_port.protocol is port.protocol
            and endpoint_port.port is not None
        ):
            yield endpoint_port.port


def _serving_terminating(endpoint: Endpoint) -> bool:
    """The fallback kube-proxy uses when no endpoint is ready (ProxyTerminatingEndpoints)."""
    return endpoint.serving and endpoint.terminating
