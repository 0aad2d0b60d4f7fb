"""Host specs to nodes, and one bounded run: local, ssh refused, timeouts that leave nothing."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import testinfra.backend

from vipcheck import transport
from vipcheck.options import GatherOptions
from vipcheck.transport import NodeTarget, TargetError, TransportError, resolve_targets, run_on

NAMES = ("node-1", "node-2", "node-3")
ADDRESSES = {
    "node-1": ["10.0.0.11", "node-1.example"],
    "node-2": ["10.0.0.12", "node-2.example"],
    "node-3": ["10.0.0.13", "node-3.example"],
}


def specs(targets: Sequence[NodeTarget]) -> dict[str, str]:
    return {t.node: t.spec for t in targets}


@pytest.mark.parametrize(
    ("hosts", "node_map", "expected", "not_given", "unknown"),
    [
        pytest.param(
            ["ssh://node-1", "root@node-2:2222", "ssh://admin@node-3?sudo=true"],
            {},
            {
                "node-1": "ssh://node-1",
                "node-2": "root@node-2:2222",
                "node-3": "ssh://admin@node-3?sudo=true",
            },
            (),
            (),
            id="by-name",
        ),
        pytest.param(
            ["ssh://10.0.0.12", "node-3.example"],
            {},
            {"node-2": "ssh://10.0.0.12", "node-3": "node-3.example"},
            ("node-1",),
            (),
            id="by-internal-ip-and-hostname",
        ),
        pytest.param(
            ["ssh://bastion-a", "ssh://10.9.9.9", "docker://kind-worker"],
            {"ssh://bastion-a": "node-1", "10.9.9.9": "node-2"},
            {"node-1": "ssh://bastion-a", "node-2": "ssh://10.9.9.9"},
            ("node-3",),
            ("docker://kind-worker",),
            id="node-map-by-spec-or-host-and-an-unknown-spec",
        ),
    ],
)
def test_hosts_map_to_nodes(
    hosts: list[str],
    node_map: dict[str, str],
    expected: dict[str, str],
    not_given: tuple[str, ...],
    unknown: tuple[str, ...],
) -> None:
    resolution = resolve_targets(
        GatherOptions(hosts=tuple(hosts), node_map=node_map, sudo=True), NAMES, ADDRESSES
    )
    assert specs(resolution.targets) == expected
    assert resolution.not_given == not_given
    assert resolution.unknown == unknown
    assert all(t.sudo for t in resolution.targets)
    for name in not_given:
        assert resolution.reasons[name].startswith("not given: no --hosts spec names it")


def test_without_api_nodes_each_spec_is_its_own_host() -> None:
    resolution = resolve_targets(
        GatherOptions(hosts=("ssh://root@worker-a:22", "worker-b")), [], {}
    )
    assert specs(resolution.targets) == {
        "worker-a": "ssh://root@worker-a:22",
        "worker-b": "worker-b",
    }
    assert (resolution.not_given, resolution.unknown) == ((), ())


def test_local_spec_is_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "node-2")
    resolution = resolve_targets(GatherOptions(hosts=("local://",)), NAMES, ADDRESSES)
    assert specs(resolution.targets) == {"node-2": "local://"}


def test_two_specs_for_one_node_are_refused() -> None:
    with pytest.raises(TargetError, match=r"ssh://node-1 and 10\.0\.0\.11 are both node node-1"):
        resolve_targets(GatherOptions(hosts=("ssh://node-1", "10.0.0.11")), NAMES, ADDRESSES)


@pytest.mark.parametrize(
    ("config", "given", "not_given"),
    [
        ("Host node-1 node-2\n  Port 22\nHost node-3\n", NAMES, ()),
        ("host node-?\n", NAMES, ()),
        ("Host=node-1\nHost node-* !node-3\n", ("node-1", "node-2"), ("node-3",)),
        (
            '# Host node-3\nHost "node-2"  # second\nMatch host node-1\n',
            ("node-2",),
            ("node-1", "node-3"),
        ),
        ("Host *\n  User root\n", NAMES, ()),
    ],
)
def test_ssh_config_hosts_name_the_nodes(
    tmp_path: Path, config: str, given: tuple[str, ...], not_given: tuple[str, ...]
) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    resolution = resolve_targets(
        GatherOptions(ssh_config=str(path), ssh_identity_file="/k"), NAMES, ADDRESSES
    )
    assert specs(resolution.targets) == {n: f"ssh://{n}" for n in given}
    assert all(
        t.ssh_config == str(path) and t.ssh_identity_file == "/k" for t in resolution.targets
    )
    assert resolution.not_given == not_given
    for name in not_given:
        assert (
            resolution.reasons[name]
            == f"not given: ssh_config {path} has no Host entry matching it"
        )


def test_nothing_given_reports_every_node() -> None:
    resolution = resolve_targets(GatherOptions(), NAMES, ADDRESSES)
    assert resolution.targets == ()
    assert resolution.not_given == NAMES


def test_unreadable_ssh_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=rf"^ssh_config {tmp_path}/nope: cannot read: "):
        resolve_targets(GatherOptions(ssh_config=str(tmp_path / "nope")), NAMES, ADDRESSES)


def test_run_on_local_returns_output_and_status() -> None:
    result = run_on(NodeTarget("here", "local://"), "echo out; echo err >&2; exit 3", 10)
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_run_on_keeps_bytes_it_cannot_decode_as_replacement_characters() -> None:
    result = run_on(NodeTarget("here", "local://"), r"printf 'caf\351\n'", 10)
    assert result.stdout == "caf\ufffd\n"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_timeout_kills_everything_the_run_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"sleep 37 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"^here \(local://\): no answer within 0\.5 s$"):
        run_on(NodeTarget("here", "local://"), script, 0.5)
    assert time.monotonic() - started < 5
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_timeout_keeps_what_the_command_printed_before_it() -> None:
    script = (
        "echo TOOL bash; echo ATTEMPT 10.96.0.1 80 1 CONNECTED 3; printf 'ATTEMPT 10.9'; sleep 37"
    )
    with pytest.raises(TransportError) as killed:
        run_on(NodeTarget("here", "local://"), script, 0.5)
    assert killed.value.partial == "TOOL bash\nATTEMPT 10.96.0.1 80 1 CONNECTED 3\nATTEMPT 10.9"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_ssh_refused_names_node_and_spec(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  BatchMode yes\n  StrictHostKeyChecking yes\n")
    spec = f"ssh://127.0.0.1:{closed_port()}"
    target = NodeTarget("node-9", spec, ssh_config=str(config))
    with pytest.raises(TransportError) as raised:
        run_on(target, "true", 10)
    message = str(raised.value)
    assert message.startswith(f"node-9 ({spec}): ssh failed (exit 255): ")
    assert "refused" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("telnet://node-1", "Unknown connection type 'telnet'"),
        ("paramiko://node-1", "install paramiko"),
        ("safe-ssh://node-1", "writes temporary files on the node and vipcheck only reads"),
    ],
)
def test_unusable_backend_is_a_transport_error(spec: str, message: str) -> None:
    if spec.startswith("paramiko") and importlib.util.find_spec("paramiko") is not None:
        pytest.skip("paramiko is installed here")
    with pytest.raises(TransportError, match=rf"^node-1 \({spec}\): .*{message}"):
        run_on(NodeTarget("node-1", spec), "true", 5)


class BlockingClient:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


class LibraryBackend:
    """A backend that talks through a library (as paramiko's): blocks until its client closes."""

    def __init__(self) -> None:
        self.client = BlockingClient()

    def get_connection_type(self) -> str:
        return "paramiko"

    def run(self, command: str, *args: str) -> Any:
        self.client.closed.wait(30)
        raise OSError("Socket is closed")


def test_library_backend_past_deadline_has_its_connection_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = LibraryBackend()

    def get_backend(spec: str, **options: Mapping[str, Any]) -> LibraryBackend:
        return backend

    monkeypatch.setattr(testinfra.backend, "get_backend", get_backend)
    with pytest.raises(TransportError, match=r"^node-1 \(paramiko://node-1\): no answer within"):
        transport.run_on(NodeTarget("node-1", "paramiko://node-1"), "true", 0.3)
    assert backend.client.closed.wait(5)


def test_run_on_adds_no_control_master(monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[str] = []

    def fake_popen(command: bytes, **options: Any) -> Any:
        commands.append(command.decode())
        raise OSError("not really running ssh")

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    with pytest.raises(TransportError):
        run_on(NodeTarget("node-1", "ssh://node-1", ssh_config="/cfg"), "echo hi", 4)
    assert "ControlPersist" not in commands[0]
    assert "-o ConnectTimeout=4" in commands[0]
    assert commands[0].startswith("ssh -F /cfg ")
    assert commands[0].endswith(" node-1 'sh -c '\"'\"'echo hi'\"'\"''")
