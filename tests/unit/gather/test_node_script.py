"""The node script: POSIX, framed byte-exact, and a reason for every file a node cannot give."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.checks.test_inputs import declares
from vipcheck.checks import SYSCTL_KEYS
from vipcheck.gather.local_reader import NodeGatherRunner
from vipcheck.gather.node_script import (
    END,
    FALLBACK_FILES,
    PASTED_ONLY,
    build_node_script,
    split_node_frames,
    split_node_output,
)
from vipcheck.gather.nodes import gather_node
from vipcheck.observe import ObserveError, observe
from vipcheck.options import GatherOptions, RunOptions
from vipcheck.parse.sysctl import parse_proc_sys
from vipcheck.snapshot import NODE_FILES
from vipcheck.transport import NodeTarget, RunResult

SHELLS = [
    pytest.param(["sh"], id="sh"),
    pytest.param(["dash"], id="dash"),
    pytest.param(["busybox", "sh"], id="busybox"),
]
IPVS_FILES = {"ipvsadm-Ln.txt", "ipvsadm-timeout.txt"}
NFT_TABLE_FILES = {f"nft-{f}-kube-proxy.{s}" for f in ("ip", "ip6") for s in ("json", "txt")}
PROC_FILES = {"proc-ip_vs.txt", "ip_vs_conn.txt"}
# The script a live run sends: its nodes without `sysctl` read the catalogue's keys.
LIVE_RUN_SCRIPT = build_node_script(sysctl_keys=SYSCTL_KEYS)


def live_run_node_script() -> str:
    """The script a live run (vipcheck.observe) sends its nodes, caught at the transport seam.

    The run names one host and an absent kubeconfig: the host is gathered while the API is
    read, then the run stops on the kubeconfig.
    """
    sent: list[str] = []

    def run(self: NodeGatherRunner, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        sent.append(script)
        return RunResult(0, END + "\n", "")

    options = GatherOptions(kubeconfig="/nonexistent/kubeconfig", hosts=("ssh://node-1",))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NodeGatherRunner, "run", run)
        with pytest.raises(ObserveError, match="no such file"):
            observe(RunOptions(gather=options), lambda _line: None, SYSCTL_KEYS)
    [script] = sent
    return script


@pytest.mark.parametrize(
    ("stdout", "files", "missing"),
    [
        pytest.param(
            "===vipcheck:file=a.txt\nline 1\nline 2\n\n===vipcheck:rc=0\n",
            {"a.txt": "line 1\nline 2\n"},
            {},
            id="one-file",
        ),
        pytest.param(
            "===vipcheck:file=a.txt\nno newline\n===vipcheck:rc=0\n"
            "===vipcheck:file=b.txt\n\n===vipcheck:rc=0\n",
            {"a.txt": "no newline", "b.txt": ""},
            {},
            id="no-final-newline-and-empty",
        ),
        pytest.param(
            "===vipcheck:file=a.txt\n\n===vipcheck:error=Can't initialize ipvs: Permission denied"
            " (you must be root?)\n===vipcheck:rc=2\n"
            "===vipcheck:file=b.txt\nok\n\n===vipcheck:rc=0\n",
            {"b.txt": "ok\n"},
            {"a.txt": "Can't initialize ipvs: Permission denied (you must be root?)"},
            id="failed-command",
        ),
        pytest.param(
            "===vipcheck:file=a.txt\npartial\n\n===vipcheck:rc=1\n",
            {},
            {"a.txt": "exited 1 without a message"},
            id="failed-silently",
        ),
        pytest.param(
            "===vipcheck:missing=ipvsadm-Ln.txt:ipvsadm not installed\n"
            "===vipcheck:missing=proc-ip_vs.txt:/proc/net/ip_vs absent: ip_vs module not loaded\n",
            {},
            {
                "ipvsadm-Ln.txt": "ipvsadm not installed",
                "proc-ip_vs.txt": "/proc/net/ip_vs absent: ip_vs module not loaded",
            },
            id="missing-lines",
        ),
        pytest.param(
            "Welcome to node-1!\n===vipcheck:file=a.txt\nx\n\n===vipcheck:rc=0\n",
            {"a.txt": "x\n"},
            {},
            id="banner-before-frames",
        ),
        pytest.param(
            "===vipcheck:file=a.txt\nTCP 10.0.0.1:80 rr\nTCP 10.0",
            {},
            {"a.txt": "output cut off before its end (connection lost?)"},
            id="cut-off-in-output",
        ),
        pytest.param(
            "===vipcheck:file=a.txt\nx\n\n===vipcheck:error=boom\n",
            {},
            {"a.txt": "output cut off before its exit status (connection lost?)"},
            id="cut-off-before-status",
        ),
    ],
)
def test_split_node_output(stdout: str, files: dict[str, str], missing: dict[str, str]) -> None:
    assert split_node_output(stdout) == (files, missing)


@pytest.mark.parametrize(
    ("stdout", "complete"),
    [
        pytest.param("===vipcheck:file=a.txt\nx\n\n===vipcheck:rc=0\n===vipcheck:end\n", True),
        pytest.param("===vipcheck:missing=a.txt:why\n===vipcheck:end\nlogout\n", True),
        pytest.param("===vipcheck:file=a.txt\nx\n\n===vipcheck:rc=0\n", False),
        pytest.param("===vipcheck:file=a.txt\nx\n\n===vipcheck:rc=0\n===vipcheck:end", False),
        pytest.param("===vipcheck:file=a.txt\nx\n\n===vipcheck:rc=0\n===vipcheck:e", False),
        pytest.param("", False),
    ],
)
def test_only_the_end_marker_makes_an_output_complete(stdout: str, complete: bool) -> None:
    assert split_node_frames(stdout).complete is complete


def shell_or_skip(shell: list[str]) -> list[str]:
    found = shutil.which(shell[0])
    if found is None:
        pytest.skip(f"{shell[0]} is not installed")
    return [found, *shell[1:]]


def run_script(shell: list[str], script: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*shell_or_skip(shell), "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": path},
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_script_is_posix(shell: list[str], tmp_path: Path) -> None:
    script = tmp_path / "node.sh"
    script.write_text(LIVE_RUN_SCRIPT)
    result = subprocess.run(
        [*shell_or_skip(shell), "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_script_has_no_bashisms() -> None:
    for bashism in ("[[", "$'", "function ", "local ", "<<<", "source ", "pipefail"):
        assert bashism not in LIVE_RUN_SCRIPT


@pytest.fixture
def bin_without_ipvsadm(tmp_path: Path) -> str:
    """A PATH holding only what the script needs besides ipvsadm (sbin is appended by it)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for tool in ("sysctl", "ip", "uname", "cat"):
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found:
            (directory / tool).symlink_to(found)
    return str(directory)


@pytest.mark.parametrize("shell", SHELLS[:2])
def test_script_on_this_machine(shell: list[str], bin_without_ipvsadm: str) -> None:
    result = run_script(shell, LIVE_RUN_SCRIPT, bin_without_ipvsadm)
    assert result.returncode == 0, result.stderr
    files, missing = split_node_output(result.stdout)
    # proc-ip_vs.txt stands in for ipvsadm-Ln.txt; without ip_vs both say why they are missing.
    no_ip_vs = set() if Path("/proc/net/ip_vs").exists() else {"proc-ip_vs.txt"}
    assert set(files) | set(missing) == (set(NODE_FILES) - FALLBACK_FILES) | no_ip_vs
    assert {"sysctl.txt", "ip-addr.json", "ip-link.json", "uname.txt"} <= set(files)
    assert "net.ipv4.ip_forward = " in files["sysctl.txt"]
    assert files["ip-addr.json"].lstrip().startswith("[")
    assert files["uname.txt"] == subprocess.check_output(["uname", "-r"], text=True)
    if not Path("/proc/net/ip_vs").exists():
        for name in IPVS_FILES:
            assert missing[name] == (
                "/proc/net/ip_vs absent: ip_vs module not loaded; "
                "ipvsadm not run, as it would load it"
            )
        assert missing["proc-ip_vs.txt"] == "/proc/net/ip_vs absent: ip_vs module not loaded"
        assert missing["ip_vs_conn.txt"] == "/proc/net/ip_vs_conn absent: ip_vs module not loaded"


def test_script_under_busybox_gives_every_file_or_a_reason(bin_without_ipvsadm: str) -> None:
    # busybox sh prefers its own applets (sysctl, ip): each gives output or its error line.
    result = run_script(["busybox", "sh"], LIVE_RUN_SCRIPT, bin_without_ipvsadm)
    assert result.returncode == 0, result.stderr
    files, missing = split_node_output(result.stdout)
    # busybox's ip has no -j: the text files stand in for the JSON ones, which say why. This
    # host has no kube-proxy nftables table, so none is listed (nor missing).
    assert set(files) | set(missing) == set(NODE_FILES) - {
        "sys-class-net.txt",
        "proc-sys.txt",
        *PASTED_ONLY,
        *NFT_TABLE_FILES,
    }
    assert all(why for why in missing.values())
    assert {"uname.txt", "ip-addr.txt", "ip-link.txt"} <= set(files)


def fake_tool(directory: Path, name: str, body: str) -> None:
    tool = directory / name
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)


@pytest.mark.parametrize("shell", SHELLS)
def test_outputs_come_back_exactly(shell: list[str], tmp_path: Path) -> None:
    fake_tool(tmp_path, "exact", r"printf 'a\n\n  b\t'")
    fake_tool(tmp_path, "quiet", "exit 0")
    fake_tool(tmp_path, "noisy", "echo kept; echo 'warning: ignored' >&2")
    fake_tool(
        tmp_path,
        "denied",
        "echo 'partial'; printf 'denied: you must be root\\nmore\\n' >&2; exit 2",
    )
    script = build_node_script(
        {
            "exact.txt": "exact",
            "quiet.txt": "quiet",
            "noisy.txt": "noisy --flag",
            "denied.txt": "denied",
            "ghost.txt": "vipcheck-no-such-tool -x",
            "absent.txt": "cat /nonexistent/vipcheck",
        }
    )
    result = run_script(shell, script, f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert split_node_output(result.stdout) == (
        {"exact.txt": "a\n\n  b\t", "quiet.txt": "", "noisy.txt": "kept\n"},
        {
            "denied.txt": "denied: you must be root",
            "ghost.txt": "vipcheck-no-such-tool not installed",
            "absent.txt": "/nonexistent/vipcheck absent",
        },
    )


def old_node_bin(tmp_path: Path, *busybox_applets: str) -> str:
    """A PATH like an old node's: uname and cat, and busybox applets standing in for tools."""
    directory = tmp_path / "old-bin"
    directory.mkdir()
    for tool in ("uname", "cat"):
        found = shutil.which(tool)
        assert found is not None
        (directory / tool).symlink_to(found)
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    for applet in busybox_applets:
        (directory / applet).symlink_to(busybox)
    return str(directory)


def run_old_node(
    shell: list[str], path: str
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    result = run_script(shell, build_node_script(sysctl_keys=SYSCTL_KEYS, path_suffix=""), path)
    assert result.returncode == 0, result.stderr
    frames = split_node_frames(result.stdout)
    return frames.files, frames.missing, frames.notes


@pytest.mark.parametrize("shell", SHELLS[:2])
def test_busybox_ip_and_sysctl_give_the_text_files(shell: list[str], tmp_path: Path) -> None:
    files, missing, notes = run_old_node(shell, old_node_bin(tmp_path, "ip", "sysctl"))
    assert "ip-addr.json" not in files
    assert missing["ip-addr.json"].startswith("`ip -j` unknown (iproute2 before 4.14, or busybox)")
    assert files["ip-addr.txt"].startswith("1: lo: <LOOPBACK")
    assert "    link/loopback " in files["ip-link.txt"]
    # busybox's ip has no -d: plain `ip link show` stands in.
    assert "inet " not in files["ip-link.txt"]
    assert "net.ipv4.ip_forward = " in files["sysctl.txt"]
    assert {"sys-class-net.txt", "proc-sys.txt"}.isdisjoint(files.keys() | missing.keys())
    # busybox's sysctl -a exits 1 on a key it cannot read: the output is kept, with a note.
    if "sysctl.txt" in notes:
        assert notes["sysctl.txt"].startswith("exited 1 after printing what it could: sysctl: ")


# Not under busybox sh, whose own applets (ip, sysctl) run whatever PATH says.
@pytest.mark.parametrize("shell", SHELLS[:2])
def test_without_ip_and_sysctl_the_kernel_files_stand_in(shell: list[str], tmp_path: Path) -> None:
    files, missing, notes = run_old_node(shell, old_node_bin(tmp_path))
    assert (missing["ip-addr.txt"], missing["sysctl.txt"]) == (
        "ip not installed",
        "sysctl not installed",
    )
    assert "/sys/class/net/lo/ifindex:1\n" in files["sys-class-net.txt"]
    assert "/sys/class/net/lo/type:772\n" in files["sys-class-net.txt"]
    assert "/proc/sys/net/ipv4/conf/all/rp_filter:" in files["proc-sys.txt"]
    assert notes == {}
    # The catalogue's keys, and only those.
    read = parse_proc_sys(files["proc-sys.txt"], "proc-sys.txt").values
    assert {"net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"} <= read.keys()
    assert [key for key in read if not any(declares(p, key) for p in SYSCTL_KEYS)] == []


def test_the_sysctl_fallback_reads_the_keys_it_is_given() -> None:
    script = build_node_script(sysctl_keys=("net.ipv4.ip_forward", "net.ipv4.conf.*.rp_filter"))
    assert (
        "vipcheck_run proc-sys.txt vipcheck_grep_h /proc/sys/net/ipv4/ip_forward "
        "/proc/sys/net/ipv4/conf/*/rp_filter\n"
    ) in script
    # Without keys there is nothing to read: no proc-sys.txt, and no empty one to misread.
    assert "proc-sys.txt" not in build_node_script()
    # A key is a name, never shell: refused before it reaches a script.
    for key in ("net.ipv4.$(reboot)", "net.ipv4.a b", "ip_forward"):
        with pytest.raises(ValueError, match="sysctl key"):
            build_node_script(sysctl_keys=(key,))


def test_a_live_run_reads_the_catalogues_sysctl_keys() -> None:
    assert live_run_node_script() == LIVE_RUN_SCRIPT
    assert "/proc/sys/net/ipv4/conf/*/rp_filter" in LIVE_RUN_SCRIPT


def test_a_failing_command_keeps_its_output_only_where_partial_output_is_kept() -> None:
    stdout = (
        "===vipcheck:file=sysctl.txt\nnet.ipv4.ip_forward = 1\n"
        "\n===vipcheck:error=sysctl: error reading key 'net.ipv6.conf.all.stable_secret': "
        "Input/output error\n===vipcheck:rc=1\n"
        "===vipcheck:file=uname.txt\n6.1.0\n\n===vipcheck:error=boom\n===vipcheck:rc=1\n"
    )
    frames = split_node_frames(stdout)
    assert frames.files == {"sysctl.txt": "net.ipv4.ip_forward = 1\n"}
    assert frames.missing == {"uname.txt": "boom"}
    assert frames.notes == {
        "sysctl.txt": "exited 1 after printing what it could: sysctl: error reading key "
        "'net.ipv6.conf.all.stable_secret': Input/output error"
    }


class Cut:
    """A NodeRunner whose output is the first n bytes of a whole one: the lab's cut-output
    fault is `head -c N`, which may stop anywhere, exactly between two frames too."""

    def __init__(self, stdout: bytes, size: int) -> None:
        self.text = stdout[:size].decode(errors="replace")

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        return RunResult(0, self.text, "")


def test_the_real_output_cut_at_any_frame_boundary_or_inside_is_truncated(
    bin_without_ipvsadm: str,
) -> None:
    whole = run_script(["sh"], LIVE_RUN_SCRIPT, bin_without_ipvsadm).stdout.encode()
    target = NodeTarget("node-1", "ssh://node-1")
    node = gather_node(
        target, 5, lambda _line: None, runner=Cut(whole, len(whole)), script=LIVE_RUN_SCRIPT
    )
    assert node.error is None
    assert whole.endswith(b"===vipcheck:end\n")
    # Right after each frame's rc line and each missing line, and inside the end marker.
    frame_ends = [m.end() for m in re.finditer(rb"^===vipcheck:(rc=\d+|missing=.*)\n", whole, re.M)]
    assert len(frame_ends) >= len(set(NODE_FILES) - FALLBACK_FILES)
    sizes = [*frame_ends, len(whole) - 1, len(whole) - 5, *range(1, len(whole), 4099)]
    for size in sizes:
        node = gather_node(
            target, 5, lambda _line: None, runner=Cut(whole, size), script=LIVE_RUN_SCRIPT
        )
        assert node.error is not None, f"cut after {size} of {len(whole)} bytes read as whole"
        assert "output truncated" in node.error or "no output vipcheck can read" in node.error
        assert node.files == {}


def test_the_connection_table_is_read_once_not_again_through_ipvsadm() -> None:
    # `ipvsadm -Lnc` reads /proc/net/ip_vs_conn: a million-entry table would come back twice.
    assert "cat /proc/net/ip_vs_conn" in LIVE_RUN_SCRIPT
    assert "ipvsadm -Lnc" not in LIVE_RUN_SCRIPT
    assert "ipvsadm-Lnc.txt" not in LIVE_RUN_SCRIPT
    assert PASTED_ONLY <= FALLBACK_FILES
    # Recording the formats (fixtures.lab record) still runs every command as given.
    assert "vipcheck_run ipvsadm-Lnc.txt ipvsadm -Lnc\n" in build_node_script(fallbacks=False)


def tools_bin(directory: Path, *tools: str) -> str:
    """A PATH holding only these tools, from this machine."""
    directory.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None, tool
        (directory / tool).symlink_to(found)
    return str(directory)


@pytest.mark.parametrize("shell", SHELLS[:2])
@pytest.mark.parametrize("tools", [("dd",), ("cat",)], ids=["dd", "cat-without-dd"])
def test_small_reads_give_the_file_whole(
    shell: list[str], tools: tuple[str, ...], tmp_path: Path
) -> None:
    # /proc/net/ip_vs is read 16 bytes at a time (the lab's kernel loses services to longer
    # reads, tests/lab/test_ip_vs_reads.py); where there is no dd, cat.
    table = tmp_path / "ip_vs"
    table.write_text(
        "".join(f"TCP  0A60{i:04X}:0050 rr  \n  -> 0AF40305:1F90\n" for i in range(99))
    )
    script = build_node_script({"t.txt": f"vipcheck_small_reads {table}"})
    result = run_script(shell, script, tools_bin(tmp_path / "bin", *tools))
    files, missing = split_node_output(result.stdout)
    assert missing == {}
    assert files["t.txt"] == table.read_text()
    assert "vipcheck_run proc-ip_vs.txt vipcheck_small_reads /proc/net/ip_vs\n" in LIVE_RUN_SCRIPT
