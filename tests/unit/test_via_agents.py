"""`vipcheck --via-agents` end to end on this host: the lab's stand-in API serves agent pods and
their exec, each exec runs the real `vipcheck-node` in a fresh network namespace (`unshare -n`),
its real output travels over a real WebSocket to the official client; no SSH, no docker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.apiserver import write_kubeconfig
from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api
from vipcheck.gather.agent_exec import agent_runner
from vipcheck.options import GatherOptions
from vipcheck.transport import NodeTarget, RunResult, TransportError

TOKEN = "via-agents-token-3c9e1f"  # noqa: S105 (a test token for a throwaway server)
NAMESPACE = "vipcheck"
BIN = Path(sys.executable).parent
# The real reader, alone in a new network namespace (no IPVS there: the script's fallbacks say so).
READER = ["unshare", "-n", "env", f"PATH={BIN}:/usr/sbin:/usr/bin:/sbin:/bin"]
HOSTILE = "pull access denied\n\x1b[2J\x1b]0;owned\x07 retry"

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs unshare -n as root, to run the real reader in a network namespace of its own",
)


def agent_pod(name: str, node: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    ready = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "agent", "state": {"running": {}}}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "vipcheck-agent"},
        },
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "vipcheck-agent"}]},
        "status": status or ready,
    }


def pulling(message: str) -> dict[str, Any]:
    state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
    return {"phase": "Pending", "containerStatuses": [{"name": "agent", "state": state}]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    """node-1 and node-2 with ready agents running the real reader; node-3's image not pulled."""
    objects = api_objects(load_scenario("healthy"))
    objects["pods"] = [
        agent_pod("vipcheck-agent-a1", "node-1"),
        agent_pod("vipcheck-agent-a2", "node-2"),
        agent_pod("vipcheck-agent-a3", "node-3", pulling(HOSTILE)),
        agent_pod("not-an-agent", "node-3") | {"metadata": {"name": "x", "namespace": NAMESPACE}},
    ]
    prefixes = {f"{NAMESPACE}/vipcheck-agent-a{n}": READER for n in (1, 2, 3)}
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN, prefixes) as running:
        yield running


def _vipcheck(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command, with a PATH whose only ssh and docker record that they were run."""
    tools = out / "bin"
    tools.mkdir(parents=True)
    for name in ("ssh", "docker", "kubectl"):
        (tools / name).write_text(f"#!/bin/sh\necho {name} >> {out}/ran\nexit 1\n")
        (tools / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    env |= {"HOME": str(out), "PATH": str(tools)}
    return subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", *args, "-q", "-p", "no:cacheprovider",
         "--vipcheck-json", str(out / "summary.json"), "--vipcheck-html", str(out / "report.html")],
        capture_output=True, text=True, timeout=300, check=False, cwd=out, env=env,
    )  # fmt: skip


def test_every_node_is_read_by_one_exec_and_a_node_without_a_ready_agent_is_one_error(
    api: ServedApi, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snap"
    run = _vipcheck(
        tmp_path,
        *("--kubeconfig", str(api.kubeconfig), "--via-agents", "--no-probe"),
        *("--save-snapshot", str(snapshot)),
    )
    shown = run.stdout + run.stderr
    assert "Traceback" not in shown
    assert not (tmp_path / "ran").exists(), (tmp_path / "ran").read_text()
    for node in ("node-1", "node-2"):
        files = {path.name for path in (snapshot / "nodes" / node).iterdir()}
        assert {"sysctl.txt", "ip-link.json", "ip-addr.json", "uname.txt"} <= files, files
        assert "error.txt" not in files
    error = (snapshot / "nodes" / "node-3" / "error.txt").read_text()
    assert error.startswith(
        "node-3 (agent://vipcheck/node-3): agent pod vipcheck/vipcheck-agent-a3: "
        "container agent waiting: ImagePullBackOff: pull access denied\\n\\x1b[2J\\x1b]0;owned"
    ), error
    summary = json.loads((tmp_path / "summary.json").read_text())
    errors = [r for r in summary["results"] if r["outcome"] == "error"]
    assert [(r["check"], r["node"]) for r in errors] == [("node-observed", "node-3")]
    assert "ImagePullBackOff" in errors[0]["message"]
    assert "\x1b" not in shown
    assert run.returncode == 1, shown
    # One LIST of the agents, one exec per node with a ready agent; nothing written.
    requests = api.requests()
    lists = [r for r in requests if "/namespaces/vipcheck/pods?" in r]
    execs = [r for r in requests if "/exec?" in r]
    assert len(lists) == 1
    assert sorted(r.split("/pods/")[1].split("/")[0] for r in execs) == [
        "vipcheck-agent-a1",
        "vipcheck-agent-a2",
    ]
    assert all("command=vipcheck-node&" in r and r.endswith(" 101") for r in execs), execs
    assert all(r.startswith("GET ") for r in requests)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ((), "--via-agents vipcheck: the agents run the node reader only, never a probe: add"),
        (("--no-probe", "--hosts", "local://"), "--via-agents vipcheck and --hosts exclude"),
        (("--no-probe", "--kind", "lab"), "--via-agents vipcheck and --kind exclude each other"),
    ],
    ids=["probes", "hosts", "kind"],
)  # fmt: skip
def test_via_agents_alone_reaches_the_nodes(
    api: ServedApi, tmp_path: Path, extra: tuple[str, ...], said: str
) -> None:
    run = _vipcheck(tmp_path, "--kubeconfig", str(api.kubeconfig), "--via-agents", *extra)
    assert run.returncode == 4, run.stdout + run.stderr
    assert said in run.stderr


def test_a_namespace_that_is_no_dns_label_is_a_usage_error(tmp_path: Path) -> None:
    run = _vipcheck(tmp_path, "--via-agents", "suites/test_x.py", "--no-probe")
    assert run.returncode == 4
    assert "--via-agents 'suites/test_x.py': not a namespace" in run.stderr


# The runner's own failures, each one line for its node: against pods whose exec misbehaves.
FAILURES = {
    "forbidden": None,  # in no exec list: refused 403, as RBAC refuses it
    "slow": ["sh", "-c", "sleep 60", "--"],
    "exits": ["sh", "-c", "echo 'vipcheck-node: cannot open netlink' >&2; exit 3", "--"],
    "absent": ["/nonexistent/vipcheck-node-prefix"],
    "reader": READER,
}


@pytest.fixture(scope="module")
def failing_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects: dict[str, list[dict[str, Any]]] = {
        "pods": [agent_pod(f"agent-{node}", node) for node in FAILURES]
    }
    prefixes = {f"{NAMESPACE}/agent-{node}": p for node, p in FAILURES.items() if p is not None}
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN, prefixes) as running:
        yield running


def run_on(api: ServedApi, node: str, timeout_s: float = 20) -> RunResult:
    options = GatherOptions(kubeconfig=str(api.kubeconfig), via_agents=NAMESPACE)
    with agent_runner(options, lambda _line: None) as runner:
        return runner.run(NodeTarget(node, f"agent://{NAMESPACE}/{node}"), "unused", timeout_s)


def test_the_reader_runs_whole_through_the_stand_in(failing_api: ServedApi) -> None:
    result = run_on(failing_api, "reader")
    assert result.rc == 0, result.stderr
    assert result.stdout.startswith("===vipcheck:file=")
    assert result.stdout.rstrip().endswith("===vipcheck:end")


def test_an_exec_rbac_refuses_names_the_missing_permission(failing_api: ServedApi) -> None:
    with pytest.raises(TransportError) as raised:
        run_on(failing_api, "forbidden")
    assert str(raised.value) == (
        "forbidden (agent://vipcheck/forbidden): exec into pod vipcheck/agent-forbidden refused "
        "(403 Forbidden): vipcheck's identity may not create pods/exec in namespace vipcheck "
        "(`vipcheck manifests` grants get and create on pods/exec there)"
    )


def test_an_exec_is_bounded_by_the_node_timeout(failing_api: ServedApi) -> None:
    started = time.monotonic()
    with pytest.raises(TransportError) as raised:
        run_on(failing_api, "slow", timeout_s=2)
    assert time.monotonic() - started < 6
    assert str(raised.value) == "slow (agent://vipcheck/slow): no answer within 2 s"


def test_the_status_channel_gives_the_exit_code(failing_api: ServedApi) -> None:
    result = run_on(failing_api, "exits")
    assert (result.rc, result.stdout) == (3, "")
    assert result.stderr == "vipcheck-node: cannot open netlink\n"


def test_an_exec_the_api_could_not_start_is_one_line(failing_api: ServedApi) -> None:
    with pytest.raises(TransportError) as raised:
        run_on(failing_api, "absent")
    said = str(raised.value)
    assert said.startswith("absent (agent://vipcheck/absent): the exec of vipcheck-node failed: ")
    assert "No such file or directory" in said
    assert "\n" not in said


def test_agents_that_cannot_be_listed_fail_each_node_with_the_cause(
    failing_api: ServedApi, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, "https://127.0.0.1:9", failing_api.tls.ca_cert, TOKEN)
    progress: list[str] = []
    options = GatherOptions(kubeconfig=str(kubeconfig), via_agents=NAMESPACE)
    with agent_runner(options, progress.append) as runner:
        for node in ("node-1", "node-2"):
            with pytest.raises(TransportError) as raised:
                runner.run(NodeTarget(node, f"agent://{NAMESPACE}/{node}"), "", 5)
            assert str(raised.value).startswith(
                f"{node} (agent://vipcheck/{node}): agent pods not listed: https://127.0.0.1:9: "
                "cannot connect for list pods in namespace vipcheck labelled "
                "app.kubernetes.io/name=vipcheck-agent"
            ), raised.value
    assert len([line for line in progress if line.startswith("agents: not listed")]) == 1
