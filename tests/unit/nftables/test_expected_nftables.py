"""The nftables datapath's expected state and its map and chain judgments (issue 19).

Tables are built from nft's own one-line rule text with a tiny test-local builder (`table`),
standing in for helper "inputs"' parsers until they merge; expected rule shapes follow
pkg/proxy/nftables/proxier.go at b0f823e6ccd8 and, for the direct-DNAT layout, a table listed
on a v1.36.2 cluster.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from vipcheck.checks import nftables
from vipcheck.checks.base import FindingKind, Violation
from vipcheck.checks.kube_proxy import NotShown
from vipcheck.checks.nft_reads import TableReads
from vipcheck.datapath.nftables import (
    Layout,
    PortRules,
    chain_name_base,
    endpoint_chain_name_base,
    layout_for,
    nodeport_ips,
    service_port_rules,
)
from vipcheck.model.cluster import (
    AddressType,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeProxyConfig,
    KubeRelease,
    ProxyMode,
    Service,
    ServicePort,
    ServiceType,
    SessionAffinity,
    TrafficPolicy,
)
from vipcheck.model.nftables import NftChain, NftElement, NftFamily, NftRule, NftSet, NftTable
from vipcheck.model.node import HostPort, L4Protocol

OLD = KubeRelease(1, 33)  # endpoint chains
NEW = KubeRelease(1, 36)  # direct DNAT
POD_A, POD_B = ip_address("10.244.1.5"), ip_address("10.244.2.7")


def _judge_affinity(node: str, table: NftTable, rules: PortRules) -> list[Violation | NotShown]:
    """The judge on a whole table."""
    return nftables._judge_affinity(node, TableReads(table), rules)


def _judge_chains(node: str, table: NftTable, rules: PortRules) -> list[Violation | NotShown]:
    """The judge on a whole table."""
    return nftables._judge_chains(node, TableReads(table), rules)


def _judge_maps(node: str, table: NftTable, rules: PortRules) -> list[Violation | NotShown]:
    """The judge on a whole table."""
    return nftables._judge_maps(node, TableReads(table), rules)


def table(chains: dict[str, list[str]], maps: dict[str, list[NftElement]]) -> NftTable:
    """A kube-proxy table from rule text and elements: the test-local stand-in for the nft
    parsers (helper "inputs"), whose output has this same shape."""
    return NftTable(
        family=NftFamily.IP,
        name="kube-proxy",
        chains={
            name: NftChain(name, tuple(NftRule(text, line) for line, text in enumerate(rules)))
            for name, rules in chains.items()
        },
        sets={
            name: NftSet(name, ("ipv4_addr",), ("verdict",), tuple(elements))
            for name, elements in maps.items()
        },
    )


def redis(
    *,
    policy: TrafficPolicy = TrafficPolicy.CLUSTER,
    service_type: ServiceType = ServiceType.CLUSTER_IP,
    affinity: SessionAffinity = SessionAffinity.NONE,
) -> Service:
    return Service(
        namespace="default",
        name="redis",
        type=service_type,
        cluster_ips=(ip_address("10.96.0.20"),),
        ports=(ServicePort("", 6379, L4Protocol.TCP, 6379, node_port=30079),),
        lb_ingress_ips=(ip_address("203.0.113.9"),)
        if service_type is ServiceType.LOAD_BALANCER
        else (),
        external_traffic_policy=policy,
        session_affinity=affinity,
        session_affinity_timeout=600,
    )


def slices(*endpoints: tuple[object, str], port: int = 6379) -> list[EndpointSlice]:
    return [
        EndpointSlice(
            namespace="default",
            name="redis-x",
            service_name="redis",
            address_type=AddressType.IPV4,
            endpoints=tuple(
                Endpoint((ip_address(str(address)),), node_name=node) for address, node in endpoints
            ),
            ports=(EndpointPort("", port, L4Protocol.TCP),),
        )
    ]


def rules_of(service: Service, endpoints: list[EndpointSlice], release: KubeRelease) -> PortRules:
    [rules] = service_port_rules(service, endpoints, "node-1", None, release)
    return rules


def faithful(rules: PortRules) -> NftTable:
    """The table a correct proxier writes for one port (maps and its chains)."""
    chains: dict[str, list[str]] = {}
    for chain, endpoints in rules.policy_chains.items():
        ordered = sorted(endpoints, key=str)
        if rules.layout is Layout.DIRECT_DNAT:
            entries = ", ".join(f"{i} : {e.address} . {e.port}" for i, e in enumerate(ordered))
            chains[chain] = [
                f"meta l4proto tcp dnat ip to numgen random mod {len(ordered)} map {{ {entries} }}"
            ]
        else:
            entries = ", ".join(
                f"{i} : goto {rules.endpoint_chain(e)}" for i, e in enumerate(ordered)
            )
            chains[chain] = [f"numgen random mod {len(ordered)} vmap {{ {entries} }}"]
            for e in ordered:
                chains[rules.endpoint_chain(e)] = [
                    f"ip saddr {e.address} jump mark-for-masquerade",
                    f"meta l4proto tcp dnat to {e.address}:{e.port}",
                ]
    if rules.uses_external_chain:
        chains[rules.external_chain] = ["jump mark-for-masquerade"]
        if rules.has_external_endpoints:
            chains[rules.external_chain].append(f"goto {rules.external_policy_chain}")
    maps = {
        name: [NftElement(key, value) for key, value in wanted.items()]
        for name, wanted in rules.maps().items()
    }
    return table(chains, maps)


def kinds(found: list[Violation | NotShown]) -> list[FindingKind]:
    return [v.kind for v in found if isinstance(v, Violation)]


def test_chain_names_are_kube_proxys() -> None:
    """Test vectors of proxier.go's comments (Test_servicePortChainNameBase's ns1/svc1) and of a
    table listed on a v1.36.2 cluster."""
    assert chain_name_base("ns1/svc1", "tcp", "p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    endpoint = HostPort(ip_address("10.180.0.1"), 80)
    assert endpoint_chain_name_base("ns1/svc1", "tcp", "p80", endpoint) == (
        "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    )
    assert chain_name_base("kproxy-lab/backend-api", "tcp", "http").startswith("YVSKLJHA-")
    assert chain_name_base("default/kubernetes", "tcp", "https").startswith("2QRHZV4L-")
    v6 = endpoint_chain_name_base("ns1/svc1", "tcp", "p80", HostPort(ip_address("fd00::1"), 80))
    assert v6.endswith("-ns1/svc1/tcp/p80__fd00..1/80")
    long_name = chain_name_base("n" * 63 + "/" + "s" * 200, "tcp", "p" * 63)
    assert len(long_name) == 240
    assert long_name.endswith("...")


def test_the_layout_is_chosen_by_release() -> None:
    assert layout_for(KubeRelease(1, 35)) is Layout.ENDPOINT_CHAINS
    assert layout_for(KubeRelease(1, 36)) is Layout.DIRECT_DNAT
    assert layout_for(None) is Layout.DIRECT_DNAT


@pytest.mark.parametrize("release", [OLD, NEW])
def test_a_faithful_table_is_judged_clean(release: KubeRelease) -> None:
    rules = rules_of(redis(), slices((POD_A, "node-1"), (POD_B, "node-2")), release)
    nft = faithful(rules)
    assert _judge_maps("node-1", nft, rules) == []
    assert _judge_chains("node-1", nft, rules) == []


def test_founding_incident_1_stale_dnat_to_port_80_endpoint_chains() -> None:
    """The Service moved 80 -> 6379; node-1's table still sends one branch to pod:80."""
    rules = rules_of(redis(), slices((POD_A, "node-1"), (POD_B, "node-2")), OLD)
    good = faithful(rules)
    stale_chain = "endpoint-STALEXXX-default/redis/tcp/__10.244.1.5/80"
    policy = rules.cluster_chain
    chains = {name: [r.text for r in chain.rules] for name, chain in good.chains.items()}
    chains[policy] = [
        f"numgen random mod 2 vmap {{ 0 : goto {stale_chain}, "
        f"1 : goto {rules.endpoint_chain(HostPort(POD_B, 6379))} }}"
    ]
    chains[stale_chain] = ["meta l4proto tcp dnat to 10.244.1.5:80"]
    maps = {name: list(s.elements) for name, s in good.sets.items()}
    found = _judge_chains("node-1", table(chains, maps), rules)
    assert FindingKind.NFT_STALE_DNAT in kinds(found)
    stale = next(
        v for v in found if isinstance(v, Violation) and v.kind is FindingKind.NFT_STALE_DNAT
    )
    assert stale.subject == "default/redis:6379/TCP"
    assert stale.node == "node-1"
    assert "10.244.1.5:80" in stale.observed
    assert "EndpointSlice port is 6379" in stale.observed
    assert "meta l4proto tcp dnat to 10.244.1.5:80" in stale.evidence[0]
    assert stale.cluster_commands[0][-1] == "spec.nodeName=node-1"
    # and the missing 6379 branch is named too
    assert FindingKind.NFT_WRONG_ENDPOINTS in kinds(found)


def test_founding_incident_1_stale_map_element_direct_dnat() -> None:
    rules = rules_of(redis(), slices((POD_A, "node-1"), (POD_B, "node-2")), NEW)
    good = faithful(rules)
    chains = {name: [r.text for r in chain.rules] for name, chain in good.chains.items()}
    chains[rules.cluster_chain] = [
        "meta l4proto tcp dnat ip to numgen random mod 2 map "
        "{ 0 : 10.244.1.5 . 80, 1 : 10.244.2.7 . 6379 }"
    ]
    maps = {name: list(s.elements) for name, s in good.sets.items()}
    found = _judge_chains("node-1", table(chains, maps), rules)
    stale = [v for v in found if isinstance(v, Violation) and v.kind is FindingKind.NFT_STALE_DNAT]
    assert len(stale) == 1
    assert "10.244.1.5 . 80" in stale[0].observed
    assert "dnat ip to numgen" in stale[0].evidence[0]


def test_a_wrong_modulus_is_found() -> None:
    rules = rules_of(redis(), slices((POD_A, "node-1"), (POD_B, "node-2")), NEW)
    good = faithful(rules)
    chains = {name: [r.text for r in chain.rules] for name, chain in good.chains.items()}
    chains[rules.cluster_chain] = [
        "meta l4proto tcp dnat ip to numgen random mod 3 map "
        "{ 0 : 10.244.1.5 . 6379, 1 : 10.244.2.7 . 6379 }"
    ]
    maps = {name: list(s.elements) for name, s in good.sets.items()}
    assert kinds(_judge_chains("node-1", table(chains, maps), rules)) == [
        FindingKind.NFT_WRONG_ENDPOINTS
    ]


def test_local_policy_without_local_endpoint_puts_a_key_in_both_maps() -> None:
    """ETP Local, the only endpoint on node-2: node-1 sends its own and its pods' traffic to the
    cluster chain (service-ips, goto external) and drops the rest (no-endpoint-*)."""
    service = redis(policy=TrafficPolicy.LOCAL, service_type=ServiceType.LOAD_BALANCER)
    rules = rules_of(service, slices((POD_B, "node-2")), OLD)
    key = ("203.0.113.9", "tcp", "6379")
    assert rules.service_ips()[key] == f"goto {rules.external_chain}"
    assert rules.no_endpoint_services()[key] == "drop"
    assert rules.service_nodeports()[("tcp", "30079")] == f"goto {rules.external_chain}"
    assert rules.no_endpoint_nodeports()[("tcp", "30079")] == "drop"
    assert rules.local_chain not in rules.policy_chains
    nft = faithful(rules)
    assert _judge_maps("node-1", nft, rules) == []
    assert _judge_chains("node-1", nft, rules) == []
    # broken twin: the drop is gone, so outside clients reach the remote pod
    maps = {name: list(s.elements) for name, s in nft.sets.items()}
    maps["no-endpoint-services"] = []
    chains = {name: [r.text for r in chain.rules] for name, chain in nft.chains.items()}
    assert kinds(_judge_maps("node-1", table(chains, maps), rules)) == [
        FindingKind.NFT_MISSING_ELEMENT
    ]


def test_no_endpoints_rejects_and_a_stale_service_ips_element_is_found() -> None:
    rules = rules_of(redis(), [], OLD)
    assert rules.no_endpoint_services() == {("10.96.0.20", "tcp", "6379"): "goto reject-chain"}
    assert rules.service_ips() == {}
    assert rules.policy_chains == {}
    nft = faithful(rules)
    assert _judge_maps("node-1", nft, rules) == []
    maps = {name: list(s.elements) for name, s in nft.sets.items()}
    maps["service-ips"] = [NftElement(("10.96.0.20", "tcp", "6379"), "goto service-OLD-x")]
    found = _judge_maps("node-1", table({}, maps), rules)
    [stale] = found
    assert isinstance(stale, Violation)
    assert stale.kind is FindingKind.NFT_STALE_ELEMENT
    assert "belongs in no-endpoint-services" in stale.expected


def test_affinity_sets_with_the_services_timeout() -> None:
    service = redis(affinity=SessionAffinity.CLIENT_IP)
    rules = rules_of(service, slices((POD_A, "node-1")), OLD)
    name = rules.affinity_set(HostPort(POD_A, 6379))
    good = NftTable(
        NftFamily.IP,
        "kube-proxy",
        {},
        {name: NftSet(name, ("ipv4_addr",), flags=frozenset({"dynamic", "timeout"}), timeout=600)},
    )
    assert _judge_affinity("node-1", good, rules) == []
    wrong = NftTable(
        NftFamily.IP, "kube-proxy", {}, {name: NftSet(name, ("ipv4_addr",), timeout=10800)}
    )
    assert kinds(_judge_affinity("node-1", wrong, rules)) == [FindingKind.NFT_WRONG_AFFINITY]
    # without affinity the same set is left over
    plain = rules_of(redis(), slices((POD_A, "node-1")), OLD)
    assert kinds(_judge_affinity("node-1", good, plain)) == [FindingKind.NFT_WRONG_AFFINITY]


def test_nodeport_ips_default_to_primary_in_nftables_mode() -> None:
    primary = (ip_address("192.168.58.2"),)
    own = (ip_address("192.168.58.2"), ip_address("10.0.0.7"), ip_address("127.0.0.1"))
    found = nodeport_ips(KubeProxyConfig(mode=ProxyMode.NFTABLES), primary, own)
    assert found[NftFamily.IP] == frozenset({"192.168.58.2"})
    assert found[NftFamily.IP6] is None  # no IPv6 primary: the family is matched whole
    everything = KubeProxyConfig(node_port_addresses=(ip_network("0.0.0.0/0"),))
    assert nodeport_ips(everything, primary, own)[NftFamily.IP] is None
