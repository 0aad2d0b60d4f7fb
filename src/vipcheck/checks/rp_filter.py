"""Reverse-path filtering on tunnels and NICs: the third founding incident (strict rp_filter)."""

from __future__ import annotations

from vipcheck.checks.base import Check, InterfaceSubject, NotApplicable, Scope, Severity, Violation
from vipcheck.facts import ClusterFacts, NodeFacts
from vipcheck.settings import Settings

STRICT = 1


def rp_filter_key(interface: str) -> str:
    """The sysctl key for an interface; sysctl writes a dot in the name as `/` (eth0.100)."""
    return f"net.ipv4.conf.{interface.replace('.', '/')}.rp_filter"


def check_rp_filter(
    subject: InterfaceSubject, node: NodeFacts, cluster: ClusterFacts, settings: Settings
) -> list[Violation]:
    """max(all, interface) rp_filter is not strict (1) on an interface service replies cross."""
    keys = {"all": rp_filter_key("all"), subject.interface: rp_filter_key(subject.interface)}
    values = {name: node.sysctls.int_value(key) for name, key in keys.items()}
    absent = [keys[name] for name, value in values.items() if value is None]
    if absent:
        raise NotApplicable(f"{', '.join(absent)} not in sysctl -a on {node.name}")
    effective = max(value for value in values.values() if value is not None)
    if effective != STRICT:
        return []
    strict = [keys[name] for name, value in values.items() if value == STRICT]
    settings_text = " ".join(f"{key}=2" for key in strict)
    return [
        Violation(
            subject=subject.interface,
            node=node.name,
            observed=f"rp_filter effective={effective} ("
            + ", ".join(f"{name}={value}" for name, value in values.items())
            + ")",
            expected="0 or 2",
            fix=f"on {node.name}: sysctl -w {settings_text}, and persist it in "
            f"/etc/sysctl.d/90-rp-filter.conf ("
            + "; ".join(f"{key} = 2" for key in strict)
            + "); use 0 instead of 2 where Calico's Felix refuses loose mode",
            evidence=tuple(f"{key} = {values[name]}" for name, key in keys.items()),
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
    scope=Scope.NODE_INTERFACE,
    inputs=("nodes.json", "sysctl.txt", "ip-addr.json", "ip-link.json"),
    run=check_rp_filter,
)
