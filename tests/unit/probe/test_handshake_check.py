"""The vip-handshake check and the probe plan: the recorded seed snapshot, hand-made probes."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest

from vipcheck import snapshot as snapshot_module
from vipcheck.cases import Case, Outcome, run_case
from vipcheck.checks.base import NotApplicable, PartlyJudged, Violation
from vipcheck.checks.handshake import VIP_HANDSHAKE, _syn_recv, check_vip_handshake
from vipcheck.facts import Facts, MissingInput, Unobserved
from vipcheck.handshake_rounds import plan_real_servers, plan_vips
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.handshakes import (
    ProbePlan,
    ProbeRound,
    ProbeSettings,
    ProbeTarget,
    RealServerOrigin,
    TargetKind,
    Vantage,
)
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse.handshakes import parse_service_port_key, plan_as_json
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import load_snapshot

SEED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded" / "seed-incidents"
REDIS = ServicePortKey("default/redis", 6379, L4Protocol.TCP)
API = ServicePortKey("default/api", 80, L4Protocol.TCP)
WEB = ServicePortKey("default/web", 80, L4Protocol.TCP)
VANTAGES = (
    Vantage("node-1", "node-1", "ssh://node-1"),
    Vantage("node-2", "node-2", "ssh://node-2"),
    Vantage("node-3", "node-3", "ssh://node-3"),
    Vantage("client", None, "ssh://client"),
)


def hp(text: str) -> HostPort:
    address, _, port = text.rpartition(":")
    return HostPort(ip_address(address), int(port))


def vip(vantage: str, address: str, service: str, attempts: int) -> ProbeTarget:
    key = parse_service_port_key(service, "test", "vip")
    return ProbeTarget(ProbeRound.VIP, vantage, hp(address), attempts, key, TargetKind.CLUSTER_IP)


def server(  # noqa: PLR0917 - reads like a row of the plan
    vantage: str, address: str, via: str, service: str, node: str, origin: RealServerOrigin
) -> ProbeTarget:
    return ProbeTarget(
        ProbeRound.REAL_SERVER,
        vantage,
        hp(address),
        2,
        parse_service_port_key(service, "test", "server"),
        TargetKind.REAL_SERVER,
        via=hp(via),
        backend_node=node,
        origin=origin,
    )


def lines(address: str, *outcomes: str) -> str:
    host, _, port = address.rpartition(":")
    return "".join(f"ATTEMPT {host} {port} {i} {o}\n" for i, o in enumerate(outcomes, start=1))


def facts(targets: list[ProbeTarget], outputs: dict[str, str], *, cut: bool = False) -> Facts:
    """Facts with these probe outputs; cut: they end where the round was killed, before DONE."""
    plan = ProbePlan(VANTAGES, tuple(targets), ProbeSettings(), 1.0)
    files = {"plan.json": plan_as_json(plan)}
    end = "" if cut else "DONE\n"
    for name, body in outputs.items():
        files[name] = body if name.endswith(".error.txt") else f"TOOL bash\n{body}{end}"
    return Facts.from_snapshot(replace(load_snapshot(SEED), probes=files))


CONNECTED = "CONNECTED 20"
REFUSED = "REFUSED 15 connect: Connection refused"
TIMEOUT = "TIMEOUT 2000 no answer within 2 s"


def stale_facts() -> Facts:
    redis = "default/redis:6379/TCP"
    targets = [
        vip("client", "10.96.0.20:6379", redis, 8),
        server(
            "client", "10.244.3.10:6379", "10.96.0.20:6379", redis, "node-3", RealServerOrigin.BOTH
        ),
        server(
            "client", "10.244.3.10:80", "10.96.0.20:6379", redis, "node-3", RealServerOrigin.IPVS
        ),
    ]
    return facts(
        targets,
        {
            "client/vip.txt": lines("10.96.0.20:6379", *[CONNECTED, REFUSED] * 4),
            "client/real-server.txt": lines("10.244.3.10:6379", CONNECTED, CONNECTED)
            + lines("10.244.3.10:80", REFUSED, REFUSED),
        },
    )


def test_stale_real_server_is_the_likely_cause_with_its_fix() -> None:
    [violation] = check_vip_handshake(REDIS, stale_facts(), DEFAULTS)
    assert violation.node == "client"
    assert violation.subject == "ClusterIP 10.96.0.20:6379 from client"
    assert violation.observed.startswith("4 of 8 handshakes failed (4 CONNECTED, 4 REFUSED)")
    assert "likely cause: stale real server 10.244.3.10:80" in violation.observed
    assert "ipvsadm -d -t 10.96.0.20:6379 -r 10.244.3.10:80" in violation.fix
    assert "client -> 10.96.0.20:6379: #2 REFUSED 15 ms (connect: Connection refused)" in (
        violation.evidence
    )
    assert any(
        line.startswith("client -> 10.244.3.10:80 (IPVS real server, not an endpoint, on node-3)")
        for line in violation.evidence
    )
    assert any(
        line.startswith("[ipvs-real-servers-match-endpoints]") for line in violation.evidence
    )


def rp_filter_violation(*, on_node: str = CONNECTED) -> Violation:
    api = "default/api:80/TCP"
    targets = [
        vip("client", "10.96.0.40:80", api, 2),
        vip("node-1", "10.96.0.40:80", api, 2),
        server("client", "10.244.2.10:8080", "10.96.0.40:80", api, "node-2", RealServerOrigin.BOTH),
        server("node-2", "10.244.2.10:8080", "10.96.0.40:80", api, "node-2", RealServerOrigin.BOTH),
    ]
    [violation] = check_vip_handshake(
        API,
        facts(
            targets,
            {
                "client/vip.txt": lines("10.96.0.40:80", TIMEOUT, TIMEOUT),
                "node-1/vip.txt": lines("10.96.0.40:80", CONNECTED, CONNECTED),
                "client/real-server.txt": lines("10.244.2.10:8080", TIMEOUT, TIMEOUT),
                "node-2/real-server.txt": lines("10.244.2.10:8080", on_node, on_node),
            },
        ),
        DEFAULTS,
    )
    return violation


def test_timeout_from_outside_names_the_backend_node_and_its_rp_filter() -> None:
    violation = rp_filter_violation()
    assert violation.node == "client"  # node-1's own probe passed: only the outside fails
    assert violation.observed.startswith("2 of 2 handshakes failed (2 TIMEOUT)")
    assert "backend 10.244.2.10:8080 on node-2 TIMEOUT from client" in violation.observed
    assert "while it answers on node-2 itself" in violation.observed
    assert "strict rp_filter (tunl0" in violation.observed
    assert violation.fix.startswith("on node-2: sysctl -w")
    assert any(
        line.startswith("[rp-filter-not-strict] node-2/tunl0") for line in violation.evidence
    )
    assert any(
        "from node-2: CONNECTED 20 ms, CONNECTED 20 ms" in line for line in violation.evidence
    )


def test_backend_refusing_directly_is_named() -> None:
    web = "default/web:80/TCP"
    targets = [
        vip("client", "10.96.0.30:80", web, 8),
        server("client", "10.244.1.10:8080", "10.96.0.30:80", web, "node-1", RealServerOrigin.BOTH),
    ]
    [violation] = check_vip_handshake(
        WEB,
        facts(
            targets,
            {
                "client/vip.txt": lines("10.96.0.30:80", *[REFUSED] * 8),
                "client/real-server.txt": lines("10.244.1.10:8080", REFUSED, REFUSED),
            },
        ),
        DEFAULTS,
    )
    assert "backend 10.244.1.10:8080 refuses directly from client" in violation.observed


def test_no_explanation_is_said_plainly() -> None:
    web = "default/web:80/TCP"
    targets = [
        vip("client", "10.96.0.30:80", web, 8),
        server("client", "10.244.1.10:8080", "10.96.0.30:80", web, "node-1", RealServerOrigin.BOTH),
    ]
    [violation] = check_vip_handshake(
        WEB,
        facts(
            targets,
            {
                "client/vip.txt": lines("10.96.0.30:80", *[CONNECTED] * 7, "RESET 3 reset"),
                "client/real-server.txt": lines("10.244.1.10:8080", CONNECTED, CONNECTED),
            },
        ),
        DEFAULTS,
    )
    assert "likely cause: no explanation: every real server answers directly" in violation.observed
    assert "tcpdump" in violation.fix


def test_every_handshake_connected_passes() -> None:
    targets = [vip("node-1", "10.96.0.30:80", "default/web:80/TCP", 8)]
    probed = facts(targets, {"node-1/vip.txt": lines("10.96.0.30:80", *[CONNECTED] * 8)})
    assert check_vip_handshake(WEB, probed, DEFAULTS) == []


def test_attempts_cut_by_the_time_cap_are_not_judged_never_passed() -> None:
    # bench --lab's big scenario: 1,518 healthy Service ports failed as "0 of 1 handshakes
    # failed (1 not attempted (time cap))"; a cut is no failure, and no pass either.
    targets = [vip("node-1", "10.96.0.30:80", "default/web:80/TCP", 8)]
    output = lines("10.96.0.30:80", *[CONNECTED] * 5) + "BUDGET 10.96.0.30 80 3\n"
    with pytest.raises(PartlyJudged) as cut:
        check_vip_handshake(WEB, facts(targets, {"node-1/vip.txt": output}), DEFAULTS)
    assert cut.value.violations == []
    assert str(cut.value) == (
        "10.96.0.30:80 from node-1: 5 completed, 3 not attempted within the probe's time cap "
        "(--probe-total)"
    )
    result = run_case(
        Case(VIP_HANDSHAKE, WEB), facts(targets, {"node-1/vip.txt": output}), DEFAULTS
    )
    assert result.outcome is Outcome.SKIPPED


def test_a_failed_attempt_before_the_time_cap_still_fails() -> None:
    targets = [vip("node-1", "10.96.0.30:80", "default/web:80/TCP", 8)]
    output = lines("10.96.0.30:80", CONNECTED, REFUSED) + "BUDGET 10.96.0.30 80 6\n"
    [violation] = check_vip_handshake(WEB, facts(targets, {"node-1/vip.txt": output}), DEFAULTS)
    assert "1 of 8 handshakes failed" in violation.observed
    assert "6 not attempted (time cap)" in violation.observed


def test_a_round_cut_off_judges_the_attempts_made_and_not_the_rest() -> None:
    # A round killed past its deadline (or its connection lost) keeps what it printed: the
    # targets probed in full are judged, the one it was in the middle of and those after are not.
    targets = [
        vip("node-1", "10.96.0.30:80", "default/web:80/TCP", 3),
        vip("node-1", "10.96.0.20:6379", "default/redis:6379/TCP", 4),
        vip("node-1", "10.96.0.10:80", "default/api:80/TCP", 2),
    ]
    output = lines("10.96.0.30:80", *[CONNECTED] * 3) + lines("10.96.0.20:6379", CONNECTED)
    probed = facts(targets, {"node-1/vip.txt": output + "ATTEMPT 10.96.0.20 6379 2 CONN"}, cut=True)
    assert check_vip_handshake(WEB, probed, DEFAULTS) == []
    with pytest.raises(PartlyJudged) as redis:
        check_vip_handshake(REDIS, probed, DEFAULTS)
    assert str(redis.value) == (
        "10.96.0.20:6379 from node-1: 1 completed, 3 not attempted before the probe round was "
        "cut off"
    )
    with pytest.raises(PartlyJudged, match="2 not attempted before the probe round was cut off"):
        check_vip_handshake(API, probed, DEFAULTS)
    assert run_case(Case(VIP_HANDSHAKE, API), probed, DEFAULTS).outcome is Outcome.SKIPPED


def test_a_failed_attempt_before_the_round_was_cut_off_still_fails() -> None:
    targets = [vip("node-1", "10.96.0.30:80", "default/web:80/TCP", 8)]
    output = lines("10.96.0.30:80", CONNECTED, REFUSED)
    probed = facts(targets, {"node-1/vip.txt": output}, cut=True)
    [violation] = check_vip_handshake(WEB, probed, DEFAULTS)
    assert "1 of 8 handshakes failed" in violation.observed
    assert "6 not attempted (round cut off)" in violation.observed


def test_a_round_cut_off_before_any_attempt_errors_the_item() -> None:
    targets = [vip("node-1", "10.96.0.30:80", "default/web:80/TCP", 8)]
    probed = facts(targets, {"node-1/vip.txt": ""}, cut=True)
    with pytest.raises(Unobserved, match="node-1: probe output ends before DONE, with no attempt"):
        check_vip_handshake(WEB, probed, DEFAULTS)


def test_a_vantage_point_that_could_not_probe_errors_the_item() -> None:
    targets = [vip("client", "10.96.0.30:80", "default/web:80/TCP", 8)]
    probed = facts(targets, {"client/vip.error.txt": "client (ssh://client): refused\n"})
    with pytest.raises(Unobserved, match="could not probe from client: client"):
        check_vip_handshake(WEB, probed, DEFAULTS)


def test_unprobed_service_port_does_not_apply_and_no_probes_skip() -> None:
    with pytest.raises(NotApplicable, match="nothing probed"):
        check_vip_handshake(WEB, stale_facts(), DEFAULTS)
    with pytest.raises(MissingInput, match="no handshake probes: this run did not probe"):
        check_vip_handshake(WEB, Facts.from_snapshot(load_snapshot(SEED)), DEFAULTS)


def test_plan_probes_each_vip_with_attempts_from_its_real_servers() -> None:
    seed = Facts.from_snapshot(load_snapshot(SEED))
    targets = plan_vips(seed, VANTAGES, ProbeSettings())
    by = {(t.vantage, str(t.address)): t for t in targets}
    assert by["client", "10.96.0.20:6379"].attempts == 8  # IPVS has 2 (one stale): n = 2
    assert by["client", "10.96.0.40:80"].attempts == 2  # one real server: the minimum
    assert by["node-1", "10.96.0.30:80"].attempts == 8
    node_ports = {str(t.address) for t in targets if t.kind is TargetKind.NODE_PORT}
    assert node_ports == {f"192.168.58.{n}:30080" for n in (11, 12, 13)}
    assert {t.vantage for t in targets} == {"node-1", "node-2", "node-3", "client"}
    assert all(t.round is ProbeRound.VIP for t in targets)


def test_plan_attribution_probes_expected_and_ipvs_servers_here_and_on_their_node() -> None:
    seed = Facts.from_snapshot(load_snapshot(SEED))
    failed = [vip("client", "10.96.0.20:6379", "default/redis:6379/TCP", 8)]
    planned = {
        (t.vantage, str(t.address), t.origin, t.backend_node)
        for t in plan_real_servers(seed, VANTAGES, failed)
    }
    assert planned == {
        ("client", "10.244.3.10:6379", RealServerOrigin.BOTH, "node-3"),
        ("node-3", "10.244.3.10:6379", RealServerOrigin.BOTH, "node-3"),
        ("client", "10.244.3.10:80", RealServerOrigin.IPVS, "node-3"),
        ("node-3", "10.244.3.10:80", RealServerOrigin.IPVS, "node-3"),
    }


def test_plan_probes_a_local_fallback_node_port_only_from_its_own_node() -> None:
    """web with externalTrafficPolicy Local: node-2 has no web pod, so kube-proxy gives its
    NodePort the other nodes' pods (kubernetes#97081) unmasqueraded; replies reach only node-2."""
    snapshot = load_snapshot(SEED)
    services = snapshot.cluster["services.json"]
    cluster_policy = '"externalTrafficPolicy": "Cluster"'
    assert services.count(cluster_policy) == 1
    local = services.replace(cluster_policy, '"externalTrafficPolicy": "Local"')
    facts = Facts.from_snapshot(
        replace(snapshot, cluster={**snapshot.cluster, "services.json": local})
    )
    targets = plan_vips(facts, VANTAGES, ProbeSettings())
    probed_from = {
        str(t.address): sorted(x.vantage for x in targets if x.address == t.address)
        for t in targets
        if t.kind is TargetKind.NODE_PORT
    }
    everyone = ["client", "node-1", "node-2", "node-3"]
    assert probed_from == {
        "192.168.58.11:30080": everyone,  # web-1 is local there
        "192.168.58.12:30080": ["node-2"],  # the fallback: only node-2 gets the replies
        "192.168.58.13:30080": everyone,  # web-2 is local there
    }


SYN_RECV_TO_API = "TCP 0A0A0024 A0F2 0A600028 0050 0AF4020A 1F90 SYN_RECV         51\n"


def test_syn_recv_counts_of_a_cut_table_say_at_least(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table with more SYN_RECV rows than vipcheck keeps is counted on its kept rows: the
    handshake's SYN_RECV evidence says "at least", as ipvs-no-stuck-syn-recv does."""
    monkeypatch.setattr(snapshot_module, "MAX_KEPT_ROWS", 50)
    plan = ProbePlan(VANTAGES, (), ProbeSettings(), 1.0)
    seed = replace(load_snapshot(SEED), probes={"plan.json": plan_as_json(plan)})
    table = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
    node = seed.nodes["node-1"]
    files = {**node.files, "ip_vs_conn.txt": table + SYN_RECV_TO_API * 60}
    cut = Facts.from_snapshot(replace(seed, nodes={"node-1": replace(node, files=files)}))
    whole = Facts.from_snapshot(replace(seed, nodes={"node-1": node}))
    api = HostPort(ip_address("10.96.0.40"), 80)
    assert _syn_recv(api, cut) == [
        "node-1: at least 50 SYN_RECV TCP 10.96.0.40:80 -> 10.244.2.10:8080 (when gathered)"
    ]
    assert _syn_recv(api, whole) == [
        "node-1: 2 SYN_RECV TCP 10.96.0.40:80 -> 10.244.2.10:8080 (when gathered)"
    ]
