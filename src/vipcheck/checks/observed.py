"""Each node was observed: a node that could not be read is one problem, reported once, here."""

from __future__ import annotations

from vipcheck.checks.base import Check, NodeSubject, Severity, Violation
from vipcheck.checks.scopes import NODES
from vipcheck.facts import Facts, Unobserved
from vipcheck.settings import Settings


def check_node_observed(subject: NodeSubject, facts: Facts, settings: Settings) -> list[Violation]:
    """A node whose gathering failed ERRORS here with the cause; its other items skip."""
    reason = facts.nodes[subject.node].unobserved_reason
    if reason is not None:
        raise Unobserved(f"{reason}; fix: {unobserved_fix(reason)}")
    return []


# (words in a gathering error, the fix for it), first match wins; the error's text is all there
# is, as testinfra and ssh or docker word it.
_FIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("host key", "host identification has changed"),
        "the node's ssh host key is unknown or changed: verify it out of band, then add it to "
        "the known_hosts file your ssh_config names (ssh-keyscan, then compare fingerprints); "
        "vipcheck never turns host key checking off",
    ),
    (
        ("password is required", "a terminal is required", "sudo:"),
        "sudo asks for a password: allow the ssh user NOPASSWD sudo, or run without --sudo",
    ),
    (
        ("has no /bin/sh",),
        "the node container has no /bin/sh, which vipcheck runs its one read-only script with: "
        "use a node image with a shell",
    ),
    (
        ("is not running", "no such container"),
        "the node container is stopped or gone: `docker start` it (or recreate the cluster), "
        "then run again",
    ),
    (
        ("docker daemon", "docker exec failed"),
        "docker could not run the node script: check that the daemon DOCKER_HOST/DOCKER_CONTEXT "
        "names answers and the container runs, then run again",
    ),
    (
        ("no answer within", "timed out", "timeout"),
        "the node did not answer in time: check sshd there, or raise --vipcheck-timeout",
    ),
    (
        ("refused",),
        "nothing listens on the node's ssh port: check sshd and the Port in ssh_config",
    ),
    (
        ("truncated", "cut off", "closed by remote host"),
        "the connection dropped mid-output: check the network and sshd, then run again",
    ),
)
_REACH_IT = "make the node reachable over ssh with the --hosts/--ssh-config given, then run again"


def unobserved_fix(reason: str) -> str:
    """The fix for why a node could not be observed, in words, from the gathering error's text."""
    text = reason.lower()
    for needles, fix in _FIXES:
        if any(needle in text for needle in needles):
            return fix
    return _REACH_IT


NODE_OBSERVED = Check(
    id="node-observed",
    title="Every node could be observed",
    why=(
        "A node nobody saw cannot be judged; it is reported once, here, and the Service-port items "
        "judge the nodes seen and name it, so one dead node reads as one problem, not thousands."
    ),
    fix="Make the node reachable: over ssh, its host key known, sshd answering and sudo without "
    "a password when --sudo is given; with --kind, its container running with /bin/sh. Or raise "
    "--vipcheck-timeout.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(),
    run=check_node_observed,
    reports_node_observation=True,
)
