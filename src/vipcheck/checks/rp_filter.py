"""Reverse-path filtering on tunnels and NICs: the third founding incident (strict rp_filter)."""

from __future__ import annotations

import shlex

from vipcheck.checks.base import (
    Check,
    FindingKind,
    InterfaceSubject,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.checks.scopes import node_interfaces
from vipcheck.datapath.ipvs import KUBE_IPVS0
from vipcheck.facts import IP_ADDR, IP_LINK, NODE_OBJECTS, SYSCTLS, ClusterFacts, Facts, NodeFacts
from vipcheck.model.cluster import IPAddress
from vipcheck.model.node import Interface
from vipcheck.settings import Settings

STRICT = 1
TUNNEL_KINDS = frozenset({"ipip", "gre", "vxlan", "geneve", "wireguard", "ip6tnl", "sit"})
TUNNEL_NAMES = ("tunl0", "vxlan.calico")
TUNNEL_PREFIXES = ("flannel.", "cilium_")
# Host ends of pod veths (Calico, generic CNI, Cilium): their rp_filter is the CNI's business.
POD_SIDE_PREFIXES = ("cali", "veth", "lxc")


def rp_filter_interfaces(node: NodeFacts, cluster: ClusterFacts) -> list[str]:
    """Interfaces where strict rp_filter drops service traffic: tunnels and the node's own NIC.

    The NIC is the one holding the Node's InternalIP; without one, every non-virtual interface
    with a global address; where addresses are unknown (/sys/class/net alone), every interface
    that is up and neither a dummy nor a tunnel. lo, kube-ipvs0 and pod-side veths never are.
    """
    interfaces = node.interfaces
    candidates = [interface for interface in interfaces if not _never_filtered(interface)]
    internal_ips = set(_internal_ips(node.name, cluster))
    nics = [
        interface
        for interface in candidates
        if any(address.ip in internal_ips for address in interface.addresses or ())
    ] or [interface for interface in candidates if _has_global_address(interface)]
    if interfaces.addr_source is None:
        nics = [
            i for i in candidates if "UP" in i.flags and i.kind != "dummy" and not _is_tunnel(i)
        ]
    chosen = {interface.name for interface in (*filter(_is_tunnel, candidates), *nics)}
    return [interface.name for interface in candidates if interface.name in chosen]


def _internal_ips(node: str, cluster: ClusterFacts) -> tuple[IPAddress, ...]:
    """The Node's InternalIPs from nodes.json, or none when it does not list the node."""
    node_object = cluster.node(node)
    return () if node_object is None else node_object.internal_ips


def _never_filtered(interface: Interface) -> bool:
    """Interfaces whose rp_filter does not decide whether service replies are dropped."""
    return (
        interface.name in ("lo", KUBE_IPVS0)
        or "LOOPBACK" in interface.flags
        or interface.name.startswith(POD_SIDE_PREFIXES)
    )


def _is_tunnel(interface: Interface) -> bool:
    """Tunnel/overlay devices, where decapsulated packets arrive while replies leave elsewhere."""
    return (
        interface.kind in TUNNEL_KINDS
        or interface.name in TUNNEL_NAMES
        or interface.name.startswith(TUNNEL_PREFIXES)
    )


def _has_global_address(interface: Interface) -> bool:
    """A real NIC candidate: not a dummy, and holding an address beyond link or host scope."""
    return interface.kind != "dummy" and any(
        not address.ip.is_loopback and not address.ip.is_link_local
        for address in interface.addresses or ()
    )


def rp_filter_key(interface: str) -> str:
    """The sysctl key for an interface; sysctl writes a dot in the name as `/` (eth0.100)."""
    return f"net.ipv4.conf.{interface.replace('.', '/')}.rp_filter"


def check_rp_filter(subject: InterfaceSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """max(all, interface) rp_filter is not strict (1) on an interface service replies cross."""
    node = facts.nodes[subject.node]
    keys = {"all": rp_filter_key("all"), subject.interface: rp_filter_key(subject.interface)}
    values = {name: node.sysctls.int_value(key) for name, key in keys.items()}
    absent = [keys[name] for name, value in values.items() if value is None]
    if absent:
        raise NotApplicable(f"{', '.join(absent)} not in {node.sysctls.source}")
    effective = max(value for value in values.values() if value is not None)
    if effective != STRICT:
        return []
    strict = [keys[name] for name, value in values.items() if value == STRICT]
    loose = tuple(f"{key}=2" for key in strict)
    return [
        Violation(
            kind=FindingKind.STRICT_RP_FILTER,
            subject=subject.interface,
            node=node.name,
            observed=f"rp_filter effective={effective} ("
            + ", ".join(f"{name}={value}" for name, value in values.items())
            + ")",
            expected="0 or 2",
            fix=f"on {node.name}: {shlex.join(('sysctl', '-w', *loose))}, and persist it in "
            f"/etc/sysctl.d/90-rp-filter.conf ("
            + "; ".join(f"{key} = 2" for key in strict)
            + "); use 0 instead of 2 where Calico's Felix refuses loose mode",
            evidence=(
                *(f"{key} = {values[name]}" for name, key in keys.items()),
                f"interfaces from {node.interfaces.link_source or node.interfaces.addr_source}",
            ),
            commands=tuple(("sysctl", "-w", setting) for setting in loose),
        )
    ]


RP_FILTER_NOT_STRICT = Check(
    id="rp-filter-not-strict",
    title="Reverse-path filtering is not strict on tunnel and node interfaces",
    why=(
        "Strict reverse-path filtering drops packets that arrive through the tunnel while the "
        "route back leaves another interface, leaving IPVS entries in SYN_RECV (third founding "
        "incident); the kernel uses max(conf/all, conf/<iface>) rp_filter (ip-sysctl.rst), so "
        "all=1 makes every interface strict."
    ),
    fix=(
        "`sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.<iface>.rp_filter=2` for the keys "
        "that are 1 (0 where the CNI requires it), and persist it in /etc/sysctl.d."
    ),
    severity=Severity.CRITICAL,
    scope=node_interfaces(rp_filter_interfaces),
    inputs=(NODE_OBJECTS, SYSCTLS, IP_ADDR, IP_LINK),
    run=check_rp_filter,
    sysctls=(rp_filter_key("*"),),
)
