"""Each kind of bad input gets one clear line naming what and where, its exit code, no traceback.

BAD_INPUTS is the table docs/reliability.md shows; a test holds the two equal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.lab.apiserver import write_kubeconfig
from fixtures.lab.objects import api_objects
from fixtures.lab.scenario import load_scenario
from fixtures.lab.serve_api import ServedApi, serve_api
from fixtures.lab.tls import make_tls

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "fixtures" / "recorded" / "seed-incidents"
TOKEN = "bad-input-token-5b1f0c2e9d"  # noqa: S105 (a test token for a throwaway server)
USAGE, FOUND = 4, 1


@dataclass(frozen=True, slots=True)
class Place:
    """Where a case builds its input, and the API server it may point at."""

    tmp: Path
    api: ServedApi


def unreachable_kubeconfig(place: Place) -> Path:
    path = place.tmp / "kubeconfig"
    write_kubeconfig(path, "https://127.0.0.1:1", place.api.tls.ca_cert, TOKEN)
    return path


def snapshot_with(place: Place, name: str, data: bytes) -> Path:
    snapshot = place.tmp / "snap"
    shutil.copytree(RECORDED, snapshot)
    (snapshot / name).write_bytes(data)
    return snapshot


def _missing_kubeconfig(place: Place) -> list[str]:
    return ["--kubeconfig", str(place.tmp / "none")]


def _kubeconfig_directory(place: Place) -> list[str]:
    return ["--kubeconfig", str(place.tmp)]


def _bad_yaml(place: Place) -> list[str]:
    (place.tmp / "kubeconfig").write_text("clusters: [\n  - name: a\n")
    return ["--kubeconfig", str(place.tmp / "kubeconfig")]


def _unknown_context(place: Place) -> list[str]:
    return ["--kubeconfig", str(place.api.kubeconfig), "--context", "nope"]


def _server_unreachable(place: Place) -> list[str]:
    return ["--kubeconfig", str(unreachable_kubeconfig(place)), "--hosts", "local://"]


def _tls_failure(place: Place) -> list[str]:
    other_ca = make_tls(place.tmp / "other-tls").ca_cert
    write_kubeconfig(place.tmp / "kubeconfig", place.api.url, other_ca, TOKEN)
    return ["--kubeconfig", str(place.tmp / "kubeconfig"), "--hosts", "local://"]


def _expired_token(place: Place) -> list[str]:
    write_kubeconfig(place.tmp / "kubeconfig", place.api.url, place.api.tls.ca_cert, "expired")
    return ["--kubeconfig", str(place.tmp / "kubeconfig"), "--hosts", "local://"]


def _ssh_config_missing(place: Place) -> list[str]:
    kubeconfig = str(place.api.kubeconfig)
    return ["--kubeconfig", kubeconfig, "--ssh-config", str(place.tmp / "none")]


def _ssh_config_unreadable(place: Place) -> list[str]:
    return ["--kubeconfig", str(place.api.kubeconfig), "--ssh-config", str(place.tmp)]


def _unknown_host_spec(place: Place) -> list[str]:
    return ["--kubeconfig", str(place.api.kubeconfig), "--hosts", "telnet://node-1"]


def _snapshot_missing(place: Place) -> list[str]:
    return ["--from-snapshot", str(place.tmp / "none")]


def _snapshot_not_a_directory(place: Place) -> list[str]:
    (place.tmp / "file").write_text("")
    return ["--from-snapshot", str(place.tmp / "file")]


def _snapshot_empty(place: Place) -> list[str]:
    (place.tmp / "empty").mkdir()
    return ["--from-snapshot", str(place.tmp / "empty")]


def _snapshot_malformed_file(place: Place) -> list[str]:
    data = b"net.ipv4.ip_forward = 1\nthis is no sysctl line\n"
    return ["--from-snapshot", str(snapshot_with(place, "nodes/node-1/sysctl.txt", data))]


def _snapshot_binary_garbage(place: Place) -> list[str]:
    garbage = bytes(range(256)) * 8
    return ["--from-snapshot", str(snapshot_with(place, "cluster/services.json", garbage))]


def _snapshot_oversized_file(place: Place) -> list[str]:
    # The limit is lowered rather than the file made huge (bench --oversized does 400 MB).
    data = b"net.ipv4.ip_forward = 1\n" * 4000
    snapshot = snapshot_with(place, "nodes/node-1/sysctl.txt", data)
    return ["--from-snapshot", str(snapshot), "--vipcheck-max-file-size", "64K"]


def _snapshot_long_line(place: Place) -> list[str]:
    data = b"TCP 0A0A0024 9CB8 " + b"x" * 70_000 + b" SYN_RECV 51\n"
    return ["--from-snapshot", str(snapshot_with(place, "nodes/node-1/ip_vs_conn.txt", data))]


@dataclass(frozen=True, slots=True)
class BadInput:
    """One kind of bad input: how to make it, the exit code, and the line that names it."""

    id: str
    what: str
    make: Callable[[Place], list[str]]
    exit_code: int
    message: str  # a regular expression one line of the output matches


BAD_INPUTS = (
    BadInput("kubeconfig-missing", "kubeconfig file does not exist", _missing_kubeconfig, USAGE,
             r"^ERROR: kubeconfig \S+/none: no such file$"),
    BadInput("kubeconfig-unreadable", "kubeconfig is a directory", _kubeconfig_directory, USAGE,
             r"^ERROR: kubeconfig \S+: is a directory, not a file$"),
    BadInput("kubeconfig-bad-yaml", "kubeconfig is not YAML", _bad_yaml, USAGE,
             r"^ERROR: kubeconfig \S+/kubeconfig: .*(parsing|expected).*$"),
    BadInput("unknown-context", "--context names no context", _unknown_context, USAGE,
             r"^ERROR: kubeconfig \S+: no context 'nope'; contexts: vipcheck-lab$"),
    BadInput("server-unreachable", "API server refuses connections", _server_unreachable, FOUND,
             r"^the cluster could not be read: https://127\.0\.0\.1:1: cannot connect for "
             r"nodes\.json: .*Connection refused.*$"),
    BadInput("tls-failure", "API server's certificate not signed by the kubeconfig's CA",
             _tls_failure, FOUND,
             r"^the cluster could not be read: https://\S+: .*CERTIFICATE_VERIFY_FAILED.*$"),
    BadInput("expired-token", "token refused (expired or wrong)", _expired_token, FOUND,
             r"^the cluster could not be read: https://\S+: nodes\.json: 401 Unauthorized.*$"),
    BadInput("ssh-config-missing", "ssh_config does not exist", _ssh_config_missing, USAGE,
             r"^ERROR: ssh_config \S+/none: cannot read: .*No such file or directory.*$"),
    BadInput("ssh-config-unreadable", "ssh_config is a directory", _ssh_config_unreadable, USAGE,
             r"^ERROR: ssh_config \S+: cannot read: .*Is a directory.*$"),
    BadInput("unknown-host-spec", "a --hosts spec testinfra does not know", _unknown_host_spec,
             FOUND, r"^node-1 could not be observed: node-1 \(telnet://node-1\): .*telnet.*$"),
    BadInput("snapshot-missing", "--from-snapshot names nothing", _snapshot_missing, USAGE,
             r"^ERROR: --from-snapshot \S+/none: no such directory$"),
    BadInput("snapshot-not-a-directory", "--from-snapshot names a file",
             _snapshot_not_a_directory, USAGE,
             r"^ERROR: --from-snapshot \S+/file: not a directory$"),
    BadInput("snapshot-empty", "--from-snapshot names a directory without snapshot files",
             _snapshot_empty, USAGE,
             r"^ERROR: \S+/empty: no cluster/\*\.json and no nodes/<node>/ files.*$"),
    BadInput("snapshot-malformed-file", "a snapshot file that does not parse",
             _snapshot_malformed_file, FOUND,
             r"^cannot read nodes/node-1/sysctl\.txt:2: .*$"),
    BadInput("snapshot-binary-garbage", "a snapshot file of binary garbage",
             _snapshot_binary_garbage, FOUND,
             r"^cannot read cluster/services\.json:1: .*$"),
    BadInput("snapshot-oversized-file",
             "a snapshot file over --vipcheck-max-file-size (64M), one long line too",
             _snapshot_oversized_file, USAGE,
             r"^ERROR: \S+/nodes/node-1/sysctl\.txt: 94 KiB, more than the 64 KiB a snapshot "
             r"file may hold .*; check that it is the output of `sysctl -a`, or raise the limit "
             r"with --vipcheck-max-file-size 188K$"),
    BadInput("snapshot-long-line-in-a-table",
             "a connection table (streamed, not limited) with a line over 64 KiB",
             _snapshot_long_line, FOUND,
             r"^cannot read nodes/node-1/ip_vs_conn\.txt:1: a line longer than 65,536 bytes: "
             r"not a line of `cat /proc/net/ip_vs_conn`$"),
)  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    objects = api_objects(load_scenario("healthy"))
    with serve_api(tmp_path_factory.mktemp("apiserver"), objects, TOKEN) as running:
        yield running


def run_vipcheck(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    env["HOME"] = str(cwd)
    command = [
        sys.executable,
        "-m",
        "vipcheck.cli",
        *args,
        "--no-probe",
        "--vipcheck-timeout",
        "20",
    ]
    return subprocess.run(
        [*command, "-q", "-p", "no:randomly", "--vipcheck-json", str(cwd / "summary.json")],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[bad.id for bad in BAD_INPUTS])
def test_bad_input_is_one_line_with_its_exit_code(
    bad: BadInput, api: ServedApi, tmp_path: Path
) -> None:
    result = run_vipcheck(bad.make(Place(tmp_path, api)), tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == bad.exit_code, output
    pattern = re.compile(bad.message)
    assert any(pattern.match(line) for line in output.splitlines()), output


def test_the_docs_table_is_this_table() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| (.+?) \| (\d) \|", page, re.MULTILINE)
    assert [(i, what, int(code)) for i, what, code in rows] == [
        (bad.id, bad.what, bad.exit_code) for bad in BAD_INPUTS
    ]


def test_every_test_the_promises_name_exists() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", page)
    assert named
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).is_file()
        or (name and not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE))
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, (), "JSON nested too deeply to read"),
        ('{"results": [{"check": "a", "subject": "b", "node": {}, "outcome": "failed"}]}', (),
         "results[0]: node: expected a string or null"),
        ('{"results": []}' + " " * 2000, ("--vipcheck-max-file-size", "1K"),
         "2 KiB, more than the 1 KiB a summary may hold (it is read whole into memory); raise "
         "the limit with --vipcheck-max-file-size 4K"),
    ],
    ids=["nested-100k-deep", "node-not-a-string", "over-the-size-limit"],
)  # fmt: skip
def test_a_bad_baseline_is_exit_4_in_one_line_naming_it(
    tmp_path: Path, text: str, args: tuple[str, ...], message: str
) -> None:
    # Issue 23: these were an INTERNALERROR traceback, exit 3 (a bug in vipcheck), or no limit.
    baseline = tmp_path / "baseline.json"
    baseline.write_text(text)
    result = run_vipcheck(
        ["--from-snapshot", str(RECORDED), "--vipcheck-baseline", str(baseline), *args], tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == USAGE, output
    assert f"ERROR: {baseline}: {message}" in output.splitlines()
    assert "Traceback" not in output
    assert "INTERNALERROR" not in output


def test_a_waivers_file_nested_100k_deep_is_exit_4_in_one_line(tmp_path: Path) -> None:
    # Issue 23: PyYAML's RecursionError was an INTERNALERROR, exit 3.
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text("[" * 100_000 + "]" * 100_000)
    result = run_vipcheck(
        ["--from-snapshot", str(RECORDED), "--vipcheck-waivers", str(waivers)], tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == USAGE, output
    assert f"ERROR: {waivers}: not YAML vipcheck can read: nested too deeply" in output.splitlines()
    assert "INTERNALERROR" not in output
