"""kube-proxy's own IPVS test tables, as snapshots: vipcheck passes their state, flags a stale RS.

Ported from kubernetes/kubernetes pkg/proxy/ipvs/proxier_test.go, the stored version whose
TestNodePortIPv4 builds `NewFakeProxier(ipt, ipvs, ipset, test.nodeIPs, nil, v1.IPv4Protocol)`
(search-tool file id 160892798; the tool reported no commit for it): TestNodePortIPv4,
TestNodePortIPv6, TestIPv4Proxier, TestIPv6Proxier, TestSessionAffinity,
TestTestInternalTrafficPolicyE2E, Test_EndpointSliceReadyAndTerminatingCluster/Local,
Test_EndpointSliceOnlyReadyAndTerminatingCluster/Local and ...LocalWithFeatureGateDisabled.
Each case is the upstream Services and EndpointSlices, the node (upstream testHostname and its
nodeIPs) and the IPVS table the upstream test expects, written as the files of a snapshot
(`kubectl ... -o json`, `ipvsadm -Ln`, `ip -j addr`, `ip -j -d link`). IPv4 and IPv6 proxier
cases of one Service are one dual-stack node running both. The last four cases are the rules
vipcheck follows since issue 13: the Local fallback, an externalIP on a node address, zone
hints, nodePortAddresses per family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from ipaddress import ip_address
from typing import Any

import pytest
import yaml

from vipcheck.cases import Outcome, cases_for, run_case
from vipcheck.checks import CATALOGUE
from vipcheck.checks.base import FindingKind, Violation
from vipcheck.facts import Facts
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import NodeSnapshot, Snapshot

HOST = "test-hostname"  # upstream testHostname
OTHER_HOST = "other-host"  # upstream otherHost: the API refuses capitals in a nodeName
# The checks whose verdict is vipcheck's expected state against the IPVS table and kube-ipvs0.
EXPECTED_STATE_CHECKS = {
    "ipvs-real-servers-match-endpoints",
    "ipvs-virtual-servers-complete",
    "ipvs-no-orphan-virtual-servers",
    "kube-ipvs0-holds-service-ips",
    "kube-ipvs0-no-stale-addresses",
}


# --- API objects as the API server returns them ------------------------------------------------


def service(
    name: str,
    cluster_ip: str,
    *ports: dict[str, Any],
    namespace: str = "ns1",
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A v1 Service; makeTestService in upstream's terms."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    cluster_ips = cluster_ip.split(",")
    return {
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ips[0],
            "clusterIPs": cluster_ips,
            "ports": list(ports),
        }
        | spec,
    }


def port(number: int, name: str = "p80", protocol: str = "TCP", **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": number, "protocol": protocol, "targetPort": number} | extra


def endpoint(
    address: str,
    node: str | None = None,
    *,
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool = False,
    zones: tuple[str, ...] = (),
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "addresses": [address],
        "conditions": {
            "ready": ready,
            "serving": ready if serving is None else serving,
            "terminating": terminating,
        },
    }
    if node is not None:
        item["nodeName"] = node
    if zones:
        item["hints"] = {"forZones": [{"name": zone} for zone in zones]}
    return item


def endpoint_slice(
    service_name: str,
    index: int,
    family: str,
    ports: list[tuple[str, int, str]],
    *endpoints: dict[str, Any],
    namespace: str = "ns1",
) -> dict[str, Any]:
    """makeTestEndpointSlice: ports as (name, port, protocol)."""
    return {
        "metadata": {
            "name": f"{service_name}-{index}",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": family,
        "endpoints": list(endpoints),
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


P80 = [("p80", 80, "TCP")]
UNNAMED_80 = [("", 80, "TCP")]


# --- one upstream case -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """An upstream test's inputs and the IPVS table it expects, on node test-hostname."""

    services: list[dict[str, Any]]
    slices: list[dict[str, Any]]
    ipvs: dict[str, list[str]]  # "PROTO ADDR:PORT sched [persistent N]" -> real servers
    node_ips: tuple[str, ...] = ("100.101.102.103",)
    other_addresses: tuple[str, ...] = ()  # node addresses not in Node.status.addresses
    node_port_addresses: tuple[str, ...] = ()
    kube_proxy_version: str | None = None
    zone: str | None = None
    because: tuple[str, ...] = ()  # phrases the expected text must carry for a stale RS
    stale_vs: str = ""  # the VS a stale real server is added to (default: the first)


def snapshot(case: Case) -> Snapshot:
    """The case as a snapshot: cluster objects, and node test-hostname's IPVS table and links."""
    node_object: dict[str, Any] = {
        "metadata": {"name": HOST, "labels": {"kubernetes.io/hostname": HOST}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": a} for a in case.node_ips],
            "nodeInfo": {},
        },
    }
    if case.zone:
        node_object["metadata"]["labels"]["topology.kubernetes.io/zone"] = case.zone
    if case.kube_proxy_version:
        node_object["status"]["nodeInfo"]["kubeProxyVersion"] = case.kube_proxy_version
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "ipvs",
        "ipvs": {"scheduler": "rr"},
        "nodePortAddresses": list(case.node_port_addresses) or None,
    }
    cluster = {
        "services.json": json.dumps({"kind": "List", "items": case.services}),
        "endpointslices.json": json.dumps({"kind": "List", "items": case.slices}),
        "nodes.json": json.dumps({"kind": "List", "items": [node_object]}),
        "kube-proxy.json": json.dumps(
            {
                "kind": "ConfigMap",
                "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                "data": {"config.conf": yaml.safe_dump(config)},
            }
        ),
    }
    own = (*case.node_ips, *case.other_addresses)
    bound = sorted({_vs_address(vs) for vs in case.ipvs} - {ip_address(a) for a in own}, key=str)
    files = {
        "ipvsadm-Ln.txt": ipvsadm(case.ipvs),
        "ip-addr.json": json.dumps(
            [_interface(1, "eth0", own, "veth"), _interface(2, "kube-ipvs0", bound, "dummy")]
        ),
        "ip-link.json": json.dumps(
            [
                {"ifindex": 1, "ifname": "eth0", "flags": ["UP"], "operstate": "UP",
                 "linkinfo": {"info_kind": "veth"}},
                {"ifindex": 2, "ifname": "kube-ipvs0", "flags": ["BROADCAST", "NOARP"],
                 "operstate": "DOWN", "linkinfo": {"info_kind": "dummy"}},
            ]
        ),
    }  # fmt: skip
    return Snapshot(cluster=cluster, nodes={HOST: NodeSnapshot(HOST, files)})


def _vs_address(vs: str) -> Any:
    host = vs.split()[1].rpartition(":")[0]
    return ip_address(host.strip("[]"))


def _interface(index: int, name: str, addresses: Any, kind: str) -> dict[str, Any]:
    return {
        "ifindex": index,
        "ifname": name,
        "flags": ["UP"] if kind != "dummy" else ["BROADCAST", "NOARP"],
        "operstate": "UP" if kind != "dummy" else "DOWN",
        "addr_info": [
            {
                "family": "inet" if ip_address(str(a)).version == 4 else "inet6",
                "local": str(a),
                "prefixlen": 32 if ip_address(str(a)).version == 4 else 128,
                "scope": "global",
            }
            for a in addresses
        ],
    }


def _hostport(text: str) -> str:
    host, _, number = text.rpartition(":")
    return f"[{host}]:{number}" if ":" in host else text


def ipvsadm(table: dict[str, list[str]]) -> str:
    """`ipvsadm -Ln` as it prints the table: IPv6 in brackets, masquerading at weight 1."""
    lines = [
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for vs, servers in table.items():
        protocol, address, *rest = vs.split()
        lines.append(f"{protocol:<4} {_hostport(address)} {' '.join(rest)}")
        lines += [f"  -> {_hostport(rs):<28} Masq    1      0          0" for rs in servers]
    return "\n".join(lines) + "\n"


def verdicts(snap: Snapshot) -> dict[str, list[Violation] | str]:
    """Every case of the expected-state checks: its violations, or why it skipped or errored."""
    facts = Facts.from_snapshot(snap)
    results: dict[str, list[Violation] | str] = {}
    for check in CATALOGUE:
        if check.id not in EXPECTED_STATE_CHECKS:
            continue
        for case in cases_for(check, facts):
            result = run_case(case, facts, DEFAULTS)
            key = f"{check.id}[{case.id}]"
            if result.outcome in (Outcome.PASSED, Outcome.FAILED):
                results[key] = list(result.violations)
            else:
                results[key] = f"{result.outcome}: {result.reason}"
    return results


# --- the cases -------------------------------------------------------------------------------

NODE_PORT_SVC = service("svc1", "10.20.30.41", port(80, nodePort=3001), type="NodePort")
TERMINATING_SLICE = [
    endpoint("10.0.1.1", HOST),
    endpoint("10.0.1.2", HOST),
    endpoint("10.0.1.3", HOST, ready=False, serving=True, terminating=True),
    endpoint("10.0.1.4", HOST, ready=False, serving=False, terminating=True),
    endpoint("10.0.1.5", "another-host"),
]
ONLY_TERMINATING_SLICE = [
    endpoint("10.0.1.1", HOST, ready=False, serving=True, terminating=True),
    endpoint("10.0.1.2", HOST, ready=False, serving=True, terminating=True),
    endpoint("10.0.1.3", HOST, ready=False, serving=False, terminating=True),
    endpoint("10.0.1.4", "another-host", ready=False, serving=True, terminating=True),
]


def terminating_service(policy: str) -> dict[str, Any]:
    """Upstream's svc1: NodePort type without a nodePort, externalIP 1.2.3.4, ITP Cluster."""
    return service(
        "svc1",
        "172.20.1.1",
        port(80, name=""),
        type="NodePort",
        externalTrafficPolicy=policy,
        internalTrafficPolicy="Cluster",
        externalIPs=["1.2.3.4"],
    )


def itp_service(policy: str) -> dict[str, Any]:
    return service("svc1", "172.20.1.1", port(80, name=""), internalTrafficPolicy=policy)


ITP_ENDPOINTS = (
    endpoint("10.0.1.1", HOST),
    endpoint("10.0.1.2", "host1"),
    endpoint("10.0.1.3", "host2"),
)
ITP_REMOTE = (
    endpoint("10.0.1.1", "host0"),
    endpoint("10.0.1.2", "host1"),
    endpoint("10.0.1.3", "host2"),
)

CASES: dict[str, Case] = {
    # TestNodePortIPv4
    "nodeport-v4-2-endpoints": Case(
        [NODE_PORT_SVC],
        [
            endpoint_slice("svc1", 1, "IPv4", P80, endpoint("10.180.0.1")),
            endpoint_slice("svc1", 2, "IPv6", P80, endpoint("1002:ab8::2:10")),
        ],
        {
            "TCP 10.20.30.41:80 rr": ["10.180.0.1:80"],
            "TCP 100.101.102.103:3001 rr": ["10.180.0.1:80"],
        },
        node_ips=("100.101.102.103", "2001:db8::1:1"),
    ),
    "nodeport-v4-udp": Case(
        [service("svc1", "10.20.30.41", port(80, protocol="UDP", nodePort=3001), type="NodePort")],
        [endpoint_slice("svc1", 1, "IPv4", [("p80", 80, "UDP")], endpoint("10.180.0.1"))],
        {
            "UDP 10.20.30.41:80 rr": ["10.180.0.1:80"],
            "UDP 100.101.102.103:3001 rr": ["10.180.0.1:80"],
        },
        node_port_addresses=("0.0.0.0/0",),
    ),
    "nodeport-v4-no-endpoints": Case(
        [NODE_PORT_SVC],
        [],
        {"TCP 10.20.30.41:80 rr": [], "TCP 100.101.102.103:3001 rr": []},
    ),
    "nodeport-v4-sctp-multiple-node-ips": Case(
        [service("svc1", "10.20.30.41", port(80, protocol="SCTP", nodePort=3001), type="NodePort")],
        [endpoint_slice("svc1", 1, "IPv4", [("p80", 80, "SCTP")], endpoint("10.180.0.1"))],
        {
            "SCTP 10.20.30.41:80 rr": ["10.180.0.1:80"],
            "SCTP 100.101.102.103:3001 rr": ["10.180.0.1:80"],
            "SCTP 100.101.102.104:3001 rr": ["10.180.0.1:80"],
            "SCTP 100.101.102.105:3001 rr": ["10.180.0.1:80"],
        },
        node_ips=(
            *("100.101.102.103", "100.101.102.104", "100.101.102.105"),
            *("2001:db8::1:1", "2001:db8::1:2", "2001:db8::1:3"),
        ),
    ),
    "nodeport-v4-sctp-etp-local": Case(
        [
            service(
                "svc1",
                "10.20.30.41",
                port(80, protocol="SCTP", nodePort=3001),
                type="NodePort",
                externalTrafficPolicy="Local",
            )
        ],
        [
            endpoint_slice(
                "svc1",
                1,
                "IPv4",
                [("p80", 80, "SCTP")],
                endpoint("10.180.0.1", HOST),
                endpoint("10.180.1.1", OTHER_HOST),
            )
        ],
        {
            "SCTP 10.20.30.41:80 rr": ["10.180.0.1:80", "10.180.1.1:80"],
            "SCTP 100.101.102.103:3001 rr": ["10.180.0.1:80"],
        },
    ),
    # TestNodePortIPv6 (the IPv6 proxier; a v4 address of the node gets nothing)
    "nodeport-v6-2-endpoints": Case(
        [service("svc1", "2020::1", port(80, nodePort=3001), type="NodePort")],
        [
            endpoint_slice("svc1", 1, "IPv4", P80, endpoint("10.180.0.1")),
            endpoint_slice("svc1", 2, "IPv6", P80, endpoint("1002:ab8::2:10")),
        ],
        {
            "TCP 2001:db8::1:1:3001 rr": ["1002:ab8::2:10:80"],
            "TCP 2020::1:80 rr": ["1002:ab8::2:10:80"],
        },
        node_ips=("100.101.102.103", "2001:db8::1:1"),
    ),
    "nodeport-v6-no-endpoints": Case(
        [service("svc1", "2020::1", port(80, nodePort=3001), type="NodePort")],
        [],
        {"TCP 2001:db8::1:1:3001 rr": [], "TCP 2020::1:80 rr": []},
        node_ips=("100.101.102.103", "2001:db8::1:1"),
    ),
    "nodeport-v6-sctp-multiple-node-ips": Case(
        [service("svc1", "2020::1", port(80, protocol="SCTP", nodePort=3001), type="NodePort")],
        [endpoint_slice("svc1", 1, "IPv6", [("p80", 80, "SCTP")], endpoint("2001::1"))],
        {
            "SCTP 2001:db8::1:1:3001 rr": ["2001::1:80"],
            "SCTP 2001:db8::1:2:3001 rr": ["2001::1:80"],
            "SCTP 2020::1:80 rr": ["2001::1:80"],
        },
        node_ips=("2001:db8::1:1", "2001:db8::1:2"),
    ),
    # TestIPv4Proxier + TestIPv6Proxier: one dual-stack node runs both proxiers
    "dual-stack-cluster-ips": Case(
        [
            service("svc1", "10.20.30.41", port(80)),
            service("svc2", "1002:ab8::2:1", port(8080, name="p8080"), namespace="ns2"),
        ],
        [
            endpoint_slice("svc1", 1, "IPv4", P80, endpoint("10.180.0.1")),
            endpoint_slice(
                "svc2",
                1,
                "IPv6",
                [("p8080", 8080, "TCP")],
                endpoint("1009:ab8::5:6"),
                namespace="ns2",
            ),
        ],
        {
            "TCP 10.20.30.41:80 rr": ["10.180.0.1:80"],
            "TCP 1002:ab8::2:1:8080 rr": ["1009:ab8::5:6:8080"],
        },
        node_ips=("100.101.102.103", "2001:db8::1:1"),
    ),
    "cluster-ip-no-endpoints": Case(
        [
            service("svc1", "10.20.30.41", port(80)),
            service("svc2", "2001::1", port(80), namespace="ns2"),
        ],
        [],
        {"TCP 10.20.30.41:80 rr": [], "TCP 2001::1:80 rr": []},
    ),
    # TestSessionAffinity: every VS persistent for 180 minutes
    "session-affinity": Case(
        [
            service(
                "svc1",
                "10.20.30.41",
                port(80, nodePort=3001),
                type="NodePort",
                externalIPs=["50.60.70.81"],
                sessionAffinity="ClientIP",
            )
        ],
        [],
        {
            "TCP 10.20.30.41:80 rr persistent 10800": [],
            "TCP 50.60.70.81:80 rr persistent 10800": [],
            "TCP 100.101.102.103:3001 rr persistent 10800": [],
        },
    ),
    # TestTestInternalTrafficPolicyE2E
    "itp-cluster-with-local-endpoints": Case(
        [itp_service("Cluster")],
        [endpoint_slice("svc1", 1, "IPv4", UNNAMED_80, *ITP_ENDPOINTS)],
        {"TCP 172.20.1.1:80 rr": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]},
        node_ips=("10.0.0.1",),
    ),
    "itp-cluster-without-local-endpoints": Case(
        [itp_service("Cluster")],
        [endpoint_slice("svc1", 1, "IPv4", UNNAMED_80, *ITP_REMOTE)],
        {"TCP 172.20.1.1:80 rr": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]},
        node_ips=("10.0.0.1",),
    ),
    "itp-local-with-local-endpoints": Case(
        [itp_service("Local")],
        [endpoint_slice("svc1", 1, "IPv4", UNNAMED_80, *ITP_ENDPOINTS)],
        {"TCP 172.20.1.1:80 rr": ["10.0.1.1:80"]},
        node_ips=("10.0.0.1",),
    ),
    "itp-local-without-local-endpoints": Case(
        [itp_service("Local")],
        [endpoint_slice("svc1", 1, "IPv4", UNNAMED_80, *ITP_REMOTE)],
        {"TCP 172.20.1.1:80 rr": []},
        node_ips=("10.0.0.1",),
        because=("not reachable from outside",),
    ),
    # Test_EndpointSlice*ReadyAndTerminating*
    "ready-and-terminating-cluster": Case(
        [terminating_service("Cluster")],
        [endpoint_slice("svc1", 1, "IPv4", UNNAMED_80, *TERMINATING_SLICE)],
        {
            "TCP 172.20.1.1:80 rr": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"],
            "TCP 1.2.3.4:80 rr": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"],
        },
        node_ips=("10.0.0.1",),
    ),
    "ready-and-terminating-local": Case(
        [terminating_service("Local")],
        [endpoint_slice("svc1", 1, "IPv4", UNNAMED_80, *TERMINATING_SLICE)],
        {
            "TCP 172.20.1.1:80 rr": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"],
            "TCP 1.2.3.4:80 rr": ["10.0.1.1:80", "10.0.1.2:80"],
        },
        node_ips=("10.0.0.1",),
        stale_vs="TCP 1.2.3.4:80 rr",
    ),
    "only-ready-and-terminating-cluster": Case(
        [terminating_service("Cluster")],
        [endpoint_slice("svc1", 1, "IPv4", UNNAMED_80, *ONLY_TERMINATING_SLICE)],
        {
            "TCP 172.20.1.1:80 rr": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.4:80"],
            "TCP 1.2.3.4:80 rr": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.4:80"],
        },
        node_ips=("10.0.0.1",),
        because=("no endpoint is ready",),
    ),
    "only-ready-and-terminating-local": Case(
        [terminating_service("Local")],
        [
            endpoint_slice(
                "svc1",
                1,
                "IPv4",
                UNNAMED_80,
                *ONLY_TERMINATING_SLICE,
                endpoint("10.0.1.5", "another-host"),
            )
        ],
        {
            "TCP 172.20.1.1:80 rr": ["10.0.1.5:80"],
            "TCP 1.2.3.4:80 rr": ["10.0.1.1:80", "10.0.1.2:80"],
        },
        node_ips=("10.0.0.1",),
        stale_vs="TCP 1.2.3.4:80 rr",
        because=("this node's serving, terminating ones",),
    ),
    # ...LocalWithFeatureGateDisabled: ProxyTerminatingEndpoints off, as in kube-proxy 1.25
    "only-ready-and-terminating-local-1.25": Case(
        [terminating_service("Local")],
        [
            endpoint_slice(
                "svc1",
                1,
                "IPv4",
                UNNAMED_80,
                *ONLY_TERMINATING_SLICE,
                endpoint("10.0.1.5", "another-host"),
            )
        ],
        {
            "TCP 172.20.1.1:80 rr": ["10.0.1.5:80"],
            "TCP 1.2.3.4:80 rr": ["10.0.1.5:80"],
        },
        node_ips=("10.0.0.1",),
        kube_proxy_version="v1.25.16",
        stale_vs="TCP 1.2.3.4:80 rr",
        because=("kube-proxy 1.25 falls back to cluster endpoints",),
    ),
    # --- issue 13: the four rules --------------------------------------------------------------
    "etp-local-only-endpoint-elsewhere": Case(
        [
            service(
                "svc1",
                "10.20.30.41",
                port(80, nodePort=3001),
                type="NodePort",
                externalTrafficPolicy="Local",
            )
        ],
        [endpoint_slice("svc1", 1, "IPv4", P80, endpoint("10.180.1.1", OTHER_HOST))],
        {
            "TCP 10.20.30.41:80 rr": ["10.180.1.1:80"],
            "TCP 100.101.102.103:3001 rr": ["10.180.1.1:80"],
        },
        kube_proxy_version="v1.30.4",
        stale_vs="TCP 100.101.102.103:3001 rr",
        because=("kube-proxy 1.30 falls back to cluster endpoints here because test-hostname",),
    ),
    "external-ip-on-a-node-address": Case(
        [service("svc1", "10.20.30.41", port(80), externalIPs=["10.10.0.1"])],
        [endpoint_slice("svc1", 1, "IPv4", P80, endpoint("10.180.0.1"))],
        {
            "TCP 10.20.30.41:80 rr": ["10.180.0.1:80"],
            "TCP 10.10.0.1:80 rr": ["10.180.0.1:80"],
        },
        other_addresses=("10.10.0.1",),
    ),
    "zone-hints": Case(
        [service("svc1", "10.20.30.41", port(80), trafficDistribution="PreferClose")],
        [
            endpoint_slice(
                "svc1",
                1,
                "IPv4",
                P80,
                endpoint("10.180.0.1", HOST, zones=("zone-a",)),
                endpoint("10.180.1.1", OTHER_HOST, zones=("zone-b",)),
                endpoint("10.180.2.1", "third-host", zones=("zone-a",)),
            )
        ],
        {"TCP 10.20.30.41:80 rr": ["10.180.0.1:80", "10.180.2.1:80"]},
        zone="zone-a",
        kube_proxy_version="v1.31.2",
        because=("hinted for zone zone-a",),
    ),
    "dual-stack-node-port-v6-unlisted": Case(
        [
            service(
                "svc1",
                "10.20.30.41,2020::1",
                port(80, nodePort=3001),
                type="NodePort",
                ipFamilies=["IPv4", "IPv6"],
            )
        ],
        [
            endpoint_slice("svc1", 1, "IPv4", P80, endpoint("10.180.0.1")),
            endpoint_slice("svc1", 2, "IPv6", P80, endpoint("1002:ab8::2:10")),
        ],
        {
            "TCP 10.20.30.41:80 rr": ["10.180.0.1:80"],
            "TCP 100.101.102.103:3001 rr": ["10.180.0.1:80"],
            "TCP 2020::1:80 rr": ["1002:ab8::2:10:80"],
            "TCP 2001:db8::1:1:3001 rr": ["1002:ab8::2:10:80"],
        },
        node_ips=("100.101.102.103", "192.168.9.9", "2001:db8::1:1"),
        node_port_addresses=("100.101.102.0/24",),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_upstream_expected_state_passes(name: str) -> None:
    results = verdicts(snapshot(CASES[name]))
    assert {key.partition("[")[0] for key in results} == EXPECTED_STATE_CHECKS
    assert all(isinstance(v, list) for v in results.values()), results  # ran, not skipped
    assert {key: v for key, v in results.items() if v} == {}


def _with_stale_real_server(case: Case) -> tuple[Case, str, str]:
    """The case with one more real server (port 9999) under one of its VSs."""
    with_servers = [vs for vs, servers in case.ipvs.items() if servers]
    vs = case.stale_vs or (with_servers or list(case.ipvs))[0]
    address = "10.99.0.99:9999" if _vs_address(vs).version == 4 else "fd00:99::99:9999"
    ipvs = {
        key: [*servers, address] if key == vs else servers for key, servers in case.ipvs.items()
    }
    return replace(case, ipvs=ipvs), vs, address


@pytest.mark.parametrize("name", list(CASES))
def test_a_stale_real_server_added_to_it_is_flagged(name: str) -> None:
    case, vs, address = _with_stale_real_server(CASES[name])
    results = verdicts(snapshot(case))
    found = [
        v for violations in results.values() if isinstance(violations, list) for v in violations
    ]
    assert len(found) == 1, found
    (violation,) = found
    assert violation.kind is FindingKind.STALE_REAL_SERVER
    assert violation.node == HOST
    assert f"stale: {_hostport(address)} is not an endpoint" in violation.observed
    assert violation.expected.startswith(f"{vs.split()[0]} {_hostport(vs.split()[1])}: weight > 0")
    for phrase in CASES[name].because:
        assert phrase in violation.expected, violation.expected


def test_the_ipv6_node_port_the_per_family_rule_expects_is_missing_when_absent() -> None:
    """Behaviour 4 was a blind spot: the IPv6 NodePort VS was neither expected nor checked."""
    case = CASES["dual-stack-node-port-v6-unlisted"]
    ipvs = {key: servers for key, servers in case.ipvs.items() if "3001" not in key or "." in key}
    results = verdicts(snapshot(replace(case, ipvs=ipvs)))
    found = [
        v for violations in results.values() if isinstance(violations, list) for v in violations
    ]
    assert [(v.kind, v.observed) for v in found] == [
        (FindingKind.MISSING_VIRTUAL_SERVICE, "missing TCP [2001:db8::1:1]:3001 (NodePort)")
    ]
    assert "nodePortAddresses lists no IPv6 CIDR" in found[0].expected


def test_an_external_ip_on_a_node_address_bound_to_kube_ipvs0_is_explained() -> None:
    case = CASES["external-ip-on-a-node-address"]
    snap = snapshot(case)
    addr = json.loads(snap.nodes[HOST].files["ip-addr.json"])
    addr[1]["addr_info"].append(
        {"family": "inet", "local": "10.10.0.1", "prefixlen": 32, "scope": "global"}
    )
    files = {**snap.nodes[HOST].files, "ip-addr.json": json.dumps(addr)}
    results = verdicts(replace(snap, nodes={HOST: NodeSnapshot(HOST, files)}))
    found = [
        v for violations in results.values() if isinstance(violations, list) for v in violations
    ]
    assert [v.kind for v in found] == [FindingKind.KUBE_IPVS0_EXTRA_ADDRESS]
    assert "ExternalIP of ns1/svc1 and also an address of test-hostname" in found[0].observed
    assert "shouldBind" in found[0].expected


def test_another_zone_s_endpoint_as_real_server_is_named_an_endpoint_left_out() -> None:
    """A kube-proxy that ignores hints (older than vipcheck assumes) shows the zone-b pod."""
    case = CASES["zone-hints"]
    ipvs = {"TCP 10.20.30.41:80 rr": [*case.ipvs["TCP 10.20.30.41:80 rr"], "10.180.1.1:80"]}
    results = verdicts(snapshot(replace(case, ipvs=ipvs)))
    found = [
        v for violations in results.values() if isinstance(violations, list) for v in violations
    ]
    assert len(found) == 1, found
    assert "stale: 10.180.1.1:80 is an endpoint, but not one kube-proxy uses" in found[0].observed
    assert "kube-proxy 1.31 keeps only the endpoints hinted for zone zone-a" in found[0].expected
