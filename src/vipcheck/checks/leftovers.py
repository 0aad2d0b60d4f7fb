"""What kube-proxy's IPVS mode leaves on a node that switched to nftables mode (issue 20).

Started in nftables mode, kube-proxy runs the iptables and IPVS cleanups
(cmd/kube-proxy/app/server_linux.go `platformCleanup`, kubernetes/kubernetes@0014930a2487). The
IPVS one (pkg/proxy/ipvs/cleanup.go `CleanupLeftovers`, kubernetes/kubernetes@5e377f948419)
returns at once where `modprobe -va ip_vs` fails in kube-proxy's container (kubernetes PR
131243), leaving every virtual server, kube-ipvs0, the KUBE-* iptables chains and ipsets behind.
Where it runs, it flushes every virtual server (kube-proxy's or not), deletes kube-ipvs0, the
chains of pkg/proxy/ipvs/proxier.go's `iptablesCleanupChains` in both families, and the ipsets of
`ipsetInfo` by their IPv4 names only, so the KUBE-6-* sets of IPv6 always survive. The sysctls
the IPVS proxier set (`NewProxier`) are never reverted.

Each check judges only a node that runs nftables mode (a kube-proxy nftables table is there): a
node still in IPVS mode is kube-proxy-mode's one finding, and its IPVS state is in use, not left
over. The checks only read the node; each fix is commands a person reviews (the fix script).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from vipcheck.checks.base import (
    Argv,
    Check,
    FindingKind,
    NodeSubject,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import NFTABLES_MODE, ipvsadm_service_option
from vipcheck.checks.scopes import NODES
from vipcheck.checks.sysctls import IPVS_KNOBS
from vipcheck.checks.virtual_servers import virtual_service_explanations
from vipcheck.expected import Explanation, VirtualServiceExplanations
from vipcheck.facts import (
    IP6TABLES_CHAINS,
    IP_ADDR,
    IP_LINK,
    IPSETS,
    IPTABLES_CHAINS,
    IPVS_TABLE,
    KUBE_PROXY,
    NFT_IP,
    NFT_IP6,
    NFT_TABLES,
    SERVICES,
    SYSCTLS,
    Facts,
    NodeFacts,
)
from vipcheck.model.nftables import NftFamily
from vipcheck.model.node import KUBE_IPVS0, HostPort, VirtualService
from vipcheck.model.xtables import IptablesBackend, IptablesFamily, IptablesJump, IptablesTables
from vipcheck.settings import Settings

# The ipsets kube-proxy's IPVS mode makes: KUBE-* in IPv4, KUBE-6-* in IPv6 (pkg/proxy/ipvs/
# ipset.go NewIPSet), both under one prefix.
KUBE_PREFIX = "KUBE-"
# Chains a correct nftables-mode node keeps: kubelet makes them (pkg/kubelet/
# kubelet_network_linux.go, kubernetes/kubernetes: KUBE-IPTABLES-HINT in mangle, the
# KUBE-KUBELET-CANARY it monitors in mangle, nat and filter, KUBE-FIREWALL in filter for the
# localnet rule), and nftables-mode kube-proxy makes no iptables chain at all.
KEPT_BY_KUBELET = frozenset(
    {
        ("mangle", "KUBE-IPTABLES-HINT"),
        ("mangle", "KUBE-KUBELET-CANARY"),
        ("nat", "KUBE-KUBELET-CANARY"),
        ("filter", "KUBE-KUBELET-CANARY"),
        ("filter", "KUBE-FIREWALL"),
    }
)
# The tool that changes each backend's tables (a dump that names none: plain `iptables`).
_TOOL_SUFFIX = {IptablesBackend.LEGACY: "-legacy", IptablesBackend.NF_TABLES: "-nft", None: ""}
# The sysctls IPVS mode's NewProxier sets (pkg/proxy/ipvs/proxier.go), with the value it sets
# and the kernel's default (ipvs-sysctl.rst, ip-sysctl.rst). conn_reuse_mode is set to 0 only on
# kernels 4.1 to 5.8; arp_ignore/arp_announce only with ipvs.strictARP.
VS_CONNTRACK = "net.ipv4.vs.conntrack"
IPVS_SYSCTLS = (
    (VS_CONNTRACK, 1, 0),
    ("net.ipv4.vs.conn_reuse_mode", 0, 1),
    ("net.ipv4.vs.expire_nodest_conn", 1, 0),
    ("net.ipv4.vs.expire_quiescent_template", 1, 0),
)
ARP_IGNORE = "net.ipv4.conf.all.arp_ignore"
ARP_ANNOUNCE = "net.ipv4.conf.all.arp_announce"
STRICT_ARP = ((ARP_IGNORE, 1, 0), (ARP_ANNOUNCE, 2, 0))
_KUBE_PROXYS = frozenset({Explanation.SERVICE, Explanation.NODE_PORT, Explanation.SCHEDULER_PROBE})
_SKIPPED_CLEANUP = (
    "kube-proxy's IPVS cleanup did not run (it returns where `modprobe ip_vs` fails in its "
    "container, kubernetes PR 131243)"
)


def switched_node(facts: Facts, subject: NodeSubject) -> NodeFacts:
    """The node, where it runs nftables mode: a kube-proxy nftables table of either family.
    Elsewhere its IPVS state is not left over but in use (kube-proxy-mode reports the node)."""
    node = facts.nodes[subject.node]
    if [node.nftables(family) for family in NftFamily] == [None] * len(NftFamily):
        raise NotApplicable(
            f"{node.name} has no kube-proxy nftables table: it has not switched to nftables "
            "mode yet (kube-proxy-mode reports it), so its IPVS state is in use, not left over"
        )
    return node


def check_ipvs_leftover_virtual_servers(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per IPVS virtual server on a node in nftables mode, each named with its
    owner: a Service's (kube-proxy's, deleted with the command) or another agent's (named only:
    kube-proxy's cleanup would flush it too at a start where `modprobe ip_vs` succeeds)."""
    node = switched_node(facts, subject)
    if node.ipvs_absent:
        return []  # ip_vs not loaded: no virtual server can exist
    table = node.ipvs
    if table.partial and not table.services:
        raise NotApplicable(f"{node.name}: the pasted part of its IPVS table shows no service")
    explanations = virtual_service_explanations(facts)
    return [_leftover_virtual_server(node.name, vs, explanations) for vs in table.services]


def _leftover_virtual_server(
    node: str, service: VirtualService, explanations: VirtualServiceExplanations
) -> Violation:
    """One virtual server's violation: kube-proxy's with its delete command, else named only."""
    delete = _delete_virtual_server(service)
    explained = None
    if service.fwmark is None:
        assert service.protocol is not None
        assert service.address is not None
        assert service.port is not None
        explained = explanations.explain(service.protocol, service.address, service.port)
    if explained is None:
        ours, owner = (
            False,
            (
                "not kube-proxy's (no Service has it: keepalived's, kube-vip's, or a Service "
                "deleted since)"
            ),
        )
    elif explained.why in _KUBE_PROXYS:
        ours, owner = True, f"kube-proxy's, for {explained.detail}"
    else:
        ours, owner = False, f"{explained.why.value}: {explained.detail}"
    evidence = (service.raw, *(rs.raw for rs in service.real_servers))
    return Violation(
        kind=FindingKind.IPVS_LEFTOVER_VIRTUAL_SERVER,
        subject=service.name,
        node=node,
        observed=f"{service.name} with {len(service.real_servers)} real server(s) on a node in "
        f"nftables mode, {owner}",
        expected="no IPVS virtual server of kube-proxy's once the node runs nftables mode",
        fix=f"on {node}: {shlex.join(delete)}"
        if ours
        else f"on {node}: if no other agent owns it, {shlex.join(delete)}; if one does, keep it, "
        "and know that kube-proxy in nftables mode flushes every virtual server at a start "
        "where its IPVS cleanup runs",
        evidence=tuple(line for line in evidence if line),
        commands=(delete,) if ours else (),
    )


def _delete_virtual_server(service: VirtualService) -> Argv:
    """`ipvsadm -D -t 10.96.0.1:443`, or `ipvsadm -D -f 42` (with -6 for an IPv6 mark)."""
    if service.fwmark is not None:
        family = ("-6",) if service.key[-1] == "IPv6" else ()
        return ("ipvsadm", "-D", "-f", str(service.fwmark), *family)
    assert service.protocol is not None
    assert service.address is not None
    assert service.port is not None
    option = ipvsadm_service_option(service.protocol)
    return ("ipvsadm", "-D", option, str(HostPort(service.address, service.port)))


def check_ipvs_leftover_kube_ipvs0(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """No kube-ipvs0 on a node in nftables mode."""
    node = switched_node(facts, subject)
    device = node.interfaces.get(KUBE_IPVS0)
    if device is None:
        return []
    addresses = device.addresses or ()
    held = f", holding {len(addresses)} address(es) the node takes as its own" if addresses else ""
    delete = ("ip", "link", "del", KUBE_IPVS0)
    return [
        Violation(
            kind=FindingKind.IPVS_LEFTOVER_KUBE_IPVS0,
            subject=KUBE_IPVS0,
            node=node.name,
            observed=f"{KUBE_IPVS0} ({device.kind or 'a device'}) on a node in nftables "
            f"mode{held}: {_SKIPPED_CLEANUP}",
            expected=f"no {KUBE_IPVS0}: kube-proxy's IPVS cleanup deletes it",
            fix=f"on {node.name}: {shlex.join(delete)}, then restart calico-node there if Calico "
            "runs, as Felix chose its kube-proxy IPVS support from the device at its start",
            evidence=tuple(str(address) for address in addresses[:5]),
            commands=(delete,),
        )
    ]


def check_ipvs_leftover_ipsets(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per KUBE-* and KUBE-6-* ipset on a node in nftables mode."""
    node = switched_node(facts, subject)
    return [
        Violation(
            kind=FindingKind.IPVS_LEFTOVER_IPSET,
            subject=f"ipset {name}",
            node=node.name,
            observed=f"ipset {name} on a node in nftables mode: "
            + (
                "kube-proxy's IPVS cleanup destroys IPv4 sets only, so an IPv6 one always stays"
                if name.startswith(f"{KUBE_PREFIX}6-")
                else _SKIPPED_CLEANUP
            ),
            expected="no KUBE-* ipset once the node runs nftables mode",
            fix=f"on {node.name}, once no iptables rule names it (iptables-leftover-chains' "
            f"commands first): {shlex.join(('ipset', 'destroy', name))}",
            commands=(("ipset", "destroy", name),),
        )
        for name in sorted(node.ipset_names)
        if name.startswith(KUBE_PREFIX)
    ]


def check_iptables_leftover_chains(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per table of each family and backend holding KUBE-* chains that neither
    nftables-mode kube-proxy (none) nor kubelet (KEPT_BY_KUBELET) makes; never a pass where a
    backend that may hold tables was not read."""
    node = switched_node(facts, subject)
    violations: list[Violation] = []
    unread: list[str] = []
    for family in IptablesFamily:
        dump = node.iptables(family)
        unread += [f"{family.value}: {why}" for why in dump.unread]
        for backend in dump.backends:
            violations += _leftover_chains(node.name, family, backend, dump.source)
    if unread and not violations:
        raise NotApplicable(f"{node.name}: " + "; ".join(unread))
    return violations


def _leftover_chains(
    node: str, family: IptablesFamily, tables: IptablesTables, source: str
) -> Iterable[Violation]:
    """One backend's leftover chains, a violation per table, with the commands that delete
    them: the jumps into them from other chains, then a flush of each (which drops their jumps
    into each other), then each chain."""
    tool = family.value + _TOOL_SUFFIX[tables.backend]
    where = f"{family.value} ({tables.backend.value})" if tables.backend else family.value
    for table, chains in sorted(tables.chains.items()):
        leftover = sorted(
            chain
            for chain in chains
            if chain.startswith(KUBE_PREFIX) and (table, chain) not in KEPT_BY_KUBELET
        )
        if not leftover:
            continue
        gone = set(leftover)
        jumps = [j for j in tables.jumps if j.table == table and j.target in gone]
        jumps = [j for j in jumps if j.chain not in gone]
        commands = (
            *(_delete_jump(tool, jump) for jump in jumps),
            *((tool, "-t", table, "-F", chain) for chain in leftover),
            *((tool, "-t", table, "-X", chain) for chain in leftover),
        )
        yield Violation(
            kind=FindingKind.IPTABLES_LEFTOVER_CHAIN,
            subject=f"{where} {table}",
            node=node,
            observed=f"{len(leftover)} KUBE-* chain(s) in {where} table {table} on a node in "
            f"nftables mode: {', '.join(leftover)}"
            + (f"; {len(jumps)} rule(s) of other chains still jump to them" if jumps else ""),
            expected="only kubelet's KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY and KUBE-FIREWALL: "
            "nftables-mode kube-proxy keeps nothing in iptables",
            fix=f"on {node}: " + "; ".join(shlex.join(command) for command in commands),
            evidence=(
                source,
                *(f"line {j.line}: -A {j.chain} {shlex.join(j.spec)}" for j in jumps),
            ),
            commands=commands,
        )


def _delete_jump(tool: str, jump: IptablesJump) -> Argv:
    """The rule deleted by the very words iptables-save printed it with."""
    return (tool, "-t", jump.table, "-D", jump.chain, *jump.spec)


def check_ipvs_leftover_sysctls(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per IPVS-mode sysctl still at the value kube-proxy set, on a node in nftables
    mode where ip_vs is loaded (its keys exist); the ARP pair only as strictARP sets both."""
    node = switched_node(facts, subject)
    sysctls = node.sysctls
    if sysctls.int_value(VS_CONNTRACK) is None:
        raise NotApplicable(
            f"{node.name}: no {VS_CONNTRACK} in {sysctls.source}: ip_vs is not loaded, so no "
            "IPVS sysctl is left"
        )
    found = [
        (key, set_to, default)
        for key, set_to, default in IPVS_SYSCTLS
        if sysctls.int_value(key) == set_to
    ]
    # Both read, and named only together: the pair strictARP sets, not one an operator chose.
    arp = [(key, set_to, default, sysctls.int_value(key)) for key, set_to, default in STRICT_ARP]
    if all(value == set_to for _, set_to, _, value in arp):
        found += [(key, set_to, default) for key, set_to, default, _ in arp]
    return [
        Violation(
            kind=FindingKind.IPVS_LEFTOVER_SYSCTL,
            subject=key,
            node=node.name,
            observed=f"{key} = {set_to}, as kube-proxy's IPVS mode set it"
            + (" (ipvs.strictARP)" if key in (ARP_IGNORE, ARP_ANNOUNCE) else ""),
            expected=f"{key} = {default} (the kernel's default), unless you set it yourself: "
            "nftables mode needs none of the IPVS settings",
            fix=f"on {node.name}: {shlex.join(('sysctl', '-w', f'{key}={default}'))}, and drop "
            "it from /etc/sysctl.d if something persisted it",
            evidence=(f"{key} = {set_to} ({sysctls.source})",),
            commands=(("sysctl", "-w", f"{key}={default}"),),
        )
        for key, set_to, default in found
    ]


SWITCHED = (KUBE_PROXY, NFT_TABLES, NFT_IP, NFT_IP6)
_WHY_CLEANUP = (
    "Started in nftables mode, kube-proxy cleans up IPVS mode (cmd/kube-proxy/app/server_linux.go "
    "platformCleanup @0014930a2487; pkg/proxy/ipvs/cleanup.go CleanupLeftovers @5e377f948419), "
    "but skips it where `modprobe ip_vs` fails in its container (kubernetes PR 131243)"
)

IPVS_LEFTOVER_VIRTUAL_SERVERS = Check(
    id="ipvs-leftover-virtual-servers",
    title="No IPVS virtual server is left on a node in nftables mode",
    why=(
        f"{_WHY_CLEANUP}. A virtual server left there still answers its VIP wherever the node "
        "takes that address as local (kube-ipvs0 left too): to the endpoints of before the "
        "switch, which nothing updates any more. Where the cleanup runs, it flushes every virtual "
        "server, keepalived's too. CRITICAL: a gate after the switch blocks on it."
    ),
    fix="`ipvsadm -D -t|-u VIP:PORT` for each of kube-proxy's (the fix script has them); "
    "`ipvsadm -C` clears them all at once but also flushes other agents' (keepalived, kube-vip).",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(*SWITCHED, SERVICES, IPVS_TABLE),
    run=check_ipvs_leftover_virtual_servers,
    modes=NFTABLES_MODE,
)

IPVS_LEFTOVER_KUBE_IPVS0 = Check(
    id="ipvs-leftover-kube-ipvs0",
    title="No kube-ipvs0 is left on a node in nftables mode",
    why=(
        f"{_WHY_CLEANUP}, leaving kube-ipvs0 and the VIPs on it, which the node keeps taking as "
        "its own. Calico's Felix enables its kube-proxy IPVS support wherever kube-ipvs0 exists "
        "at its start (projectcalico/calico@921afb7460e7 felix/dataplane/driver.go "
        "StartDataplaneDriver, KubeIPVSInterface in felix/dataplane/linux/int_dataplane.go), so "
        "a leftover device keeps Calico in IPVS mode. CRITICAL: a gate after the switch blocks."
    ),
    fix="`ip link del kube-ipvs0` on the node, then restart calico-node there where Calico runs.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(*SWITCHED, IP_ADDR, IP_LINK),
    run=check_ipvs_leftover_kube_ipvs0,
    modes=NFTABLES_MODE,
)

IPVS_LEFTOVER_IPSETS = Check(
    id="ipvs-leftover-ipsets",
    title="No KUBE-* or KUBE-6-* ipset is left on a node in nftables mode",
    why=(
        f"{_WHY_CLEANUP}. Where it runs it destroys the sets of ipsetInfo by their IPv4 names "
        "(pkg/proxy/ipvs/proxier.go), so the KUBE-6-* sets of IPv6 always stay. Their contents "
        "no longer follow the Services, yet leftover iptables rules still match on them. "
        "WARNING: nothing fails at once, but the next Service change makes them lie."
    ),
    fix="`ipset destroy NAME` for each, after the iptables rules that name them are gone "
    "(iptables-leftover-chains first): a set in use cannot be destroyed.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(*SWITCHED, IPSETS),
    run=check_ipvs_leftover_ipsets,
    modes=NFTABLES_MODE,
)

IPTABLES_LEFTOVER_CHAINS = Check(
    id="iptables-leftover-chains",
    title="No KUBE-* iptables chain of kube-proxy's is left on a node in nftables mode",
    why=(
        f"{_WHY_CLEANUP}. The IPVS cleanup deletes iptablesCleanupChains (nat KUBE-SERVICES, "
        "KUBE-POSTROUTING, KUBE-NODE-PORT, KUBE-LOAD-BALANCER, KUBE-MARK-MASQ; filter "
        "KUBE-FORWARD, KUBE-NODE-PORT, KUBE-PROXY-FIREWALL, KUBE-SOURCE-RANGES-FIREWALL, "
        "KUBE-IPVS-FILTER, KUBE-IPVS-OUT-FILTER) and the iptables one those of iptables mode "
        "(pkg/proxy/iptables/proxier.go CleanupLeftovers); nftables-mode kube-proxy makes no "
        "iptables chain, and only kubelet's KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY and "
        "KUBE-FIREWALL belong (pkg/kubelet/kubelet_network_linux.go; a kubelet before 1.27 also "
        "makes nat KUBE-MARK-DROP, KUBE-MARK-MASQ and KUBE-POSTROUTING: waive those there). "
        "Left chains still run for every packet their jumps catch, on ipsets nothing updates: "
        "WARNING."
    ),
    fix="Per backend (iptables-legacy or iptables-nft) and table: delete the rules of other "
    "chains that jump to them (`-D`, as iptables-save printed them), flush each chain (`-F`), "
    "then delete it (`-X`); the fix script holds the exact commands.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(*SWITCHED, IPTABLES_CHAINS, IP6TABLES_CHAINS),
    run=check_iptables_leftover_chains,
    modes=NFTABLES_MODE,
)

IPVS_LEFTOVER_SYSCTLS = Check(
    id="ipvs-leftover-sysctls",
    title="The sysctls IPVS mode set are back to the kernel's defaults on a node in nftables mode",
    why=(
        "IPVS mode's NewProxier (pkg/proxy/ipvs/proxier.go) sets net.ipv4.vs.conntrack=1, "
        "conn_reuse_mode=0 (kernels 4.1 to 5.8), expire_nodest_conn=1, "
        "expire_quiescent_template=1 and, with ipvs.strictARP, conf.all.arp_ignore=1 and "
        "arp_announce=2; no cleanup reverts them (platformCleanup). nftables mode needs none: "
        "the vs ones change only other IPVS users (keepalived), the ARP pair changes which "
        "addresses every interface answers ARP for. INFO: nothing fails because of them."
    ),
    fix="`sysctl -w KEY=DEFAULT` (the kernel's: vs.conntrack 0, conn_reuse_mode 1, "
    "expire_nodest_conn 0, expire_quiescent_template 0, arp_ignore 0, arp_announce 0) unless you "
    "chose the value yourself; drop it from /etc/sysctl.d where persisted.",
    severity=Severity.INFO,
    scope=NODES,
    inputs=(*SWITCHED, SYSCTLS),
    run=check_ipvs_leftover_sysctls,
    sysctls=(IPVS_KNOBS, ARP_IGNORE, ARP_ANNOUNCE),
    modes=NFTABLES_MODE,
)
