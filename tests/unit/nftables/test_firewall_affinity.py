"""loadBalancerSourceRanges, ClientIP affinity without endpoint chains, one-endpoint `dnat to`.

The faithful tables are kube-proxy's own test cases as the kernel listed them
(fixtures/upstream/nftables: TestLoadBalancer, TestOverallNFTablesRules at the v1.36 layout); each
broken twin changes one line of that listing, as a failed or hand-edited sync would leave it. The
one-endpoint `dnat to` strings are what nft 1.0.6 listed for kubernetes/kubernetes@736e3b684ef1's
writeServiceToEndpointDNATs (PR #140723), loaded with `nft -f` inside `unshare -n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from tests.unit.checks.test_checks import only, put
from tests.unit.nftables.test_expected_nftables import (
    NEW,
    POD_A,
    POD_B,
    redis,
    rules_of,
    slices,
    table,
)
from vipcheck.checks import nftables
from vipcheck.checks.base import FindingKind, Violation
from vipcheck.checks.kube_proxy import NotShown
from vipcheck.checks.nft_reads import TableReads
from vipcheck.checks.nft_trace import expectation, firewall_sources
from vipcheck.datapath.nft_trace import OUTSIDE_CLIENT, Origin, Packet, Tracer, Verdict
from vipcheck.datapath.nftables import PortRules, service_port_rules, virtual_services
from vipcheck.expected import VirtualServiceKind
from vipcheck.model.cluster import KubeRelease, ServicePortKey, ServiceType
from vipcheck.model.nftables import NftChain, NftElement, NftFamily, NftRule, NftTable
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse import ParseError
from vipcheck.parse.kube import parse_services
from vipcheck.snapshot import Snapshot, load_snapshot

CASES = Path(__file__).resolve().parents[3] / "fixtures" / "upstream" / "nftables"
LISTING = "nodes/test-node/nft-ip-kube-proxy.txt"
SVC1 = ServicePortKey("ns1/svc1", 80, L4Protocol.TCP)
SVC5 = ServicePortKey("ns5/svc5", 80, L4Protocol.TCP)
FIREWALL = "nft-lb-source-ranges"
TRACE = "nft-trace-reaches-endpoints"
AFFINITY = "nft-session-affinity"
STALE = "nft-no-stale-chains"
NEXT = KubeRelease(1, 37)  # may write `dnat to IP:port` for one endpoint


def _judge_chains(node: str, table: NftTable, rules: PortRules) -> list[Violation | NotShown]:
    """The judge on a whole table."""
    return nftables._judge_chains(node, TableReads(table), rules)


def _judge_firewall(node: str, table: NftTable, rules: PortRules) -> list[Violation | NotShown]:
    """The judge on a whole table."""
    return nftables._judge_firewall(node, TableReads(table), rules)


def violations(found: Sequence[Violation | NotShown]) -> list[Violation]:
    return [v for v in found if isinstance(v, Violation)]


def kinds(found: Sequence[Violation | NotShown]) -> list[FindingKind]:
    return [v.kind for v in violations(found)]


def upstream(case: str) -> Snapshot:
    return load_snapshot(CASES / case)


def edited(case: str, old: str, new: str) -> Snapshot:
    """The case with one change to its listing, read from the text (its JSON twin removed)."""
    snapshot = upstream(case)
    listing = snapshot.nodes["test-node"].files[LISTING.rpartition("/")[2]]
    assert listing.count(old) == 1, old
    snapshot = put(snapshot, "nodes/test-node/nft-ip-kube-proxy.json", None)
    return put(snapshot, LISTING, listing.replace(old, new))


# --- spec.loadBalancerSourceRanges as kube-proxy reads it -------------------------------------


def services_json(ranges: object) -> str:
    return (
        '{"items": [{"metadata": {"name": "web", "namespace": "default"}, "spec": {"type": '
        '"LoadBalancer", "clusterIP": "10.96.0.9", "ports": [{"port": 80}], '
        f'"loadBalancerSourceRanges": {ranges}}}}}]}}'
    )


def test_source_ranges_are_trimmed_masked_and_invalid_ones_ignored() -> None:
    listed = (
        '[" 203.0.113.0/25", "010.1.2.0/24", "192.168.7.9/16", "2001:db8::/64 ", '
        '"nonsense", "10.0.0.1", ""]'
    )
    [service] = parse_services(services_json(listed), "services.json")
    assert service.load_balancer_source_ranges == (
        ip_network("203.0.113.0/25"),
        ip_network("10.1.2.0/24"),  # ParseCIDRSloppy: leading zeros are decimal
        ip_network("192.168.0.0/16"),  # host bits masked, as cidr.String() prints it
        ip_network("2001:db8::/64"),
    )


def test_a_source_range_that_is_not_a_string_is_an_error_naming_it() -> None:
    with pytest.raises(ParseError, match=r"loadBalancerSourceRanges\[1\]: expected a string"):
        parse_services(services_json('["10.0.0.0/8", 7]'), "services.json")


# --- the expected firewall and its judgment ---------------------------------------------------


def firewalled(node_ip: str) -> PortRules:
    """redis as a LoadBalancer (203.0.113.9) admitting two ranges, on a node with this IP."""
    service = replace(
        redis(service_type=ServiceType.LOAD_BALANCER),
        load_balancer_source_ranges=(ip_network("192.168.58.0/24"), ip_network("198.51.100.0/24")),
    )
    [rules] = service_port_rules(
        service, slices((POD_A, "node-1")), "node-1", None, NEW, node_ips=(ip_address(node_ip),)
    )
    return rules


def test_the_firewall_admits_the_lb_ips_only_when_a_range_holds_the_node_ip() -> None:
    inside = firewalled("192.168.58.2")
    outside = firewalled("172.16.0.2")
    assert inside.firewall_sources == (
        ip_network("192.168.58.0/24"),
        ip_network("198.51.100.0/24"),
        ip_network("203.0.113.9/32"),
    )
    assert outside.firewall_sources == (
        ip_network("192.168.58.0/24"),
        ip_network("198.51.100.0/24"),
    )
    assert inside.firewall_ips() == {
        ("203.0.113.9", "tcp", "6379"): f"goto {inside.firewall_chain}"
    }
    assert inside.firewall_chain in inside.chains


def test_a_faithful_firewall_passes_and_each_fault_is_found_with_the_rule() -> None:
    rules = firewalled("192.168.58.2")
    chain = rules.firewall_chain
    element = [NftElement(("203.0.113.9", "tcp", "6379"), f"goto {chain}")]
    good = "ip saddr != { 192.168.58.0/24, 198.51.100.0/24, 203.0.113.9 } drop"
    assert _judge_firewall("node-1", table({chain: [good]}, {"firewall-ips": element}), rules) == []
    # a range lost: its clients are dropped
    narrow = "ip saddr != { 192.168.58.0/24, 203.0.113.9 } drop"
    found = _judge_firewall("node-1", table({chain: [narrow]}, {"firewall-ips": element}), rules)
    assert kinds(found) == [FindingKind.NFT_WRONG_FIREWALL]
    assert violations(found)[0].evidence == (narrow,)
    # the element lost: the LB IP is open to every source
    missing = _judge_firewall("node-1", table({chain: [good]}, {"firewall-ips": []}), rules)
    assert kinds(missing) == [FindingKind.NFT_MISSING_ELEMENT]
    # the chain lost
    gone = _judge_firewall("node-1", table({}, {"firewall-ips": element}), rules)
    assert kinds(gone) == [FindingKind.NFT_MISSING_CHAIN]
    # a Service without ranges has no firewall element
    plain = rules_of(redis(service_type=ServiceType.LOAD_BALANCER), slices((POD_A, "n")), NEW)
    stale = _judge_firewall("node-1", table({}, {"firewall-ips": element}), plain)
    assert kinds(stale) == [FindingKind.NFT_STALE_ELEMENT]


def test_upstream_load_balancer_firewall_is_judged_clean() -> None:
    assert only(upstream("TestLoadBalancer"), FIREWALL, SVC1) == []
    assert only(upstream("TestOverallNFTablesRules"), FIREWALL, SVC5) == []


def test_upstream_firewall_with_a_lost_range_is_caught_by_the_map_check_and_the_trace() -> None:
    lost = edited(
        "TestLoadBalancer",
        "ip saddr != { 1.2.3.4, 5.6.7.8, 192.168.0.0/24, 203.0.113.0/25 } drop",
        "ip saddr != { 1.2.3.4, 5.6.7.8, 192.168.0.0/24 } drop",
    )
    assert kinds(only(lost, FIREWALL, SVC1)) == [FindingKind.NFT_WRONG_FIREWALL]
    traced = only(lost, TRACE, SVC1)
    # 203.0.113.2 is inside 203.0.113.0/25: now dropped at both LB IPs
    assert {v.observed for v in traced} == {
        "TCP 203.0.113.2 -> 1.2.3.4:80 from outside: DROP",
        "TCP 203.0.113.2 -> 5.6.7.8:80 from outside: DROP",
    }
    assert all("firewall-ULMVA6XW-ns1/svc1/tcp/p80 line" in v.evidence[0] for v in traced)


def test_upstream_lb_ip_left_out_of_firewall_ips_is_open_to_every_source() -> None:
    open_lb = edited(
        "TestLoadBalancer",
        "goto firewall-ULMVA6XW-ns1/svc1/tcp/p80,\n\t\t\t     5.6.7.8 . tcp . 80 : goto "
        "firewall-ULMVA6XW-ns1/svc1/tcp/p80 }",
        "goto firewall-ULMVA6XW-ns1/svc1/tcp/p80 }",
    )
    assert kinds(only(open_lb, FIREWALL, SVC1)) == [FindingKind.NFT_MISSING_ELEMENT]
    traced = only(open_lb, TRACE, SVC1)
    # the blocked client (upstream's 203.0.113.130) and a pod now reach the endpoint
    assert sorted(v.observed.partition(":")[0] for v in traced) == [
        "TCP 10.0.0.2 -> 5.6.7.8",
        "TCP 203.0.113.130 -> 5.6.7.8",
    ]
    assert all("DROP (" in v.expected for v in traced)


def test_a_firewalled_lb_ip_is_traced_from_inside_and_outside_its_ranges() -> None:
    rules = firewalled("192.168.58.2")
    found = firewall_sources(rules, OUTSIDE_CLIENT, (ip_network("10.244.0.0/16"),))
    assert found == [OUTSIDE_CLIENT, ip_address("192.168.58.1")]  # outside, then in a range
    [vs] = [
        v for v in virtual_services(rules, "node-1") if v.kind is VirtualServiceKind.LOAD_BALANCER
    ]
    assert expectation(vs, Origin.OUTSIDE, rules, OUTSIDE_CLIENT).verdict is Verdict.DROP
    admitted = expectation(vs, Origin.OUTSIDE, rules, found[1])
    assert admitted.verdict is None
    assert admitted.targets == {HostPort(POD_A, 6379)}


# --- ClientIP affinity in the direct-DNAT layout ----------------------------------------------


def test_upstream_affinity_without_other_endpoint_chains_is_judged_clean() -> None:
    snapshot = upstream("TestOverallNFTablesRules")
    assert only(snapshot, AFFINITY, SVC5) == []
    assert only(snapshot, STALE, "test-node") == []  # its endpoint chain is expected


def test_upstream_affinity_without_its_update_rule_is_found() -> None:
    broken = edited(
        "TestOverallNFTablesRules",
        "\t\tupdate @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }\n",
        "",
    )
    found = only(broken, AFFINITY, SVC5)
    assert kinds(found) == [FindingKind.NFT_WRONG_AFFINITY]
    assert "update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }" in (
        found[0].expected
    )


def test_the_tracer_follows_the_affinity_endpoint_chain() -> None:
    broken = edited(
        "TestOverallNFTablesRules",
        "meta l4proto tcp dnat to 10.180.0.3:80",
        "meta l4proto tcp dnat to 10.180.0.3:8080",
    )
    traced = only(broken, TRACE, SVC5)
    assert traced
    assert all("10.180.0.3:8080" in v.observed for v in traced)
    assert all(
        "endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 line" in line
        for v in traced
        for line in v.evidence
    )


# --- one endpoint: `dnat to IP:port` (PR #140723) ---------------------------------------------


SINGLE = "meta l4proto tcp dnat to 10.244.1.5:6379"  # as nft 1.0.6 lists it
SINGLE_V4 = "meta l4proto tcp dnat to 10.180.0.1:80"  # recorded: ip table
SINGLE_V6 = "meta l4proto tcp dnat to [fd00::10]:80"  # recorded: ip6 table


@pytest.mark.parametrize("release", [NEXT, None], ids=["1.37", "unknown"])
def test_a_single_endpoint_dnat_is_accepted_from_1_37(release: KubeRelease | None) -> None:
    [rules] = service_port_rules(redis(), slices((POD_A, "node-1")), "node-1", None, release)
    assert _judge_chains("node-1", table({rules.cluster_chain: [SINGLE]}, {}), rules) == []
    # the map form, which those releases may still write where #140723 is absent
    mapped = "meta l4proto tcp dnat ip to numgen random mod 1 map { 0 : 10.244.1.5 . 6379 }"
    assert _judge_chains("node-1", table({rules.cluster_chain: [mapped]}, {}), rules) == []


def test_a_single_endpoint_dnat_to_a_gone_endpoint_is_stale() -> None:
    [rules] = service_port_rules(redis(), slices((POD_B, "n")), "node-1", None, NEXT)
    found = _judge_chains("node-1", table({rules.cluster_chain: [SINGLE]}, {}), rules)
    assert FindingKind.NFT_STALE_DNAT in kinds(found)
    assert FindingKind.NFT_WRONG_ENDPOINTS in kinds(found)  # and 10.244.2.7 never reached


def test_v1_36_writes_only_the_map_form() -> None:
    rules = rules_of(redis(), slices((POD_A, "node-1")), NEW)
    found = _judge_chains("node-1", table({rules.cluster_chain: [SINGLE]}, {}), rules)
    assert kinds(found) == [FindingKind.NFT_WRONG_ENDPOINTS]
    assert "PR #140723" in violations(found)[0].observed


def test_the_tracer_reads_the_single_endpoint_dnat_in_both_families() -> None:
    for family, rule, client, vip, target in (
        (NftFamily.IP, SINGLE_V4, "203.0.113.2", "172.30.0.41", "10.180.0.1"),
        (NftFamily.IP6, SINGLE_V6, "2600:5200::1", "fd00::41", "fd00::10"),
    ):
        nat = NftChain("nat-prerouting", (NftRule("goto svc", 1),), "prerouting", "nat", -100)
        svc = NftChain("svc", (NftRule(rule, 2),))
        tracer = Tracer(NftTable(family, "kube-proxy", {nat.name: nat, svc.name: svc}, {}), ())
        packet = Packet(ip_address(client), ip_address(vip), L4Protocol.TCP, 80, Origin.OUTSIDE)
        assert tracer.trace(packet).targets == {HostPort(ip_address(target), 80)}
