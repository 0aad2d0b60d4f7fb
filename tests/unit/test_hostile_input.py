"""Every string an attacker controls, through every output: nothing runs, nothing raw is shown.

The attacker is a node's output, a customer's snapshot, or an object any tenant can create. The
snapshot is the recorded seed-incidents lab with hostile strings added: on node-2, interfaces
whose names Linux allows (a command substitution, terminal escapes, a bidi override) with strict
rp_filter, so their fixes name them; a Service whose name holds escapes, markup and a newline;
node-3's error file full of escapes. One real `vipcheck` run per transport replays it and writes
every output; the fix script then runs, dry and with `--apply`, against stub `ssh`, `docker` and
node tools that record each argv (the `ssh` stub hands its command to `sh -c`, as sshd does).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from vipcheck.untrusted import printable

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "fixtures" / "recorded" / "seed-incidents"

# Interface names Linux allows that a shell or a terminal would act on (each at most 15 bytes).
SUBSTITUTION = "$(touch${IFS}P)"
RETITLE = "t\x1b]0;x\x07"
CLEAR = "\x1b[2Jc"
BIDI = "\u202eab"
HOSTILE_INTERFACES = (SUBSTITUTION, RETITLE, CLEAR, BIDI)
HOSTILE_SERVICE = "x<b>\x1b]0;svc\x07\ntouch Q"
HOSTILE_ERROR = "ssh: \x1b]0;owned\x07\x1b[2J\x9b31m connection refused \u202e\n"
# What must never reach a terminal raw: ESC, BEL, CSI (C1), the bidi override.
RAW = re.compile("[\x1b\x07\x9b\u202e]")
# Node tools the stubs stand in for; `touch` too, so a command that escaped its quoting shows.
NODE_TOOLS = ("sysctl", "ipvsadm", "modprobe", "ip", "touch")


@dataclass(frozen=True, slots=True)
class Run:
    """One vipcheck run over the hostile snapshot: its terminal output and where it wrote."""

    out: Path
    terminal: str
    returncode: int

    @property
    def summary(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return loaded

    @property
    def script(self) -> Path:
        return self.out / "fix.sh"


def hostile_snapshot(directory: Path) -> Path:
    """A copy of the recorded seed-incidents snapshot carrying the hostile strings."""
    snapshot = directory / "snapshot"
    shutil.copytree(RECORDED, snapshot)
    node = snapshot / "nodes" / "node-2"
    links = json.loads((node / "ip-link.json").read_text())
    addrs = json.loads((node / "ip-addr.json").read_text())
    sysctl = (node / "sysctl.txt").read_text()
    for index, name in enumerate(HOSTILE_INTERFACES, start=100):
        tunnel = {
            "ifindex": index,
            "ifname": name,
            "flags": ["NOARP", "UP", "LOWER_UP"],
            "operstate": "UNKNOWN",
            "link_type": "ipip",
        }
        links.append({**tunnel, "linkinfo": {"info_kind": "ipip"}})
        addrs.append({**tunnel, "addr_info": []})
        sysctl += f"net.ipv4.conf.{name.replace('.', '/')}.rp_filter = 1\n"
    (node / "ip-link.json").write_text(json.dumps(links))
    (node / "ip-addr.json").write_text(json.dumps(addrs))
    (node / "sysctl.txt").write_text(sysctl)
    services = json.loads((snapshot / "cluster" / "services.json").read_text())
    evil = json.loads(json.dumps(services["items"][-1]))
    evil["metadata"] |= {"name": HOSTILE_SERVICE, "uid": "0000-evil"}
    evil["spec"] |= {"clusterIP": "10.96.0.250", "clusterIPs": ["10.96.0.250"], "type": "ClusterIP"}
    del evil["spec"]["ports"][0]["nodePort"]
    services["items"].append(evil)
    (snapshot / "cluster" / "services.json").write_text(json.dumps(services))
    (snapshot / "nodes" / "node-3" / "error.txt").write_text(HOSTILE_ERROR)
    return snapshot


def write_stubs(directory: Path) -> tuple[Path, Path]:
    """bin/: ssh, docker, kubectl and sudo as a person's machine has them, each recording its argv
    and passing the command on as the real one would; the node tools record and do nothing."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    log = directory / "calls.jsonl"
    record = textwrap.dedent(
        f"""\
        #!{sys.executable}
        import json, os, subprocess, sys
        def record(*argv):
            with open({str(log)!r}, "a") as out:
                out.write(json.dumps([os.environ.get("STUB_NODE", "local"), *argv]) + "\\n")
        """
    )
    ssh = record + textwrap.dedent(
        """\
        # ssh's own parsing (ssh.c): options, the host, then options again unless `--` came
        # before the host; the rest is the remote command, its words joined with spaces for the
        # remote user's shell. An option ssh was not given by the fix script is an attack.
        args, terminated = sys.argv[1:], False
        def options():
            global terminated
            while args and not terminated and args[0].startswith("-"):
                option = args.pop(0)
                if option == "--":
                    terminated = True
                elif option in ("-F", "-i", "-p", "-l", "-J"):
                    args.pop(0)
                else:
                    record("ssh-option", option)
                    sys.exit(255)
        options()
        host = args.pop(0)
        options()
        remote = " ".join(args)
        record("ssh", host, remote)
        env = dict(os.environ, STUB_NODE=host)
        sys.exit(subprocess.run(["sh", "-c", remote], env=env).returncode)
        """
    )
    docker = record + textwrap.dedent(
        """\
        # docker exec [--] NAME ARGV...: runs ARGV in the container, no shell in between.
        args = sys.argv[1:]
        record("docker", *args)
        assert args[0] == "exec", args
        args = args[1:]
        while args[0].startswith("-") and args[0] != "--":
            args = args[2:] if args[0] in ("-u", "--user") else args[1:]
        if args[0] == "--":
            args = args[1:]
        env = dict(os.environ, STUB_NODE=args[0])
        sys.exit(subprocess.run(args[1:], env=env).returncode)
        """
    )
    passthrough = record + textwrap.dedent(
        """\
        record(os.path.basename(sys.argv[0]), *sys.argv[1:])
        args = sys.argv[1:]
        if args and args[0] == "--":
            args = args[1:]
        sys.exit(subprocess.run(args).returncode if args else 0)
        """
    )
    tool = record + "record(os.path.basename(sys.argv[0]), *sys.argv[1:])\n"
    scripts = {"ssh": ssh, "docker": docker, "sudo": passthrough, "kubectl": tool}
    scripts |= dict.fromkeys(NODE_TOOLS, tool)
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir, log


def vipcheck(snapshot: Path, out: Path, *args: str) -> Run:
    """The real command on the snapshot, every output on, as a person's terminal shows it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    env["HOME"] = str(out)
    result = subprocess.run(
        [
            sys.executable, "-m", "vipcheck.cli", "--from-snapshot", str(snapshot), *args,
            "-v", "-rA", "--color=no", "-p", "no:cacheprovider",
            "--vipcheck-json", str(out / "summary.json"),
            "--junitxml", str(out / "junit.xml"),
            "--vipcheck-html", str(out / "report.html"),
            "--vipcheck-fix-script", str(out / "fix.sh"),
        ],
        capture_output=True, timeout=300, check=False, cwd=out, env=env,
    )  # fmt: skip
    terminal = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    return Run(out, terminal, result.returncode)


TRANSPORTS = {
    # How the nodes were reached, as the fix script must reach them again.
    "ssh-config": lambda tmp: ["--ssh-config", str(ssh_config(tmp))],
    "docker": lambda tmp: [
        "--hosts",
        "docker://node-2",
        "--vipcheck-node",
        "docker://node-2=node-2",
    ],
    "local": lambda tmp: ["--hosts", "local://", "--vipcheck-node", "local://=node-2"],
}


def ssh_config(directory: Path) -> Path:
    path = directory / "ssh_config"
    path.write_text("Host node-*\n    User root\n")
    return path


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp(f"hostile-{request.param}")
    out = tmp / "out"
    out.mkdir()
    return vipcheck(hostile_snapshot(tmp), out, *TRANSPORTS[request.param](tmp))


def test_the_run_judges_the_hostile_snapshot_without_a_traceback(run: Run) -> None:
    assert run.returncode == 1, run.terminal
    assert "Traceback" not in run.terminal, run.terminal
    subjects = {record["subject"] for record in run.summary["results"]}
    for name in HOSTILE_INTERFACES:
        assert f"node-2/{name}" in subjects  # the JSON keeps the names as they are (escaped)


def test_nothing_raw_reaches_the_terminal(run: Run) -> None:
    assert RAW.findall(run.terminal) == [], "raw control characters in the terminal output"
    assert "\\x1b]0;x\\x07" in run.terminal  # the person still sees what the node holds
    assert "\\u202e" in run.terminal


def test_junit_and_html_hold_no_raw_control_character(run: Run) -> None:
    ElementTree.parse(run.out / "junit.xml")  # noqa: S314 (pytest's own file, well-formed?)
    assert RAW.findall((run.out / "junit.xml").read_text(errors="replace")) == []
    html = (run.out / "report.html").read_text()
    assert "x<b>" not in html
    assert "x&lt;b&gt;" in html


def test_the_fix_script_is_printable_text_with_no_line_a_name_wrote(run: Run) -> None:
    text = run.script.read_text()
    assert RAW.findall(text) == []
    assert not any(line.lstrip().startswith("touch") for line in text.splitlines())


@pytest.fixture
def stubs(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    bin_dir, log = write_stubs(tmp_path)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(tmp_path))
    workdir = tmp_path / "work"
    workdir.mkdir()
    return env, log, workdir


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_a_dry_run_runs_nothing_and_prints_no_raw_byte(
    run: Run, stubs: tuple[dict[str, str], Path, Path], shell: str
) -> None:
    env, log, workdir = stubs
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    result = subprocess.run(
        [shell, str(run.script)], capture_output=True, cwd=workdir, env=env, check=False
    )
    shown = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    assert result.returncode == 0, shown
    assert calls(log) == []
    assert list(workdir.iterdir()) == []
    assert RAW.findall(shown) == []
    assert "would run:" in shown


def intended(summary: dict[str, Any]) -> set[tuple[str, tuple[str, ...]]]:
    """Every (node, argv) the summary's failures ask to run."""
    wanted = set()
    for record in summary["results"]:
        if record["outcome"] not in ("failed", "known"):
            continue
        for violation in record.get("violations") or ():
            node = violation.get("node") or record.get("node")
            for argv in violation.get("commands") or ():
                assert isinstance(argv, list), f"a command is not an argument list: {argv!r}"
                wanted.add((node, tuple(argv)))
    return wanted


def runnable(wanted: set[tuple[str, tuple[str, ...]]]) -> set[tuple[str, tuple[str, ...]]]:
    """The commands a script may run: one a terminal would act on is left to a person."""
    return {(node, argv) for node, argv in wanted if not any(RAW.search(word) for word in argv)}


def test_apply_runs_exactly_the_intended_argv_on_each_node(
    run: Run, stubs: tuple[dict[str, str], Path, Path]
) -> None:
    env, log, workdir = stubs
    result = subprocess.run(
        ["sh", str(run.script), "--apply"], capture_output=True, cwd=workdir, env=env, check=False
    )
    shown = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    assert result.returncode == 0, shown
    assert RAW.findall(shown) == []
    node_calls = {
        ("node-2" if node == "local" else node, tuple(argv))
        for node, tool, *argv in calls(log)
        if tool in NODE_TOOLS
        for argv in [[tool, *argv]]
    }
    wanted = intended(run.summary)
    assert any(SUBSTITUTION in " ".join(argv) for _, argv in runnable(wanted))
    assert node_calls == runnable(wanted)
    script = run.script.read_text()
    for _, argv in wanted - runnable(wanted):  # listed for a person, shown escaped
        assert printable(shlex.join(argv), one_line=True) in script
    assert not any(tool == "touch" for _, tool, *_ in calls(log))
    assert not any(tool == "ssh-option" for _, tool, *_ in calls(log))
    assert list(workdir.iterdir()) == []


def _node_directory(name: str) -> Any:
    def forge(snapshot: Path) -> None:
        (snapshot / "nodes" / "node-2").rename(snapshot / "nodes" / name)

    return forge


def _endpoint_address(address: str) -> Any:
    def forge(snapshot: Path) -> None:
        path = snapshot / "cluster" / "endpointslices.json"
        slices = json.loads(path.read_text())
        slices["items"][0]["endpoints"][0]["addresses"] = [address]
        path.write_text(json.dumps(slices))

    return forge


def _interface_name(name: str) -> Any:
    def forge(snapshot: Path) -> None:
        for file in ("ip-link.json", "ip-addr.json"):
            path = snapshot / "nodes" / "node-2" / file
            path.write_text(path.read_text().replace('"tunl0"', json.dumps(name)))

    return forge


# Strings no node, kubelet or API server writes: a forged snapshot's. Each is refused where it
# enters (exit 4 for the snapshot's own layout, ERROR items for a file's content), never carried.
FORGED = {
    "node-dir-newline": _node_directory("n\ntouch PWNED\n#"),
    "node-dir-option": _node_directory("-oProxyCommand=touch P"),
    "endpoint-zone": _endpoint_address("fd00::1%$(touch${IFS}P)"),
    "interface-newline": _interface_name("x\ntouch P"),
    "interface-slash": _interface_name("a/../../b"),
}


@pytest.mark.parametrize("forge", FORGED.values(), ids=FORGED.keys())
def test_forged_names_are_refused_where_they_enter(
    forge: Any, tmp_path: Path, stubs: tuple[dict[str, str], Path, Path]
) -> None:
    env, log, workdir = stubs
    snapshot = tmp_path / "snapshot"
    shutil.copytree(RECORDED, snapshot)
    forge(snapshot)
    out = tmp_path / "out"
    out.mkdir()
    run = vipcheck(snapshot, out, "--ssh-config", str(ssh_config(tmp_path)))
    assert run.returncode in (1, 4), run.terminal
    assert "Traceback" not in run.terminal
    assert RAW.findall(run.terminal) == []
    if run.returncode == 4:
        assert not run.script.exists()
        return
    wanted = intended(run.summary)
    assert not any("%" in word or "\n" in word for _, argv in wanted for word in argv)
    for args in ([], ["--apply"]):
        subprocess.run(["sh", str(run.script), *args], cwd=workdir, env=env, check=False)
    assert not any(tool in ("touch", "ssh-option") for _, tool, *_ in calls(log))
    assert list(workdir.iterdir()) == []
