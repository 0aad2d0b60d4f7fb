"""Probe output and plan parsing, and the attempts formula."""

from __future__ import annotations

import json
import math
from ipaddress import ip_address
from pathlib import Path

import pytest

from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.handshakes import (
    Attempt,
    ConnectOutcome,
    ProbePlan,
    ProbeRound,
    ProbeSettings,
    ProbeTarget,
    RealServerOrigin,
    TargetKind,
    Vantage,
    attempts_for,
)
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse import ParseError
from vipcheck.parse.handshakes import (
    parse_probe_output,
    parse_probe_plan,
    parse_service_port_key,
    plan_as_json,
)

VIP = HostPort(ip_address("10.96.0.20"), 6379)
REDIS = ServicePortKey("default/redis", 6379, L4Protocol.TCP)
PROBED = Path(__file__).resolve().parents[3] / "fixtures/snapshots/seed-incidents-probed/probes"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ATTEMPT 10.96.0.20 6379 1 CONNECTED 28", Attempt(VIP, 1, ConnectOutcome.CONNECTED, 28)),
        (
            "ATTEMPT 10.96.0.20 6379 2 REFUSED 15 connect: Connection refused",
            Attempt(VIP, 2, ConnectOutcome.REFUSED, 15, "connect: Connection refused"),
        ),
        (
            "ATTEMPT 10.96.0.20 6379 3 TIMEOUT 2000 no answer within 2 s",
            Attempt(VIP, 3, ConnectOutcome.TIMEOUT, 2000, "no answer within 2 s"),
        ),
        (
            "ATTEMPT 10.96.0.20 6379 4 RESET - connect: reset",
            Attempt(VIP, 4, ConnectOutcome.RESET, None, "connect: reset"),
        ),
        (
            "ATTEMPT 10.96.0.20 6379 5 ERROR 3 connect: No route to host",
            Attempt(VIP, 5, ConnectOutcome.ERROR, 3, "connect: No route to host"),
        ),
        (
            "ATTEMPT 10.96.0.20 6379 6 SyntaxError: invalid syntax",
            Attempt(VIP, 6, ConnectOutcome.ERROR, None, "SyntaxError: invalid syntax"),
        ),
    ],
)
def test_attempt_lines(line: str, expected: Attempt) -> None:
    output = parse_probe_output(f"TOOL bash\n{line}\nDONE\n", "probes/client/vip.txt")
    assert output.attempts == (expected,)
    assert output.attempts[0].raw == line
    assert output.tool == "bash"
    assert output.error is None


def test_budget_lines_and_cut_off_output() -> None:
    output = parse_probe_output("TOOL nc\nBUDGET 10.96.0.20 6379 3\n", "x")
    assert output.not_attempted == {VIP: 3}
    assert output.cut
    assert output.error is None
    assert not parse_probe_output("TOOL nc\nBUDGET 10.96.0.20 6379 3\nDONE\n", "x").cut


@pytest.mark.parametrize(
    "tail",
    ["", "ATTEMPT 10.96.0.20 6379 2 CONN", "ATTEMPT 10.96.0.2", "ATTEMPT 10.96.0.20 6379 2 "],
)
def test_an_output_cut_mid_round_keeps_the_whole_lines_read(tail: str) -> None:
    # The round killed while a line was being printed: that line is not an ERROR outcome.
    text = "TOOL bash\nATTEMPT 10.96.0.20 6379 1 CONNECTED 3\n" + tail
    output = parse_probe_output(text, "probes/node-1/vip.txt")
    assert output.cut
    assert output.error is None
    assert output.attempts == (Attempt(VIP, 1, ConnectOutcome.CONNECTED, 3),)


def test_an_output_cut_before_any_attempt_is_a_vantage_point_that_could_not_probe() -> None:
    for text in ("TOOL bash\n", "TOOL bash\nATTEMPT 10.9", ""):
        output = parse_probe_output(text, "x")
        assert output.error == "probe output ends before DONE, with no attempt made (cut off?)"
    assert parse_probe_output("TOOL bash\nDONE", "x") == parse_probe_output(
        "TOOL bash\nDONE\n", "x"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TOOL bash\nhello\nDONE\n", "x:2: not a probe line: 'hello'"),
        ("ATTEMPT 10.96.0.999 1 1 CONNECTED 1\n", "x:1: not an address"),
        ("ATTEMPT 10.96.0.20 http 1 CONNECTED 1\n", "x:1: expected a number, got 'http'"),
        ("ATTEMPT 10.96.0.20 80 1\n", "x:1: expected `ATTEMPT addr port seq OUTCOME ms`"),
    ],
)
def test_malformed_output_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ParseError) as error:
        parse_probe_output(text, "x")
    assert str(error.value).startswith(message)


def test_plan_round_trips_through_json() -> None:
    plan = ProbePlan(
        (Vantage("node-1", "node-1", "ssh://node-1"), Vantage("client", None, "ssh://client")),
        (
            ProbeTarget(ProbeRound.VIP, "client", VIP, 8, REDIS, TargetKind.CLUSTER_IP),
            ProbeTarget(
                ProbeRound.REAL_SERVER,
                "client",
                HostPort(ip_address("10.244.3.10"), 80),
                2,
                REDIS,
                TargetKind.REAL_SERVER,
                via=VIP,
                backend_node="node-3",
                origin=RealServerOrigin.IPVS,
            ),
        ),
        ProbeSettings(timeout_s=3),
        12.5,
    )
    assert parse_probe_plan(plan_as_json(plan), "probes/plan.json") == plan


def test_plan_that_is_not_one_names_the_file() -> None:
    with pytest.raises(ParseError, match=r"probes/plan.json: not a probe plan"):
        parse_probe_plan('{"targets": []}', "probes/plan.json")


ONE_TARGET = ProbePlan(
    (), (ProbeTarget(ProbeRound.VIP, "client", VIP, 2, REDIS, TargetKind.CLUSTER_IP),)
)


def test_plan_keeps_service_ports_in_their_subject_form_on_disk() -> None:
    text = plan_as_json(ONE_TARGET)
    assert '"service": "default/redis:6379/TCP"' in text
    assert parse_probe_plan(text, "probes/plan.json").targets[0].service == REDIS


def test_recorded_plan_loads_into_keys() -> None:
    text = (PROBED / "plan.json").read_text()
    plan = parse_probe_plan(text, "probes/plan.json")
    assert plan.targets
    assert all(isinstance(t.service, ServicePortKey) for t in plan.targets)
    assert {str(t.service) for t in plan.targets} >= {"default/redis:6379/TCP"}
    assert plan_as_json(plan) == text


@pytest.mark.parametrize(
    "text",
    ["default/redis", "redis:6379/TCP", "default/redis:port/TCP", "default/redis:80/ICMP", 7],
)
def test_malformed_service_port_names_file_and_target(text: object) -> None:
    plan = json.loads(plan_as_json(ONE_TARGET))
    plan["targets"][0]["service"] = text
    with pytest.raises(ParseError) as error:
        parse_probe_plan(json.dumps(plan), "probes/plan.json")
    assert str(error.value).startswith("probes/plan.json: targets[0].service: not a Service port")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default/redis:6379/TCP", ServicePortKey("default/redis", 6379, L4Protocol.TCP)),
        ("kube-system/kube-dns:53/UDP", ServicePortKey("kube-system/kube-dns", 53, L4Protocol.UDP)),
    ],
)
def test_service_port_key_round_trips_its_subject_form(text: str, expected: ServicePortKey) -> None:
    assert parse_service_port_key(text, "x", "here") == expected
    assert str(expected) == text


@pytest.mark.parametrize(("n", "k"), [(0, 2), (1, 2), (2, 8), (3, 15), (4, 21), (10, 66)])
def test_attempts_reach_every_real_server_with_99_percent(n: int, k: int) -> None:
    assert attempts_for(n) == k
    if n >= 2:
        # the union bound the formula inverts: P(a server is missed) <= n (1 - 1/n)^k
        assert n * (1 - 1 / n) ** k <= 0.01
        assert n * (1 - 1 / n) ** (k - 1) > 0.01 or k == 2
        assert k == math.ceil(math.log(n / 0.01) / -math.log(1 - 1 / n))
