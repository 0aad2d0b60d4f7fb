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


def unobserved_fix(reason: str) -> str:
    """The fix for why a node could not be observed, in words, from the gathering error's text."""
    text = reason.lower()
    if "host key" in text or "host identification has changed" in text:
        return (
            "the node's ssh host key is unknown or changed: verify it out of band, then add it to "
            "the known_hosts file your ssh_config names (ssh-keyscan, then compare fingerprints); "
            "vipcheck never turns host key checking off"
        )
    if "password is required" in text or "a terminal is required" in text or "sudo:" in text:
        return "sudo asks for a password: allow the ssh user NOPASSWD sudo, or run without --sudo"
    if "no answer within" in text or "timed out" in text or "timeout" in text:
        return "the node did not answer in time: check sshd there, or raise --vipcheck-timeout"
    if "refused" in text:
        return "nothing listens on the node's ssh port: check sshd and the Port in ssh_config"
    if "truncated" in text or "cut off" in text or "closed by remote host" in text:
        return "the connection dropped mid-output: check the network and sshd, then run again"
    return "make the node reachable over ssh with the --hosts/--ssh-config given, then run again"


NODE_OBSERVED = Check(
    id="node-observed",
    title="Every node could be observed",
    why=(
        "A node nobody saw cannot be judged; it is reported once, here, and the Service-port items "
        "judge the nodes seen and name it, so one dead node reads as one problem, not thousands."
    ),
    fix="Make the node reachable over ssh (host key known, sshd answering, sudo without a "
    "password when --sudo is given), or raise --vipcheck-timeout.",
    severity=Severity.CRITICAL,
    scope=NODES,
    inputs=(),
    run=check_node_observed,
)
