"""Read API objects from JSON as `kubectl get ... -o json` prints it or the API returns it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_network
from types import MappingProxyType
from typing import TypeVar

import yaml

from vipcheck.model.cluster import (
    DEFAULT_AFFINITY_TIMEOUT,
    DEFAULT_CONNTRACK_MAX_PER_CORE,
    DEFAULT_CONNTRACK_MIN,
    DEFAULT_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT,
    DEFAULT_CONNTRACK_TCP_ESTABLISHED_TIMEOUT,
    DEFAULT_SCHEDULER,
    DEFAULT_SYNC_PERIOD,
    SERVICE_NAME_LABEL,
    AddressType,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    IPAddress,
    IPFamily,
    IPNetwork,
    KubeProxyConfig,
    KubeProxyImage,
    KubeRelease,
    Node,
    NodePortKeyword,
    ProxyMode,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from vipcheck.model.node import L4Protocol
from vipcheck.parse import ParseError
from vipcheck.untrusted import node_name_problem, parse_address, printable

_E = TypeVar("_E", bound=StrEnum)

CONFIG_KEY = "config.conf"
_LB_IP_MODE_PROXY = "Proxy"
_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
# conntrack.maxPerCore and min are int32 in KubeProxyConfiguration.
_INT32_MAX = 2**31 - 1
# v1.30.4, 1.30, v1.30.4-eks-a737599, v1.31.0+k3s1: the major and minor release are what matter.
_KUBE_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?")


@dataclass(frozen=True, slots=True)
class _Reader:
    """Typed access into one API object, so every error names the file, the object and the field."""

    source: str
    subject: str

    def error(self, path: str, problem: str) -> ParseError:
        """A ParseError naming this object and the field path."""
        return ParseError(
            source=self.source, line=None, message=f"{self.subject}: {path}: {problem}"
        )

    def mapping(self, value: object, path: str) -> Mapping[str, object]:
        """A JSON object, or an empty one where the API omits or nulls it."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected an object, got {_json_type(value)}")
        return value

    def items(self, value: object, path: str) -> Iterator[tuple[str, object]]:
        """(path, item) for each element of a JSON list; null and absent are empty."""
        if value is None:
            return
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {_json_type(value)}")
        for index, item in enumerate(value):
            yield f"{path}[{index}]", item

    def string(self, value: object, path: str, default: str | None = None) -> str:
        """A JSON string; default stands in for absent/null, else the field is required."""
        if value is None:
            if default is None:
                raise self.error(path, "missing")
            return default
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {_json_type(value)}")
        return value

    def optional_string(self, value: object, path: str) -> str | None:
        """A JSON string, with absent, null and "" all meaning unset."""
        return self.string(value, path, default="") or None

    def integer(self, value: object, path: str) -> int:
        """A required JSON integer (booleans are not integers here)."""
        if value is None:
            raise self.error(path, "missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {_json_type(value)}")
        return value

    def boolean(self, value: object, path: str, default: bool) -> bool:
        """A JSON boolean; absent or null takes the API's default."""
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {_json_type(value)}")
        return value

    def enum(self, kind: type[_E], value: object, path: str, default: _E | None = None) -> _E:
        """One of an enum's API spellings; the error lists the accepted ones."""
        text = self.string(value, path, default=None if default is None else str(default))
        try:
            return kind(text)
        except ValueError:
            accepted = ", ".join(member.value for member in kind)
            raise self.error(path, f"expected one of {accepted}, got {text!r}") from None

    def protocol(self, value: object, path: str) -> L4Protocol:
        """A Kubernetes protocol (TCP when unset, as the API defaults it)."""
        text = self.string(value, path, default="TCP")
        try:
            return L4Protocol[text]
        except KeyError:
            accepted = ", ".join(member.name for member in L4Protocol)
            raise self.error(path, f"expected one of {accepted}, got {text!r}") from None

    def address(self, value: object, path: str) -> IPAddress:
        """An IPv4 or IPv6 address, without a zone (`fd00::1%$(id)`), which the API never has."""
        text = self.string(value, path)
        try:
            return parse_address(text)
        except ValueError as error:
            raise self.error(path, _address_problem(text, error)) from None

    def network(self, value: object, path: str) -> IPNetwork:
        """A CIDR; host bits are allowed, as Go's ParseCIDR allows them, a zone is not (ip_network
        keeps `fe80::%x/64`'s)."""
        text = self.string(value, path)
        try:
            parse_address(text.partition("/")[0])
            return ip_network(text, strict=False)
        except ValueError as error:
            raise self.error(path, _address_problem(text, error, "not a CIDR")) from None

    def node_name(self, value: object, path: str) -> str:
        """A Node's name as Kubernetes allows it, so no forged one (`-oProxyCommand=...`, a
        newline) reaches a command or a fix script's comment."""
        name = self.string(value, path)
        problem = node_name_problem(name)
        if problem is not None:
            shown = printable(name, one_line=True)
            raise self.error(path, f"not a Kubernetes Node name, '{shown}': {problem}")
        return name

    def optional_node_name(self, value: object, path: str) -> str | None:
        """A Node's name, with absent, null and "" meaning unset."""
        return None if value in (None, "") else self.node_name(value, path)

    def labels(self, metadata: Mapping[str, object], key: str = "labels") -> Mapping[str, str]:
        """metadata.labels (or metadata.annotations) as an immutable mapping."""
        labels = self.mapping(metadata.get(key), f"metadata.{key}")
        return MappingProxyType(
            {
                name: self.string(value, f"metadata.{key}[{name}]", "")
                for name, value in labels.items()
            }
        )

    def names(
        self, value: object, path: str, read: Callable[[object, str], str] | None = None
    ) -> tuple[str, ...]:
        """The name of each item of a list of {name: ...} objects (EndpointSlice hints), each
        read as a string or with `read` (node_name, for node hints)."""
        read = read or self.string
        return tuple(
            read(self.mapping(item, item_path).get("name"), f"{item_path}.name")
            for item_path, item in self.items(value, path)
        )


def parse_services(text: str, source: str) -> tuple[Service, ...]:
    """Services from `kubectl get services -A -o json` (a list) or one Service."""
    return tuple(_parse_service(reader, item) for reader, item in _objects(text, source, "Service"))


def parse_endpoint_slices(text: str, source: str) -> tuple[EndpointSlice, ...]:
    """EndpointSlices from `kubectl get endpointslices -A -o json` (a list) or one slice."""
    return tuple(
        _parse_endpoint_slice(reader, item)
        for reader, item in _objects(text, source, "EndpointSlice")
    )


def parse_nodes(text: str, source: str) -> tuple[Node, ...]:
    """Nodes from `kubectl get nodes -o json` (a list) or one Node."""
    return tuple(_parse_node(reader, item) for reader, item in _objects(text, source, "Node"))


def parse_kube_proxy_config(text: str, source: str) -> KubeProxyConfig:
    """kube-proxy's configuration from its ConfigMap (JSON or YAML) or the bare config.conf."""
    if text.lstrip().startswith("{"):
        document = _load_json(text, source)
    else:
        document = _load_yaml(text, source, where=None)
    reader = _Reader(source, "kube-proxy configuration")
    root = reader.mapping(document, "(document)")
    if root.get("kind") == "ConfigMap" or "data" in root:
        reader = _Reader(source, _subject(root, "ConfigMap"))
        data = reader.mapping(root.get("data"), "data")
        conf = reader.string(data.get(CONFIG_KEY), f"data[{CONFIG_KEY}]")
        root = reader.mapping(_load_yaml(conf, source, where=f"data[{CONFIG_KEY}]"), CONFIG_KEY)
        reader = _Reader(source, f"{reader.subject} data[{CONFIG_KEY}]")
    kind = root.get("kind")
    if kind not in (None, "KubeProxyConfiguration"):
        raise ParseError(
            source=source,
            line=None,
            message=f"expected a kube-proxy ConfigMap or KubeProxyConfiguration, got kind {kind!r}",
        )
    return _parse_kube_proxy_configuration(reader, root)


def parse_kube_proxy_daemonset(text: str, source: str) -> KubeProxyImage:
    """The image of the kube-proxy DaemonSet's kube-proxy container (else its first container).

    The tag of `registry.k8s.io/kube-proxy:v1.30.4` (a digest after it ignored) names the
    release; a tag that names none (`latest`) leaves the release unknown.
    """
    document = _load_json(text, source)
    reader = _Reader(source, "kube-proxy DaemonSet")
    root = reader.mapping(document, "(document)")
    if root.get("kind") not in (None, "DaemonSet"):
        raise ParseError(
            source=source, line=None, message=f"expected a DaemonSet, got kind {root.get('kind')!r}"
        )
    reader = _Reader(source, _subject(root, "DaemonSet"))
    spec = reader.mapping(root.get("spec"), "spec")
    template = reader.mapping(spec.get("template"), "spec.template")
    pod_spec = reader.mapping(template.get("spec"), "spec.template.spec")
    containers = [
        (path, reader.mapping(item, path))
        for path, item in reader.items(pod_spec.get("containers"), "spec.template.spec.containers")
    ]
    if not containers:
        raise reader.error("spec.template.spec.containers", "missing")
    path, container = next(
        ((p, c) for p, c in containers if c.get("name") == "kube-proxy"), containers[0]
    )
    image = reader.string(container.get("image"), f"{path}.image")
    reference = image.split("@", 1)[0]
    tag = reference.rpartition(":")[2] if ":" in reference.rpartition("/")[2] else ""
    return KubeProxyImage(image=image, release=parse_kube_release(tag) if tag else None)


def parse_kube_release(text: str) -> KubeRelease | None:
    """The release of a Kubernetes version string (v1.30.4 is 1.30); None if it names none."""
    match = _KUBE_VERSION.fullmatch(text.strip())
    if match is None:
        return None
    return KubeRelease(int(match.group(1)), int(match.group(2)))


def parse_go_duration(text: str) -> float:
    """Seconds in a Go time.Duration string ("30s", "1h2m3s", "1.5s", "0"); else ValueError."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    parts = list(_GO_DURATION_PART.finditer(body))
    if not parts or "".join(part.group(0) for part in parts) != body:
        raise ValueError(f"not a Go duration: {text!r}")
    seconds = sum(float(part.group(1)) * _GO_DURATION_UNITS[part.group(2)] for part in parts)
    return -seconds if text.startswith("-") else seconds


def _objects(text: str, source: str, kind: str) -> Iterator[tuple[_Reader, Mapping[str, object]]]:
    """Each object of the expected kind, from a typed list, kubectl's List, or a single object."""
    document = _load_json(text, source)
    if not isinstance(document, dict):
        raise ParseError(
            source=source,
            line=None,
            message=f"expected a {kind} or {kind}List object, got {_json_type(document)}",
        )
    document_kind = document.get("kind")
    if document_kind in (f"{kind}List", "List") or (document_kind is None and "items" in document):
        for path, item in _Reader(source, f"{document_kind or 'list'}").items(
            document.get("items"), "items"
        ):
            yield _list_item(source, kind, path, item)
        return
    if document_kind not in (kind, None):
        raise ParseError(
            source=source,
            line=None,
            message=f"expected a {kind} or {kind}List, got {document_kind}",
        )
    yield _Reader(source, _subject(document, kind)), document


def _list_item(
    source: str, kind: str, path: str, item: object
) -> tuple[_Reader, Mapping[str, object]]:
    """One list item; the API omits kind on items, kubectl's List keeps it (so check it)."""
    if not isinstance(item, dict):
        raise ParseError(
            source=source, line=None, message=f"{path}: expected a {kind}, got {_json_type(item)}"
        )
    item_kind = item.get("kind")
    if item_kind not in (kind, None):
        raise ParseError(
            source=source,
            line=None,
            message=f"{path} ({_subject(item, str(item_kind))}): "
            f"expected a {kind}, got {item_kind}",
        )
    return _Reader(source, _subject(item, path)), item


def _subject(item: Mapping[str, object], fallback: str) -> str:
    """namespace/name (or name) for messages; the fallback when the object has no name."""
    metadata = item.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return fallback
    namespace = metadata.get("namespace")
    name = str(metadata["name"])
    subject = f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name
    return printable(subject, one_line=True)


def _load_json(text: str, source: str) -> object:
    """json.loads with errors as ParseError at the JSON error's line; nesting deeper than the
    decoder's recursion allows (100,000 `[`) is one too, not a RecursionError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(source=source, line=error.lineno, message=error.msg) from None
    except RecursionError:
        raise ParseError(
            source=source, line=None, message="JSON nested too deeply to read"
        ) from None


def _load_yaml(text: str, source: str, where: str | None) -> object:
    """yaml.safe_load with errors as ParseError; an embedded document's line goes in the message."""
    try:
        return yaml.safe_load(text)
    except RecursionError:  # `[[[...` nested deeper than PyYAML's composer can recurse
        at = "" if where is None else f"{where}: "
        raise ParseError(
            source=source, line=None, message=f"{at}YAML nested too deeply to read"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = None if mark is None else int(mark.line) + 1
        problem = str(getattr(error, "problem", None) or error)
        if where is None:
            raise ParseError(source=source, line=line, message=problem) from None
        at = where if line is None else f"{where} line {line}"
        raise ParseError(source=source, line=None, message=f"{at}: {problem}") from None


def _metadata(reader: _Reader, item: Mapping[str, object], namespaced: bool) -> tuple[str, str]:
    """(namespace, name); namespace is "" for cluster-scoped objects."""
    metadata = reader.mapping(item.get("metadata"), "metadata")
    name = reader.string(metadata.get("name"), "metadata.name")
    namespace = reader.string(metadata.get("namespace"), "metadata.namespace") if namespaced else ""
    return namespace, name


def _parse_service(reader: _Reader, item: Mapping[str, object]) -> Service:
    """One v1 Service."""
    namespace, name = _metadata(reader, item, namespaced=True)
    metadata = reader.mapping(item.get("metadata"), "metadata")
    if item.get("spec") is None:
        raise reader.error("spec", "missing")
    spec = reader.mapping(item.get("spec"), "spec")
    service_type = reader.enum(ServiceType, spec.get("type"), "spec.type", ServiceType.CLUSTER_IP)
    cluster_ips = _cluster_ips(reader, spec)
    families = tuple(
        reader.enum(IPFamily, family, path)
        for path, family in reader.items(spec.get("ipFamilies"), "spec.ipFamilies")
    ) or tuple(IPFamily.IPV4 if ip.version == 4 else IPFamily.IPV6 for ip in cluster_ips)
    affinity_config = reader.mapping(
        reader.mapping(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig").get(
            "clientIP"
        ),
        "spec.sessionAffinityConfig.clientIP",
    )
    timeout = affinity_config.get("timeoutSeconds")
    status = reader.mapping(item.get("status"), "status")
    load_balancer = reader.mapping(status.get("loadBalancer"), "status.loadBalancer")
    lb_ingress = list(
        _lb_ingress_ips(reader, load_balancer.get("ingress"), "status.loadBalancer.ingress")
    )
    return Service(
        namespace=namespace,
        name=name,
        type=service_type,
        cluster_ips=cluster_ips,
        ports=tuple(
            _service_port(reader, port, path)
            for path, port in reader.items(spec.get("ports"), "spec.ports")
        ),
        ip_families=families,
        external_ips=tuple(
            reader.address(ip, path)
            for path, ip in reader.items(spec.get("externalIPs"), "spec.externalIPs")
        ),
        lb_ingress_ips=tuple(ip for ip, proxy in lb_ingress if not proxy),
        lb_proxy_mode_ips=tuple(ip for ip, proxy in lb_ingress if proxy),
        session_affinity=reader.enum(
            SessionAffinity,
            spec.get("sessionAffinity"),
            "spec.sessionAffinity",
            SessionAffinity.NONE,
        ),
        session_affinity_timeout=DEFAULT_AFFINITY_TIMEOUT
        if timeout is None
        else reader.integer(timeout, "spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
        external_traffic_policy=reader.enum(
            TrafficPolicy,
            spec.get("externalTrafficPolicy"),
            "spec.externalTrafficPolicy",
            TrafficPolicy.CLUSTER,
        ),
        internal_traffic_policy=reader.enum(
            TrafficPolicy,
            spec.get("internalTrafficPolicy"),
            "spec.internalTrafficPolicy",
            TrafficPolicy.CLUSTER,
        ),
        labels=reader.labels(metadata),
        resource_version=reader.string(
            metadata.get("resourceVersion"), "metadata.resourceVersion", ""
        ),
        annotations=reader.labels(metadata, "annotations"),
        traffic_distribution=reader.optional_string(
            spec.get("trafficDistribution"), "spec.trafficDistribution"
        ),
        load_balancer_source_ranges=tuple(
            _source_ranges(reader, spec.get("loadBalancerSourceRanges"))
        ),
    )


def _cluster_ips(reader: _Reader, spec: Mapping[str, object]) -> tuple[IPAddress, ...]:
    """spec.clusterIPs (spec.clusterIP before dual-stack); "None" and "" mean none."""
    listed = list(reader.items(spec.get("clusterIPs"), "spec.clusterIPs"))
    if not listed and spec.get("clusterIP") is not None:
        listed = [("spec.clusterIP", spec.get("clusterIP"))]
    return tuple(reader.address(ip, path) for path, ip in listed if ip not in ("None", "", None))


def _service_port(reader: _Reader, value: object, path: str) -> ServicePort:
    """One spec.ports item; targetPort defaults to port, as the API server defaults it."""
    port = reader.mapping(value, path)
    number = reader.integer(port.get("port"), f"{path}.port")
    target = port.get("targetPort")
    target_port: int | str
    if target is None:
        target_port = number
    elif isinstance(target, str) and not target.isdigit():
        target_port = target
    elif isinstance(target, str):
        target_port = int(target)
    else:
        target_port = reader.integer(target, f"{path}.targetPort")
    node_port = port.get("nodePort")
    return ServicePort(
        name=reader.string(port.get("name"), f"{path}.name", ""),
        port=number,
        protocol=reader.protocol(port.get("protocol"), f"{path}.protocol"),
        target_port=target_port,
        node_port=None if node_port is None else reader.integer(node_port, f"{path}.nodePort"),
    )


_SOURCE_RANGES = "spec.loadBalancerSourceRanges"


def _source_ranges(reader: _Reader, value: object) -> Iterator[IPNetwork]:
    """spec.loadBalancerSourceRanges as kube-proxy reads them (newBaseServiceInfo,
    kubernetes/kubernetes@5ce22905a86f pkg/proxy/serviceport.go, and MapCIDRsByIPFamily,
    pkg/proxy/util/utils.go): each entry trimmed of whitespace (API validation lets padding like
    `" 203.0.113.0/25"` through), parsed as ParseCIDRSloppy parses it (IPv4 octets may have
    leading zeros, host bits are masked off), and an entry that is still no CIDR ignored, as
    kube-proxy ignores it ("Invalid CIDR ignored"). A non-string entry is a malformed object."""
    for path, item in reader.items(value, _SOURCE_RANGES):
        network = _sloppy_cidr(reader.string(item, path).strip())
        if network is not None:
            yield network


def _sloppy_cidr(text: str) -> IPNetwork | None:
    """Go's netutils.ParseCIDRSloppy: `a.b.c.d/n` (octets with leading zeros read as decimal)
    or an IPv6 CIDR, no zone; None where it is not one."""
    address, slash, prefix = text.partition("/")
    if not slash or not prefix.isascii() or not prefix.isdigit():
        return None
    octets = address.split(".")
    if len(octets) == 4 and all(o.isascii() and o.isdigit() and len(o) <= 3 for o in octets):
        address = ".".join(str(int(octet)) for octet in octets)
    try:
        parse_address(address)
        return ip_network(f"{address}/{int(prefix)}", strict=False)
    except ValueError:
        return None


def _lb_ingress_ips(reader: _Reader, value: object, path: str) -> Iterator[tuple[IPAddress, bool]]:
    """Load-balancer ingress IPs, each with whether its ipMode is Proxy (kube-proxy from 1.30
    programs only the others, IsVIPMode); hostname-only ingresses have none."""
    for item_path, item in reader.items(value, path):
        ingress = reader.mapping(item, item_path)
        if ingress.get("ip") in (None, ""):
            continue
        address = reader.address(ingress.get("ip"), f"{item_path}.ip")
        yield address, ingress.get("ipMode") == _LB_IP_MODE_PROXY


def _parse_endpoint_slice(reader: _Reader, item: Mapping[str, object]) -> EndpointSlice:
    """One discovery.k8s.io/v1 EndpointSlice."""
    namespace, name = _metadata(reader, item, namespaced=True)
    labels = reader.labels(reader.mapping(item.get("metadata"), "metadata"))
    address_type = reader.enum(AddressType, item.get("addressType"), "addressType")
    endpoints = (
        ()
        if address_type is AddressType.FQDN
        else tuple(
            _endpoint(reader, endpoint, path)
            for path, endpoint in reader.items(item.get("endpoints"), "endpoints")
        )
    )
    return EndpointSlice(
        namespace=namespace,
        name=name,
        service_name=labels.get(SERVICE_NAME_LABEL) or None,
        address_type=address_type,
        endpoints=endpoints,
        ports=tuple(
            _endpoint_port(reader, port, path)
            for path, port in reader.items(item.get("ports"), "ports")
        ),
    )


def _endpoint(reader: _Reader, value: object, path: str) -> Endpoint:
    """One endpoint; unset conditions read as kube-proxy reads them (ready, serving, running)."""
    endpoint = reader.mapping(value, path)
    addresses = tuple(
        reader.address(address, address_path)
        for address_path, address in reader.items(endpoint.get("addresses"), f"{path}.addresses")
    )
    if not addresses:
        raise reader.error(f"{path}.addresses", "missing")
    conditions = reader.mapping(endpoint.get("conditions"), f"{path}.conditions")
    hints = reader.mapping(endpoint.get("hints"), f"{path}.hints")
    return Endpoint(
        addresses=addresses,
        ready=reader.boolean(conditions.get("ready"), f"{path}.conditions.ready", default=True),
        serving=reader.boolean(
            conditions.get("serving"), f"{path}.conditions.serving", default=True
        ),
        terminating=reader.boolean(
            conditions.get("terminating"), f"{path}.conditions.terminating", default=False
        ),
        node_name=reader.optional_node_name(endpoint.get("nodeName"), f"{path}.nodeName"),
        zone_hints=reader.names(hints.get("forZones"), f"{path}.hints.forZones"),
        node_hints=reader.names(hints.get("forNodes"), f"{path}.hints.forNodes", reader.node_name),
    )


def _endpoint_port(reader: _Reader, value: object, path: str) -> EndpointPort:
    """One EndpointSlice port; a null port means "all ports", which kube-proxy cannot program."""
    port = reader.mapping(value, path)
    number = port.get("port")
    return EndpointPort(
        name=reader.string(port.get("name"), f"{path}.name", ""),
        port=None if number is None else reader.integer(number, f"{path}.port"),
        protocol=reader.protocol(port.get("protocol"), f"{path}.protocol"),
    )


def _parse_node(reader: _Reader, item: Mapping[str, object]) -> Node:
    """One v1 Node."""
    metadata = reader.mapping(item.get("metadata"), "metadata")
    name = reader.node_name(metadata.get("name"), "metadata.name")
    spec = reader.mapping(item.get("spec"), "spec")
    status = reader.mapping(item.get("status"), "status")
    addresses: dict[str, list[str]] = {}
    for path, value in reader.items(status.get("addresses"), "status.addresses"):
        entry = reader.mapping(value, path)
        kind = reader.string(entry.get("type"), f"{path}.type")
        addresses.setdefault(kind, []).append(
            reader.string(entry.get("address"), f"{path}.address")
        )
    pod_cidrs = list(reader.items(spec.get("podCIDRs"), "spec.podCIDRs"))
    if not pod_cidrs and spec.get("podCIDR"):
        pod_cidrs = [("spec.podCIDR", spec.get("podCIDR"))]
    node_info = reader.mapping(status.get("nodeInfo"), "status.nodeInfo")
    hostnames = addresses.get("Hostname", [])
    kube_proxy_version = reader.optional_string(
        node_info.get("kubeProxyVersion"), "status.nodeInfo.kubeProxyVersion"
    )
    release = None if kube_proxy_version is None else parse_kube_release(kube_proxy_version)
    if kube_proxy_version is not None and release is None:
        raise reader.error(
            "status.nodeInfo.kubeProxyVersion",
            f"not a Kubernetes version (like v1.30.4): {kube_proxy_version!r}",
        )
    return Node(
        name=name,
        internal_ips=_node_ips(reader, addresses.get("InternalIP", []), "InternalIP"),
        external_ips=_node_ips(reader, addresses.get("ExternalIP", []), "ExternalIP"),
        hostname=hostnames[0] if hostnames else None,
        pod_cidrs=tuple(reader.network(cidr, path) for path, cidr in pod_cidrs),
        kernel_version=reader.optional_string(
            node_info.get("kernelVersion"), "status.nodeInfo.kernelVersion"
        ),
        kube_proxy_version=kube_proxy_version,
        kube_proxy_release=release,
        labels=reader.labels(metadata),
    )


def _node_ips(reader: _Reader, addresses: list[str], kind: str) -> tuple[IPAddress, ...]:
    """The Node's addresses of one type, in the order the kubelet reported them."""
    path = f"status.addresses[type={kind}].address"
    return tuple(reader.address(address, path) for address in addresses)


def _parse_kube_proxy_configuration(reader: _Reader, root: Mapping[str, object]) -> KubeProxyConfig:
    """A KubeProxyConfiguration (v1alpha1 keeps sync periods under ipvs, v1alpha2 at the top)."""
    ipvs = reader.mapping(root.get("ipvs"), "ipvs")

    def duration(key: str, fallback_key: str | None = None) -> float:
        path = f"ipvs.{key}"
        value = ipvs.get(key)
        if value is None and fallback_key is not None:
            path, value = fallback_key, root.get(fallback_key)
        return _seconds(reader, value, path) or 0.0

    section, conntrack = _conntrack_section(reader, root)

    def conntrack_seconds(key: str, default: int) -> int:
        """A conntrack timeout in whole seconds (kube-proxy's int(d / time.Second)); null is
        kube-proxy's default (24h and 1h for the TCP ones, which are pointers; 0 for UDP)."""
        seconds = _seconds(reader, conntrack.get(key), f"{section}.{key}")
        return default if seconds is None else int(seconds)

    def conntrack_count(key: str, default: int) -> int:
        """maxPerCore or min: an int32 kube-proxy's validation keeps at 0 or more; null is the
        default."""
        value, path = conntrack.get(key), f"{section}.{key}"
        if value is None:
            return default
        number = reader.integer(value, path)
        if not 0 <= number <= _INT32_MAX:
            raise reader.error(path, f"expected 0 to {_INT32_MAX}, got {number}")
        return number

    mode_text = reader.string(root.get("mode"), "mode", "")
    cluster_cidr = reader.string(root.get("clusterCIDR"), "clusterCIDR", "")
    return KubeProxyConfig(
        # An empty mode is kube-proxy's platform default, iptables on Linux.
        mode=reader.enum(ProxyMode, mode_text or ProxyMode.IPTABLES.value, "mode"),
        scheduler=reader.string(ipvs.get("scheduler"), "ipvs.scheduler", "") or DEFAULT_SCHEDULER,
        sync_period=duration("syncPeriod", "syncPeriod") or DEFAULT_SYNC_PERIOD,
        min_sync_period=duration("minSyncPeriod", "minSyncPeriod"),
        # kube-proxy hands the kernel whole seconds (int(d.Seconds())).
        tcp_timeout=int(duration("tcpTimeout")),
        tcp_fin_timeout=int(duration("tcpFinTimeout")),
        udp_timeout=int(duration("udpTimeout")),
        strict_arp=reader.boolean(ipvs.get("strictARP"), "ipvs.strictARP", default=False),
        exclude_cidrs=tuple(
            reader.network(cidr, path)
            for path, cidr in reader.items(ipvs.get("excludeCIDRs"), "ipvs.excludeCIDRs")
        ),
        node_port_addresses=tuple(
            _node_port_address(reader, value, path)
            for path, value in reader.items(root.get("nodePortAddresses"), "nodePortAddresses")
        ),
        cluster_cidrs=tuple(
            reader.network(cidr.strip(), "clusterCIDR")
            for cidr in cluster_cidr.split(",")
            if cidr.strip()
        ),
        conntrack_section=section,
        conntrack_max_per_core=conntrack_count("maxPerCore", DEFAULT_CONNTRACK_MAX_PER_CORE),
        conntrack_min=conntrack_count("min", DEFAULT_CONNTRACK_MIN),
        conntrack_tcp_established_timeout=conntrack_seconds(
            "tcpEstablishedTimeout", DEFAULT_CONNTRACK_TCP_ESTABLISHED_TIMEOUT
        ),
        conntrack_tcp_close_wait_timeout=conntrack_seconds(
            "tcpCloseWaitTimeout", DEFAULT_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT
        ),
        conntrack_tcp_be_liberal=reader.boolean(
            conntrack.get("tcpBeLiberal"), f"{section}.tcpBeLiberal", default=False
        ),
        conntrack_udp_timeout=conntrack_seconds("udpTimeout", 0),
        conntrack_udp_stream_timeout=conntrack_seconds("udpStreamTimeout", 0),
    )


def _conntrack_section(
    reader: _Reader, root: Mapping[str, object]
) -> tuple[str, Mapping[str, object]]:
    """Where the conntrack settings are, and their path: `conntrack` (v1alpha1), else
    `linux.conntrack` (v1alpha2, which moved them); absent, kube-proxy's defaults apply."""
    if root.get("conntrack") is None:
        linux = reader.mapping(root.get("linux"), "linux")
        if linux.get("conntrack") is not None:
            return "linux.conntrack", reader.mapping(linux["conntrack"], "linux.conntrack")
    return "conntrack", reader.mapping(root.get("conntrack"), "conntrack")


def _seconds(reader: _Reader, value: object, path: str) -> float | None:
    """A Go duration string in seconds, None when absent or null; negative ones are refused."""
    if value is None:
        return None
    text = reader.string(value, path)
    try:
        seconds = parse_go_duration(text)
    except ValueError as error:
        raise reader.error(path, str(error)) from None
    if seconds < 0:
        raise reader.error(path, f"must not be negative, got {text!r}")
    return seconds


def _node_port_address(reader: _Reader, value: object, path: str) -> IPNetwork | NodePortKeyword:
    """A nodePortAddresses entry: a CIDR or the keyword primary."""
    if value == NodePortKeyword.PRIMARY.value:
        return NodePortKeyword.PRIMARY
    return reader.network(value, path)


def _address_problem(text: str, error: ValueError, what: str = "not an IP address") -> str:
    """parse_address's word on a zone, which shows the text escaped; else `what` and the text."""
    return str(error) if "%" in text else f"{what}: {text!r}"


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names: Mapping[type, str] = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
