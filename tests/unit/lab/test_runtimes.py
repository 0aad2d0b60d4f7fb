"""The lab's runtimes: `up` builds every lab alike and asks its runtime only what differs.

No VM boots here: the image cache, qemu, keys, the API server and SSH are stand-ins, so what
`up` hands the VM and writes down for each runtime can be read back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fixtures.lab import control, image, vm
from fixtures.lab.guest_script import Runtime
from fixtures.lab.runtimes import DockerRuntime, NamespaceRuntime, lab_runtime


def test_the_runtime_is_chosen_once_by_its_name() -> None:
    assert lab_runtime(Runtime.SSH) == NamespaceRuntime()
    assert lab_runtime(Runtime.DOCKER, "dev") == DockerRuntime("dev")
    assert lab_runtime(Runtime.DOCKER, "dev").api_context == "kind-dev"
    assert lab_runtime(Runtime.SSH, "dev").cluster is None


@pytest.fixture
def booted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """What `up` asked of the stand-ins: the VM's forwards and memory, the API's context, the
    hosts it waited for over SSH, the docker command it checked the nodes with."""
    seen: dict[str, Any] = {"ssh": []}
    cache = tmp_path / "cache"
    cache.mkdir()
    for part in ("vmlinuz", "initrd", "docker.cpio.gz", "python.cpio.gz"):
        (cache / part).write_bytes(f"{part};".encode())  # initrd.img: which parts, in order
    boot = image.BootFiles(cache / "vmlinuz", cache / "initrd", "6.1.0-test")
    ports = iter(range(40000, 40100))

    def start_vm(*args: Any, memory_mb: int, **_kwargs: Any) -> Any:
        seen["forwards"], seen["memory_mb"] = args[2], memory_mb
        return SimpleNamespace(pid=0)

    def start_apiserver(*args: Any, **_kwargs: Any) -> Any:
        seen["context"] = args[3]
        return control._ApiServer(0, "https://127.0.0.1:6443")

    def docker(command: list[str], **kwargs: Any) -> Any:
        seen["docker"] = (command, kwargs["env"]["DOCKER_HOST"])
        return subprocess.CompletedProcess(command, 0, "dev-control-plane\n", "")

    monkeypatch.setattr(image, "ensure_boot_files", lambda _progress: boot)
    monkeypatch.setattr(image, "ensure_docker_layer", lambda *_a: cache / "docker.cpio.gz")
    monkeypatch.setattr(image, "ensure_python_layer", lambda *_a: cache / "python.cpio.gz")
    monkeypatch.setattr(image, "write_cpio", lambda _root, target: target.write_bytes(b""))
    monkeypatch.setattr(vm, "free_ports", lambda count: [next(ports) for _ in range(count)])
    monkeypatch.setattr(vm, "start_vm", start_vm)
    monkeypatch.setattr(vm, "wait_for_setup", lambda *_a: None)
    monkeypatch.setattr(control, "make_key", lambda _path, comment: f"ssh-ed25519 AAAA {comment}")
    monkeypatch.setattr(control, "_start_apiserver", start_apiserver)
    monkeypatch.setattr(
        control, "run_ssh", lambda _config, host, *_a, **_k: seen["ssh"].append(host)
    )
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(subprocess, "run", docker)
    return seen


def test_namespaces_answer_ssh_on_every_node_but_the_broken_ones(
    booted: dict[str, Any], tmp_path: Path
) -> None:
    state = control.start("faulty-nodes", tmp_path / "lab", lambda _line: None).ready()
    recorded = json.loads((tmp_path / "lab" / "lab.json").read_text())
    assert (recorded["runtime"], recorded["cluster"], recorded["docker_host"]) == (
        "ssh",
        None,
        None,
    )
    assert list(state.ssh_ports) == [*(f"node-{n}" for n in range(1, 9)), "client"]
    # node-5's port is closed on purpose: allocated, never forwarded.
    assert state.ssh_ports["node-5"] not in booted["forwards"]
    assert set(booted["forwards"].values()) == {
        f"192.168.58.{n}" for n in (11, 12, 13, 14, 16, 17, 18, 30)
    }
    assert "node-4" not in booted["ssh"]  # sshd hangs there: not waited for
    assert sorted(booted["ssh"]) == sorted({*state.ssh_ports} - {"node-4", "node-5"})
    assert (booted["memory_mb"], booted["context"]) == (vm.MEMORY_MB, "vipcheck-lab")
    assert not (tmp_path / "lab" / "docker_host").exists()
    assert "docker" not in booted
    # Debian's python3 for the node reader (fixtures/lab/reader.py), above the base image.
    assert (tmp_path / "lab" / "initrd.img").read_bytes() == b"initrd;python.cpio.gz;"


def test_kind_nodes_are_reached_over_docker_and_only_the_client_over_ssh(
    booted: dict[str, Any], tmp_path: Path
) -> None:
    state = control.start(
        "healthy", tmp_path / "kind", lambda _line: None, runtime=DockerRuntime("dev")
    ).ready()
    docker_host = (tmp_path / "kind" / "docker_host").read_text().strip()
    recorded = json.loads((tmp_path / "kind" / "lab.json").read_text())
    assert (recorded["runtime"], recorded["cluster"]) == ("docker", "dev")
    assert recorded["docker_host"] == docker_host == state.docker_host
    assert list(state.ssh_ports) == booted["ssh"] == ["client"]
    assert sorted(booted["forwards"].values()) == ["192.168.58.250:2375", "192.168.58.30"]
    assert docker_host == f"tcp://127.0.0.1:{max(booted['forwards'])}"
    assert (booted["memory_mb"], booted["context"]) == (2048, "kind-dev")
    command, reached = booted["docker"]
    assert "label=io.x-k8s.kind.cluster=dev" in command
    assert reached == docker_host
    assert state.scenario == "healthy"
    assert "kind cluster dev: DOCKER_HOST=" in control.status(tmp_path / "kind")
    assert (tmp_path / "kind" / "initrd.img").read_bytes() == b"initrd;docker.cpio.gz;"
