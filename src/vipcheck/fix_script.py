"""The fix script: the failures' commands as one POSIX sh script, for a person to review and run.

Node commands are grouped per node and reach it the way vipcheck did (`ssh -F CONFIG NODE -- CMD`,
`docker exec NAME sh -c CMD`, ...); cluster changes are only printed as kubectl commands to review.
The script does nothing without `--apply`. vipcheck writes it and never runs it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from vipcheck.options import GatherOptions
    from vipcheck.transport import NodeTarget

# Outcomes whose commands go in the script: a waived failure is accepted, so it is left alone.
FIXABLE = frozenset({"failed", "known"})
_SSH_SCHEMES = frozenset({"ssh", "paramiko", "safe-ssh", "ansible"})

PRELUDE = """\
set -u

apply=no
case "${1-}" in
    --apply) apply=yes ;;
    "") ;;
    *) echo "usage: $0 [--apply]   (without --apply: print what would run)" >&2; exit 2 ;;
esac
failures=0

# Run a node command with --apply; without it, only say what would run.
run() {
    if [ "$apply" = yes ]; then
        printf '+ %s\\n' "$*"
        if ! "$@"; then
            failures=$((failures + 1))
            printf 'FAILED: %s\\n' "$*" >&2
        fi
    else
        printf 'would run: %s\\n' "$*"
    fi
}

# Cluster changes are never run from here: a person reviews them and runs them.
review() {
    printf 'review, then run yourself: %s\\n' "$1"
}
"""

EPILOGUE = """\
if [ "$apply" = yes ]; then
    echo "done: $failures command(s) failed"
    [ "$failures" -eq 0 ]
else
    echo "nothing was changed: run again with --apply to run the node commands"
fi
"""


@dataclass
class _Step:
    """One command, and every failure it fixes (a command shared by failures runs once)."""

    command: str
    fixes: list[str] = field(default_factory=list)


def render_fix_script(
    summary: Mapping[str, Any],
    targets: Mapping[str, NodeTarget],
    *,
    generated: str,
    target: str,
) -> str:
    """The script for a JSON summary's failures; `targets` says how each node was reached."""
    nodes: dict[str, dict[str, _Step]] = {}
    cluster: dict[str, _Step] = {}
    manual: list[str] = []
    for record in summary["results"]:
        if record["outcome"] not in FIXABLE:
            continue
        for violation in record.get("violations") or ():
            label = _label(record, violation)
            node = violation.get("node") or record.get("node")
            commands = violation.get("commands") or []
            for command in commands:
                if node is None:
                    manual.append(f"{label}: {command} (no node named)")
                    continue
                step = nodes.setdefault(node, {}).setdefault(command, _Step(command))
                step.fixes.append(label)
            for command in violation.get("cluster_commands") or []:
                cluster.setdefault(command, _Step(command)).fixes.append(label)
            if not commands and not violation.get("cluster_commands"):
                manual.append(label)
    lines = [
        "#!/bin/sh",
        f"# vipcheck fix script, written {generated} for {_comment(target)}.",
        "# Review it first. Without --apply it only prints what it would do; with --apply it",
        "# runs the node commands below. vipcheck never runs it. Cluster changes are printed",
        "# as kubectl commands for you to review and run.",
        PRELUDE,
    ]
    for node in sorted(nodes):
        steps = nodes[node].values()
        reach = targets.get(node)
        how = reach.spec if reach is not None else "no transport given: assumed `ssh NODE`"
        lines.append(f"# --- {node} ({_comment(how)}): {len(steps)} command(s)")
        for step in steps:
            lines.extend(f"# fixes {_comment(text)}" for text in dict.fromkeys(step.fixes))
            lines.append("run " + shlex.join(node_argv(node, reach, step.command)))
        lines.append("")
    if cluster:
        lines.append("# --- cluster: kubectl commands, printed for review, never run here")
        for step in cluster.values():
            lines.extend(f"# for {_comment(text)}" for text in dict.fromkeys(step.fixes))
            lines.append("review " + shlex.quote(step.command))
        lines.append("")
    if manual:
        lines.append("# --- failures with no command of their own: see their fix in the report")
        lines.extend(f"# {_comment(text)}" for text in dict.fromkeys(manual))
        lines.append("")
    lines.append(EPILOGUE)
    return "\n".join(lines)


def node_argv(node: str, target: NodeTarget | None, command: str) -> list[str]:
    """The local command that runs `command` on a node the way vipcheck reached it."""
    if target is None:
        return ["ssh", node, "--", command]
    scheme, separator, rest = target.spec.partition("://")
    if not separator:
        scheme, rest = target.connection or "ssh", target.spec
    parts = urlsplit(f"{scheme}://{rest}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if target.sudo or query.get("sudo", "").lower() == "true":
        command = f"sudo sh -c {shlex.quote(command)}"
    host, user, port = parts.hostname or "", parts.username, parts.port
    if scheme in _SSH_SCHEMES:
        argv = ["ssh"]
        config = query.get("ssh_config") or target.ssh_config
        identity = query.get("ssh_identity_file") or target.ssh_identity_file
        argv += ["-F", config] if config else []
        argv += ["-i", identity] if identity else []
        argv += ["-p", str(port)] if port else []
        return [*argv, f"{user}@{host}" if user else host, "--", command]
    if scheme in ("docker", "podman"):
        as_user = ["-u", user] if user else []
        return [scheme, "exec", *as_user, host, "sh", "-c", command]
    if scheme == "kubectl":
        namespace = ["-n", query["namespace"]] if "namespace" in query else []
        container = ["-c", query["container"]] if "container" in query else []
        return ["kubectl", "exec", *namespace, *container, host, "--", "sh", "-c", command]
    if scheme == "local":
        return ["sh", "-c", command]
    # A transport with no command-line form here: say so where it would run.
    return ["echo", f"run on {node} ({target.spec}) yourself: {command}"]


def _label(record: Mapping[str, Any], violation: Mapping[str, Any]) -> str:
    """`check subject: observed`, the failure a command fixes, in one line."""
    return f"{record['check']} {record['subject']}: {violation.get('observed', '')}"


def _comment(text: str) -> str:
    """Text made safe for one comment line."""
    return " ".join(text.split())


def reach_targets(
    options: GatherOptions, node_addresses: Mapping[str, Sequence[str]]
) -> dict[str, NodeTarget]:
    """How the user reached each node (--hosts, --ssh-config), resolved as gathering does."""
    from vipcheck.transport import TargetError, resolve_targets  # noqa: PLC0415 (testinfra)

    try:
        resolution = resolve_targets(
            options.hosts,
            options.ssh_config,
            list(node_addresses),
            node_addresses,
            options.node_map,
            ssh_identity_file=options.ssh_identity_file,
            sudo=options.sudo,
            connection=options.connection,
        )
    except TargetError:
        return {}
    return {target.node: target for target in resolution.targets}
