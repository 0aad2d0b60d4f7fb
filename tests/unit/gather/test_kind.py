"""--kind NAME: node containers found with the docker CLI, reached with docker exec, clear errors.

A fake `docker` on PATH stands in for the CLI: it lists the containers of a label from a file,
runs `exec` locally for containers that exist, and fails as docker does for the others.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from vipcheck.checks import SYSCTL_KEYS
from vipcheck.gather.live import gather
from vipcheck.kind import KIND_LABEL, KindCluster, find_kind_cluster, valid_kind_name
from vipcheck.options import GatherOptions
from vipcheck.transport import NodeTarget, TargetError, TransportError, run_on

pytest_plugins = ["pytester"]

FAKE_DOCKER = r"""#!/bin/sh
# A docker CLI stand-in: containers-<cluster> lists a cluster's containers; log records each call.
dir=$(dirname "$0")
echo "${DOCKER_HOST:-none} $1 $2" >> "$dir/log"
if [ -f "$dir/daemon-down" ]; then
    echo "Cannot connect to the Docker daemon at ${DOCKER_HOST:-unix:///var/run/docker.sock}." \
        "Is the docker daemon running?" >&2
    exit 1
fi
case "$1" in
ps)
    for arg in "$@"; do
        case "$arg" in
        label=io.x-k8s.kind.cluster=*) cluster=${arg#label=io.x-k8s.kind.cluster=} ;;
        esac
    done
    cat "$dir/containers-$cluster" 2>/dev/null
    exit 0 ;;
exec)
    name=$2
    shift 2
    case "$name" in
    *-noshell)
        echo 'OCI runtime exec failed: exec failed: unable to start container process: exec:' \
            '"/bin/sh": stat /bin/sh: no such file or directory: unknown'
        exit 126 ;;
    *-gone)
        echo "Error response from daemon: No such container: $name" >&2
        exit 1 ;;
    esac
    exec "$@" ;;
esac
echo "unknown command: $1" >&2
exit 2
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding the fake docker, first on PATH; DOCKER_HOST and DOCKER_CONTEXT unset."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "containers-lab").write_text("lab-worker2\nlab-control-plane\nlab-worker\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    return bin_dir


def calls(bin_dir: Path, command: str) -> list[str]:
    log = bin_dir / "log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.split(" ")[1] == command]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("lab", None), ("kind", None), ("my.cluster-2", None), ("Lab", "not a kind cluster name")],
)
def test_kind_names_follow_kinds_rule(name: str, expected: str | None) -> None:
    why = valid_kind_name(name)
    assert (why is None) if expected is None else (expected in str(why))


def test_the_clusters_containers_are_its_nodes_sorted(fake_docker: Path) -> None:
    cluster = find_kind_cluster("lab")
    assert cluster == KindCluster("lab", ("lab-control-plane", "lab-worker", "lab-worker2"))
    assert cluster.context == "kind-lab"
    assert cluster.specs[0] == "docker://lab-control-plane"
    assert calls(fake_docker, "ps") == ["none ps --all"]


def test_docker_host_reaches_the_cli(fake_docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    find_kind_cluster("lab")
    run_on(NodeTarget("lab-worker", "docker://lab-worker"), "true", 10)
    assert {line.split(" ")[0] for line in (fake_docker / "log").read_text().splitlines()} == {
        "tcp://127.0.0.1:2375"
    }


def test_no_docker_cli_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TargetError, match=r"^--kind lab: no docker CLI on PATH \(install one"):
        find_kind_cluster("lab")


def test_unreachable_daemon_names_the_endpoint_and_dockers_reason(
    fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fake_docker / "daemon-down").touch()
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    with pytest.raises(TargetError) as raised:
        find_kind_cluster("lab")
    message = str(raised.value)
    assert message.startswith(
        "--kind lab: Docker daemon unreachable (DOCKER_HOST=tcp://127.0.0.1:9): Cannot connect"
    )
    assert "\n" not in message


def test_a_cluster_without_containers_names_the_label(
    fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "remote")
    with pytest.raises(TargetError) as raised:
        find_kind_cluster("prod")
    assert str(raised.value) == (
        f"--kind prod: no Docker containers labelled {KIND_LABEL}=prod at DOCKER_CONTEXT=remote "
        "(`kind get clusters` lists the clusters there)"
    )


@pytest.mark.parametrize("container", ["-oProxyCommand=x", "$(id)", "Lab-Worker", "a\x1b[2J"])
def test_a_container_no_kind_node_is_named_as_is_refused(fake_docker: Path, container: str) -> None:
    (fake_docker / "containers-lab").write_text(f"lab-control-plane\n{container}\n")
    with pytest.raises(TargetError) as raised:
        find_kind_cluster("lab")
    message = str(raised.value)
    assert message.startswith("--kind lab: Docker lists a container '")
    assert "which no kind node is named as: not a DNS subdomain" in message
    assert "\x1b" not in message


def test_docker_exec_runs_the_script_in_one_call(fake_docker: Path) -> None:
    result = run_on(NodeTarget("lab-worker", "docker://lab-worker"), "echo out; exit 3", 10)
    assert (result.rc, result.stdout) == (3, "out\n")
    assert calls(fake_docker, "exec") == ["none exec lab-worker"]


@pytest.mark.parametrize(
    ("container", "message"),
    [
        (
            "lab-noshell",
            "lab-noshell (docker://lab-noshell): docker exec failed (exit 126): the container "
            "has no /bin/sh: OCI runtime exec failed: exec failed: unable to start container "
            'process: exec: "/bin/sh": stat /bin/sh: no such file or directory: unknown',
        ),
        (
            "lab-gone",
            "lab-gone (docker://lab-gone): docker exec failed (exit 1): "
            "Error response from daemon: No such container: lab-gone",
        ),
    ],
)
def test_a_container_that_cannot_run_the_script_says_why(
    fake_docker: Path, container: str, message: str
) -> None:
    with pytest.raises(TransportError) as raised:
        run_on(NodeTarget(container, f"docker://{container}"), "true", 10)
    assert str(raised.value) == message


def test_a_script_failing_inside_the_container_is_its_own_result(fake_docker: Path) -> None:
    result = run_on(NodeTarget("lab-worker", "docker://lab-worker"), "echo no >&2; exit 1", 10)
    assert (result.rc, result.stderr) == (1, "no\n")


def node_list(*names: str) -> str:
    items = [{"metadata": {"name": n}, "status": {"addresses": []}} for n in names]
    return json.dumps({"apiVersion": "v1", "kind": "NodeList", "items": items})


def test_gathering_kind_nodes_keeps_each_containers_failure_on_its_node(
    fake_docker: Path,
) -> None:
    names = ("lab-control-plane", "lab-noshell", "lab-gone")
    options = GatherOptions(hosts=tuple(f"docker://{n}" for n in names), timeout_s=20)

    def read_cluster(
        kubeconfig: str | None, context: str | None, progress: object, listed: object
    ) -> dict[str, str]:
        return {"nodes.json": node_list(*names)}

    snapshot = gather(
        options, lambda line: None, read_cluster=read_cluster, sysctl_keys=SYSCTL_KEYS
    )
    assert snapshot.nodes["lab-control-plane"].error is None
    assert "uname.txt" in snapshot.nodes["lab-control-plane"].files
    assert "has no /bin/sh" in str(snapshot.nodes["lab-noshell"].error)
    assert "No such container: lab-gone" in str(snapshot.nodes["lab-gone"].error)
    assert len(calls(fake_docker, "exec")) == 3  # one docker exec per node


SUITES = Path(__file__).parents[3] / "suites"


def run_kind(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(str(SUITES), "-p", "no:cacheprovider", *args)


def kubeconfig(path: Path, context: str) -> Path:
    path.write_text(
        f"apiVersion: v1\nkind: Config\ncurrent-context: {context}\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        f"contexts: [{{name: {context}, context: {{cluster: c, user: u}}}}]\n"
    )
    return path


@pytest.mark.parametrize(
    ("setup", "args", "line"),
    [
        ("no-docker", ["--kind", "lab"], "--kind lab: no docker CLI on PATH*"),
        ("daemon-down", ["--kind", "lab"], "--kind lab: Docker daemon unreachable*"),
        ("", ["--kind", "prod"], "--kind prod: no Docker containers labelled *"),
        ("", ["--kind", "lab"], "--kind lab: kubeconfig *: no context 'kind-lab'; contexts: other"),
        ("", ["--kind", "Lab"], "*--kind 'Lab' is not a kind cluster name*"),
        ("", ["--kind", "lab", "--context", "x"], "*--kind lab and --context exclude each other"),
    ],
)
def test_kind_usage_errors_are_one_line_and_exit_4(
    pytester: pytest.Pytester,
    fake_docker: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    setup: str,
    args: list[str],
    line: str,
) -> None:
    if setup == "no-docker":
        (fake_docker / "docker").unlink()
    elif setup:
        (fake_docker / setup).touch()
    config = kubeconfig(pytester.path / "kubeconfig", "other")
    monkeypatch.setenv("KUBECONFIG", str(config))
    result = run_kind(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [text for text in result.stderr.lines if text.strip()]
    assert len(errors) == 1, result.stderr.lines
    result.stderr.fnmatch_lines([f"ERROR: {line}"])


def test_hosts_beside_kind_stay_whole_specs(pytester: pytest.Pytester, fake_docker: Path) -> None:
    """--hosts is one string: each spec is kept whole, an outside host beside the kind nodes."""
    config = kubeconfig(pytester.path / "kubeconfig", "other")
    result = run_kind(
        pytester, "--kind", "lab", "--hosts", "ssh://client,local://", "--kubeconfig", str(config)
    )
    result.stdout.fnmatch_lines(["vipcheck target: *kind cluster lab, hosts ssh://client,local://"])


def test_an_api_node_without_a_container_says_so(fake_docker: Path) -> None:
    options = GatherOptions(kind="lab", hosts=("docker://lab-control-plane",), timeout_s=20)

    def read_cluster(
        kubeconfig: str | None, context: str | None, progress: object, listed: object
    ) -> dict[str, str]:
        return {"nodes.json": node_list("lab-control-plane", "lab-worker")}

    snapshot = gather(
        options, lambda line: None, read_cluster=read_cluster, sysctl_keys=SYSCTL_KEYS
    )
    assert snapshot.nodes["lab-worker"].error == (
        "not given: no Docker container of kind cluster lab is named so"
    )
