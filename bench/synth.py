"""Synthetic snapshots of a cluster of any size, every file as the real command prints it.

The shapes come from real outputs: `ipvsadm -Ln --exact` with its printf widths, trailing blanks
and libipvs sort order, `/proc/net/ip_vs_conn` rows, `kubectl get ... -A -o json` (a `List`,
4-space indent, sorted keys), and `sysctl -a`, `ip -j addr` and `ip -j -d link` replicated from
the lab's recording (fixtures/recorded/seed-incidents/node-1), one block per interface, a veth
per pod. Faults are injected on top of a correct kube-proxy's state, and `expected_failures`
names the items they must fail, so the bench can check that exactly those fail.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from bench import nft_table
from bench.nft_table import (
    CT_NEW,
    DADDR_PROTO_PORT,
    MARK,
    MARK_FOR_MASQUERADE,
    MASQUERADE,
    PROTO_PORT,
    REJECT,
    Base,
    Element,
    NftSet,
    Table,
    dnat_map,
    jump,
    match,
    meta,
    payload,
    prefix,
    vmap,
)

RECORDED = Path(__file__).resolve().parent.parent / "fixtures/recorded/seed-incidents/nodes/node-1"
SERVICE_CIDR_BASE = IPv4Address("10.96.0.0")
NODE_CIDR = IPv4Network("192.168.0.0/16")
POD_BASE = IPv4Address("10.128.0.0")  # node i's pods in 10.128.0.0/9, a /22 each
POD_BLOCK = 1024
ORPHAN_VS = (IPv4Address("10.111.255.254"), 8080)
NODE_PORT_MIN, NODE_PORT_MAX = 30000, 32767
CREATED = "2026-11-27T08:00:00Z"
SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_CIDR = "10.128.0.0/9"
KUBE_PROXY_VERSION = {"ipvs": "v1.30.4", "nftables": "v1.36.2"}
GENERATOR_VERSION = 5  # bump when the files written for the same knobs change
KERNEL = "6.1.0-56-amd64"
KUBE_PROXY_CONFIG = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: 10.128.0.0/9
conntrack:
  maxPerCore: 32768
  min: 131072
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: rr
  strictARP: false
  syncPeriod: 30s
  tcpFinTimeout: 30s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
mode: ipvs
nodePortAddresses:
- 192.168.0.0/16
"""
# Connection states and their share of the table; no SYN_RECV, which the healthy state lacks.
CONN_STATES: tuple[tuple[str, int, int], ...] = (
    ("ESTABLISHED", 60, 900),
    ("TIME_WAIT", 30, 120),
    ("FIN_WAIT", 8, 30),
    ("CLOSE_WAIT", 2, 60),
)


class Fault(StrEnum):
    """What the generator can break, each on its own node, as the founding incidents did."""

    STALE_REAL_SERVER = "stale-real-server"
    MISSING_REAL_SERVER = "missing-real-server"
    ORPHAN_VS = "orphan-vs"
    STRICT_RP_FILTER = "strict-rp-filter"
    TCPFIN_120 = "tcpfin-120"
    # nftables mode's: a DNAT to the port an edit replaced (founding incident 1), a ClusterIP
    # missing from service-ips, a non-empty chain of a deleted Service left behind.
    STALE_DNAT_PORT = "stale-dnat-port"
    MISSING_SERVICE_IP = "missing-service-ip"
    STALE_CHAIN = "stale-chain"


ALL_FAULTS = tuple(Fault)
IPVS_FAULTS = ALL_FAULTS[:5]
NFTABLES_FAULTS = ALL_FAULTS[5:]


class Mode(StrEnum):
    """kube-proxy's mode in the synthetic cluster: what each node's files hold."""

    IPVS = "ipvs"
    NFTABLES = "nftables"  # kube-proxy 1.36: the DNAT-map layout, no endpoint chains


@dataclass(frozen=True, slots=True)
class Shape:
    """The knobs: cluster size, Service mix, connection table size, faults."""

    nodes: int
    services: int
    endpoints: int = 3
    two_port_share: float = 0.25
    node_port_share: float = 0.1
    connections: int = 500  # per node
    big_table_node: int | None = None  # index of a node whose table holds big_table entries
    big_table: int = 0
    faults: tuple[Fault, ...] | None = None  # None: every fault of the mode
    seed: int = 8
    mode: Mode = Mode.IPVS

    @property
    def injected(self) -> tuple[Fault, ...]:
        """The faults injected: those of the mode asked for, else every fault of the mode."""
        own = NFTABLES_FAULTS if self.mode is Mode.NFTABLES else IPVS_FAULTS
        return own if self.faults is None else tuple(f for f in self.faults if f in own)

    @property
    def name(self) -> str:
        """Names the cached snapshot: the knobs and the generator's version."""
        knobs = {**asdict(self), "generator": GENERATOR_VERSION}
        digest = hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()
        mode = "-nft" if self.mode is Mode.NFTABLES else ""
        return f"{self.nodes}x{self.services}{mode}-{digest[:10]}"


@dataclass(frozen=True, slots=True)
class _Port:
    name: str
    port: int
    protocol: str
    target_port: int
    node_port: int | None


@dataclass(frozen=True, slots=True)
class _Service:
    index: int
    namespace: str
    name: str
    cluster_ip: IPv4Address
    ports: tuple[_Port, ...]
    endpoints: tuple[tuple[IPv4Address, str, str], ...]  # pod IP, node, pod name

    @property
    def node_port(self) -> bool:
        return any(port.node_port is not None for port in self.ports)


@dataclass
class _Cluster:
    shape: Shape
    nodes: list[str]
    node_ips: list[IPv4Address]
    services: list[_Service]
    pods_on: dict[str, list[str]] = field(default_factory=dict)


def _share(index: int, share: float) -> bool:
    """Exactly `share` of indexes, spread evenly."""
    return int((index + 1) * share) != int(index * share)


def _cluster(shape: Shape) -> _Cluster:
    nodes = [f"node-{i + 1:03d}" for i in range(shape.nodes)]
    node_ips = [NODE_CIDR.network_address + 10 + i for i in range(shape.nodes)]
    services = []
    pods = 0
    node_ports = iter(range(NODE_PORT_MIN, NODE_PORT_MAX + 1))
    pods_on: dict[str, list[str]] = {node: [] for node in nodes}
    for j in range(shape.services):
        namespace, name = f"team-{j % 50:02d}", f"svc-{j:05d}"
        exposed = _share(j, shape.node_port_share)
        specs = [("http", 80, "TCP", 8080)]
        if _share(j, shape.two_port_share):
            specs.append(("dns", 53, "UDP", 5353) if j % 5 == 0 else ("metrics", 9090, "TCP", 9090))
        ports = tuple(
            _Port(n, p, proto, target, next(node_ports) if exposed else None)
            for n, p, proto, target in specs
        )
        endpoints = []
        for k in range(shape.endpoints):
            node_index = pods % shape.nodes
            slot = pods // shape.nodes
            if slot >= POD_BLOCK - 2:
                raise ValueError("too many pods per node for a /22")
            address = POD_BASE + node_index * POD_BLOCK + 2 + slot
            pod = f"{name}-{k}"
            endpoints.append((address, nodes[node_index], pod))
            pods_on[nodes[node_index]].append(f"{namespace}/{pod}")
            pods += 1
        services.append(
            _Service(j, namespace, name, SERVICE_CIDR_BASE + 10 + j, ports, tuple(endpoints))
        )
    return _Cluster(shape, nodes, node_ips, services, pods_on)


def _fault_node(cluster: _Cluster, fault: Fault) -> int:
    return ALL_FAULTS.index(fault) % len(cluster.nodes)


def _fault_service(cluster: _Cluster, fault: Fault) -> _Service:
    """The Service a fault breaks: a different one per fault, with a TCP first port."""
    return cluster.services[ALL_FAULTS.index(fault) % len(cluster.services)]


def expected_failures(shape: Shape) -> set[tuple[str, str]]:
    """(check id, item subject) of every item the injected faults must fail, and no other."""
    cluster = _cluster(shape)
    failures: set[tuple[str, str]] = set()
    for fault in shape.injected:
        node = cluster.nodes[_fault_node(cluster, fault)]
        service = _fault_service(cluster, fault)
        port = f"{service.namespace}/{service.name}:{service.ports[0].port}/TCP"
        if fault in (Fault.STALE_REAL_SERVER, Fault.MISSING_REAL_SERVER):
            failures.add(("ipvs-real-servers-match-endpoints", port))
        elif fault is Fault.ORPHAN_VS:
            failures.add(("ipvs-no-orphan-virtual-servers", node))
        elif fault is Fault.STRICT_RP_FILTER:
            failures.add(("rp-filter-not-strict", f"{node}/tunl0"))
        elif fault is Fault.TCPFIN_120:
            failures.add(("ipvs-tcpfin-timeout", node))
            failures.add(("ipvs-timeouts-match-kube-proxy-config", node))
        elif fault is Fault.STALE_DNAT_PORT:
            failures.add(("nft-chains-reach-endpoints", port))
            failures.add(("nft-trace-reaches-endpoints", port))
        elif fault is Fault.MISSING_SERVICE_IP:
            failures.add(("nft-service-maps", port))
            failures.add(("nft-trace-reaches-endpoints", port))
        elif fault is Fault.STALE_CHAIN:
            failures.add(("nft-no-stale-chains", node))
    return failures


def generate(shape: Shape, directory: Path) -> Path:
    """Write the snapshot to directory (made if missing) and return it."""
    cluster = _cluster(shape)
    (directory / "cluster").mkdir(parents=True, exist_ok=True)
    meta = {"format": 1, "created": CREATED, "vipcheck": "bench", "target": f"synthetic {shape}"}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    for name, document in _cluster_files(cluster).items():
        (directory / "cluster" / name).write_text(_kubectl_json(document))
    templates = _Templates.load()
    for index, node in enumerate(cluster.nodes):
        node_dir = directory / "nodes" / node
        node_dir.mkdir(parents=True, exist_ok=True)
        for name, text in _node_files(cluster, index, templates):
            (node_dir / name).write_text(text)
    return directory


# --- cluster/*.json, as `kubectl get ... -A -o json` prints them ------------------------------


def _kubectl_json(items: Any) -> str:
    """A list as kubectl prints several objects (a `List`), or the one object."""
    document = items
    if isinstance(items, list):
        document = {
            "apiVersion": "v1",
            "items": items,
            "kind": "List",
            "metadata": {"resourceVersion": ""},
        }
    return json.dumps(document, indent=4, sort_keys=True) + "\n"


def _uid(*parts: object) -> str:
    digest = hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()  # noqa: S324 - an id
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _cluster_files(cluster: _Cluster) -> dict[str, Any]:
    files = {
        "services.json": [_service_object(s) for s in cluster.services],
        "endpointslices.json": [_slice_object(s) for s in cluster.services],
        "nodes.json": [_node_object(cluster, i) for i in range(len(cluster.nodes))],
        "kube-proxy.json": {
            "apiVersion": "v1",
            "data": {"config.conf": _kube_proxy_config(cluster.shape.mode)},
            "kind": "ConfigMap",
            "metadata": {
                "creationTimestamp": CREATED,
                "labels": {"app": "kube-proxy"},
                "name": "kube-proxy",
                "namespace": "kube-system",
                "resourceVersion": "231",
                "uid": _uid("configmap", "kube-proxy"),
            },
        },
    }
    if cluster.shape.mode is Mode.NFTABLES:
        files["kube-proxy-daemonset.json"] = _daemonset(cluster.shape.mode)
    return files


def _kube_proxy_config(mode: Mode) -> str:
    """The ConfigMap's config.conf: nftables mode adds its block and names the mode."""
    if mode is Mode.IPVS:
        return KUBE_PROXY_CONFIG
    nftables = "nftables:\n  masqueradeAll: false\n  masqueradeBit: 14\n  minSyncPeriod: 1s\n"
    nftables += "  syncPeriod: 30s\n"
    return KUBE_PROXY_CONFIG.replace("mode: ipvs\n", f"mode: nftables\n{nftables}")


def _daemonset(mode: Mode) -> dict[str, Any]:
    """`kubectl -n kube-system get daemonset kube-proxy -o json`, trimmed to what names the
    release: the kube-proxy container's image tag."""
    container = {
        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"],
        "image": f"registry.k8s.io/kube-proxy:{KUBE_PROXY_VERSION[mode]}",
        "name": "kube-proxy",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "creationTimestamp": CREATED,
            "labels": {"k8s-app": "kube-proxy"},
            "name": "kube-proxy",
            "namespace": "kube-system",
            "uid": _uid("daemonset", "kube-proxy"),
        },
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {"containers": [container], "hostNetwork": True},
            },
        },
    }


def _service_object(service: _Service) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "clusterIP": str(service.cluster_ip),
        "clusterIPs": [str(service.cluster_ip)],
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [],
        "selector": {"app": service.name},
        "sessionAffinity": "None",
        "type": "NodePort" if service.node_port else "ClusterIP",
    }
    if service.node_port:
        spec["externalTrafficPolicy"] = "Cluster"
    for port in service.ports:
        item = {
            "name": port.name,
            "port": port.port,
            "protocol": port.protocol,
            "targetPort": port.target_port,
        }
        if port.node_port is not None:
            item["nodePort"] = port.node_port
        spec["ports"].append(item)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "creationTimestamp": CREATED,
            "labels": {"app": service.name},
            "name": service.name,
            "namespace": service.namespace,
            "resourceVersion": str(1000 + service.index),
            "uid": _uid("service", service.namespace, service.name),
        },
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def _slice_object(service: _Service) -> dict[str, Any]:
    suffix = _uid("slice", service.name)[:5]
    return {
        "addressType": "IPv4",
        "apiVersion": "discovery.k8s.io/v1",
        "endpoints": [
            {
                "addresses": [str(address)],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": node,
                "targetRef": {
                    "kind": "Pod",
                    "name": pod,
                    "namespace": service.namespace,
                    "uid": _uid("pod", service.namespace, pod),
                },
            }
            for address, node, pod in service.endpoints
        ],
        "kind": "EndpointSlice",
        "metadata": {
            "creationTimestamp": CREATED,
            "generateName": f"{service.name}-",
            "generation": 1,
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": service.name,
            },
            "name": f"{service.name}-{suffix}",
            "namespace": service.namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "blockOwnerDeletion": True,
                    "controller": True,
                    "kind": "Service",
                    "name": service.name,
                    "uid": _uid("service", service.namespace, service.name),
                }
            ],
            "resourceVersion": str(9000 + service.index),
            "uid": _uid("slice", service.namespace, service.name),
        },
        "ports": [
            {"name": port.name, "port": port.target_port, "protocol": port.protocol}
            for port in service.ports
        ],
    }


def _node_object(cluster: _Cluster, index: int) -> dict[str, Any]:
    name = cluster.nodes[index]
    cidr = f"{POD_BASE + index * POD_BLOCK}/22"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "creationTimestamp": CREATED,
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
            },
            "name": name,
            "resourceVersion": str(500 + index),
            "uid": _uid("node", name),
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {
            "addresses": [
                {"address": str(cluster.node_ips[index]), "type": "InternalIP"},
                {"address": name, "type": "Hostname"},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.20",
                "kernelVersion": KERNEL,
                "kubeProxyVersion": KUBE_PROXY_VERSION[cluster.shape.mode],
                "kubeletVersion": "v1.30.4",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
            },
        },
    }


# --- nodes/<node>/*, as the node's commands print them ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Templates:
    """The lab recording's per-interface sysctl block and interface objects, to replicate."""

    sysctl_global: tuple[str, ...]
    sysctl_interface: tuple[str, ...]  # with {if} for the interface name
    addr: dict[str, dict[str, Any]]
    link: dict[str, dict[str, Any]]

    @classmethod
    def load(cls) -> _Templates:
        lines = (RECORDED / "sysctl.txt").read_text().splitlines()
        sample = "cali96603d4dfdd"
        pattern = re.compile(r"^net\.ipv[46]\.(conf|neigh)\.([^.]+)\.")
        per_interface = [line.replace(sample, "{if}") for line in lines if f".{sample}." in line]
        global_lines = [
            line
            for line in lines
            if not ((m := pattern.match(line)) and m[2] not in ("all", "default"))
        ]
        addr = {
            item["ifname"]: item for item in json.loads((RECORDED / "ip-addr.json").read_text())
        }
        link = {
            item["ifname"]: item for item in json.loads((RECORDED / "ip-link.json").read_text())
        }
        return cls(tuple(global_lines), tuple(per_interface), addr, link)


def _ipvs_order(a: tuple[int, int, int], b: tuple[int, int, int]) -> int:
    """libipvs ipvs_cmp_services(): protocol, then `ntohl(a) - ntohl(b)` in an int (overflows)."""
    if a[0] != b[0]:
        return a[0] - b[0]
    diff = ((a[1] - b[1] + 2**31) % 2**32) - 2**31
    return diff if diff else a[2] - b[2]


_PROTOCOL_NUMBER = {"TCP": 6, "UDP": 17}


_VS = tuple[str, IPv4Address, int, list[tuple[IPv4Address, int]]]


def _virtual_services(cluster: _Cluster, index: int) -> list[_VS]:
    """The VSs a correct kube-proxy programs on node `index`, faults applied."""
    node_ip = cluster.node_ips[index]
    found: list[_VS] = []
    faults = cluster.shape.injected
    for service in cluster.services:
        for position, port in enumerate(service.ports):
            servers = [(address, port.target_port) for address, _, _ in service.endpoints]
            cluster_ip_servers = list(servers)
            if position == 0:
                for fault in (Fault.STALE_REAL_SERVER, Fault.MISSING_REAL_SERVER):
                    if (
                        fault in faults
                        and _fault_service(cluster, fault) is service
                        and _fault_node(cluster, fault) == index
                    ):
                        if fault is Fault.STALE_REAL_SERVER:
                            cluster_ip_servers.append((service.endpoints[0][0], 80))
                        else:
                            cluster_ip_servers = cluster_ip_servers[1:]
            found.append((port.protocol, service.cluster_ip, port.port, cluster_ip_servers))
            if port.node_port is not None:
                found.append((port.protocol, node_ip, port.node_port, servers))
    if Fault.ORPHAN_VS in faults and _fault_node(cluster, Fault.ORPHAN_VS) == index:
        address, number = ORPHAN_VS
        found.append(("TCP", address, number, [(cluster.services[0].endpoints[0][0], 8080)]))
    return found


_Counts = dict[tuple[IPv4Address, int, IPv4Address, int], list[int]]


def _ipvsadm_list(cluster: _Cluster, index: int, counts: _Counts) -> str:
    """The listing; ActiveConn/InActConn count the node's connection entries per real server
    (ESTABLISHED / the others), as the kernel does, so idle real servers show 0 0."""
    services = _virtual_services(cluster, index)

    def order(a: _VS, b: _VS) -> int:
        return _ipvs_order(
            (_PROTOCOL_NUMBER[a[0]], int(a[1]), a[2]), (_PROTOCOL_NUMBER[b[0]], int(b[1]), b[2])
        )

    services.sort(key=functools.cmp_to_key(order))
    lines = [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for protocol, address, port, servers in services:
        lines.append(f"{protocol:<4} {address}:{port} rr")
        ordered = sorted(servers, key=functools.cmp_to_key(_dest_order))
        for server, server_port in ordered:
            active, inactive = counts.get((address, port, server, server_port), (0, 0))
            lines.append(f"  -> {f'{server}:{server_port}':<28} {'Masq':<7} {1:<6} "
                         f"{active:<10} {inactive:<10}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _dest_order(a: tuple[IPv4Address, int], b: tuple[IPv4Address, int]) -> int:
    return _ipvs_order((0, int(a[0]), a[1]), (0, int(b[0]), b[1]))


def _hex(address: IPv4Address, port: int) -> str:
    return f"{int(address):08X} {port:04X}"


def _connections(cluster: _Cluster, count: int, rng: random.Random) -> tuple[str, _Counts]:
    """/proc/net/ip_vs_conn: clients (pods and outside hosts) to ClusterIPs, spread over states,
    and the entries per VS and real server, [active, inactive], for the listing's counters."""
    counts: _Counts = {}
    lines = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"]
    weights = [share for _, share, _ in CONN_STATES]
    states = rng.choices(CONN_STATES, weights=weights, k=min(count, 4096))
    services = cluster.services
    for i in range(count):
        service = services[rng.randrange(len(services))]
        port = service.ports[0]
        backend = service.endpoints[i % len(service.endpoints)][0]
        client = POD_BASE + rng.randrange(len(cluster.nodes) * POD_BLOCK)
        state, _, timeout = states[i % len(states)]
        tally = counts.setdefault(
            (service.cluster_ip, port.port, backend, port.target_port), [0, 0]
        )
        tally[0 if state == "ESTABLISHED" else 1] += 1
        lines.append(
            f"TCP {_hex(client, rng.randrange(32768, 61000))} "
            f"{_hex(service.cluster_ip, port.port)} {_hex(backend, port.target_port)} "
            f"{state:<11} {rng.randrange(1, timeout):>7}"
        )
    return "\n".join(lines) + "\n", counts


def _veth_name(pod: str) -> str:
    return "cali" + hashlib.sha1(pod.encode()).hexdigest()[:11]  # noqa: S324 - Calico's naming


def _interfaces(cluster: _Cluster, index: int) -> list[tuple[str, str]]:
    """(name, template) in ifindex order: lo, tunl0, eth0, kube-ipvs0 (IPVS mode), a veth per
    pod."""
    node = cluster.nodes[index]
    fixed = [("lo", "lo"), ("tunl0", "tunl0"), ("eth0", "eth0")]
    if cluster.shape.mode is Mode.IPVS:
        fixed.append(("kube-ipvs0", "kube-ipvs0"))
    veths = [(_veth_name(pod), "cali96603d4dfdd") for pod in cluster.pods_on[node]]
    return fixed + veths


def _ip_json(cluster: _Cluster, index: int, templates: _Templates, which: str) -> str:
    source = templates.addr if which == "addr" else templates.link
    items = []
    for ifindex, (name, template) in enumerate(_interfaces(cluster, index), start=1):
        item = dict(source[template])
        item["ifindex"] = ifindex
        item["ifname"] = name
        if "link_index" in item:
            item["link_index"] = ifindex + 1000
        if which == "addr":
            item["addr_info"] = _addr_info(cluster, index, name, item["addr_info"])
        items.append(item)
    return json.dumps(items, separators=(",", ":")) + "\n"


def _addr_info(
    cluster: _Cluster, index: int, name: str, template: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    def inet(address: IPv4Address, prefix: int, label: str) -> dict[str, Any]:
        return {
            "family": "inet",
            "local": str(address),
            "prefixlen": prefix,
            "scope": "global",
            "label": label,
            "valid_life_time": 4294967295,
            "preferred_life_time": 4294967295,
        }

    link_local = [entry for entry in template if entry.get("scope") == "link"]
    if name == "tunl0":
        return [inet(POD_BASE + index * POD_BLOCK, 32, name)]
    if name == "eth0":
        return [inet(cluster.node_ips[index], NODE_CIDR.prefixlen, name), *link_local]
    if name == "kube-ipvs0":
        return [inet(service.cluster_ip, 32, name) for service in cluster.services]
    if name.startswith("cali"):
        return link_local
    return template


_IPVS_MODE_SYSCTLS = (
    "net.ipv4.vs.conntrack",
    "net.ipv4.vs.expire_nodest_conn",
    "net.ipv4.vs.expire_quiescent_template",
)


def _sysctl(cluster: _Cluster, index: int, templates: _Templates) -> str:
    """`sysctl -a`: the recording's keys, a conf and neigh block per interface, sorted by key."""
    faults = cluster.shape.injected
    strict = (
        Fault.STRICT_RP_FILTER in faults and _fault_node(cluster, Fault.STRICT_RP_FILTER) == index
    )
    values = {
        "net.ipv4.conf.all.rp_filter": "1" if strict else "2",
        "net.ipv4.conf.tunl0.rp_filter": "1" if strict else "0",
        "net.ipv4.conf.eth0.rp_filter": "2",
        # kube-proxy 1.30's writes from KUBE_PROXY_CONFIG at 32 CPUs (conntrack-timeouts).
        "net.netfilter.nf_conntrack_max": "1048576",
        "net.netfilter.nf_conntrack_buckets": "262144",
        "net.netfilter.nf_conntrack_tcp_timeout_established": "86400",
        "net.netfilter.nf_conntrack_tcp_timeout_close_wait": "3600",
        "net.netfilter.nf_conntrack_count": str(4000 + 37 * index),
    }
    if cluster.shape.mode is Mode.NFTABLES:
        # The kernel's defaults: the recording's are IPVS mode's, which nftables mode never sets
        # (and a switched node keeps them: ipvs-leftover-sysctls).
        values.update(dict.fromkeys(_IPVS_MODE_SYSCTLS, "0"))
    lines = list(templates.sysctl_global)
    for name, _ in _interfaces(cluster, index):
        lines += [template.replace("{if}", name) for template in templates.sysctl_interface]
    keyed = sorted((line.partition(" = ")[0], line) for line in lines)
    return "".join(
        f"{key} = {values[key]}\n" if key in values else f"{line}\n" for key, line in keyed
    )


def _node_files(cluster: _Cluster, index: int, templates: _Templates) -> Iterable[tuple[str, str]]:
    shape = cluster.shape
    rng = random.Random(shape.seed * 100003 + index)  # noqa: S311 - not for secrets
    tcpfin = (
        120
        if Fault.TCPFIN_120 in shape.injected and _fault_node(cluster, Fault.TCPFIN_120) == index
        else 30
    )
    common = {
        "sysctl.txt": _sysctl(cluster, index, templates),
        "ip-addr.json": _ip_json(cluster, index, templates, "addr"),
        "ip-link.json": _ip_json(cluster, index, templates, "link"),
        "uname.txt": f"{KERNEL}\n",
    }
    if shape.mode is Mode.NFTABLES:
        table = nftables_table(cluster, index)
        return {
            "nft-tables.txt": "table ip kube-proxy\n",
            "nft-ip-kube-proxy.json": table.listing(),
            **common,
        }.items()
    entries = shape.big_table if shape.big_table_node == index else shape.connections
    connections, counts = _connections(cluster, entries, rng)
    return {
        "ipvsadm-Ln.txt": _ipvsadm_list(cluster, index, counts),
        "ipvsadm-timeout.txt": f"Timeout (tcp tcpfin udp): 900 {tcpfin} 300\n",
        "ip_vs_conn.txt": connections,
        **common,
    }.items()


# --- nodes/<node>/nft-ip-kube-proxy.json: kube-proxy 1.36's table ---------------------------


def _chain_base(service: _Service, port: _Port) -> str:
    """proxier.go servicePortChainNameBase: base32(sha256("ns/name/proto/port"))[:8], a hyphen,
    the same string (kubernetes/kubernetes@736e3b684ef1 pkg/proxy/nftables/proxier.go)."""
    name = f"{service.namespace}/{service.name}/{port.protocol.lower()}/{port.name}"
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    return f"{digest[:8]}-{name}"


_FILTER, _NAT = "filter", "nat"
_BASE_CHAINS = (
    ("filter-prerouting-pre-dnat", Base(_FILTER, "prerouting", -110)),
    ("filter-output-pre-dnat", Base(_FILTER, "output", -110)),
    ("filter-input", Base(_FILTER, "input", 0)),
    ("filter-forward", Base(_FILTER, "forward", 0)),
    ("filter-output", Base(_FILTER, "output", 0)),
    ("nat-prerouting", Base(_NAT, "prerouting", -100)),
    ("nat-output", Base(_NAT, "output", -100)),
    ("nat-postrouting", Base(_NAT, "postrouting", 100)),
)
_BASE_JUMPS = (
    ("filter-prerouting-pre-dnat", ("firewall-check",)),
    ("filter-output-pre-dnat", ("firewall-check",)),
    ("filter-input", ("nodeport-endpoints-check", "service-endpoints-check")),
    ("filter-forward", ("service-endpoints-check", "cluster-ips-check")),
    ("filter-output", ("service-endpoints-check", "cluster-ips-check")),
)
_HELPER_CHAINS = (
    "services",
    "masquerading",
    "firewall-check",
    "service-endpoints-check",
    "nodeport-endpoints-check",
    "cluster-ips-check",
)
_STALE_SERVICE = _Service(0, "team-99", "svc-deleted", SERVICE_CIDR_BASE + 9, (), ())


def _nft_sets(table: Table) -> dict[str, NftSet]:
    """The sets and maps setupNFTables creates, in its order."""
    address, proto_port = ("ipv4_addr",), ("inet_proto", "inet_service")
    specs = (
        ("cluster-ips", address, "Active ClusterIPs", False),
        ("nodeport-ips", address, "IPs that accept NodePort traffic", False),
        ("hairpin-connections", address * 2 + proto_port, "service hairpin connections", False),
        ("service-ips", address + proto_port, "ClusterIP, ExternalIP and LoadBalancer IP traffic", True),  # noqa: E501
        ("service-nodeports", proto_port, "NodePort traffic", True),
        ("no-endpoint-services", address + proto_port,
         "vmap to drop or reject packets to services with no endpoints", True),
        ("no-endpoint-nodeports", proto_port,
         "vmap to drop or reject packets to service nodeports with no endpoints", True),
        ("firewall-ips", address + proto_port,
         "destinations that are subject to LoadBalancerSourceRanges", True),
    )  # fmt: skip
    sets = {name: NftSet(name, types, comment, is_map) for name, types, comment, is_map in specs}
    table.sets.extend(sets.values())
    return sets


def _nft_fixed_rules(table: Table) -> None:
    """The base chains and helper chains' rules: the same on every node."""
    for name, base in _BASE_CHAINS:
        table.chain(name, base)
    for name in _HELPER_CHAINS:
        table.chain(name)
    table.chain("reject-chain", comment="helper for @no-endpoint-services / @no-endpoint-nodeports")
    for chain, targets in _BASE_JUMPS:
        for target in targets:
            table.rule(chain, f"ct state new jump {target}", CT_NEW, jump("jump", target))
    for chain, target in (("nat-prerouting", "services"), ("nat-output", "services")):
        table.rule(chain, f"jump {target}", jump("jump", target))
    table.rule("nat-postrouting", "jump masquerading", jump("jump", "masquerading"))
    daddr, saddr = payload("ip", "daddr"), payload("ip", "saddr")
    table.rule(
        "services",
        f"ip daddr @cluster-ips ip saddr != {CLUSTER_CIDR} mark set mark or {MARK:#x}",
        match("==", daddr, "@cluster-ips"),
        match("!=", saddr, prefix(CLUSTER_CIDR)),
        MARK_FOR_MASQUERADE,
        comment="masquerade clusterIP traffic from outside cluster",
    )
    table.rule(
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        vmap(DADDR_PROTO_PORT, "service-ips"),
    )
    table.rule(
        "services",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        match("==", daddr, "@nodeport-ips"),
        vmap(PROTO_PORT, "service-nodeports"),
    )
    mark = meta("mark")
    table.rule(
        "masquerading",
        f"mark and {MARK:#x} != 0 mark set mark xor {MARK:#x} masquerade fully-random",
        match("!=", {"&": [mark, MARK]}, 0),
        {"mangle": {"key": mark, "value": {"^": [mark, MARK]}}},
        MASQUERADE,
    )
    tuple_key = nft_table.concat(saddr, daddr, meta("l4proto"), payload("th", "dport"))
    table.rule(
        "masquerading",
        "ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections "
        "masquerade fully-random",
        match("in", {"ct": {"key": "status"}}, "dnat"),
        match("==", tuple_key, "@hairpin-connections"),
        MASQUERADE,
    )
    for chain, name in (
        ("firewall-check", "firewall-ips"),
        ("service-endpoints-check", "no-endpoint-services"),
    ):
        table.rule(chain, f"ip daddr . meta l4proto . th dport vmap @{name}", vmap(DADDR_PROTO_PORT, name))  # fmt: skip  # noqa: E501
    table.rule(
        "nodeport-endpoints-check",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        match("==", daddr, "@nodeport-ips"),
        vmap(PROTO_PORT, "no-endpoint-nodeports"),
    )
    table.rule(
        "cluster-ips-check",
        "ip daddr @cluster-ips reject",
        match("==", daddr, "@cluster-ips"),
        REJECT,
        comment="Reject traffic to invalid ports of ClusterIPs",
    )
    table.rule(
        "cluster-ips-check",
        f"ip daddr {{ {SERVICE_CIDR} }} drop",
        match("==", daddr, prefix(SERVICE_CIDR)),
        {"drop": None},
        comment="Drop traffic to unallocated ClusterIPs",
    )
    table.rule("reject-chain", "reject", REJECT)


def _faulted(cluster: _Cluster, fault: Fault, index: int, service: _Service) -> bool:
    return (
        fault in cluster.shape.injected
        and _fault_node(cluster, fault) == index
        and _fault_service(cluster, fault) is service
    )


def nftables_table(cluster: _Cluster, index: int) -> Table:
    """The `ip kube-proxy` table kube-proxy 1.36 programs on node `index` (every Service with
    Cluster policies, ready endpoints, no affinity, nodePortAddresses the node's eth0 address),
    faults applied."""
    node = cluster.nodes[index]
    table = Table()
    sets = _nft_sets(table)
    _nft_fixed_rules(table)
    sets["nodeport-ips"].elements.append(Element((str(cluster.node_ips[index]),)))
    for service in cluster.services:
        sets["cluster-ips"].elements.append(Element((str(service.cluster_ip),)))
        for position, port in enumerate(service.ports):
            protocol = port.protocol.lower()
            base = _chain_base(service, port)
            targets = [(str(address), port.target_port) for address, _, _ in service.endpoints]
            if position == 0 and _faulted(cluster, Fault.STALE_DNAT_PORT, index, service):
                targets[0] = (targets[0][0], 80)  # the port before an edit to 8080
            key = (str(service.cluster_ip), protocol, port.port)
            if not (position == 0 and _faulted(cluster, Fault.MISSING_SERVICE_IP, index, service)):
                sets["service-ips"].elements.append(Element(key, f"service-{base}"))
            for address, owner, _ in service.endpoints:
                if owner == node:
                    hairpin = (str(address), str(address), protocol, port.target_port)
                    sets["hairpin-connections"].elements.append(Element(hairpin))
            table.chain(f"service-{base}")
            table.rule(f"service-{base}", *_dnat_rule(protocol, targets))
            if port.node_port is not None:
                external = f"external-{base}"
                sets["service-nodeports"].elements.append(
                    Element((protocol, port.node_port), external)
                )
                table.chain(external)
                table.rule(external, f"mark set mark or {MARK:#x}", MARK_FOR_MASQUERADE,
                           comment="masquerade")  # fmt: skip
                table.rule(external, f"goto service-{base}", jump("goto", f"service-{base}"))
    if (
        Fault.STALE_CHAIN in cluster.shape.injected
        and _fault_node(cluster, Fault.STALE_CHAIN) == index
    ):
        stale = f"service-{_chain_base(_STALE_SERVICE, _Port('http', 80, 'TCP', 8080, None))}"
        table.chain(stale)
        table.rule(stale, *_dnat_rule("tcp", [(str(cluster.services[0].endpoints[0][0]), 8080)]))
    return _rules_chain_by_chain(table)


def _dnat_rule(protocol: str, targets: list[tuple[str, int]]) -> tuple[Any, ...]:
    written, expr = dnat_map(protocol, targets)
    return (written, *expr)


def _rules_chain_by_chain(table: Table) -> Table:
    """kube-proxy's transaction adds each chain's rules together, in chain order."""
    position = {name: i for i, (name, _, _) in enumerate(table.chains)}
    order = sorted(range(len(table.rules)), key=lambda i: (position[table.rules[i].chain], i))
    table.rules = [table.rules[i] for i in order]
    return table


def nftables_ruleset(shape: Shape, index: int) -> str:
    """Node `index`'s table as `nft -f` input, the form a test loads into the kernel."""
    return nftables_table(_cluster(shape), index).ruleset()
