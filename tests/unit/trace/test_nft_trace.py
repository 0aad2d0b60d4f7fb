"""The tracer against kube-proxy's own packet-flow tables, on rulesets the kernel listed.

The cases are upstream's runPacketFlowTests tables (kubernetes/kubernetes@81810de635aa
pkg/proxy/nftables/proxier_test.go: TestClusterIPGeneral, TestLoadBalancer, TestNodePorts,
TestNoEndpointsReject), with upstream's expected outputs and masquerade, and
TestOverallNFTablesRules' whole ruleset. Each ruleset (data/*.nft)
is what that proxier programs for the test's Services, written as kube-proxy writes it (baseRules
and the per-Service rules of TestOverallNFTablesRules at that commit);
without-endpoint-chains.nft is the newer layout (service chains DNAT through a numgen map,
hairpin-connections). The kernel loads each in `unshare -n` and lists it (data/*.txt, recorded
so that a run without root traces the same text; with root the recording is checked against a
fresh listing), and the tracer reads nft's listing, not kube-proxy's input.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest

from vipcheck.datapath.nft_trace import CannotTrace, Origin, Packet, sends_to, trace
from vipcheck.model.nftables import NftRule, NftTable
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse.nft import parse_nft_text

DATA = Path(__file__).parent / "data"

# upstream's NewFakeProxier: testNodeIP, testNodeIPAlt, testExternalIP (IPv4 ones)
NODE_IPS = tuple(ip_address(a) for a in ("192.168.0.2", "192.168.1.2", "192.168.99.11"))
EXTERNAL_CLIENT = "203.0.113.2"
EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"
NODE_IP = "192.168.0.2"

TCP, UDP, SCTP = L4Protocol.TCP, L4Protocol.UDP, L4Protocol.SCTP
POD, OUTSIDE, NODE = Origin.POD, Origin.OUTSIDE, Origin.NODE


def kernel_can_list() -> bool:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def kernel_listing(ruleset: Path) -> str:
    """The kernel's own `nft list table ip kube-proxy` after loading the ruleset (own netns)."""
    script = f"nft -f {ruleset} && nft list table ip kube-proxy"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, check=True
    )
    return done.stdout


def table(name: str) -> NftTable:
    recorded = DATA / f"{name}.txt"
    return parse_nft_text(recorded.read_text(), str(recorded))


RULESETS = sorted(path.stem for path in DATA.glob("*.nft"))


@pytest.mark.skipif(not kernel_can_list(), reason="needs root for unshare -n and nft")
@pytest.mark.parametrize("name", RULESETS)
def test_recordings_are_the_kernels_listing(name: str) -> None:
    """The recorded listings are what this kernel and nft list for the rulesets today."""
    assert kernel_listing(DATA / f"{name}.nft") == (DATA / f"{name}.txt").read_text()


# (ruleset, upstream case name, source, origin, protocol, destination, port, output, masq)
Flow = tuple[str, str, str, Origin, L4Protocol, str, int, str, bool]
FLOWS: list[Flow] = [
    # TestClusterIPGeneral
    ("cluster-ip-general", "simple clusterIP", "10.180.0.2", POD, TCP, "172.30.0.41", 80,
     "10.180.0.1:80", False),
    ("cluster-ip-general", "hairpin to cluster IP", "10.180.0.1", POD, TCP, "172.30.0.41", 80,
     "10.180.0.1:80", True),
    ("cluster-ip-general", "clusterIP with multiple endpoints", "10.180.0.2", POD, TCP,
     "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80", False),
    ("cluster-ip-general", "clusterIP with TargetPort", "10.180.0.2", POD, TCP, "172.30.0.42",
     443, "10.180.0.1:8443, 10.180.2.1:8443", False),
    ("cluster-ip-general", "TCP, UDP, and SCTP on same port (TCP)", "10.180.0.2", POD, TCP,
     "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353", False),
    ("cluster-ip-general", "TCP, UDP, and SCTP on same port (UDP)", "10.180.0.2", POD, UDP,
     "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
    ("cluster-ip-general", "TCP, UDP, and SCTP on same port (SCTP)", "10.180.0.2", POD, SCTP,
     "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
    ("cluster-ip-general", "TCP-only port does not match UDP traffic", "10.180.0.2", POD, UDP,
     "172.30.0.42", 80, "REJECT", False),
    ("cluster-ip-general", "svc1 does not accept svc2's ports", "10.180.0.2", POD, TCP,
     "172.30.0.41", 443, "REJECT", False),
    ("cluster-ip-general", "packet to unallocated cluster ip", "10.180.0.2", POD, TCP,
     "172.30.0.50", 80, "DROP", False),
    # TestLoadBalancer
    ("load-balancer", "pod to cluster IP", "10.0.0.2", POD, TCP, "172.30.0.41", 80,
     "10.180.0.1:80", False),
    ("load-balancer", "external to nodePort", EXTERNAL_CLIENT, OUTSIDE, TCP, NODE_IP, 3001,
     "10.180.0.1:80", True),
    ("load-balancer", "nodePort bypasses LoadBalancerSourceRanges", EXTERNAL_CLIENT_BLOCKED,
     OUTSIDE, TCP, NODE_IP, 3001, "10.180.0.1:80", True),
    ("load-balancer", "accepted external to LB1", EXTERNAL_CLIENT, OUTSIDE, TCP, "1.2.3.4", 80,
     "10.180.0.1:80", True),
    ("load-balancer", "accepted external to LB2", EXTERNAL_CLIENT, OUTSIDE, TCP, "5.6.7.8", 80,
     "10.180.0.1:80", True),
    ("load-balancer", "blocked external to LB1", EXTERNAL_CLIENT_BLOCKED, OUTSIDE, TCP,
     "1.2.3.4", 80, "DROP", False),
    ("load-balancer", "blocked external to LB2", EXTERNAL_CLIENT_BLOCKED, OUTSIDE, TCP,
     "5.6.7.8", 80, "DROP", False),
    ("load-balancer", "pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", POD, TCP,
     "1.2.3.4", 80, "DROP", False),
    ("load-balancer", "pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", POD, TCP,
     "5.6.7.8", 80, "DROP", False),
    ("load-balancer", "node to LB1 (allowed by LoadBalancerSourceRanges)", NODE_IP, NODE, TCP,
     "1.2.3.4", 80, "10.180.0.1:80", True),
    ("load-balancer", "node to LB2 (allowed by LoadBalancerSourceRanges)", NODE_IP, NODE, TCP,
     "5.6.7.8", 80, "10.180.0.1:80", True),
    ("load-balancer", "same node to LB1, SNATted to LB1 (implicitly allowed)", "1.2.3.4",
     OUTSIDE, TCP, "1.2.3.4", 80, "10.180.0.1:80", True),
    ("load-balancer", "same node to LB2, SNATted to LB2 (implicitly allowed)", "5.6.7.8",
     OUTSIDE, TCP, "5.6.7.8", 80, "10.180.0.1:80", True),
    # TestNodePorts, "ipv4" (default nodePortAddresses: the primary node IP only)
    ("node-ports", "pod to cluster IP", "10.0.0.2", POD, TCP, "172.30.0.41", 80,
     "10.180.0.1:80, 10.180.2.1:80", False),
    ("node-ports", "external to nodePort", EXTERNAL_CLIENT, OUTSIDE, TCP, NODE_IP, 3001,
     "10.180.0.1:80, 10.180.2.1:80", True),
    ("node-ports", "node to nodePort", NODE_IP, NODE, TCP, NODE_IP, 3001,
     "10.180.0.1:80, 10.180.2.1:80", True),
    ("node-ports", "secondary nodeIP ignores NodePorts", EXTERNAL_CLIENT, OUTSIDE, TCP,
     "192.168.1.2", 3001, "", False),
    # TestNoEndpointsReject
    ("no-endpoints-reject", "pod to cluster IP with no endpoints", "10.0.0.2", POD, TCP,
     "172.30.0.41", 80, "REJECT", False),
    ("no-endpoints-reject", "external to external IP with no endpoints", EXTERNAL_CLIENT,
     OUTSIDE, TCP, "192.168.99.11", 80, "REJECT", False),
    ("no-endpoints-reject", "pod to NodePort with no endpoints", "10.0.0.2", POD, TCP, NODE_IP,
     3001, "REJECT", False),
    ("no-endpoints-reject", "external to NodePort with no endpoints", EXTERNAL_CLIENT, OUTSIDE,
     TCP, NODE_IP, 3001, "REJECT", False),
    ("no-endpoints-reject", "pod to LoadBalancer IP with no endpoints", "10.0.0.2", POD, TCP,
     "1.2.3.4", 80, "REJECT", False),
    ("no-endpoints-reject", "external to LoadBalancer IP with no endpoints", EXTERNAL_CLIENT,
     OUTSIDE, TCP, "1.2.3.4", 80, "REJECT", False),
    # TestOverallNFTablesRules' whole ruleset (its expected dump, in kernel order), traced with
    # the outcomes upstream's TestExternalTrafficPolicyLocal/Cluster, TestLoadBalancer and
    # TestNoEndpointsReject give those shapes: svc2 Local with no local endpoint, svc5 affinity
    # and source ranges, svc6 no endpoints.
    ("overall-nftables-rules", "pod to Local LB IP short-circuits", "10.0.0.2", POD, TCP,
     "1.2.3.4", 80, "10.180.0.2:80", False),
    ("overall-nftables-rules", "external to Local LB IP, no local endpoint", EXTERNAL_CLIENT,
     OUTSIDE, TCP, "1.2.3.4", 80, "DROP", False),
    ("overall-nftables-rules", "node to Local LB IP short-circuits", NODE_IP, NODE, TCP,
     "1.2.3.4", 80, "10.180.0.2:80", True),
    ("overall-nftables-rules", "external to Local NodePort, no local endpoint", EXTERNAL_CLIENT,
     OUTSIDE, TCP, NODE_IP, 3001, "DROP", False),
    ("overall-nftables-rules", "pod to Local NodePort short-circuits", "10.0.0.2", POD, TCP,
     NODE_IP, 3001, "10.180.0.2:80", False),
    ("overall-nftables-rules", "accepted external to affinity LB", EXTERNAL_CLIENT, OUTSIDE, TCP,
     "5.6.7.8", 80, "10.180.0.3:80", True),
    ("overall-nftables-rules", "blocked external to affinity LB", EXTERNAL_CLIENT_BLOCKED,
     OUTSIDE, TCP, "5.6.7.8", 80, "DROP", False),
    ("overall-nftables-rules", "external to external IP", EXTERNAL_CLIENT, OUTSIDE, TCP,
     "192.168.99.33", 80, "10.180.0.4:80, 10.180.0.5:80", True),
    ("overall-nftables-rules", "external to NodePort", EXTERNAL_CLIENT, OUTSIDE, TCP, NODE_IP,
     3003, "10.180.0.3:80", True),
    ("overall-nftables-rules", "pod to cluster IP with no endpoints", "10.0.0.2", POD, TCP,
     "172.30.0.46", 80, "REJECT", False),
    # The layout without endpoint chains: the same promises, spelled as a numgen DNAT map.
    ("without-endpoint-chains", "pod to cluster IP", "10.0.0.2", POD, TCP, "172.30.0.41", 80,
     "10.180.0.1:80, 10.180.2.1:80", False),
    ("without-endpoint-chains", "hairpin to cluster IP", "10.180.0.1", POD, TCP, "172.30.0.41",
     80, "10.180.0.1:80, 10.180.2.1:80", True),
    ("without-endpoint-chains", "node to cluster IP (outside the pod CIDR)", NODE_IP, NODE, TCP,
     "172.30.0.41", 80, "10.180.0.1:80, 10.180.2.1:80", True),
    ("without-endpoint-chains", "external to nodePort", EXTERNAL_CLIENT, OUTSIDE, TCP, NODE_IP,
     3001, "10.180.0.1:80, 10.180.2.1:80", True),
]  # fmt: skip


@pytest.mark.parametrize("flow", [pytest.param(f, id=f"{f[0]}: {f[1]}") for f in FLOWS])
def test_upstream_packet_flows(flow: Flow) -> None:
    ruleset, _, source, origin, protocol, destination, port, output, masq = flow
    packet = Packet(ip_address(source), ip_address(destination), protocol, port, origin)
    traced = trace(table(ruleset), packet, NODE_IPS)
    assert (traced.output, traced.masquerade) == (output, masq), traced.evidence()


def test_only_the_hairpin_branch_is_masqueraded() -> None:
    """Each numgen branch goes on as its own packet: the hairpin set matches one of them."""
    packet = Packet(ip_address("10.180.0.1"), ip_address("172.30.0.41"), TCP, 80, POD)
    traced = trace(table("without-endpoint-chains"), packet, NODE_IPS)
    masqueraded = {str(b.dnat): b.masquerade for b in traced.branches}
    assert masqueraded == {"10.180.0.1:80": True, "10.180.2.1:80": False}


def test_the_rule_path_names_chain_line_and_rule() -> None:
    packet = Packet(ip_address("10.0.0.2"), ip_address("1.2.3.4"), TCP, 80, POD)
    (branch,) = trace(table("load-balancer"), packet, NODE_IPS).branches
    steps = [str(step) for step in branch.path]
    assert steps[0].startswith("filter-prerouting-pre-dnat line ")
    assert steps[0].endswith(": ct state new jump firewall-check")
    assert steps[-1].startswith("firewall-ULMVA6XW-ns1/svc1/tcp/p80 line ")
    assert steps[-1].endswith("drop")


def test_sends_to_gives_the_targets_outside_traffic_reaches() -> None:
    nodeport = HostPort(ip_address(NODE_IP), 3001)
    expected = {HostPort(ip_address("10.180.0.1"), 80), HostPort(ip_address("10.180.2.1"), 80)}
    assert sends_to(table("node-ports"), nodeport, NODE_IPS) == expected
    assert sends_to(table("load-balancer"), HostPort(ip_address("1.2.3.4"), 80)) == {
        HostPort(ip_address("10.180.0.1"), 80)
    }
    blocked = ip_address(EXTERNAL_CLIENT_BLOCKED)
    lb = HostPort(ip_address("1.2.3.4"), 80)
    assert sends_to(table("load-balancer"), lb, source=blocked) == frozenset()


def test_a_rule_it_cannot_read_is_named_not_skipped() -> None:
    original = table("node-ports")
    services = original.chains["services"]
    odd = NftRule("ip daddr . meta l4proto . th dport limit rate 10/second accept", line=77)
    chains = dict(original.chains)
    chains["services"] = replace(services, rules=(odd, *services.rules))
    packet = Packet(ip_address("10.0.0.2"), ip_address("172.30.0.41"), TCP, 80, POD)
    with pytest.raises(CannotTrace) as raised:
        trace(replace(original, chains=chains), packet, NODE_IPS)
    assert str(raised.value).startswith(
        "cannot trace: ip daddr . meta l4proto . th dport limit rate 10/second accept"
        " at services line 77"
    )


def test_a_goto_to_a_missing_chain_is_named() -> None:
    original = table("node-ports")
    service_ips = original.sets["service-ips"]
    (element,) = service_ips.elements
    broken = replace(element, value="goto service-GONE-ns1/svc1/tcp/p80")
    sets = dict(original.sets)
    sets["service-ips"] = replace(service_ips, elements=(broken,))
    packet = Packet(ip_address("10.0.0.2"), ip_address("172.30.0.41"), TCP, 80, POD)
    with pytest.raises(CannotTrace, match="no chain 'service-GONE-ns1/svc1/tcp/p80'"):
        trace(replace(original, sets=sets), packet, NODE_IPS)
