"""A snapshot is others' text: it reads nothing outside itself, never blocks, never fills memory.

Issue 23, finding 5: a symlink in a snapshot was followed (`error.txt` -> a secret printed the
whole file in terminal, JSON and HTML), a FIFO as meta.json hung the run, /dev/zero grew to
MemoryError. Now only regular files inside the directory are read, each within the size limit,
and anything else is exit 4 in one line naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vipcheck.facts import Facts
from vipcheck.parse import ParseError
from vipcheck.parse.kube import parse_kube_proxy_config
from vipcheck.snapshot import SnapshotError, load_snapshot

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "fixtures" / "recorded" / "seed-incidents"
PROBED = ROOT / "fixtures" / "snapshots" / "seed-incidents-probed"
SECRET = "TOP-SECRET-7f3a: the key to everything"  # noqa: S105 (text to look for, no secret)
LINK = "a symbolic link: a snapshot holds regular files only"
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    shutil.copytree(SEED, tmp_path / "snap")
    return tmp_path / "snap"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(f"{SECRET}\nnet.ipv4.ip_forward = {SECRET}\n")
    return path


def link(path: Path, target: Path | str) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def refusal(snap: Path) -> str:
    with pytest.raises(SnapshotError) as raised:
        load_snapshot(snap)
    return str(raised.value)


def vipcheck(snap: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = snap.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    return subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", "--from-snapshot", str(snap), "-q",
         "--vipcheck-json", str(out / "summary.json"), "--vipcheck-html", str(out / "report.html"),
         "-p", "no:cacheprovider", *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=out, env=env,
    )  # fmt: skip


def outputs(snap: Path, result: subprocess.CompletedProcess[str]) -> Iterator[str]:
    """Everything a person could read after the run: terminal, JSON summary, HTML report."""
    yield result.stdout
    yield result.stderr
    for written in ("summary.json", "report.html"):
        if (snap.parent / written).exists():
            yield (snap.parent / written).read_text()


def test_an_error_file_linked_to_a_secret_is_refused_and_the_secret_shown_nowhere(
    snap: Path, secret: Path
) -> None:
    link(snap / "nodes/node-2/error.txt", secret)
    result = vipcheck(snap)
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"ERROR: {snap}/nodes/node-2/error.txt: {LINK}" in result.stderr.splitlines()
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(SECRET in text for text in outputs(snap, result))


@pytest.mark.parametrize(
    "name", ["sysctl.txt", "uname.txt", "ipvsadm-Ln.txt", "ip_vs_conn.txt", "missing.txt"]
)
def test_a_node_file_linked_outside_is_refused_at_load_without_reading_it(
    snap: Path, secret: Path, name: str
) -> None:
    link(snap / "nodes/node-1" / name, secret)
    assert refusal(snap) == f"{snap}/nodes/node-1/{name}: {LINK}"


@pytest.mark.parametrize("name", ["meta.json", "cluster/services.json", "probes/plan.json"])
def test_links_to_files_inside_the_snapshot_are_refused_too(snap: Path, name: str) -> None:
    # Even within the directory: a snapshot is files, and a link is how one reaches outside.
    (snap / "probes").mkdir()
    (snap / "probes/plan.json.real").write_text('{"vantages": [], "targets": []}')
    link(snap / name, snap / "probes/plan.json.real")
    assert refusal(snap) == f"{snap}/{name}: {LINK}"


DIRECTORY_LINK = (
    "a symbolic link where a directory belongs: a snapshot holds directories and regular files only"
)


@pytest.mark.parametrize(
    ("where", "why"),
    [("nodes/node-9", DIRECTORY_LINK), ("cluster", DIRECTORY_LINK), ("nodes", DIRECTORY_LINK),
     ("probes/after", LINK)],  # under probes/, files and directories both belong
)  # fmt: skip
def test_a_directory_that_is_a_link_is_refused(
    snap: Path, tmp_path: Path, where: str, why: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sysctl.txt").write_text(f"net.ipv4.ip_forward = {SECRET}\n")
    (snap / "probes").mkdir()
    (snap / "probes/plan.json").write_text('{"vantages": [], "targets": []}')
    if (snap / where).exists():
        shutil.rmtree(snap / where)
    link(snap / where, elsewhere)
    assert refusal(snap) == f"{snap}/{where}: {why}"


def test_a_directory_swapped_for_a_link_after_loading_is_refused_when_read(
    snap: Path, tmp_path: Path
) -> None:
    # Files are read when a fact needs them: each read opens every component without following.
    snapshot = load_snapshot(snap)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(snap / "nodes/node-1", elsewhere)
    (elsewhere / "sysctl.txt").write_text(f"net.ipv4.ip_forward = {SECRET}\n")
    link(snap / "nodes/node-1", elsewhere)
    with pytest.raises(SnapshotError) as raised:
        snapshot.nodes["node-1"].files["sysctl.txt"]
    assert str(raised.value) == f"{snap}/nodes/node-1: {DIRECTORY_LINK}"


def test_a_file_swapped_for_a_link_after_loading_errors_its_items_not_leaking_it(
    snap: Path, secret: Path
) -> None:
    facts = Facts.from_snapshot(load_snapshot(snap))
    link(snap / "nodes/node-1/sysctl.txt", secret)
    with pytest.raises(SnapshotError) as raised:
        facts.nodes["node-1"].sysctls  # noqa: B018
    assert str(raised.value) == f"{snap}/nodes/node-1/sysctl.txt: {LINK}"


def test_a_fifo_as_meta_json_does_not_hang_the_run(snap: Path) -> None:
    (snap / "meta.json").unlink()
    os.mkfifo(snap / "meta.json")
    result = vipcheck(snap, timeout=60)  # before: blocked in open() until killed
    assert result.returncode == 4, result.stdout + result.stderr
    assert (
        f"ERROR: {snap}/meta.json: a FIFO: a snapshot holds regular files only"
        in result.stderr.splitlines()
    )


def test_a_fifo_swapped_in_after_loading_is_refused_without_blocking(snap: Path) -> None:
    snapshot = load_snapshot(snap)
    (snap / "nodes/node-1/sysctl.txt").unlink()
    os.mkfifo(snap / "nodes/node-1/sysctl.txt")
    with pytest.raises(SnapshotError, match=r"sysctl\.txt: a FIFO: a snapshot holds regular"):
        snapshot.nodes["node-1"].files["sysctl.txt"]


@pytest.mark.parametrize("name", ["nodes/node-2/error.txt", "meta.json"])
def test_dev_zero_linked_in_is_refused_not_read_to_memory_error(snap: Path, name: str) -> None:
    link(snap / name, "/dev/zero")
    assert refusal(snap) == f"{snap}/{name}: {LINK}"


def test_dev_zero_as_error_txt_is_exit_4_not_a_memory_error(snap: Path) -> None:
    link(snap / "nodes/node-2/error.txt", "/dev/zero")
    result = vipcheck(snap)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr
    assert "MemoryError" not in result.stdout + result.stderr


def test_a_device_node_is_refused_without_being_opened(snap: Path) -> None:
    (snap / "meta.json").unlink()
    try:  # the same device as /dev/zero (1, 5); creating one needs root (CAP_MKNOD)
        os.mknod(snap / "meta.json", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD; the socket test below covers special files")
    assert refusal(snap) == (
        f"{snap}/meta.json: a character device: a snapshot holds regular files only"
    )


def test_a_socket_is_refused(snap: Path) -> None:
    (snap / "nodes/node-1/uname.txt").unlink()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(snap / "nodes/node-1/uname.txt"))
        assert refusal(snap) == (
            f"{snap}/nodes/node-1/uname.txt: a socket: a snapshot holds regular files only"
        )


def test_a_file_grown_past_the_limit_after_loading_is_refused_when_read(snap: Path) -> None:
    snapshot = load_snapshot(snap, max_file_bytes=64 << 10)
    (snap / "nodes/node-1/sysctl.txt").write_bytes(b"net.ipv4.ip_forward = 1\n" * 4000)
    with pytest.raises(SnapshotError, match=r"sysctl\.txt: 94 KiB, more than the 64 KiB"):
        snapshot.nodes["node-1"].files["sysctl.txt"]


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("n\ntouch PWNED\n#", "n\\ntouch PWNED\\n#"),
        ("-oProxyCommand=x", "-oProxyCommand=x"),
        ("node-1\x1b]0;owned\x07", "node-1\\x1b]0;owned\\x07"),
        ("node 1", "node 1"),
        ("$(id)", "$(id)"),
    ],
    ids=["newline", "ssh-option", "escape", "space", "substitution"],
)
def test_a_node_directory_no_node_could_be_named_is_refused_in_one_line(
    snap: Path, name: str, shown: str
) -> None:
    shutil.copytree(snap / "nodes/node-1", snap / "nodes" / name)
    message = refusal(snap)
    assert message.startswith(f"{snap}/nodes/{shown}: not a Kubernetes Node's name (")
    assert message.endswith("), nor a host's")
    assert "\n" not in message
    assert "\x1b" not in message


def test_a_forged_node_directory_is_exit_4_and_runs_nothing(snap: Path) -> None:
    shutil.copytree(snap / "nodes/node-1", snap / "nodes/n\ntouch PWNED\n#")
    result = vipcheck(snap, "--vipcheck-fix-script", str(snap.parent / "fix.sh"))
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"ERROR: {snap}/nodes/n\\ntouch PWNED\\n#: not a Kubernetes Node's name (" in (
        result.stderr
    )
    assert not (snap.parent / "fix.sh").exists()
    assert not (snap.parent / "PWNED").exists()


@pytest.mark.parametrize("host", ["MYHOST", "fd00::11", "10.0.0.11", "build_host-1"])
def test_a_node_directory_named_after_its_host_loads(snap: Path, host: str) -> None:
    # What a run that could not read the API saves: its nodes are named as --hosts named them.
    (snap / "nodes/node-1").rename(snap / "nodes" / host)
    assert host in load_snapshot(snap).nodes


def test_a_note_beside_the_node_directories_is_still_ignored(snap: Path) -> None:
    (snap / "nodes/README").write_text("node-2 is the director\n")
    assert sorted(load_snapshot(snap).nodes) == ["node-1", "node-2", "node-3"]


def test_probe_files_are_regular_files_inside_too(tmp_path: Path, secret: Path) -> None:
    snap = tmp_path / "probed"
    shutil.copytree(PROBED, snap)
    assert load_snapshot(snap).probes is not None
    link(snap / "probes/client/vip.txt", secret)
    assert refusal(snap) == f"{snap}/probes/client/vip.txt: {LINK}"


def test_meta_json_nested_100k_deep_is_exit_4_naming_it(snap: Path) -> None:
    (snap / "meta.json").write_text(DEEP)
    assert refusal(snap) == f"{snap}/meta.json: JSON nested too deeply to read"
    result = vipcheck(snap)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr
    assert f"ERROR: {snap}/meta.json: JSON nested too deeply to read" in result.stderr
    assert "RecursionError" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "read", "message"),
    [
        ("cluster/services.json", lambda f: f.cluster.services,
         "cluster/services.json: JSON nested too deeply to read"),
        ("nodes/node-1/ip-link.json", lambda f: f.nodes["node-1"].interfaces,
         "nodes/node-1/ip-link.json: invalid JSON: nested too deeply to read"),
        ("probes/plan.json", lambda f: f.probes.plan,
         "probes/plan.json: not a probe plan: maximum recursion depth exceeded"),
    ],
    ids=["services.json", "ip-link.json", "plan.json"],
)  # fmt: skip
def test_json_nested_100k_deep_is_a_parse_error_naming_the_file(
    tmp_path: Path, name: str, read: object, message: str
) -> None:
    # As malformed JSON in these files is: their items error, naming the file (exit 1).
    snap = tmp_path / "probed"
    shutil.copytree(PROBED, snap)
    (snap / name).write_text(DEEP)
    facts = Facts.from_snapshot(load_snapshot(snap))
    with pytest.raises(ParseError) as raised:
        read(facts)  # type: ignore[operator]
    assert str(raised.value).startswith(message)


def test_services_json_nested_100k_deep_errors_items_with_no_traceback(snap: Path) -> None:
    (snap / "cluster/services.json").write_text(DEEP)
    result = vipcheck(snap)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr
    assert "RecursionError" not in result.stdout + result.stderr
    summary = json.loads((snap.parent / "summary.json").read_text())
    reasons = {r["message"] for r in summary["results"] if r["outcome"] == "error"}
    assert "cannot read cluster/services.json: JSON nested too deeply to read" in reasons


def test_a_kube_proxy_config_nested_100k_deep_is_a_parse_error_naming_the_file() -> None:
    # The ConfigMap's config.conf is YAML inside JSON: PyYAML's composer recurses per level.
    configmap = {"kind": "ConfigMap", "data": {"config.conf": DEEP}}
    with pytest.raises(ParseError) as raised:
        parse_kube_proxy_config(json.dumps(configmap), "cluster/kube-proxy.json")
    assert str(raised.value) == (
        "cluster/kube-proxy.json: data[config.conf]: YAML nested too deeply to read"
    )
