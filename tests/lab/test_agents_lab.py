"""vipcheck --via-agents on the kind-shaped lab: the agent image built from the Dockerfile, one
agent container per node with the DaemonSet's settings, the pods and their exec served by the API
stand-in (fixtures/lab/agents.py), and the netlink reader on the real IPVS kernel.

These run on the docker seed-incidents lab test_kind_lab boots (the same pool key); adding the
agents to a booted lab is lazy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from fixtures.lab.agents import Agent, ensure_agents
from fixtures.lab.connect import connect_attempts
from fixtures.lab.guest_script import Runtime
from fixtures.lab.running import KIND_CLUSTER, LabPool, RunningLab
from tests.lab.test_kind_lab import Failures, kind_names
from tests.lab.test_vipcheck import EXPECTED_FAILURES, outcomes
from tests.unit.node_reader import record_requests
from vipcheck.facts import Facts, MissingInput
from vipcheck.gather.node_script import END
from vipcheck.node_reader.same_facts import node_fact_differences
from vipcheck.snapshot import load_snapshot

NAMESPACE = "vipcheck"
# What the handshake probe finds needs probes, which the agents never run.
PROBED = {"vip-handshake"}
# The kind lab the agents are proven on. The other kind labs (healthy, nftables) would cost CI
# about 50 s each (the image loaded, the agents started, two runs) and prove the reader nothing
# more: every scenario's nodes are compared with the script in the SSH lab (test_reader_lab.py).
DOCKER_LABS = ("seed-incidents",)


def _print(message: str) -> None:
    print(f"lab: {message}", flush=True)


def with_agents(labs: LabPool, scenario: str, without: tuple[str, ...] = ()) -> list[Agent]:
    """The docker lab of the scenario, its agents running on every node but `without`."""
    return ensure_agents(labs.get(scenario, Runtime.DOCKER).workdir, _print, without=without)


@dataclass(frozen=True, slots=True)
class Run:
    """One vipcheck --no-probe run: exit code, JSON summary, output, the tools it started, and
    its snapshot."""

    code: int
    summary: dict[str, Any]
    output: str
    ran: list[str]
    snapshot: Path


def vipcheck(lab: RunningLab, out: Path, *how: str) -> Run:
    """vipcheck --no-probe with its snapshot saved in out/snapshot; the PATH it runs with starts
    with ssh, docker and kubectl that only record their use (out/ran), before the real ones."""
    tools = out / "bin"
    tools.mkdir(parents=True)
    for name in ("ssh", "docker", "kubectl"):
        real = shutil.which(name)
        then = f'exec {real} "$@"' if real else "exit 127"
        (tools / name).write_text(f"#!/bin/sh\necho {name} >> {out}/ran\n{then}\n")
        (tools / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    env |= {"PATH": f"{tools}:{os.environ['PATH']}", "DOCKER_HOST": lab.docker_host}
    summary = out / "summary.json"
    result = subprocess.run(
        # Emulated, on a shared machine, three readers at once on the VM's two CPUs (six, with
        # the --kind run beside) have taken longer than the default 60 s.
        [sys.executable, "-m", "vipcheck.cli", *how, "--no-probe", "--vipcheck-timeout", "240",
         "--kubeconfig", str(lab.workdir / "kubeconfig"), "--save-snapshot", str(out / "snapshot"),
         "--vipcheck-json", str(summary), "-q", "-rfE", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=300, check=False, cwd=out, env=env,
    )  # fmt: skip
    ran = (out / "ran").read_text().split() if (out / "ran").exists() else []
    loaded = json.loads(summary.read_text()) if summary.exists() else {}
    return Run(result.returncode, loaded, result.stdout + result.stderr, ran, out / "snapshot")


@dataclass(frozen=True, slots=True)
class Pair:
    """A docker lab with its agents, and the two runs made at once on it: --via-agents and
    --kind; the stand-in's log length before them."""

    lab: RunningLab
    agents: list[Agent]
    agents_run: Run
    kind_run: Run
    logged_before: int


@pytest.fixture(scope="module")
def pairs(labs: LabPool, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Pair]:
    """The pair of runs on a docker lab, made once for the tests that judge them: gathering
    under emulation is slow, and two runs at once see the same IPVS connection entries."""
    made: dict[str, Pair] = {}

    def pair(scenario: str) -> Pair:
        if scenario not in made:
            agents = with_agents(labs, scenario)
            lab = labs.get(scenario, Runtime.DOCKER)
            if scenario == "seed-incidents":
                stuck_syn(lab)
            out = tmp_path_factory.mktemp(scenario)
            logged = len((lab.workdir / "apiserver.log").read_text().splitlines())
            ways = ("--via-agents", f"--kind={KIND_CLUSTER}")
            with ThreadPoolExecutor(max_workers=len(ways)) as pool:
                agents_run, kind_run = pool.map(
                    lambda how: vipcheck(lab, out / how[2:6], how), ways
                )
            made[scenario] = Pair(lab, agents, agents_run, kind_run, logged)
        return made[scenario]

    return pair


def expected_without_probes(lab: RunningLab) -> Failures:
    """The founding incidents' failures the SSH form finds, by kind node names, without probes."""
    names = kind_names(lab)
    return {
        (check, subject.replace(node, names[node]) if node else subject, names.get(node or ""))
        for check, subject, node in cast(Failures, EXPECTED_FAILURES["seed-incidents"])
        if check not in PROBED
    }


def stuck_syn(lab: RunningLab) -> None:
    """A client's handshake to api, which node-2's strict rp_filter leaves in SYN_RECV on the
    director (IPVS expires the entry after 60 s), as in the SSH form's test."""
    api = lab.scenario.service("default", "api")
    connect_attempts(lab.workdir / "ssh_config", "client", str(api.cluster_ip), 80, count=1)


def api_requests(lab: RunningLab, since: int) -> list[str]:
    """The stand-in's request lines (`METHOD PATH STATUS`) logged after line `since`."""
    lines = (lab.workdir / "apiserver.log").read_text().splitlines()[since:]
    return [line for line in lines if line.split(" ", 1)[0] in {"GET", "POST"}]


@pytest.mark.parametrize("scenario", DOCKER_LABS)
def test_the_netlink_reader_and_the_node_script_give_the_same_facts(
    pairs: Callable[[str], Pair], docker_cli: str, scenario: str
) -> None:
    """On every node: the snapshot of --kind (the node script, by docker exec into the node) and
    that of --via-agents (vipcheck-node in the agent, by exec through the API), taken at once, so
    that no IPVS connection entry expires between them.

    All facts are the same but the IPVS timeouts, which the reader reads over netlink and the node
    script cannot read on a kind node: it has no ipvsadm, and no /proc file holds them."""
    pair = pairs(scenario)
    for run in (pair.agents_run, pair.kind_run):
        assert outcomes(run.summary, "error") == set(), run.output
    kind, agents = pair.kind_run.snapshot, pair.agents_run.snapshot
    nodes = sorted(node.name for node in pair.lab.scenario.nodes)
    assert node_fact_differences(kind, agents) == [f"{n}: IPVS timeouts: different" for n in nodes]
    facts = {side: Facts.from_snapshot(load_snapshot(side)).nodes for side in (kind, agents)}
    for node in nodes:
        with pytest.raises(MissingInput, match="ipvsadm not installed"):
            facts[kind][node].timeouts  # noqa: B018 (reading it is the test)
        assert facts[agents][node].timeouts.tcp_fin > 0


def test_the_agents_find_the_founding_incidents_without_ssh_or_docker(
    pairs: Callable[[str], Pair], docker_cli: str
) -> None:
    pair = pairs("seed-incidents")
    run = pair.agents_run
    assert run.ran == [], run.output  # neither ssh nor docker nor kubectl: the API alone
    assert outcomes(run.summary, "error") == set(), run.output
    assert outcomes(run.summary, "failed") == expected_without_probes(pair.lab), run.output
    assert run.code == 1, run.output
    # The reader reads IPVS's timeouts over netlink, which --kind cannot (no ipvsadm on a kind
    # node): tcpfin is judged from the kernel's own 120 s, not from kube-proxy's config.
    tcpfin = [r for r in run.summary["results"] if r["check"] == "ipvs-tcpfin-timeout"]
    assert len(tcpfin) == len(pair.agents), run.output
    for result in tcpfin:
        assert result["violations"][0]["evidence"] == ["Timeout (tcp tcpfin udp): 900 120 300"]
    # One LIST of the agent pods, one exec of the reader into each, all through the stand-in.
    requests = api_requests(pair.lab, pair.logged_before)
    lists = [r for r in requests if f"/namespaces/{NAMESPACE}/pods?" in r]
    execs = sorted(r.split("/pods/")[1].split("/")[0] for r in requests if "/exec?" in r)
    assert len(lists) == 1, requests
    assert execs == sorted(agent.pod for agent in pair.agents), requests


def test_a_node_without_its_agent_is_one_error_and_the_others_are_judged(
    labs: LabPool, docker_cli: str, tmp_path: Path
) -> None:
    lab = labs.get("seed-incidents", Runtime.DOCKER)
    missing = kind_names(lab)["node-3"]
    try:
        with_agents(labs, "seed-incidents", without=(missing,))
        stuck_syn(lab)
        run = vipcheck(lab, tmp_path, "--via-agents")
    finally:
        with_agents(labs, "seed-incidents")  # its container and pod back, for the tests after
    code, summary, output = run.code, run.summary, run.output
    assert run.ran == [], output
    errors = [r for r in summary["results"] if r["outcome"] == "error"]
    assert [(r["check"], r["node"]) for r in errors] == [("node-observed", missing)], output
    assert (
        f"{missing} (agent://{NAMESPACE}/{missing}): no agent pod on this node"
        in (errors[0]["message"])
    ), errors
    expected = {failure for failure in expected_without_probes(lab) if failure[2] != missing}
    assert outcomes(summary, "failed") == expected, output
    spanning = [r for r in summary["results"] if r["node"] is None and r["outcome"] != "skipped"]
    assert spanning, output
    assert all(r["unseen_nodes"] == [missing] for r in spanning), spanning
    assert code == 1, output
    assert "Traceback" not in output


def test_the_reader_sends_only_get_and_dump_requests_on_the_ipvs_kernel(
    labs: LabPool, docker_cli: str
) -> None:
    """record_requests.py, fed to the agent's own Python, in the agent container (its
    capabilities, the node's network namespace), on a node whose IPVS table is programmed."""
    [agent, *_] = with_agents(labs, "seed-incidents")
    lab = labs.get("seed-incidents", Runtime.DOCKER)
    result = subprocess.run(
        [docker_cli, "exec", "-i", agent.pod, "python3", "-", "/dev/stdout"],
        input=Path(record_requests.__file__).read_text(),
        env={**os.environ, "DOCKER_HOST": lab.docker_host},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The reader's frames first (to its stdout), then the records (to the file: stdout too).
    records = json.loads(result.stdout.rpartition(f"{END}\n")[2])
    assert [(r, record_requests.refused(r)) for r in records if record_requests.refused(r)] == []
    # Every read the reader means was made: the links, addresses, and IPVS over generic netlink
    # (GET_SERVICE and GET_DEST dumps, GET_CONFIG and GET_INFO), the family looked up first.
    ipvs = {
        r["type"]
        for r in records
        if r["protocol"] == record_requests.NETLINK_GENERIC
        and r["type"] != record_requests.GENL_ID_CTRL
    }
    assert len(ipvs) == 1, records  # the IPVS family, whatever id the kernel gave it
    family = {ipvs.pop(): record_requests.IPVS_FAMILY}
    sent = {(r["protocol"], family.get(r["type"], r["type"]), r.get("cmd")) for r in records}
    assert sent == set(record_requests.READS), sent
