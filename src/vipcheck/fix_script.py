"""The fix script: the failures' commands as one POSIX sh script, for a person to review and run.

Node commands are grouped per node and reach it the way vipcheck did (`ssh -F CONFIG -- NODE
'CMD'`, `docker exec -- NAME CMD...`, ...); cluster changes are only printed as kubectl commands
to review. The script does nothing without `--apply`. vipcheck writes it and never runs it.

What goes in comes from nodes, snapshots and the API, and a name there may hold `$(...)` or a
line break, so the script trusts none of it. Commands arrive as argument lists and are quoted
once for each shell they pass through: the script's own sh, and over ssh the node's shell, which
gets `shlex.join(argv)`; docker, kubectl exec and local run the list with no shell at all. `--`
comes before the host wherever the tool allows it. Every comment line goes through `_comment`.
A command with an argument a terminal would act on (a control character, a line break) is never
written to run: it is listed with the failures a person fixes, shown escaped, so the script
holds printable text only.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vipcheck.options import GatherOptions
from vipcheck.transport import NodeTarget, TargetError, resolve_targets
from vipcheck.untrusted import printable

# Outcomes whose commands go in the script: a waived failure is accepted, so it is left alone.
FIXABLE = frozenset({"failed", "known"})
_SSH_SCHEMES = frozenset({"ssh", "paramiko", "safe-ssh", "ansible"})
_EXEC_SCHEMES = frozenset({"docker", "podman"})
# Lone surrogates: what a node's undecodable bytes become, and no UTF-8 file can hold.
_SURROGATES = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = (
    "a control character or line break in it, its node or host (shown escaped here); "
    "run it by hand if it is what you meant"
)

PRELUDE = """\
set -u

apply=no
case "${1-}" in
    --apply) apply=yes ;;
    "") ;;
    *) echo "usage: $0 [--apply]   (without --apply: print what would run)" >&2; exit 2 ;;
esac
failures=0

# The arguments as one line a person can paste into a shell: each quoted as Python's
# shlex.quote does (left alone when only safe characters, else in single quotes).
shown() {
    _line=
    for _arg in "$@"; do
        case $_arg in
            "") _arg="''" ;;
            *[!abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-]*)
                _rest=$_arg
                _arg=
                while :; do
                    case $_rest in
                        *\\'*)
                            _arg=$_arg${_rest%%\\'*}\\'\\"\\'\\"\\'
                            _rest=${_rest#*\\'}
                            ;;
                        *) break ;;
                    esac
                done
                _arg=\\'$_arg$_rest\\'
                ;;
        esac
        _line=$_line${_line:+ }$_arg
    done
    printf '%s' "$_line"
}

# Run a node command with --apply; without it, only say what would run.
run() {
    if [ "$apply" = yes ]; then
        printf '+ %s\\n' "$(shown "$@")"
        if ! "$@"; then
            failures=$((failures + 1))
            printf 'FAILED: %s\\n' "$(shown "$@")" >&2
        fi
    else
        printf 'would run: %s\\n' "$(shown "$@")"
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


class NotRunnable(ValueError):
    """A command the script must not hold as runnable; the message says why, for a person."""


@dataclass
class _Plan:
    """The script's sections: each node's command lines, kubectl commands, and the rest.

    A command shared by failures runs once, commented with each failure it fixes.
    """

    nodes: dict[str, dict[tuple[str, ...], list[str]]] = field(default_factory=dict)
    cluster: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    manual: list[str] = field(default_factory=list)

    def add(
        self,
        record: Mapping[str, Any],
        violation: Mapping[str, Any],
        targets: Mapping[str, NodeTarget],
    ) -> None:
        """Place one violation's commands; one with none is left for a person."""
        label = _label(record, violation)
        node = violation.get("node") or record.get("node")
        commands = [tuple(argv) for argv in violation.get("commands") or ()]
        cluster_commands = [tuple(argv) for argv in violation.get("cluster_commands") or ()]
        for command in commands:
            if node is None:
                self.manual.append(f"{label}: {shlex.join(command)} (no node named)")
                continue
            try:
                line = tuple(node_argv(node, targets.get(node), command))
            except NotRunnable as why:
                self.manual.append(f"{label}: not run on {node}: {shlex.join(command)}: {why}")
                continue
            self.nodes.setdefault(node, {}).setdefault(line, []).append(label)
        for command in cluster_commands:
            if not all(map(_shows_as_itself, command)):
                self.manual.append(
                    f"{label}: not printed for review: {shlex.join(command)}: {_UNPRINTABLE}"
                )
                continue
            self.cluster.setdefault(command, []).append(label)
        if not commands and not cluster_commands:
            self.manual.append(label)


def render_fix_script(
    summary: Mapping[str, Any],
    targets: Mapping[str, NodeTarget],
    *,
    generated: str,
    target: str,
) -> str:
    """The script for a JSON summary's failures; `targets` says how each node was reached."""
    plan = _Plan()
    for record in summary["results"]:
        if record["outcome"] in FIXABLE:
            for violation in record.get("violations") or ():
                plan.add(record, violation, targets)
    lines = [
        "#!/bin/sh",
        _comment(f"vipcheck fix script, written {generated} for {target}."),
        _comment("Review it first. Without --apply it only prints what it would do; with --apply"),
        _comment("it runs the node commands below. vipcheck never runs it. Cluster changes are"),
        _comment("printed as kubectl commands for you to review and run."),
        _comment("Names are quoted literally on purpose: `$(...)` in one is text, not a command."),
        _comment("shellcheck disable=SC2016"),
        PRELUDE,
    ]
    for node in sorted(plan.nodes):
        steps = plan.nodes[node]
        reach = targets.get(node)
        how = reach.spec if reach is not None else "no transport given: assumed `ssh NODE`"
        lines.append(_comment(f"--- {node} ({how}): {len(steps)} command(s)"))
        for line, fixes in steps.items():
            lines.extend(_comment(f"fixes {text}") for text in dict.fromkeys(fixes))
            lines.append("run " + shlex.join(line))
        lines.append("")
    if plan.cluster:
        lines.append(_comment("--- cluster: kubectl commands, printed for review, never run here"))
        for command, fixes in plan.cluster.items():
            lines.extend(_comment(f"for {text}") for text in dict.fromkeys(fixes))
            lines.append("review " + shlex.quote(shlex.join(command)))
        lines.append("")
    if plan.manual:
        lines.append(
            _comment("--- failures with no command to run here: see their fix in the report")
        )
        lines.extend(_comment(text) for text in dict.fromkeys(plan.manual))
        lines.append("")
    lines.append(EPILOGUE)
    return "\n".join(lines)


def node_argv(node: str, target: NodeTarget | None, command: tuple[str, ...]) -> list[str]:
    """The local command that runs `command` (an argument list) on a node as vipcheck reached it.

    Over ssh the node's shell parses the remote command, so it gets `shlex.join(command)`;
    the other transports pass the list on without a shell. NotRunnable when the script must not
    hold it: an argument a terminal would act on, or a pod name kubectl would take as an option.
    """
    spec = "" if target is None else target.spec
    argv = _transport_argv(node, target, list(command))
    if not all(map(_shows_as_itself, (node, spec, *argv))):
        raise NotRunnable(_UNPRINTABLE)
    return argv


def _transport_argv(node: str, target: NodeTarget | None, command: list[str]) -> list[str]:
    """The local argv per transport; `--` ends the options before the host wherever it may."""
    if target is None:
        return ["ssh", "--", node, shlex.join(command)]
    scheme, separator, rest = target.spec.partition("://")
    if not separator:
        scheme, rest = target.connection or "ssh", target.spec
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError as error:
        raise NotRunnable(f"the host spec does not parse: {error}") from None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if target.sudo or query.get("sudo", "").lower() == "true":
        command = ["sudo", "--", *command]
    host, user = parts.hostname or "", parts.username
    if scheme in _SSH_SCHEMES:
        config = query.get("ssh_config") or target.ssh_config
        identity = query.get("ssh_identity_file") or target.ssh_identity_file
        options = [*(["-F", config] if config else []), *(["-i", identity] if identity else [])]
        options += ["-p", str(port)] if port else []
        return ["ssh", *options, "--", f"{user}@{host}" if user else host, shlex.join(command)]
    if scheme in _EXEC_SCHEMES:
        as_user = ["-u", user] if user else []
        return [scheme, "exec", *as_user, "--", host, *command]
    if scheme == "kubectl":
        if host.startswith("-"):
            # kubectl exec takes no `--` before the pod: it would read this name as an option.
            raise NotRunnable(f"the pod name {host} starts with '-', an option to kubectl exec")
        namespace = [f"--namespace={query['namespace']}"] if "namespace" in query else []
        container = [f"--container={query['container']}"] if "container" in query else []
        return ["kubectl", "exec", *namespace, *container, host, "--", *command]
    if scheme == "local":
        return command
    # A transport with no command-line form here: say so where it would run.
    return ["echo", f"run on {node} ({target.spec}) yourself: {shlex.join(command)}"]


def _shows_as_itself(text: str) -> bool:
    """Whether `text` reaches a file and a terminal unchanged: nothing to escape, valid UTF-8."""
    return printable(text, one_line=True) == text and _SURROGATES.search(text) is None


def _label(record: Mapping[str, Any], violation: Mapping[str, Any]) -> str:
    """`check subject: observed`, the failure a command fixes."""
    return f"{record['check']} {record['subject']}: {violation.get('observed', '')}"


def _comment(text: str) -> str:
    """One comment line of the script, the only way one is written: a line break in a name
    would end the comment and make the rest a command, so `text` is shown on one line, with
    line breaks, controls and undecodable bytes escaped."""
    shown = printable(text, one_line=True)
    return "# " + _SURROGATES.sub(lambda char: f"\\u{ord(char.group()):04x}", shown)


def reach_targets(
    options: GatherOptions, node_addresses: Mapping[str, Sequence[str]]
) -> dict[str, NodeTarget]:
    """How the user reached each node (--hosts, --ssh-config), paired as gathering pairs them."""
    try:
        resolution = resolve_targets(options, list(node_addresses), node_addresses)
    except TargetError:
        return {}
    return {target.node: target for target in resolution.targets}
