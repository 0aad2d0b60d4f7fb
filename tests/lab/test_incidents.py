"""Each scenario reproduces its founding incident for real, measured from outside through SSH."""

from __future__ import annotations

from collections import Counter

import pytest

from fixtures.lab.connect import Outcome, connect_attempts
from fixtures.lab.running import LabPool, RunningLab
from fixtures.lab.scenario import Scenario, Service

ATTEMPTS = 20


def service(scenario: Scenario, name: str) -> Service:
    return next(s for s in scenario.services if s.namespace == "default" and s.name == name)


def vip_outcomes(lab: RunningLab, name: str, count: int = ATTEMPTS) -> Counter[Outcome]:
    svc = service(lab.scenario, name)
    attempts = connect_attempts(
        lab.workdir / "ssh_config", "client", str(svc.cluster_ip), svc.ports[0].port, count=count
    )
    assert len(attempts) == count
    return Counter(a.outcome for a in attempts)


def test_healthy_redis_vip_always_connects_and_answers_with_its_pod(labs: LabPool) -> None:
    lab = labs.get("healthy")
    svc = service(lab.scenario, "redis")
    attempts = connect_attempts(
        lab.workdir / "ssh_config", "client", str(svc.cluster_ip), 6379, count=ATTEMPTS
    )
    assert [a.outcome for a in attempts] == [Outcome.CONNECTED] * ATTEMPTS
    assert {a.reply for a in attempts} == {"redis-0"}


def test_stale_real_server_refuses_about_half_the_connections(labs: LabPool) -> None:
    lab = labs.get("stale-real-server")
    svc = service(lab.scenario, "redis")
    attempts = connect_attempts(
        lab.workdir / "ssh_config", "client", str(svc.cluster_ip), 6379, count=ATTEMPTS
    )
    outcomes = Counter(a.outcome for a in attempts)
    # Round robin over {pod:6379, pod:80}: every second connection meets the closed old port.
    assert 6 <= outcomes[Outcome.REFUSED] <= 14, outcomes
    assert outcomes[Outcome.REFUSED] + outcomes[Outcome.CONNECTED] == ATTEMPTS, outcomes
    assert {a.reply for a in attempts if a.outcome is Outcome.CONNECTED} == {"redis-0"}


def test_stale_real_server_is_in_ipvs_but_not_in_the_api(labs: LabPool) -> None:
    lab = labs.get("stale-real-server")
    pod_ip = next(p.ip for p in lab.scenario.pods if p.name == "redis-0")
    for node in lab.scenario.nodes:
        table = lab.ssh(node.name, "ipvsadm -Ln -t 10.96.0.20:6379")
        assert f"{pod_ip}:6379" in table, (node.name, table)
        assert f"{pod_ip}:80" in table, (node.name, table)
    slices = lab.api_get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")["items"]
    redis = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == "redis"]
    assert [p["port"] for s in redis for p in s["ports"]] == [6379]


@pytest.mark.parametrize(("scenario", "tcpfin"), [("healthy", 30), ("tcpfin-default", 120)])
def test_ipvs_tcpfin_timeout_on_every_node(labs: LabPool, scenario: str, tcpfin: int) -> None:
    lab = labs.get(scenario)
    for node in lab.scenario.nodes:
        line = lab.ssh(node.name, "ipvsadm -L --timeout").strip()
        assert line == f"Timeout (tcp tcpfin udp): 900 {tcpfin} 300", (node.name, line)


def test_tcpfin_default_leaves_closing_connections_on_the_director(labs: LabPool) -> None:
    lab = labs.get("tcpfin-default")
    states = Counter(
        row.split()[7] for row in lab.ssh("node-1", "cat /proc/net/ip_vs_conn").splitlines()[1:]
    )
    assert states["TIME_WAIT"] + states["FIN_WAIT"] >= 10, states


def test_rp_filter_strict_hangs_the_vip_and_leaves_syn_recv_on_the_director(labs: LabPool) -> None:
    lab = labs.get("rp-filter-strict")
    assert lab.ssh("node-2", "sysctl -n net.ipv4.conf.all.rp_filter").strip() == "1"
    assert vip_outcomes(lab, "api", count=2) == Counter({Outcome.TIMEOUT: 2})
    pod_ip = next(p.ip for p in lab.scenario.pods if p.name == "api-0")
    dest = f"{int(pod_ip):08X} {8080:04X}"
    rows = lab.ssh("node-1", "cat /proc/net/ip_vs_conn").splitlines()
    assert any(dest in row and " SYN_RECV " in row for row in rows), rows


def test_healthy_api_vip_connects_through_the_tunnel(labs: LabPool) -> None:
    lab = labs.get("healthy")
    assert vip_outcomes(lab, "api", count=5) == Counter({Outcome.CONNECTED: 5})
