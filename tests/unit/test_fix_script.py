"""The fix script: grouped per node, reached as vipcheck reached it, inert without --apply.

Names in it come from nodes, snapshots and the API, so the hostile ones get a harness: stub
`ssh`, `docker`, `kubectl`, `sudo` and node tools on PATH record every call, and the ssh stub
hands its remote command to `sh -c` as sshd does, so a test sees exactly what the node ran.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import LINUX_INTERFACE_NAMES
from vipcheck.checks.rp_filter import rp_filter_key
from vipcheck.cli import SUITES_DIR
from vipcheck.fix_script import NotRunnable, _comment, node_argv, render_fix_script
from vipcheck.transport import NodeTarget
from vipcheck.untrusted import printable

pytest_plugins = ["pytester"]

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded" / "seed-incidents"
IN_CI = bool(os.environ.get("VIPCHECK_REQUIRE_LAB")) or os.environ.get("CI") == "true"
SHELLS = ["sh", "dash", "bash"]


def shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        if IN_CI:
            pytest.fail("shellcheck is missing in CI (make deps installs it)", pytrace=False)
        pytest.skip("shellcheck is not installed (make deps installs it)")
    result = subprocess.run(
        ["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


SYSCTL = ("sysctl", "-w", "a=2")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (NodeTarget("node-2", "ssh://node-2", ssh_config="/lab/ssh_config"),
         ["ssh", "-F", "/lab/ssh_config", "--", "node-2", "sysctl -w a=2"]),
        (NodeTarget("node-2", "ssh://root@10.0.0.12:2222", ssh_identity_file="/k"),
         ["ssh", "-i", "/k", "-p", "2222", "--", "root@10.0.0.12", "sysctl -w a=2"]),
        (NodeTarget("node-2", "docker://kind-worker"),
         ["docker", "exec", "--", "kind-worker", "sysctl", "-w", "a=2"]),
        (NodeTarget("node-2", "podman://root@kind-worker"),
         ["podman", "exec", "-u", "root", "--", "kind-worker", "sysctl", "-w", "a=2"]),
        (NodeTarget("node-2", "ssh://admin@node-2?sudo=true"),
         ["ssh", "--", "admin@node-2", "sudo -- sysctl -w a=2"]),
        (NodeTarget("node-2", "10.0.0.12", connection="ssh"),
         ["ssh", "--", "10.0.0.12", "sysctl -w a=2"]),
        (NodeTarget("node-2", "kubectl://debug-node-2?namespace=kube-system&container=c"),
         ["kubectl", "exec", "--namespace=kube-system", "--container=c", "debug-node-2", "--",
          "sysctl", "-w", "a=2"]),
        (NodeTarget("node-2", "local://"), ["sysctl", "-w", "a=2"]),
        (NodeTarget("node-2", "local://", sudo=True), ["sudo", "--", "sysctl", "-w", "a=2"]),
        (None, ["ssh", "--", "node-2", "sysctl -w a=2"]),
    ],
)  # fmt: skip
def test_node_commands_go_over_the_transport_the_user_gave(
    target: NodeTarget | None, expected: list[str]
) -> None:
    assert node_argv("node-2", target, SYSCTL) == expected


@pytest.mark.parametrize(
    ("node", "target", "why"),
    [
        ("n\ntouch PWNED\n#", None, "control character or line break"),
        ("node-2", NodeTarget("node-2", "ssh://node-2\n"), "control character or line break"),
        ("node-2", NodeTarget("node-2", "ssh://node-2", ssh_config="/c\x1b[2J"), "control"),
        ("node-2", NodeTarget("node-2", "kubectl://-x"), "starts with '-'"),
        ("node-2", NodeTarget("node-2", "ssh://node-2:port"), "does not parse"),
    ],
)  # fmt: skip
def test_a_node_or_host_no_script_may_hold_is_not_runnable(
    node: str, target: NodeTarget | None, why: str
) -> None:
    with pytest.raises(NotRunnable, match=why):
        node_argv(node, target, SYSCTL)


def test_a_command_with_a_control_character_is_not_runnable() -> None:
    with pytest.raises(NotRunnable):
        node_argv("node-2", None, ("sysctl", "-w", "net.ipv4.conf.\x1b]0;t\x07.rp_filter=2"))


def test_a_comment_is_one_printable_line_whatever_it_is_given() -> None:
    assert _comment("fixes a\nrm -rf /\r#\x1b[2J\u202e\udcff") == (
        "# fixes a\\nrm -rf /\\x0d#\\x1b[2J\\u202e\\udcff"
    )


def test_the_header_names_the_target_and_time_on_one_line_each() -> None:
    text = render_fix_script({"results": []}, {}, generated="now\nx", target="lab\ntouch T")
    assert "# vipcheck fix script, written now\\nx for lab\\ntouch T." in text.splitlines()
    assert all(printable(line, one_line=True) == line for line in text.splitlines())


def record(check: str, subject: str, node: str | None, outcome: str, **violation: Any) -> Any:
    return {
        "check": check,
        "subject": subject,
        "node": node,
        "outcome": outcome,
        "violations": [{"node": node, "observed": "wrong", "fix": "fix it", **violation}],
    }


def summary_with(marker: Path) -> dict[str, Any]:
    return {
        "results": [
            record("rp-filter-not-strict", "node-2/tunl0", "node-2", "failed",
                   commands=[["touch", str(marker)]]),
            record("rp-filter-not-strict", "node-2/eth0", "node-2", "failed",
                   commands=[["touch", str(marker)]]),  # the same command: run once, two comments
            record("ipvs-tcpfin-timeout", "node-1", "node-1", "failed",
                   commands=[["ipvsadm", "--set", "0", "30", "0"]],
                   cluster_commands=[["kubectl", "-n", "kube-system", "edit", "configmap",
                                      "kube-proxy"]]),
            record("ip-forward-enabled", "node-3", "node-3", "waived",
                   commands=[["sysctl", "-w", "net.ipv4.ip_forward=1"]]),
            record("vip-handshake", "default/api:80/TCP", None, "failed"),
            record("ip-forward-enabled", "node-1", "node-1", "passed"),
        ]
    }  # fmt: skip


def test_the_script_groups_per_node_comments_each_fix_and_leaves_waivers_alone(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "applied"
    text = render_fix_script(
        summary_with(marker),
        {"node-2": NodeTarget("node-2", "local://")},
        generated="2026-11-30T12:00:00+00:00",
        target="lab",
    )
    assert text.startswith("#!/bin/sh\n")
    node_1, node_2 = text.index("# --- node-1"), text.index("# --- node-2")
    assert node_1 < text.index("run ssh -- node-1 'ipvsadm --set 0 30 0'") < node_2
    assert text.count(f"run touch {marker}") == 1
    assert "# fixes rp-filter-not-strict node-2/tunl0: wrong" in text
    assert "# fixes rp-filter-not-strict node-2/eth0: wrong" in text
    assert "review 'kubectl -n kube-system edit configmap kube-proxy'" in text
    assert "run kubectl" not in text
    assert "ip_forward" not in text  # waived: accepted, not fixed
    assert "# vip-handshake default/api:80/TCP: wrong" in text
    script = tmp_path / "fix.sh"
    script.write_text(text)
    shellcheck(script)

    dry = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
    assert dry.returncode == 0, dry.stderr
    assert f"would run: touch {marker}" in dry.stdout
    assert (
        "review, then run yourself: kubectl -n kube-system edit configmap kube-proxy" in dry.stdout
    )
    assert not marker.exists(), "without --apply nothing runs"

    bad = subprocess.run(["sh", str(script), "--yes"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert not marker.exists()


def test_apply_runs_the_node_commands_and_fails_when_one_fails(tmp_path: Path) -> None:
    marker = tmp_path / "applied"
    summary = summary_with(marker)
    summary["results"] = summary["results"][:2]
    script = tmp_path / "fix.sh"
    targets = {"node-2": NodeTarget("node-2", "local://")}
    script.write_text(render_fix_script(summary, targets, generated="now", target="lab"))
    applied = subprocess.run(
        ["sh", str(script), "--apply"], capture_output=True, text=True, check=False
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert marker.exists()
    summary["results"][0]["violations"][0]["commands"] = [["false", "it's"]]
    script.write_text(render_fix_script(summary, targets, generated="now", target="lab"))
    failing = subprocess.run(
        ["sh", str(script), "--apply"], capture_output=True, text=True, check=False
    )
    assert failing.returncode == 1
    assert "+ false 'it'\"'\"'s'" in failing.stdout
    assert "FAILED: false 'it'\"'\"'s'" in failing.stderr
    assert "done: 1 command(s) failed" in failing.stdout


def test_vipcheck_writes_the_script_reaching_nodes_through_the_users_ssh_config(
    pytester: pytest.Pytester,
) -> None:
    ssh_config = pytester.path / "ssh_config"
    ssh_config.write_text("".join(f"Host node-{n}\n  Port 220{n}\n" for n in (1, 2, 3)))
    result = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(RECORDED),
        "--ssh-config", str(ssh_config), "--vipcheck-fix-script", "fix.sh",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["vipcheck: fix script: fix.sh (review it;*--apply)"])
    script = pytester.path / "fix.sh"
    text = script.read_text()
    assert os.access(script, os.X_OK)
    stale = "ipvsadm -d -t 10.96.0.20:6379 -r 10.244.3.10:80"
    for node in ("node-1", "node-2", "node-3"):
        assert f"run ssh -F {ssh_config} -- {node} '{stale}'" in text
    assert f"run ssh -F {ssh_config} -- node-2 'sysctl -w net.ipv4.conf.all.rp_filter=2'" in text
    assert "# fixes ipvs-real-servers-match-endpoints default/redis:6379/TCP: " in text
    assert "# fixes rp-filter-not-strict node-2/tunl0: " in text
    assert (
        "review 'kubectl -n kube-system delete pod -l k8s-app=kube-proxy "
        "--field-selector spec.nodeName=node-2'"
    ) in text
    shellcheck(script)


def test_docker_hosts_get_docker_exec(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(RECORDED),
        "--hosts", "docker://node-1,docker://node-2,docker://node-3", "-k", "rp_filter",
        "--vipcheck-fix-script", "fix.sh",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = (pytester.path / "fix.sh").read_text()
    assert "run docker exec -- node-2 sysctl -w net.ipv4.conf.all.rp_filter=2" in text


# --- hostile names: what reaches the node, with ssh, docker, kubectl, sudo and tools stubbed ----

# Each stub appends one record of its argv (count, program, arguments; NUL-terminated) to
# $ARGV_LOG, then does what the real tool does with the rest of its arguments.
STUB = """#!/bin/sh
printf '%s\\0' "$#" "${0##*/}" "$@" >> "$ARGV_LOG"
"""
AFTER_DASHES = (
    'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do shift; done\n[ "$#" -gt 0 ] || exit 97\nshift\n'
)
STUBS = {
    # sshd hands the remote command to the user's shell: `sh -c` on the joined arguments.
    "ssh": AFTER_DASHES + 'shift\nexec sh -c "$*"\n',
    "docker": AFTER_DASHES + 'shift\nexec "$@"\n',
    "podman": AFTER_DASHES + 'shift\nexec "$@"\n',
    "kubectl": AFTER_DASHES + 'exec "$@"\n',
    "sudo": AFTER_DASHES + 'exec "$@"\n',
    "sysctl": "",
    "ipvsadm": "",
    "id": "",
}
TRANSPORTS = {
    "ssh-config": NodeTarget("node-2", "ssh://node-2", ssh_config="/lab/ssh config"),
    "ssh-sudo": NodeTarget("node-2", "ssh://admin@node-2?sudo=true"),
    "docker": NodeTarget("node-2", "docker://kind-worker"),
    "podman-sudo": NodeTarget("node-2", "podman://kind-worker", sudo=True),
    "kubectl": NodeTarget("node-2", "kubectl://debug-node-2?namespace=kube-system"),
    "local": NodeTarget("node-2", "local://"),
    "local-sudo": NodeTarget("node-2", "local://?sudo=true"),
}
# Interface names Linux allows (`ip link add NAME type dummy`), and an IPv6 zone Python accepts.
HOSTILE_INTERFACES = ["$(touch${IFS}P)", "`touch Q`;x", "a'b\"c|d&", "-e;id"]
HOSTILE_COMMANDS = [
    *(("sysctl", "-w", f"{rp_filter_key(name)}=2") for name in HOSTILE_INTERFACES),
    ("ipvsadm", "-a", "-t", "10.96.0.20:6379", "-r", "[fd00::1%$(id)]:6379", "-m", "-w", "1"),
]


class Stubs:
    """A PATH of recording stubs and an empty working directory the script runs in."""

    def __init__(self, root: Path) -> None:
        self.bin, self.work, self.log = root / "bin", root / "work", root / "argv.log"
        self.bin.mkdir()
        self.work.mkdir()
        for name, behaviour in STUBS.items():
            stub = self.bin / name
            stub.write_text(STUB + behaviour)
            stub.chmod(0o755)

    def run(self, shell: str, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "ARGV_LOG": str(self.log),
            "HOME": str(self.work),
        }
        return subprocess.run(
            [shell, str(script), *args],
            capture_output=True, text=True, check=False, cwd=self.work, env=env, timeout=60,
        )  # fmt: skip

    def calls(self) -> list[list[str]]:
        """Every recorded call, in order: [program, *arguments]."""
        if not self.log.exists():
            return []
        fields = [field.decode() for field in self.log.read_bytes().split(b"\0")[:-1]]
        records = []
        while fields:
            count = int(fields.pop(0))
            records.append(fields[: count + 1])
            del fields[: count + 1]
        return records

    def created(self) -> list[str]:
        """What anything the script ran left behind: nothing, if only the stubs ran."""
        return sorted(path.name for path in self.work.rglob("*"))


@pytest.fixture
def stubs(tmp_path: Path) -> Stubs:
    return Stubs(tmp_path)


def hostile_summary(commands: list[tuple[str, ...]], node: str = "node-2") -> dict[str, Any]:
    return {
        "results": [
            record("rp-filter-not-strict", f"{node}/x", node, "failed",
                   commands=[list(argv) for argv in commands],
                   cluster_commands=[["kubectl", "delete", "pod",
                                      "--field-selector", f"spec.nodeName={node}"]]),
        ]
    }  # fmt: skip


def write_script(path: Path, summary: dict[str, Any], targets: dict[str, NodeTarget]) -> Path:
    text = render_fix_script(json.loads(json.dumps(summary)), targets, generated="now", target="t")
    path.write_text(text)
    return path


def uses_sudo(target: NodeTarget) -> bool:
    return target.sudo or "sudo=true" in target.spec


def node_side(target: NodeTarget, command: tuple[str, ...]) -> list[list[str]]:
    """The calls one command makes: the transport (its own argv), sudo, then the node's tool."""
    transport = [] if target.spec.startswith("local://") else [node_argv("node-2", target, command)]
    sudo = [["sudo", "--", *command]] if uses_sudo(target) else []
    return [*transport, *sudo, list(command)]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hostile_names_reach_the_node_as_exactly_the_intended_argv(
    stubs: Stubs, tmp_path: Path, transport: str, shell: str
) -> None:
    target = TRANSPORTS[transport]
    script = write_script(
        tmp_path / "fix.sh", hostile_summary(HOSTILE_COMMANDS), {"node-2": target}
    )
    shellcheck(script)
    lines = [node_argv("node-2", target, command) for command in HOSTILE_COMMANDS]

    dry = stubs.run(shell, script)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert stubs.calls() == [], "without --apply nothing runs"
    assert [f"would run: {shlex.join(line)}" for line in lines] == [
        line for line in dry.stdout.splitlines() if line.startswith("would run: ")
    ]

    applied = stubs.run(shell, script, "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    expected = [call for command in HOSTILE_COMMANDS for call in node_side(target, command)]
    assert stubs.calls() == expected
    assert stubs.created() == []
    assert [f"+ {shlex.join(line)}" for line in lines] == [
        line for line in applied.stdout.splitlines() if line.startswith("+ ")
    ]


def test_an_ssh_host_is_never_an_option_and_a_review_line_is_quoted(
    stubs: Stubs, tmp_path: Path
) -> None:
    node = "-oProxyCommand=touch PWNED"
    command = ("sysctl", "-w", "net.ipv4.conf.all.rp_filter=2")
    script = write_script(tmp_path / "fix.sh", hostile_summary([command], node=node), {})
    text = script.read_text()
    assert "run ssh -- '-oProxyCommand=touch PWNED' 'sysctl -w net.ipv4.conf.all.rp_filter=2'" in (
        text
    )
    assert (
        "review 'kubectl delete pod --field-selector '\"'\"'spec.nodeName=-oProxyCommand=touch "
        "PWNED'\"'\"''"
    ) in text
    for shell in SHELLS:
        dry = stubs.run(shell, script)
        assert (
            "review, then run yourself: kubectl delete pod --field-selector "
            "'spec.nodeName=-oProxyCommand=touch PWNED'"
        ) in dry.stdout
        applied = stubs.run(shell, script, "--apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
    assert stubs.calls() == 3 * [["ssh", "--", node, shlex.join(command)], list(command)]
    assert stubs.created() == []


@pytest.mark.parametrize("shell", SHELLS)
def test_a_node_named_with_line_breaks_runs_nothing_even_dry(
    stubs: Stubs, tmp_path: Path, shell: str
) -> None:
    node = "n\ntouch PWNED\n#"
    command = ("sysctl", "-w", "net.ipv4.conf.all.rp_filter=2")
    summary = hostile_summary([command], node=node)
    summary["results"][0]["violations"][0]["observed"] = "x\ntouch OBSERVED\n"
    for targets in ({}, {node: NodeTarget(node, "local://")}):
        script = write_script(tmp_path / "fix.sh", summary, targets)
        text = script.read_text()
        assert all(printable(line, one_line=True) == line for line in text.splitlines())
        assert not [line for line in text.splitlines() if line.startswith(("run ", "review "))]
        assert "# rp-filter-not-strict n\\ntouch PWNED\\n#/x: x\\ntouch OBSERVED\\n: not run " in (
            text
        )
        for args in ((), ("--apply",)):
            result = stubs.run(shell, script, *args)
            assert result.returncode == 0, result.stdout + result.stderr
    assert stubs.calls() == []
    assert stubs.created() == []


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failure_text_with_a_line_break_stays_in_its_comment(
    stubs: Stubs, tmp_path: Path, shell: str
) -> None:
    summary = hostile_summary([("ipvsadm", "-Ln")])
    summary["results"][0]["check"] = "c\ntouch CHECK"
    summary["results"][0]["violations"][0]["observed"] = "x\ntouch OBSERVED\r\n#"
    script = write_script(
        tmp_path / "fix.sh", summary, {"node-2": NodeTarget("node-2", "local://")}
    )
    text = script.read_text()
    assert "# fixes c\\ntouch CHECK node-2/x: x\\ntouch OBSERVED\\x0d\\n#" in text
    for args in ((), ("--apply",)):
        assert stubs.run(shell, script, *args).returncode == 0
    assert stubs.calls() == [["ipvsadm", "-Ln"]]
    assert stubs.created() == []


def test_a_command_a_terminal_would_act_on_is_listed_escaped_not_run(tmp_path: Path) -> None:
    command = ("sysctl", "-w", "net.ipv4.conf.\x1b]0;t\x07.rp_filter=2")
    summary = hostile_summary([command, ("ipvsadm", "-Ln")])
    summary["results"][0]["violations"][0]["cluster_commands"] = [["kubectl", "x\ny"]]
    text = write_script(tmp_path / "fix.sh", summary, {}).read_text()
    assert all(printable(line, one_line=True) == line for line in text.splitlines())
    assert "run ssh -- node-2 'ipvsadm -Ln'" in text
    assert "rp_filter=2" not in "".join(line for line in text.splitlines() if line[:1] != "#")
    assert (
        "# rp-filter-not-strict node-2/x: wrong: not run on node-2: sysctl -w "
        "'net.ipv4.conf.\\x1b]0;t\\x07.rp_filter=2': a control character or line break"
    ) in text
    assert "# rp-filter-not-strict node-2/x: wrong: not printed for review: kubectl 'x\\ny'" in text


@given(LINUX_INTERFACE_NAMES)
def test_the_nodes_shell_rebuilds_exactly_the_argv_for_any_interface_name(name: str) -> None:
    command = ("sysctl", "-w", f"{rp_filter_key(name)}=2")
    for target in TRANSPORTS.values():
        try:
            line = node_argv("node-2", target, command)
        except NotRunnable:
            assert printable(name, one_line=True) != name
            continue
        if line[0] == "ssh":
            assert shlex.split(line[-1]) == [
                *(["sudo", "--"] if uses_sudo(target) else []),
                *command,
            ]
        else:
            assert line[-len(command) :] == list(command)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=LINUX_INTERFACE_NAMES.filter(lambda name: printable(name, one_line=True) == name))
def test_a_real_shell_agrees_for_a_sample_of_names(tmp_path: Path, name: str) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    stubs = Stubs(root)
    command = ("sysctl", "-w", f"{rp_filter_key(name)}=2")
    target = TRANSPORTS["ssh-config"]
    script = write_script(root / "fix.sh", hostile_summary([command]), {"node-2": target})
    applied = stubs.run("dash", script, "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert stubs.calls() == node_side(target, command)
    assert stubs.created() == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cf", "Zl", "Zp"])),
        min_size=1,
        max_size=4,
    )
)
def test_the_preview_quotes_each_argument_as_shlex_does(tmp_path: Path, argv: list[str]) -> None:
    summary = hostile_summary([("true", *argv)])
    script = write_script(
        tmp_path / "fix.sh", summary, {"node-2": NodeTarget("node-2", "local://")}
    )
    for shell in ("dash", "bash"):
        dry = subprocess.run([shell, str(script)], capture_output=True, text=True, check=False)
        assert f"would run: {shlex.join(['true', *argv])}\n" in dry.stdout, dry.stderr


def hostile_snapshot(root: Path, interface: str) -> Path:
    """The recorded snapshot with a tunnel on node-2 named `interface`, rp_filter strict."""
    snapshot = root / "snapshot"
    shutil.copytree(RECORDED, snapshot)
    node = snapshot / "nodes" / "node-2"
    for name in ("ip-link.json", "ip-addr.json"):
        document = json.loads((node / name).read_text())
        tunnel = next(entry for entry in document if entry["ifname"] == "tunl0")
        document.append({**tunnel, "ifname": interface, "ifindex": 99})
        (node / name).write_text(json.dumps(document))
    sysctls = node / "sysctl.txt"
    sysctls.write_text(sysctls.read_text() + f"net.ipv4.conf.{interface}.rp_filter = 1\n")
    return snapshot


def test_an_interface_from_a_snapshot_reaches_the_node_as_one_argument(
    pytester: pytest.Pytester,
) -> None:
    interface = "$(touch${IFS}P)"
    snapshot = hostile_snapshot(pytester.path, interface)
    ssh_config = pytester.path / "ssh_config"
    ssh_config.write_text("Host node-*\n")
    result = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(snapshot),
        "--ssh-config", str(ssh_config), "-k", "rp_filter", "--vipcheck-fix-script", "fix.sh",
        "--vipcheck-json", "summary.json",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED *::test_rp_filter_not_strict?node-2/$(touch${IFS}P)?*"])
    hostile_command = ["sysctl", "-w", "net.ipv4.conf.$(touch${IFS}P).rp_filter=2"]
    summary = json.loads((pytester.path / "summary.json").read_text())
    [hostile] = [r for r in summary["results"] if r["subject"] == f"node-2/{interface}"]
    assert hostile["violations"][0]["commands"][1] == hostile_command
    intended = [  # in the script's order: the first failure's commands, then the new one
        ["sysctl", "-w", "net.ipv4.conf.all.rp_filter=2"],
        ["sysctl", "-w", "net.ipv4.conf.tunl0.rp_filter=2"],
        hostile_command,
    ]
    assert (
        "sysctl -w net.ipv4.conf.all.rp_filter=2 'net.ipv4.conf.$(touch${IFS}P)"
        in (hostile["fix"][0])
    )

    local = {"node-2": NodeTarget("node-2", "local://")}
    for shell in SHELLS:
        for script, target in (
            (pytester.path / "fix.sh", NodeTarget("node-2", "ssh://node-2", str(ssh_config))),
            (write_script(pytester.path / "local.sh", summary, local), local["node-2"]),
        ):
            stubs = Stubs(Path(tempfile.mkdtemp(dir=pytester.path)))
            assert stubs.run(shell, script).returncode == 0
            assert stubs.calls() == []
            applied = stubs.run(shell, script, "--apply")
            assert applied.returncode == 0, applied.stdout + applied.stderr
            assert stubs.calls() == [
                call for argv in intended for call in node_side(target, tuple(argv))
            ]
            assert stubs.created() == []
