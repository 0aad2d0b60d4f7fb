"""kube-proxy's nftables tables against what a correct proxier programs (issue 19).

Each node's expected state is vipcheck.datapath.nftables' (pkg/proxy/nftables/proxier.go at
b0f823e6ccd8), by the node's kube-proxy release. The Service-port checks judge a node on all
its ports in one pass (kept by the snapshot's Facts) and each item looks its own verdict up, as
the IPVS checks do, so 100 nodes x 5,000 Services stay linear. Every violation names the rule or
element it read, and restarting kube-proxy on the node (a full resync) repairs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Network, collapse_addresses, ip_network

from vipcheck.checks.base import (
    Check,
    FindingKind,
    NodeSubject,
    NotApplicable,
    Severity,
    Violation,
)
from vipcheck.checks.kube_proxy import (
    NFTABLES_MODE,
    NotShown,
    judge_ports,
    restart_kube_proxy,
    restart_kube_proxy_text,
)
from vipcheck.checks.nft_reads import JudgeMemo, TableReads, kept_with
from vipcheck.checks.scopes import NODES, SERVICE_PORTS
from vipcheck.datapath.nftables import (
    CLUSTER_IPS,
    FIREWALL_IPS,
    NODEPORT_IPS,
    NftExpectedState,
    NodeRules,
    PortRules,
    element_index,
    host_port_text,
    map_endpoint_text,
    read_dnat,
    read_pick,
    read_single_dnat,
    references,
)
from vipcheck.facts import (
    ENDPOINT_SLICES,
    IP_ADDR,
    IP_LINK,
    KUBE_PROXY,
    KUBE_PROXY_DAEMONSET,
    NFT_IP,
    NFT_IP6,
    NFT_TABLES,
    NODE_OBJECTS,
    SERVICES,
    Facts,
    MissingInput,
    NodeFacts,
)
from vipcheck.model.cluster import IPNetwork, ServicePortKey
from vipcheck.model.nftables import KUBE_PROXY_TABLE, NftElement, NftFamily, NftSet, NftTable
from vipcheck.settings import Settings
from vipcheck.untrusted import printable

_Verdicts = list[Violation | NotShown]
PortJudge = Callable[[str, TableReads, PortRules], _Verdicts]
"""Judges one Service port in one family on one node: (node name, its table, expected rules)."""

_INPUTS = (
    SERVICES,
    ENDPOINT_SLICES,
    NODE_OBJECTS,
    KUBE_PROXY,
    KUBE_PROXY_DAEMONSET,
    NFT_TABLES,
    NFT_IP,
    NFT_IP6,
    IP_ADDR,  # a node's expected state holds its nodeport-ips, read from its addresses
    IP_LINK,
)


def _violation(
    kind: FindingKind, subject: str, node: str, *, observed: str, expected: str, evidence: str
) -> Violation:
    """A finding on a node's table: evidence as nft printed it, fixed by a resync."""
    return Violation(
        kind=kind,
        subject=subject,
        node=node,
        observed=printable(observed),
        expected=printable(expected),
        fix=f"restart kube-proxy on {node} so it rewrites its table: "
        f"{restart_kube_proxy_text(node)}",
        evidence=(printable(evidence),) if evidence else (),
        cluster_commands=(restart_kube_proxy(node),),
    )


def no_table(node: NodeFacts, family: NftFamily, subject: str) -> NotShown | Violation:
    """A port's family has no kube-proxy table on the node. With no kube-proxy table at all the
    node is not in nftables mode (setupNFTables creates the table on every sync, kubernetes/
    kubernetes@531be81208e2 pkg/proxy/nftables/proxier.go): kube-proxy-mode's one finding, not
    one per Service port of every nftables check. With the other family's table there, that
    mode check passes, yet the family's proxier (one per family, NewDualStackProxier,
    cmd/kube-proxy/app/server_linux.go) programmed nothing: each of its ports is flagged."""
    others = []
    for other in NftFamily:
        try:
            if other is not family and node.nftables(other) is not None:
                others.append(f"table {other.value} {KUBE_PROXY_TABLE}")
        except MissingInput:
            continue
    if not others:
        return NotShown(
            f"{node.name} has no {family.value} kube-proxy table (the mode check reports it)"
        )
    return _violation(
        FindingKind.NFT_MISSING_TABLE,
        subject,
        node.name,
        observed=f"nft lists no table {family.value} {KUBE_PROXY_TABLE}",
        expected=f"table {family.value} {KUBE_PROXY_TABLE} beside {', '.join(others)}, "
        f"holding the port's {family.value} rules",
        evidence=f"nft list tables on {node.name}: {', '.join(others)}",
    )


def _judge_ports(
    facts: Facts, subject: ServicePortKey, key: str, judge_port: PortJudge
) -> list[Violation]:
    """Every node's verdict on one Service port, each node judged on all its ports once."""
    expected = NftExpectedState.of(facts)
    memo: JudgeMemo[Violation | NotShown] = facts.derive("nft judge memo", JudgeMemo)

    def judge_node(name: str, node: NodeFacts) -> dict[ServicePortKey, _Verdicts]:
        return _judge_all(expected.on_node(name), name, node, judge_port, memo)

    return judge_ports(facts, subject, key, judge_node)


def _judge_all(
    rules: NodeRules,
    name: str,
    node: NodeFacts,
    judge_port: PortJudge,
    memo: JudgeMemo[Violation | NotShown],
) -> dict[ServicePortKey, _Verdicts]:
    tables: dict[NftFamily, NftTable | None] = {}
    judged: dict[ServicePortKey, _Verdicts] = {}
    for port, found in rules.ports.items():
        verdicts: _Verdicts = []
        for port_rules in found:
            family = port_rules.family
            if family not in tables:
                tables[family] = node.nftables(family)
            table = tables[family]
            if table is None:
                verdicts.append(no_table(node, family, str(port)))
            else:
                verdicts += memo.judged(judge_port, name, table, port_rules)
        if verdicts:
            judged[port] = verdicts
    return judged


# --- the maps --------------------------------------------------------------------------------


def check_service_maps(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """Each address of the port in exactly the maps the proxier puts it, with its verdict."""
    return _judge_ports(facts, subject, "nft-maps-judged", _judge_maps)


def _judge_maps(name: str, table: TableReads, rules: PortRules) -> _Verdicts:
    return _judge_elements(name, table, rules, rules.maps())


def _judge_elements(
    name: str, table: TableReads, rules: PortRules, maps: dict[str, dict[tuple[str, ...], str]]
) -> _Verdicts:
    """The port's elements of each map against the wanted ones: missing, wrong verdict, stale."""
    verdicts: _Verdicts = []
    subject = str(rules.port_key)
    addresses = {str(a) for a in (rules.cluster_ip, *rules.external_ips, *rules.lb_ips)}
    for map_name, wanted in maps.items():
        nft_map = table.set(map_name)
        indexed = _indexed(nft_map)
        keys: list[tuple[str, ...]]
        if map_name.endswith("nodeports"):
            keys = [(rules.protocol, str(rules.node_port))] if rules.node_port is not None else []
        else:
            keys = [(a, rules.protocol, str(rules.port_key.port)) for a in addresses]
        # In the map's order, as element_index gives them.
        found = sorted((indexed[k][0], k) for k in keys if k in indexed)
        mine = {k: indexed[k][1] for _, k in found}
        for key, verdict in wanted.items():
            element = mine.get(key)
            shown = " . ".join(key)
            if element is None:
                verdicts.append(
                    _violation(
                        FindingKind.NFT_MISSING_ELEMENT,
                        subject,
                        name,
                        observed=f"{map_name} has no element {shown} ({rules.family.value} table)",
                        expected=f"{shown} : {verdict} in {map_name}",
                        evidence="",
                    )
                )
            elif element.value != verdict:
                verdicts.append(
                    _violation(
                        FindingKind.NFT_WRONG_VERDICT,
                        subject,
                        name,
                        observed=f"{map_name}: {element}",
                        expected=f"{shown} : {verdict}",
                        evidence=str(element),
                    )
                )
        for key, element in mine.items():
            if key not in wanted:
                where = _where_it_belongs(rules, key)
                verdicts.append(
                    _violation(
                        FindingKind.NFT_STALE_ELEMENT,
                        subject,
                        name,
                        observed=f"{map_name}: {element}",
                        expected=f"no {' . '.join(key)} in {map_name} ({where})",
                        evidence=str(element),
                    )
                )
    return verdicts


_Indexed = dict[tuple[str, ...], tuple[int, NftElement]]


def _indexed(nft_map: NftSet | None) -> _Indexed:
    """A map's elements by key (element_index: a key's first place, its last element), with
    that place, so each Service port looks its own keys up instead of scanning the whole map
    (a node's maps hold every port's elements)."""
    return {} if nft_map is None else kept_with(nft_map, _index_map)


def _index_map(nft_map: NftSet) -> _Indexed:
    return {
        key: (place, element)
        for place, (key, element) in enumerate(element_index(nft_map.elements).items())
    }


def _where_it_belongs(rules: PortRules, key: tuple[str, ...]) -> str:
    """Where a correct proxier keeps this key instead, for the message."""
    every = {**rules.maps(), FIREWALL_IPS: rules.firewall_ips()}
    homes = [name for name, wanted in every.items() if key in wanted]
    if homes:
        return f"it belongs in {' and '.join(homes)}"
    return "no map holds it"


SERVICE_MAPS = Check(
    id="nft-service-maps",
    title="Each Service address and NodePort is in the verdict maps the proxier puts it in",
    why=(
        "service-ips / service-nodeports send a Service's traffic to its chains and "
        "no-endpoint-services / no-endpoint-nodeports drop or reject it: an address missing "
        "from both goes nowhere (a ClusterIP is then rejected by cluster-ips-check), a stale "
        "element rejects or misroutes a Service that has endpoints. With a Local policy and no "
        "local endpoint a key is in both maps: service-ips for the node's and its pods' own "
        "traffic, a drop for the rest (pkg/proxy/nftables/proxier.go syncProxyRules)."
    ),
    fix="Restart kube-proxy on the node so it resyncs its table (it rewrites every map).",
    severity=Severity.CRITICAL,
    scope=SERVICE_PORTS,
    inputs=_INPUTS,
    run=check_service_maps,
    modes=NFTABLES_MODE,
)


# --- loadBalancerSourceRanges: firewall-ips and the firewall- chains ---------------------------


def check_lb_source_ranges(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """LB IPs with source ranges in firewall-ips, their firewall chain dropping the rest."""
    return _judge_ports(facts, subject, "nft-firewall-judged", _judge_firewall)


# `ip saddr != { 1.2.3.4, 203.0.113.0/25 } drop` (one source: no braces), as nft lists it.
_FIREWALL_RULE = re.compile(r"ip6? saddr != (?:\{ ?(?P<many>[^}]*?) ?\}|(?P<one>\S+)) drop")


def _judge_firewall(name: str, table: TableReads, rules: PortRules) -> _Verdicts:
    subject = str(rules.port_key)
    verdicts = _judge_elements(name, table, rules, {FIREWALL_IPS: rules.firewall_ips()})
    if not rules.uses_firewall:
        return verdicts  # a left-over firewall chain is nft-no-stale-chains'
    chain = table.chain(rules.firewall_chain)
    if chain is None:
        return [*verdicts, _missing_chain(subject, name, rules.firewall_chain, rules)]
    wanted = _collapsed(rules.firewall_sources)
    shown_wanted = ", ".join(str(n) for n in sorted(wanted, key=_network_order))
    node_too = len(rules.firewall_sources) > len(rules.source_ranges)
    why = "and the LB IPs: a range holds the node IP" if node_too else "as listed"
    expected = (
        f"chain {rules.firewall_chain}: only `saddr != {{ {shown_wanted} }} drop` "
        f"(loadBalancerSourceRanges, {why})"
    )
    found = [_FIREWALL_RULE.fullmatch(rule.text) for rule in chain.rules]
    admitted = (
        _networks(found[0]["many"] or found[0]["one"]) if len(found) == 1 and found[0] else None
    )
    if admitted is None or _collapsed(admitted) != wanted:
        shown = "; ".join(map(str, chain.rules)) or "no rule"
        verdicts.append(
            _violation(
                FindingKind.NFT_WRONG_FIREWALL,
                subject,
                name,
                observed=f"chain {rules.firewall_chain} ({rules.family.value}): {shown}",
                expected=expected,
                evidence=shown,
            )
        )
    return verdicts


def _networks(text: str) -> list[IPNetwork] | None:
    """The addresses and prefixes of a listed anonymous set; None if one is neither."""
    try:
        return [ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip()]
    except ValueError:
        return None


def _collapsed(networks: Iterable[IPNetwork]) -> frozenset[IPNetwork]:
    """The networks merged per family, as nft merges an interval set's overlapping elements."""
    listed = tuple(networks)
    v4 = collapse_addresses(n for n in listed if isinstance(n, IPv4Network))
    v6 = collapse_addresses(n for n in listed if isinstance(n, IPv6Network))
    return frozenset((*v4, *v6))


def _network_order(network: IPNetwork) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)


LB_SOURCE_RANGES = Check(
    id="nft-lb-source-ranges",
    title="LoadBalancer IPs with loadBalancerSourceRanges admit exactly those sources",
    why=(
        "kube-proxy sends new connections to an LB IP of a Service with "
        "loadBalancerSourceRanges through `firewall-ips` to a `firewall-` chain that drops every "
        "other source (`ip saddr != { ranges } drop`, the LB IPs added when a range holds the "
        "node's IP, for the node's own looped-back requests): a missing element or chain opens "
        "the Service to the internet, wrong ranges lock its clients out "
        "(pkg/proxy/nftables/proxier.go, kubernetes/kubernetes@736e3b684ef1; NodePorts are "
        "never firewalled)."
    ),
    fix="Restart kube-proxy on the node so it resyncs its firewall chains and map.",
    severity=Severity.CRITICAL,
    scope=SERVICE_PORTS,
    inputs=_INPUTS,
    run=check_lb_source_ranges,
    modes=NFTABLES_MODE,
)


# --- the chains that pick and reach endpoints ------------------------------------------------


def check_chains_reach_endpoints(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """Each policy chain's numgen picks among exactly the usable endpoints, each DNAT right."""
    return _judge_ports(facts, subject, "nft-chains-judged", _judge_chains)


def _judge_chains(name: str, table: TableReads, rules: PortRules) -> _Verdicts:
    subject = str(rules.port_key)
    verdicts: _Verdicts = []
    for chain_name in rules.policy_chains:
        verdicts += _judge_policy_chain(name, table, rules, chain_name)
    if rules.uses_external_chain:
        external = table.chain(rules.external_chain)
        if external is None:
            verdicts.append(_missing_chain(subject, name, rules.external_chain, rules))
        elif rules.has_external_endpoints:
            wanted = f"goto {rules.external_policy_chain}"
            if not any(rule.text == wanted for rule in external.rules):
                shown = "; ".join(map(str, external.rules)) or "no rule"
                verdicts.append(
                    _violation(
                        FindingKind.NFT_WRONG_ENDPOINTS,
                        subject,
                        name,
                        observed=f"chain {rules.external_chain} does not {wanted}: {shown}",
                        expected=f"its last rule `{wanted}`",
                        evidence=shown,
                    )
                )
    return verdicts


def _missing_chain(subject: str, node: str, chain: str, rules: PortRules) -> Violation:
    return _violation(
        FindingKind.NFT_MISSING_CHAIN,
        subject,
        node,
        observed=f"no chain {chain} in the {rules.family.value} kube-proxy table",
        expected=f"chain {chain}",
        evidence="",
    )


def _judge_policy_chain(
    name: str,
    table: TableReads,
    rules: PortRules,
    chain_name: str,
) -> _Verdicts:
    subject = str(rules.port_key)
    chain = table.chain(chain_name)
    if chain is None:
        return [_missing_chain(subject, name, chain_name, rules)]
    pick = read_pick(chain.rules)
    wanted_text = sorted(
        host_port_text(e) if rules.uses_endpoint_chains else map_endpoint_text(e)
        for e in rules.policy_chains[chain_name]
    )
    expected = (
        f"numgen random mod {len(wanted_text)} over {', '.join(wanted_text)}, "
        f"{rules.protocol} ({rules.layout})"
    )
    single = None if pick is not None else read_single_dnat(chain.rules)
    if single is not None and rules.single_dnat and not rules.uses_endpoint_chains:
        pick = single
    if pick is None:
        shown = "; ".join(map(str, chain.rules)) or "no rule"
        why = (
            " (`dnat to IP:port` for one endpoint is written from 1.37 on, PR #140723)"
            if single is not None
            else ""
        )
        return [
            _violation(
                FindingKind.NFT_WRONG_ENDPOINTS,
                subject,
                name,
                observed=f"chain {chain_name} picks no endpoint{why}: {shown}",
                expected=expected,
                evidence=shown,
            )
        ]
    endpoints = rules.policy_chains[chain_name]
    reached: dict[str, str] = {}  # endpoint as the rules print it -> the rule path DNATing there
    protocols: set[str] = set()
    verdicts: _Verdicts = []
    if pick.protocol is not None:  # direct DNAT: the map names the endpoints
        protocols.add(pick.protocol)
        reached = {target: str(pick.rule) for target in pick.targets.values()}
        wanted = {map_endpoint_text(e) for e in endpoints}
    else:  # endpoint chains, each with its DNAT
        wanted = {host_port_text(e) for e in endpoints}
        for target in pick.targets.values():
            endpoint_chain = table.chain(target)
            if endpoint_chain is None:
                continue  # nft-no-stale-chains reports a goto to a missing chain
            dnat = read_dnat(endpoint_chain.rules)
            if dnat is None:
                verdicts.append(
                    _violation(
                        FindingKind.NFT_WRONG_ENDPOINTS,
                        subject,
                        name,
                        observed=f"endpoint chain {target} has no DNAT",
                        expected="`meta l4proto <proto> dnat to IP:port`",
                        evidence="; ".join(map(str, endpoint_chain.rules)),
                    )
                )
                continue
            protocols.add(dnat.protocol)
            reached[dnat.target] = f"{pick.rule} -> {target}: {dnat.rule}"
    for target, evidence in sorted(reached.items()):
        if target not in wanted:
            verdicts.append(
                _violation(
                    FindingKind.NFT_STALE_DNAT,
                    subject,
                    name,
                    observed=f"{chain_name} sends new connections to {target}, not a usable "
                    f"endpoint of the port{_right_port(rules, chain_name, target)}",
                    expected=expected,
                    evidence=evidence,
                )
            )
    missing = sorted(wanted - set(reached))
    if missing or pick.modulus != len(pick.targets) or pick.modulus != len(wanted):
        verdicts.append(
            _violation(
                FindingKind.NFT_WRONG_ENDPOINTS,
                subject,
                name,
                observed=f"{chain_name}: numgen random mod {pick.modulus} over {len(pick.targets)} "
                f"branch(es)" + (f"; never reaches {', '.join(missing)}" if missing else ""),
                expected=expected,
                evidence=str(pick.rule),
            )
        )
    wrong = sorted(protocols - {rules.protocol})
    if wrong:
        verdicts.append(
            _violation(
                FindingKind.NFT_WRONG_ENDPOINTS,
                subject,
                name,
                observed=f"{chain_name} DNATs {', '.join(wrong)} for a {rules.protocol} port",
                expected=expected,
                evidence=str(pick.rule),
            )
        )
    return verdicts


def _right_port(rules: PortRules, chain_name: str, target: str) -> str:
    """`(the endpoint port is 6379)` when the stale target is a usable endpoint's address."""
    if " . " in target:
        address = target.partition(" . ")[0]
    else:
        address = target.rpartition(":")[0].strip("[]")
    ports = sorted(
        str(e.port) for e in rules.policy_chains[chain_name] if str(e.address) == address
    )
    return f" (its EndpointSlice port is {', '.join(ports)})" if ports else ""


CHAINS_REACH_ENDPOINTS = Check(
    id="nft-chains-reach-endpoints",
    title="Each Service chain's numgen picks among exactly the usable endpoints, each DNAT right",
    why=(
        "The policy chain's `numgen random mod N` spreads new connections over N branches: a "
        "stale branch (`dnat to pod:80` after the port moved to 6379, the first founding "
        "incident in this mode) sends its share to a closed port, a missing one leaves an "
        "endpoint idle, and a wrong N drops or skews traffic (pkg/proxy/nftables/proxier.go "
        "writeServiceToEndpointRules; the endpoints are pkg/proxy/topology.go "
        "CategorizeEndpoints')."
    ),
    fix="Restart kube-proxy on the node so it resyncs its chains.",
    severity=Severity.CRITICAL,
    scope=SERVICE_PORTS,
    inputs=_INPUTS,
    run=check_chains_reach_endpoints,
    modes=NFTABLES_MODE,
)


# --- session affinity ------------------------------------------------------------------------


def check_session_affinity(
    subject: ServicePortKey, facts: Facts, settings: Settings
) -> list[Violation]:
    """Affinity sets exactly where ClientIP affinity is set, with its timeout."""
    return _judge_ports(facts, subject, "nft-affinity-judged", _judge_affinity)


def _judge_affinity(name: str, table: TableReads, rules: PortRules) -> _Verdicts:
    """Both layouts keep, for ClientIP affinity, an `affinity-` set and an `endpoint-` chain per
    reachable endpoint (the direct-DNAT layout keeps endpoint chains for nothing else): the sets
    with the Service's timeout, the policy chain's `ip saddr @affinity-X goto endpoint-X` per
    endpoint before its numgen, each endpoint chain's `update @affinity-X { ip saddr }`
    (proxier.go writeServiceToEndpointJumps, kubernetes/kubernetes@736e3b684ef1)."""
    subject = str(rules.port_key)
    verdicts: _Verdicts = _judge_affinity_rules(name, table, rules)
    wanted = (
        {rules.affinity_set(e): e for e in rules.reachable_endpoints}
        if rules.affinity_timeout is not None
        else {}
    )
    for set_name in sorted(wanted):
        found = table.set(set_name)
        if found is None:
            verdicts.append(
                _violation(
                    FindingKind.NFT_WRONG_AFFINITY,
                    subject,
                    name,
                    observed=f"no affinity set {set_name}",
                    expected=f"set {set_name}, timeout {rules.affinity_timeout}s",
                    evidence="",
                )
            )
        elif found.timeout != rules.affinity_timeout:
            verdicts.append(
                _violation(
                    FindingKind.NFT_WRONG_AFFINITY,
                    subject,
                    name,
                    observed=f"affinity set {set_name} has timeout {found.timeout}s",
                    expected=f"timeout {rules.affinity_timeout}s (sessionAffinityConfig)",
                    evidence=f"set {set_name} timeout {found.timeout}s",
                )
            )
    port_id = f"{rules.port_key.service_key}/{rules.protocol}/{rules.port_name}__"
    for set_name in table.affinity_sets(port_id):
        if set_name not in wanted:
            verdicts.append(
                _violation(
                    FindingKind.NFT_WRONG_AFFINITY,
                    subject,
                    name,
                    observed=f"affinity set {set_name} is left over"
                    + ("" if wanted else " (the Service has no ClientIP affinity)"),
                    expected="affinity sets only for a ClientIP port's usable endpoints",
                    evidence=f"set {set_name}",
                )
            )
    return verdicts


def _judge_affinity_rules(name: str, table: TableReads, rules: PortRules) -> _Verdicts:
    """The rules that remember and honour a client's endpoint, where affinity is set."""
    if rules.affinity_timeout is None:
        return []
    subject = str(rules.port_key)
    source = "ip6 saddr" if rules.family is NftFamily.IP6 else "ip saddr"
    wanted: list[tuple[str, str]] = []  # (chain, the rule it must hold)
    for chain_name, endpoints in rules.policy_chains.items():
        for endpoint in sorted(endpoints, key=str):
            recorded = f"{rules.affinity_set(endpoint)} goto {rules.endpoint_chain(endpoint)}"
            wanted.append((chain_name, f"{source} @{recorded}"))
    for endpoint in sorted(rules.reachable_endpoints, key=str):
        update = f"update @{rules.affinity_set(endpoint)} {{ {source} }}"
        wanted.append((rules.endpoint_chain(endpoint), update))
    verdicts: _Verdicts = []
    for chain_name, rule in wanted:
        chain = table.chain(chain_name)
        if chain is None:
            continue  # nft-chains-reach-endpoints reports a missing chain
        if not any(found.text == rule for found in chain.rules):
            shown = "; ".join(map(str, chain.rules)) or "no rule"
            verdicts.append(
                _violation(
                    FindingKind.NFT_WRONG_AFFINITY,
                    subject,
                    name,
                    observed=f"chain {chain_name} lacks `{rule}` (ClientIP affinity): {shown}",
                    expected=f"`{rule}` in {chain_name}",
                    evidence=shown,
                )
            )
    return verdicts


SESSION_AFFINITY = Check(
    id="nft-session-affinity",
    title="Affinity sets exist exactly for ClientIP-affinity ports, with the Service's timeout",
    why=(
        "kube-proxy records a client per endpoint in an `affinity-` set with the Service's "
        "timeout; a missing set breaks stickiness, a wrong timeout keeps clients on a pod "
        "longer or shorter than sessionAffinityConfig says, a left-over set pins clients to an "
        "endpoint chain that is gone (pkg/proxy/nftables/proxier.go)."
    ),
    fix="Restart kube-proxy on the node so it resyncs its sets.",
    severity=Severity.WARNING,
    scope=SERVICE_PORTS,
    inputs=_INPUTS,
    run=check_session_affinity,
    modes=NFTABLES_MODE,
)


# --- node scope: stale chains, dangling references, cluster-ips, nodeport-ips ----------------


def _node_tables(facts: Facts, subject: NodeSubject) -> list[tuple[NftFamily, NftTable]]:
    """The node's kube-proxy tables; a node with none is not in nftables mode, kube-proxy-mode's
    one finding (see no_table), so a node check skips there instead of passing on nothing."""
    node = facts.nodes[subject.node]
    tables = [(family, table) for family in NftFamily if (table := node.nftables(family))]
    if not tables:
        raise NotApplicable(f"{subject.node} has no kube-proxy table (the mode check reports it)")
    return tables


def check_no_stale_chains(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """No non-empty per-Service chain a correct proxier would not keep; no reference to a
    chain that is not there."""
    expected = NftExpectedState.of(facts).on_node(subject.node)
    violations: list[Violation] = []
    for family, table in _node_tables(facts, subject):
        wanted = expected.chains(family)
        for chain in table.chains.values():
            if "/" not in chain.name or chain.name in wanted or not chain.rules:
                continue  # a stock chain, an expected one, or one flushed and soon deleted
            violations.append(
                _violation(
                    FindingKind.NFT_STALE_CHAIN,
                    f"chain {chain.name}",
                    subject.node,
                    observed=f"stale chain {chain.name} ({family.value}) still has "
                    f"{len(chain.rules)} rule(s)",
                    expected="no such chain (or an empty one, flushed and about to be deleted)",
                    evidence=str(chain.rules[0]),
                )
            )
        for target, where, evidence in references(table):
            if target not in table.chains:
                violations.append(
                    _violation(
                        FindingKind.NFT_DANGLING_REFERENCE,
                        f"chain {target}",
                        subject.node,
                        observed=f"{where} ({family.value}) goes to missing chain {target}",
                        expected=f"chain {target} present, or nothing pointing at it",
                        evidence=str(evidence),
                    )
                )
    return violations


NO_STALE_CHAINS = Check(
    id="nft-no-stale-chains",
    title="No stale non-empty Service chain, no jump or map element to a missing chain",
    why=(
        "kube-proxy flushes a chain it no longer needs and deletes it about a second later "
        "(kernels before 6.2 free it late): an empty orphan is transient, a non-empty one was "
        "left by a failed sync and a stale reference to it routes traffic to old endpoints; "
        "a goto to a missing chain means the table was edited by hand or half written "
        "(pkg/proxy/nftables/proxier.go staleChains)."
    ),
    fix="Restart kube-proxy on the node so it rewrites its table.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=_INPUTS,
    run=check_no_stale_chains,
    modes=NFTABLES_MODE,
)


def _set_elements(table: NftTable, name: str) -> frozenset[str] | None:
    found = table.sets.get(name)
    if found is None:
        return None
    return frozenset(" . ".join(element.key) for element in found.elements)


def _judge_set(
    node: str,
    family: NftFamily,
    name: str,
    *,
    observed: frozenset[str] | None,
    wanted: frozenset[str] | None,
    why: str,
) -> list[Violation]:
    if observed == wanted:
        return []
    if wanted is None:
        observed_text = f"set {name} ({family.value}) holds {_listed(observed)}"
        expected_text = f"no set {name}: {why}"
    elif observed is None:
        observed_text = f"no set {name} ({family.value})"
        expected_text = f"{name} = {_listed(wanted)} ({why})"
    else:
        extra, missing = sorted(observed - wanted), sorted(wanted - observed)
        parts = [
            f"extra {', '.join(extra)}" if extra else "",
            f"missing {', '.join(missing)}" if missing else "",
        ]
        observed_text = f"{name} ({family.value}): " + "; ".join(p for p in parts if p)
        expected_text = f"{name} = {_listed(wanted)} ({why})"
    return [
        _violation(
            FindingKind.NFT_WRONG_SET,
            f"set {name}",
            node,
            observed=observed_text,
            expected=expected_text,
            evidence=f"set {name} {{ {_listed(observed)} }}" if observed is not None else "",
        )
    ]


def _listed(elements: frozenset[str] | None) -> str:
    return "nothing" if not elements else ", ".join(sorted(elements))


def check_cluster_ips(subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """cluster-ips holds exactly the ClusterIPs of the Services kube-proxy programs."""
    expected = NftExpectedState.of(facts).on_node(subject.node)
    violations: list[Violation] = []
    for family, table in _node_tables(facts, subject):
        violations += _judge_set(
            subject.node,
            family,
            CLUSTER_IPS,
            observed=_set_elements(table, CLUSTER_IPS),
            wanted=expected.cluster_ips[family],
            why="the programmed Services' ClusterIPs",
        )
    return violations


CLUSTER_IPS_SET = Check(
    id="nft-cluster-ips",
    title="The cluster-ips set holds exactly the API's ClusterIPs",
    why=(
        "cluster-ips-check rejects traffic to a ClusterIP in the set on a port no Service "
        "has, and drops traffic to the rest of the Service CIDR: a ClusterIP missing from the "
        "set is dropped like an unallocated one, a stale one answers with rejects "
        "(pkg/proxy/nftables/proxier.go setupNFTables)."
    ),
    fix="Restart kube-proxy on the node so it rewrites the set.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=_INPUTS,
    run=check_cluster_ips,
    modes=NFTABLES_MODE,
)


def check_nodeport_ips(subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """nodeport-ips as nodePortAddresses resolves on the node (absent where it matches all)."""
    expected = NftExpectedState.of(facts).on_node(subject.node)
    violations: list[Violation] = []
    for family, table in _node_tables(facts, subject):
        wanted = expected.nodeport_ips[family]
        why = (
            "nodePortAddresses matches every address of the family: NodePorts go by "
            "`fib daddr type local`"
            if wanted is None
            else "the node's addresses nodePortAddresses selects (default: primary)"
        )
        violations += _judge_set(
            subject.node,
            family,
            NODEPORT_IPS,
            observed=_set_elements(table, NODEPORT_IPS),
            wanted=wanted,
            why=why,
        )
    return violations


NODEPORT_IPS_SET = Check(
    id="nft-nodeport-ips",
    title="The nodeport-ips set is what nodePortAddresses resolves to on the node",
    why=(
        "NodePorts are served only at the addresses in nodeport-ips; nftables mode defaults "
        "nodePortAddresses to the node's primary IPs (cmd/kube-proxy/app/server_linux.go "
        "platformApplyDefaults), unlike IPVS's every address: a wrong set serves NodePorts "
        "where clients should not reach them, or not where they do "
        "(pkg/proxy/util/nodeport_addresses.go)."
    ),
    fix="Restart kube-proxy on the node; check nodePortAddresses in the kube-proxy ConfigMap.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=_INPUTS,
    run=check_nodeport_ips,
    modes=NFTABLES_MODE,
)
