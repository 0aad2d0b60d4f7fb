"""The fix script: grouped per node, reached as vipcheck reached it, inert without --apply."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vipcheck.cli import SUITES_DIR
from vipcheck.fix_script import node_argv, render_fix_script
from vipcheck.transport import NodeTarget

pytest_plugins = ["pytester"]

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded" / "seed-incidents"
IN_CI = bool(os.environ.get("VIPCHECK_REQUIRE_LAB")) or os.environ.get("CI") == "true"


def shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        if IN_CI:
            pytest.fail("shellcheck is missing in CI (make deps installs it)", pytrace=False)
        pytest.skip("shellcheck is not installed (make deps installs it)")
    result = subprocess.run(
        ["shellcheck", "--shell=sh", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (NodeTarget("node-2", "ssh://node-2", ssh_config="/lab/ssh_config"),
         ["ssh", "-F", "/lab/ssh_config", "node-2", "--", "sysctl -w a=2"]),
        (NodeTarget("node-2", "ssh://root@10.0.0.12:2222", ssh_identity_file="/k"),
         ["ssh", "-i", "/k", "-p", "2222", "root@10.0.0.12", "--", "sysctl -w a=2"]),
        (NodeTarget("node-2", "docker://kind-worker"),
         ["docker", "exec", "kind-worker", "sh", "-c", "sysctl -w a=2"]),
        (NodeTarget("node-2", "ssh://admin@node-2?sudo=true"),
         ["ssh", "admin@node-2", "--", "sudo sh -c 'sysctl -w a=2'"]),
        (NodeTarget("node-2", "10.0.0.12", connection="ssh"),
         ["ssh", "10.0.0.12", "--", "sysctl -w a=2"]),
        (NodeTarget("node-2", "kubectl://debug-node-2?namespace=kube-system"),
         ["kubectl", "exec", "-n", "kube-system", "debug-node-2", "--", "sh", "-c",
          "sysctl -w a=2"]),
        (None, ["ssh", "node-2", "--", "sysctl -w a=2"]),
    ],
)  # fmt: skip
def test_node_commands_go_over_the_transport_the_user_gave(
    target: NodeTarget | None, expected: list[str]
) -> None:
    assert node_argv("node-2", target, "sysctl -w a=2") == expected


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
                   commands=[f"touch {marker}"]),
            record("rp-filter-not-strict", "node-2/eth0", "node-2", "failed",
                   commands=[f"touch {marker}"]),  # the same command: run once, two comments
            record("ipvs-tcpfin-timeout", "node-1", "node-1", "failed",
                   commands=["ipvsadm --set 0 30 0"],
                   cluster_commands=["kubectl -n kube-system edit configmap kube-proxy"]),
            record("ip-forward-enabled", "node-3", "node-3", "waived",
                   commands=["sysctl -w net.ipv4.ip_forward=1"]),
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
    assert node_1 < text.index("run ssh node-1 -- 'ipvsadm --set 0 30 0'") < node_2
    assert text.count(f"run sh -c 'touch {marker}'") == 1
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
    assert f"would run: sh -c touch {marker}" in dry.stdout
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
    summary["results"][0]["violations"][0]["commands"] = ["false"]
    script.write_text(render_fix_script(summary, targets, generated="now", target="lab"))
    failing = subprocess.run(
        ["sh", str(script), "--apply"], capture_output=True, text=True, check=False
    )
    assert failing.returncode == 1
    assert "FAILED: sh -c false" in failing.stderr
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
        assert f"run ssh -F {ssh_config} {node} -- '{stale}'" in text
    assert f"run ssh -F {ssh_config} node-2 -- 'sysctl -w net.ipv4.conf.all.rp_filter=2'" in text
    assert "# fixes ipvs-real-servers-match-endpoints default/redis:6379/TCP: " in text
    assert "# fixes rp-filter-not-strict node-2/tunl0: " in text
    shellcheck(script)


def test_docker_hosts_get_docker_exec(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(RECORDED),
        "--hosts", "docker://node-1,docker://node-2,docker://node-3", "-k", "rp_filter",
        "--vipcheck-fix-script", "fix.sh",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = (pytester.path / "fix.sh").read_text()
    assert "run docker exec node-2 sh -c 'sysctl -w net.ipv4.conf.all.rp_filter=2'" in text
