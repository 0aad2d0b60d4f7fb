"""kube-ipvs0 holds exactly the Service VIPs: a missing one is unreachable, a stale one a sink."""

from __future__ import annotations

import shlex
from collections.abc import Collection

from vipcheck.checks.base import (
    Check,
    FindingKind,
    NodeSubject,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import IPVS_MODE, restart_kube_proxy_text
from vipcheck.checks.scopes import NODES
from vipcheck.datapath.ipvs import KUBE_IPVS0, own_addresses
from vipcheck.expected import ServiceAddresses, kube_proxy_rules
from vipcheck.facts import (
    IP_ADDR,
    IP_LINK,
    KUBE_PROXY,
    KUBE_PROXY_DAEMONSET,
    NODE_OBJECTS,
    SERVICES,
    ClusterFacts,
    Facts,
    MissingInput,
    NodeFacts,
)
from vipcheck.model.cluster import Cluster, IPAddress
from vipcheck.model.node import Interface, IPInterface
from vipcheck.settings import Settings

DEV = ("dev", KUBE_IPVS0)  # the end of every `ip addr add|del` in a fix


def check_kube_ipvs0_holds_service_ips(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """kube-ipvs0 exists as a dummy and carries every ClusterIP, externalIP and LB IP."""
    node, cluster = facts.nodes[subject.node], facts.cluster
    own = own_addresses(node.interfaces)
    addresses = _service_addresses(cluster, node.name)
    expected = addresses.bound(own)
    device = node.interfaces.get(KUBE_IPVS0)
    restart = (
        f"on {node.name}: restart kube-proxy to recreate it: {restart_kube_proxy_text(node.name)}"
    )
    source = _source(node)
    if device is None and node.ipvs_absent:
        # The node has no IPVS at all: ipvs-present reports that, once; no kube-ipvs0 is expected.
        raise NotApplicable(f"{node.name}: no IPVS here, so no kube-ipvs0: {node.ipvs_absent}")
    if device is None:
        return [
            Violation(
                kind=FindingKind.KUBE_IPVS0_MISSING,
                subject=KUBE_IPVS0,
                node=node.name,
                observed="no kube-ipvs0 interface",
                expected=f"a dummy kube-ipvs0 holding {_listed(expected)}",
                fix=restart,
                evidence=source,
            )
        ]
    violations = []
    if device.kind is not None and device.kind != "dummy":
        violations.append(
            Violation(
                kind=FindingKind.KUBE_IPVS0_NOT_DUMMY,
                subject=KUBE_IPVS0,
                node=node.name,
                observed=f"kube-ipvs0 is a {device.kind} device",
                expected="a dummy device",
                fix=f"on {node.name}: ip link del kube-ipvs0, then restart kube-proxy: "
                f"{restart_kube_proxy_text(node.name)}",
            )
        )
    missing = expected - {address.ip for address in _addresses(device, node)}
    if missing:
        violations.append(
            Violation(
                kind=FindingKind.KUBE_IPVS0_MISSING_ADDRESS,
                subject=KUBE_IPVS0,
                node=node.name,
                observed=f"kube-ipvs0 lacks {_listed(missing)}, so the node does not accept "
                "traffic to them",
                expected=f"kube-ipvs0 holds {_listed(expected)}"
                + _unbound_note(addresses.unbound(own)),
                fix=f"on {node.name}: "
                + "; ".join(
                    shlex.join(("ip", "addr", "add", f"{address}/{address.max_prefixlen}", *DEV))
                    for address in sorted(missing, key=str)
                )
                + f"; then restart kube-proxy there: {restart_kube_proxy_text(node.name)}",
                evidence=source,
            )
        )
    return violations


def check_kube_ipvs0_no_stale_addresses(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per kube-ipvs0 address no Service has: the node answers it locally, to nobody."""
    node, cluster = facts.nodes[subject.node], facts.cluster
    own = own_addresses(node.interfaces)
    addresses = _service_addresses(cluster, node.name)
    expected = addresses.bound(own)
    unbound = addresses.unbound(own)
    device = node.interfaces.get(KUBE_IPVS0)
    if device is None:
        return []  # kube-ipvs0-holds-service-ips reports the missing device
    return [
        Violation(
            kind=FindingKind.KUBE_IPVS0_EXTRA_ADDRESS,
            subject=f"{KUBE_IPVS0} {address}",
            node=node.name,
            observed=f"{address} is bound to kube-ipvs0 but no Service has it: the node takes "
            "traffic for it as local and black-holes it"
            if address.ip not in unbound
            else f"{address} is bound to kube-ipvs0, but it is the {unbound[address.ip]} and "
            f"also an address of {node.name} on another interface",
            expected="only ClusterIPs, externalIPs and load-balancer IPs of Services"
            if address.ip not in unbound
            else f"{address.ip} off kube-ipvs0: kube-proxy does not bind an externalIP or "
            "load-balancer IP that is one of the node's own addresses (shouldBind in "
            "syncProxyRules, pkg/proxy/ipvs/proxier.go), so it stays where the node has it",
            fix=f"on {node.name}: {shlex.join(('ip', 'addr', 'del', str(address), *DEV))}",
            evidence=_source(node),
        )
        for address in _addresses(device, node)
        if address.ip not in expected and not address.ip.is_link_local
    ]


def _service_addresses(cluster: ClusterFacts, node: str) -> ServiceAddresses:
    """The Services' addresses the node's kube-proxy binds, gathered once per kube-proxy release
    (which load-balancer IPs it programs) for every node's two checks."""
    api = Cluster(nodes=cluster.nodes, kube_proxy_image=cluster.kube_proxy_image)
    rules = kube_proxy_rules(api.kube_proxy_release(node))
    return cluster.derive(
        ("service-addresses", rules), lambda: ServiceAddresses.of(cluster.services, rules)
    )


def _unbound_note(unbound: dict[IPAddress, str]) -> str:
    """Which Service addresses are rightly absent, being the node's own (shouldBind)."""
    if not unbound:
        return ""
    listed = ", ".join(f"{address} ({why})" for address, why in sorted(unbound.items(), key=str))
    return (
        f"; not {listed}: the node has them on another interface, and kube-proxy does not bind "
        "those (shouldBind, pkg/proxy/ipvs/proxier.go)"
    )


def _addresses(device: Interface, node: NodeFacts) -> tuple[IPInterface, ...]:
    """kube-ipvs0's addresses; without an address listing they are unknown, so the check skips."""
    if device.addresses is None:
        source = node.interfaces.link_source
        raise MissingInput(node.name, IP_ADDR.files, f"{source} lists no IPv4 addresses")
    return device.addresses


def _source(node: NodeFacts) -> tuple[str]:
    """Which output the interfaces were read from, as evidence (`ip -j`, text, /sys/class/net)."""
    interfaces = node.interfaces
    return (f"interfaces from {interfaces.addr_source or interfaces.link_source}",)


def _listed(addresses: Collection[IPAddress]) -> str:
    """Addresses in a stable order for messages, or `no Service address`."""
    return ", ".join(sorted(map(str, addresses))) or "no Service address"


INPUTS = (KUBE_PROXY, SERVICES, NODE_OBJECTS, KUBE_PROXY_DAEMONSET, IP_ADDR, IP_LINK)

KUBE_IPVS0_HOLDS_SERVICE_IPS = Check(
    id="kube-ipvs0-holds-service-ips",
    title="kube-ipvs0 is a dummy device holding every Service VIP",
    why=(
        "kube-proxy binds each VIP to the dummy kube-ipvs0 so the kernel takes it as local and "
        "IPVS sees it on LOCAL_IN; a VIP missing there is unreachable (invariants #5; its DOWN "
        "state is normal, kubernetes/kubernetes#107662)."
    ),
    fix="Restart kube-proxy on the node; it recreates kube-ipvs0 and rebinds the VIPs.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=INPUTS,
    run=check_kube_ipvs0_holds_service_ips,
    modes=IPVS_MODE,
)

KUBE_IPVS0_NO_STALE_ADDRESSES = Check(
    id="kube-ipvs0-no-stale-addresses",
    title="kube-ipvs0 holds no address that is not a Service VIP",
    why=(
        "An address left on kube-ipvs0 makes the node accept traffic for it as local, so traffic "
        "that should leave the node is black-holed (kubernetes/kubernetes#78421, #71894)."
    ),
    fix="`ip addr del ADDRESS/32 dev kube-ipvs0` on the node, or restart kube-proxy there.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=INPUTS,
    run=check_kube_ipvs0_no_stale_addresses,
    modes=IPVS_MODE,
)
