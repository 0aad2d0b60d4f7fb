"""Ready for nftables mode? What the switch from IPVS will break, told while IPVS still runs.

IPVS mode is deprecated (KEP-5495: deprecated in 1.35, the `KubeProxyIPVS` gate from 1.37, gone
in 1.43), and kube-proxy's nftables mode is where IPVS clusters go. These checks judge an IPVS
cluster (`modes=IPVS_MODE`); their suite tests carry the `migration` marker, so
`vipcheck -m migration` runs them alone and `-m "not migration"` leaves a run as it was. Each
severity is chosen for a gate before the switch:

- CRITICAL blocks: the node cannot run nftables mode (its kernel), or the switch deletes what
  another agent serves (foreign virtual servers);
- WARNING blocks at the default `--vipcheck-fail-on warning`: the host's nft is too old, or
  clients reach NodePorts today on addresses nftables mode will not answer on
  (vipcheck.checks.readiness_node_ports);
- INFO only informs: IPVS settings with no nftables equivalent, and Calico's kube-ipvs0 step.

Sources read for them: kubernetes/kubernetes@898b9f800267 pkg/proxy/nftables/supported.go
(getNFTablesInterface: kernel and nft floors), @0014930a2487 cmd/kube-proxy/app/server_linux.go
(platformCleanup) and cmd/kube-proxy/app/server.go (Options.Run calls it at every start),
@96a03f453527 pkg/proxy/ipvs/cleanup.go (cleanupLeftovers: ipvs.Flush, then kube-ipvs0),
@9dce640213b5 pkg/proxy/ipvs/proxier.go (NewProxier: strictARP's sysctls, `ipvsadm --set`),
projectcalico/calico@015a1e5c2404 felix/dataplane/driver.go, @0fbcbecb7e81
felix/dataplane/linux/int_dataplane.go, @3547e4a84ce1 felix/nftables/utils.go.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from vipcheck.checks.base import (
    Check,
    ClusterSubject,
    FindingKind,
    NodeSubject,
    NotApplicable,
    PartlyJudged,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import (
    IPVS_MODE,
    NotShown,
    ipvsadm_service_option,
    judge_each_node,
    restart_kube_proxy_text,
)
from vipcheck.checks.scopes import CLUSTER, NODES
from vipcheck.checks.sysctls import kernel_version
from vipcheck.checks.virtual_servers import virtual_service_explanations
from vipcheck.expected import Explanation, VirtualServiceExplanations
from vipcheck.facts import (
    IP_ADDR,
    IP_LINK,
    IPVS_TABLE,
    KERNEL_RELEASE,
    KUBE_PROXY,
    NFT_VERSION,
    SERVICES,
    Facts,
    NodeFacts,
)
from vipcheck.model.cluster import DEFAULT_SCHEDULER, KubeProxyConfig
from vipcheck.model.node import KUBE_IPVS0, HostPort, VirtualService
from vipcheck.settings import Settings

# kube-proxy's nftables mode refuses to start below this kernel (NFTablesKubeProxyKernelVersion,
# checked in getNFTablesInterface unless KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK is set).
NFTABLES_KERNEL = (5, 13)
# knftables drives no nft older than this; kube-proxy takes kernel 5.13 to imply the host's nft is
# as new, so that its table cannot crash the host's own nft (getNFTablesInterface's comment).
NFT_MINIMUM = (1, 0, 1)
# Interfaces only Calico creates: its pod veths, and its VXLAN and WireGuard devices. tunl0 is
# not one: the ipip module creates it in every network namespace, whoever loaded it.
CALICO_PREFIX = "cali"
CALICO_DEVICES = frozenset({"vxlan.calico", "vxlan-v6.calico", "wireguard.cali", "wg-v6.cali"})
# How many of a node's hand-set schedulers a finding names before it counts the rest.
SHOWN = 5


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def check_kernel_version(subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """The node's kernel is 5.13 or newer: below, kube-proxy in nftables mode does not start."""
    node = facts.nodes[subject.node]
    release = node.kernel_release
    version = kernel_version(release, f"nodes/{node.name}/uname.txt")
    if version >= NFTABLES_KERNEL:
        return []
    return [
        Violation(
            kind=FindingKind.KERNEL_TOO_OLD_FOR_NFTABLES,
            subject="kernel",
            node=node.name,
            observed=f"kernel {_dotted(version)}: kube-proxy in nftables mode exits at start-up "
            f"here ('requires kernel {_dotted(NFTABLES_KERNEL)} or later'), leaving the node "
            "no Service rules at all",
            expected=f"kernel {_dotted(NFTABLES_KERNEL)} or later",
            fix=f"upgrade {node.name}'s kernel to {_dotted(NFTABLES_KERNEL)} or later before "
            "switching it, or keep it in IPVS mode until then (kube-proxy's "
            "KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK lifts the check, for tests only)",
            evidence=(release,),
        )
    ]


def check_nft_version(subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """The host's nft is 1.0.1 or newer, so kube-proxy's table cannot crash it."""
    node = facts.nodes[subject.node]
    version = node.nft_version
    if version >= NFT_MINIMUM:
        return []
    return [
        Violation(
            kind=FindingKind.NFT_TOO_OLD,
            subject="nft",
            node=node.name,
            observed=f"nft {_dotted(version)}: an nft before {_dotted(NFT_MINIMUM)} reads the "
            "whole ruleset on every command and can crash on kube-proxy's sets, so the host's "
            "firewall tools (and vipcheck's reading of the node) fail once the switch made them",
            expected=f"nft {_dotted(NFT_MINIMUM)} or later on the host",
            fix=f"upgrade the nftables package on {node.name} to {_dotted(NFT_MINIMUM)} or later "
            "before switching it",
        )
    ]


def check_foreign_virtual_servers(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per virtual server no Service of this cluster programs: the IPVS cleanup of
    kube-proxy in nftables mode flushes it with kube-proxy's own."""
    node = facts.nodes[subject.node]
    explanations = virtual_service_explanations(facts)
    violations = []
    for service in node.ipvs.services:
        owner = _foreign_owner(service, explanations)
        if owner is None:
            continue
        violations.append(
            Violation(
                kind=FindingKind.FOREIGN_VIRTUAL_SERVICE,
                subject=service.name,
                node=node.name,
                observed=f"{service.name} with {len(service.real_servers)} real server(s) is "
                f"{owner}; kube-proxy started in nftables mode flushes every IPVS virtual "
                "server at each start (ipvs.Flush), this one too",
                expected="no IPVS virtual server but kube-proxy's, or a plan for each other one",
                fix=f"on {node.name}: before the switch, move what serves {service.name} off "
                "this node's IPVS (another node, or its own nftables or proxy); restoring it "
                "after the switch lasts only until kube-proxy restarts. If it is a leftover of "
                f"a deleted Service, delete it now: {_delete_command(service)}",
                evidence=(service.raw, *(rs.raw for rs in service.real_servers)),
            )
        )
    return violations


def _foreign_owner(service: VirtualService, explanations: VirtualServiceExplanations) -> str | None:
    """Whose the VS is when not kube-proxy's own, in words; None for kube-proxy's."""
    if service.fwmark is not None:
        return "a firewall-mark service: another agent's (keepalived, kube-router)"
    assert service.protocol is not None
    assert service.address is not None
    assert service.port is not None
    explained = explanations.explain(service.protocol, service.address, service.port)
    if explained is None:
        return "no Service's address or nodePort: another agent's, or left from a deleted Service"
    if explained.why is Explanation.EXCLUDE_CIDRS:
        return f"inside ipvs.excludeCIDRs {explained.detail}: another agent's"
    if explained.why is Explanation.OTHER_PROXY:
        return f"programmed for {explained.detail}: another proxy's"
    return None


def _delete_command(service: VirtualService) -> str:
    """`ipvsadm -D -t VIP:PORT` (or `-f MARK`), quoted for a shell."""
    if service.fwmark is not None:
        return shlex.join(("ipvsadm", "-D", "-f", str(service.fwmark)))
    assert service.protocol is not None
    assert service.address is not None
    assert service.port is not None
    address = HostPort(service.address, service.port)
    return shlex.join(("ipvsadm", "-D", ipvsadm_service_option(service.protocol), str(address)))


def check_ipvs_only_settings(
    subject: ClusterSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """What the IPVS config and tables set that nftables mode has no word for, explained."""
    config = facts.cluster.kube_proxy
    found = list(_config_settings(config))
    try:
        found += judge_each_node(
            facts,
            lambda name, node: facts.node_verdict(
                name, "ipvs-schedulers-judged", lambda: _hand_set(name, node, config, facts)
            ),
        )
    except PartlyJudged as partly:
        raise PartlyJudged([*found, *partly.violations], partly.unjudged) from None
    return found


def _config_settings(config: KubeProxyConfig) -> Iterator[Violation]:
    """The ConfigMap's ipvs section, item by item, where it departs from what nftables does."""
    if config.scheduler not in ("", DEFAULT_SCHEDULER):
        yield _setting(
            f"ipvs.scheduler: {config.scheduler}",
            "nftables mode picks each new connection's endpoint at random, all weighing the "
            "same (numgen random): no least-connection, weighted or hashing scheduler",
            "before the switch, give the Services that rely on the scheduler what nftables "
            "keeps: sessionAffinity: ClientIP for source hashing (sh, mh); nothing replaces "
            "least-connection balancing",
        )
    timeouts = [
        f"{name} {seconds}s"
        for name, seconds in (
            ("tcpTimeout", config.tcp_timeout),
            ("tcpFinTimeout", config.tcp_fin_timeout),
            ("udpTimeout", config.udp_timeout),
        )
        if seconds
    ]
    if timeouts:
        yield _setting(
            f"ipvs {', '.join(timeouts)}",
            "IPVS connection timers (ipvsadm --set); nftables mode keeps no IPVS table: a "
            "connection lives as long as its conntrack entry, whose timers come from kube-proxy's "
            "conntrack section (tcpEstablishedTimeout, tcpCloseWaitTimeout, udpTimeout, "
            "udpStreamTimeout) and the kernel (nf_conntrack_tcp_timeout_fin_wait)",
            "before the switch, set the conntrack section to the lifetimes clients need; the "
            "ipvs timeouts then go with the ipvs section",
        )
    if config.strict_arp:
        yield _setting(
            "ipvs.strictARP: true",
            "it makes kube-proxy set net.ipv4.conf.all.arp_ignore=1 and arp_announce=2 so "
            "the VIPs on kube-ipvs0 are not answered by ARP (MetalLB's L2 mode asks for it); "
            "nftables mode binds no VIP to an interface and needs none of it, and nothing "
            "reverts the two sysctls",
            "nothing to carry over: drop ipvs.strictARP with the switch, and reset arp_ignore "
            "and arp_announce where nothing else on the node wants them",
        )


def _setting(observed: str, differs: str, fix: str) -> Violation:
    return Violation(
        kind=FindingKind.IPVS_ONLY_SETTING,
        subject="kube-proxy config",
        node=None,
        observed=f"{observed}: {differs}",
        expected="settings nftables mode keeps, or a plan for each other one",
        fix=fix,
    )


def _hand_set(
    name: str, node: NodeFacts, config: KubeProxyConfig, facts: Facts
) -> list[Violation | NotShown]:
    """kube-proxy's VSs whose scheduler is neither rr nor the config's: set by hand or by
    another tool, and as lost as the config's with the switch."""
    explanations = virtual_service_explanations(facts)
    odd = [
        service
        for service in node.ipvs.services
        if service.fwmark is None
        and service.scheduler not in (None, DEFAULT_SCHEDULER, config.scheduler)
        and _foreign_owner(service, explanations) is None
    ]
    if not odd:
        return []
    shown = ", ".join(f"{service.name} {service.scheduler}" for service in odd[:SHOWN])
    more = f" and {len(odd) - SHOWN} more" if len(odd) > SHOWN else ""
    return [
        Violation(
            kind=FindingKind.IPVS_ONLY_SETTING,
            subject="IPVS schedulers",
            node=name,
            observed=f"{len(odd)} virtual server(s) of Services schedule otherwise than "
            f"ipvs.scheduler ({config.scheduler}): {shown}{more}; nftables mode picks at random",
            expected=f"every Service's virtual server on {config.scheduler}, as kube-proxy sets "
            "them, or a plan for each other one",
            fix=f"find what set them on {name} (kube-proxy resets them at its next resync: "
            f"{restart_kube_proxy_text(name)}); give the Services that need stickiness "
            "sessionAffinity: ClientIP before the switch",
            evidence=tuple(service.raw for service in odd[:SHOWN]),
        )
    ]


def check_calico_kube_ipvs0(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """On a Calico node, the switch's step for Felix, which keys its IPVS mode on kube-ipvs0."""
    node = facts.nodes[subject.node]
    interfaces = node.interfaces
    calico = sorted(
        interface.name
        for interface in interfaces
        if interface.name.startswith(CALICO_PREFIX) or interface.name in CALICO_DEVICES
    )
    if not calico:
        raise NotApplicable(
            f"{node.name} has no Calico interface (cali*, vxlan.calico, wireguard.cali): "
            "Felix's kube-ipvs0 detection does not apply"
        )
    has_device = interfaces.get(KUBE_IPVS0) is not None
    shown = ", ".join(calico[:SHOWN]) + (
        f" and {len(calico) - SHOWN} more" if len(calico) > SHOWN else ""
    )
    return [
        Violation(
            kind=FindingKind.CALICO_READS_KUBE_IPVS0,
            subject="Calico Felix",
            node=node.name,
            observed=f"Calico runs here ({shown}) and "
            + (f"{KUBE_IPVS0} is present" if has_device else f"no {KUBE_IPVS0} is present")
            + ": Felix turns its kube-proxy IPVS support on while that device exists, and "
            "restarts when it appears or goes; it takes kube-proxy for nftables mode from "
            "chains in table ip/ip6 kube-proxy (NFTablesMode Auto)",
            expected=f"after the switch, no {KUBE_IPVS0} on {node.name}, so Felix leaves IPVS mode",
            fix=f"after switching {node.name}, check that {KUBE_IPVS0} is gone (kube-proxy's "
            "IPVS cleanup deletes it, unless `modprobe ip_vs` failed in its container); if it "
            f"stayed, `ip link del {KUBE_IPVS0}` on {node.name} and let Felix restart (or "
            "restart calico-node there)",
        )
    ]


KERNEL_VERSION = Check(
    id="migration-kernel-version",
    title="The node's kernel runs kube-proxy's nftables mode (5.13 or later)",
    why=(
        "kube-proxy in nftables mode exits at start-up on a kernel before 5.13 "
        "(kubernetes/kubernetes@898b9f800267 pkg/proxy/nftables/supported.go "
        "getNFTablesInterface, NFTablesKubeProxyKernelVersion), so a node switched too early "
        "serves no Service at all. Blocks the gate (critical)."
    ),
    fix="Upgrade the kernel to 5.13 or later before switching the node; keep it in IPVS mode "
    "until then.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(KUBE_PROXY, KERNEL_RELEASE),
    run=check_kernel_version,
    modes=IPVS_MODE,
)

NFT_VERSION_CHECK = Check(
    id="migration-nft-version",
    title="The node's nft is 1.0.1 or later",
    why=(
        "knftables drives no nft before 1.0.1, which reads the whole ruleset on every command "
        "and crashes on rules newer nft writes (kubernetes-sigs/knftables README); kube-proxy "
        "takes kernel 5.13 to imply the host's nft is as new, so that its table cannot break "
        "the host's nft (kubernetes/kubernetes@898b9f800267 pkg/proxy/nftables/supported.go "
        "getNFTablesInterface). An older host nft breaks the node's firewall tooling after the "
        "switch. Blocks the gate at --vipcheck-fail-on warning (warning)."
    ),
    fix="Upgrade the host's nftables package to 1.0.1 or later before switching the node.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, NFT_VERSION),
    run=check_nft_version,
    modes=IPVS_MODE,
)

FOREIGN_VIRTUAL_SERVERS = Check(
    id="migration-foreign-virtual-servers",
    title="Every IPVS virtual server is kube-proxy's, or the switch deletes another agent's",
    why=(
        "Started in nftables mode, kube-proxy runs the IPVS cleanup at every start "
        "(kubernetes/kubernetes@0014930a2487 cmd/kube-proxy/app/server_linux.go platformCleanup), "
        "and it flushes every virtual server on the node, kube-proxy's or not (@96a03f453527 "
        "pkg/proxy/ipvs/cleanup.go cleanupLeftovers, ipvs.Flush): keepalived's, kube-router's "
        "and excludeCIDRs' services vanish with the switch. Blocks the gate (critical)."
    ),
    fix="Move each named service off the node's IPVS before the switch; delete leftovers of "
    "deleted Services (`ipvsadm -D`).",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(KUBE_PROXY, SERVICES, IPVS_TABLE),
    run=check_foreign_virtual_servers,
    modes=IPVS_MODE,
)

IPVS_ONLY_SETTINGS = Check(
    id="migration-ipvs-only-settings",
    title="IPVS settings with no nftables equivalent are known before the switch",
    why=(
        "nftables mode picks endpoints at random and keeps no IPVS table, so a non-rr scheduler, "
        "the IPVS timeouts (ipvsadm --set) and strictARP (arp_ignore/arp_announce) have no "
        "counterpart there (kubernetes/kubernetes@9dce640213b5 pkg/proxy/ipvs/proxier.go "
        "NewProxier; kubernetes/website@3842a2847339 virtual-ips.md, proxy modes). Informs, "
        "does not block (info)."
    ),
    fix="Carry what matters over by other means (sessionAffinity, the conntrack section) and "
    "drop the ipvs section with the switch.",
    severity=Severity.INFO,
    scope=CLUSTER,
    inputs=(KUBE_PROXY, SERVICES, IPVS_TABLE),
    run=check_ipvs_only_settings,
    modes=IPVS_MODE,
)

CALICO_KUBE_IPVS0 = Check(
    id="migration-calico-kube-ipvs0",
    title="On Calico nodes, kube-ipvs0 goes with the switch, as Felix keys IPVS mode on it",
    why=(
        "Felix turns its kube-proxy IPVS support on when kube-ipvs0 exists at its start "
        "(projectcalico/calico@015a1e5c2404 felix/dataplane/driver.go StartDataplaneDriver) and "
        "restarts when the device comes or goes (@0fbcbecb7e81 felix/dataplane/linux/"
        "int_dataplane.go checkIPVSConfigOnStateUpdate); it detects kube-proxy's nftables mode "
        "from chains in table ip/ip6 kube-proxy (@3547e4a84ce1 felix/nftables/utils.go "
        "KubeProxyNftablesEnabledFn). A kube-ipvs0 the cleanup left keeps Felix in IPVS mode. "
        "Calico is told by its interfaces (cali*, vxlan.calico, wireguard.cali; no pod list is "
        "gathered). A step of the switch: informs, does not block (info)."
    ),
    fix="After switching a Calico node, make sure kube-ipvs0 is gone (`ip link del kube-ipvs0`) "
    "so Felix restarts out of IPVS mode.",
    severity=Severity.INFO,
    scope=NODES,
    inputs=(KUBE_PROXY, IP_ADDR, IP_LINK),
    run=check_calico_kube_ipvs0,
    modes=IPVS_MODE,
)
