"""What the checks share about kube-proxy: whether IPVS or nftables applies, judging each node,
resyncs.

What kube-proxy programs, each node's expected state, is the IPVS datapath's
(vipcheck.datapath.ipvs), kept by the snapshot's Facts.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from vipcheck.checks.base import Argv, OtherMode, PartlyJudged, Violation
from vipcheck.datapath.ipvs import ExpectedState
from vipcheck.expected import ExpectedVirtualService
from vipcheck.facts import ClusterFacts, Facts, MissingInput, NodeFacts, again
from vipcheck.model.cluster import ProxyMode, ServicePortKey
from vipcheck.model.node import IpvsTable, L4Protocol

IPVS_MODE = frozenset({ProxyMode.IPVS})
NFTABLES_MODE = frozenset({ProxyMode.NFTABLES})
_MODE_NAMES = {ProxyMode.IPVS: "IPVS", ProxyMode.NFTABLES: "nftables"}


def require_mode(modes: frozenset[ProxyMode] | None, cluster: ClusterFacts) -> None:
    """Skip (OtherMode) a check of these modes where kube-proxy runs another one. Without
    the ConfigMap the mode is unknown: IPVS checks run, as vipcheck did before it knew modes, and
    the others skip."""
    if modes is None:
        return
    names = " and ".join(_MODE_NAMES.get(mode, mode.value) for mode in sorted(modes))
    config = cluster.kube_proxy_or_none
    if config is None:
        if ProxyMode.IPVS not in modes:
            raise OtherMode(f"no kube-proxy ConfigMap: {names} checks need mode {names}")
    elif config.mode not in modes:
        raise OtherMode(f"kube-proxy mode is {config.mode}: {names} checks do not apply")


@dataclass(frozen=True, slots=True)
class NotShown:
    """What a node's input does not show, as a paste was cut: not judged, never called missing."""

    why: str


def not_in_paste(node: NodeFacts, what: str) -> NotShown:
    """A virtual service absent from a partial table: not in the pasted part, so not judged."""
    return NotShown(f"{what} not in the pasted part of its IPVS table ({node.ipvs.partial})")


def judge_each_node(
    facts: Facts, judge: Callable[[str, NodeFacts], Iterable[Violation | NotShown]]
) -> list[Violation]:
    """Every node's violations; a node lacking an input or part of it is named (PartlyJudged).

    The one way a check spans nodes: the per-node pass (vipcheck.judging) runs it on one node at
    a time (Facts.judging_only), so judge must keep its node's verdict in Facts.node_verdict.
    """
    violations: list[Violation] = []
    unjudged: dict[str, str] = {}
    for name, node in facts.nodes_judged():
        try:
            found = list(judge(name, node))
        except MissingInput as missing:
            unjudged[name] = str(missing)
            continue
        violations += [item for item in found if isinstance(item, Violation)]
        not_shown = [item.why for item in found if isinstance(item, NotShown)]
        if not_shown:
            unjudged[name] = f"{name}: " + "; ".join(not_shown)
    if unjudged:
        raise PartlyJudged(violations, unjudged)
    return violations


def restart_kube_proxy(node: str) -> Argv:
    """The command that restarts kube-proxy on one node, so it resyncs the whole IPVS state."""
    return (
        *("kubectl", "-n", "kube-system", "delete", "pod", "-l", "k8s-app=kube-proxy"),
        *("--field-selector", f"spec.nodeName={node}"),
    )


def restart_kube_proxy_text(node: str) -> str:
    """restart_kube_proxy as a person pastes it into a shell: quoted, whatever the node's name."""
    return shlex.join(restart_kube_proxy(node))


def ipvsadm_service_option(protocol: L4Protocol) -> str:
    """ipvsadm's option naming a virtual service of this protocol (-t, -u, --sctp-service)."""
    return {L4Protocol.TCP: "-t", L4Protocol.UDP: "-u", L4Protocol.SCTP: "--sctp-service"}[protocol]


PortJudge = Callable[
    [str, NodeFacts, IpvsTable, ServicePortKey, tuple[ExpectedVirtualService, ...]],
    list[Violation | NotShown],
]
"""Judges one Service port on one node: (node name, node, its IPVS table, port, expected VSs)."""


def judge_port_on_each_node(
    facts: Facts, subject: ServicePortKey, key: str, judge_port: PortJudge
) -> list[Violation]:
    """judge_each_node for one Service port, each node judged on all its ports in one pass.

    Such a check runs once per Service port and node (1.25 million times at 100 nodes x 6,250
    ports): a node's verdicts are computed once under key, kept by the snapshot's Facts
    (node_verdict), only the ports with something to say kept, and each item looks its own up.
    """
    expected = ExpectedState.of(facts)
    return judge_ports(
        facts, subject, key, lambda name, node: _judge_all(expected, name, node, judge_port)
    )


NodeJudge = Callable[[str, NodeFacts], Mapping[ServicePortKey, list[Violation | NotShown]]]
"""Judges every Service port of one node: (node name, node) -> the ports with something to say."""


def judge_ports(
    facts: Facts, subject: ServicePortKey, key: str, judge_node: NodeJudge
) -> list[Violation]:
    """judge_each_node for one Service port of a check judging each node's ports at once.

    Each node's verdict is computed once under key (Facts.node_verdict, where the per-node pass
    leaves it), then indexed by Service port once, so each item reads its port's entries and
    not every node's (1,000 nodes x 12,500 ports).
    """
    if facts.judging is not None:  # the per-node pass: only this node's verdict is made
        return judge_each_node(
            facts,
            lambda name, node: facts.node_verdict(name, key, lambda: judge_node(name, node)).get(
                subject, []
            ),
        )
    names = tuple(facts.nodes)
    index = facts.derive(("by port", key, names), lambda: _PortIndex.of(facts, key, judge_node))
    return index.judge(subject)


@dataclass(frozen=True, slots=True)
class _PortIndex:
    """Every node's verdicts on one check, by Service port, in node order; and the nodes whose
    verdict failed, with why, in node order."""

    by_port: Mapping[ServicePortKey, list[tuple[int, str, list[Violation | NotShown]]]]
    failed: list[tuple[int, str, Exception]]

    @classmethod
    def of(cls, facts: Facts, key: str, judge_node: NodeJudge) -> _PortIndex:
        by_port: dict[ServicePortKey, list[tuple[int, str, list[Violation | NotShown]]]] = {}
        failed: list[tuple[int, str, Exception]] = []
        for order, (name, node) in enumerate(facts.nodes.items()):
            try:
                judged = facts.node_verdict(name, key, lambda: judge_node(name, node))  # noqa: B023
            except Exception as error:  # raised again, as judge_each_node would, by judge
                failed.append((order, name, error.with_traceback(None)))
                continue
            for port, found in judged.items():
                by_port.setdefault(port, []).append((order, name, found))
        return cls(by_port, failed)

    def judge(self, subject: ServicePortKey) -> list[Violation]:
        """What judge_each_node gives for this port: the first node (in order) whose verdict
        failed other than for a missing input raises that; violations; nodes unjudged named."""
        for _, _, error in self.failed:
            if not isinstance(error, MissingInput):
                raise again(error)
        entries = self.by_port.get(subject, [])
        if not entries and not self.failed:
            return []  # the common case
        violations = [v for _, _, found in entries for v in found if isinstance(v, Violation)]
        unjudged: list[tuple[int, str, str]] = [
            (order, name, str(error)) for order, name, error in self.failed
        ]
        for order, name, found in entries:
            not_shown = [item.why for item in found if isinstance(item, NotShown)]
            if not_shown:
                unjudged.append((order, name, f"{name}: " + "; ".join(not_shown)))
        if unjudged:
            raise PartlyJudged(violations, {name: why for _, name, why in sorted(unjudged)})
        return violations


def _judge_all(
    expected: ExpectedState, name: str, node: NodeFacts, judge_port: PortJudge
) -> dict[ServicePortKey, list[Violation | NotShown]]:
    """Every Service port the node is expected to serve, judged; the empty verdicts left out."""
    table = node.ipvs
    judged = {}
    for port, found in expected.on_node(node).items():
        verdict = judge_port(name, node, table, port, found)
        if verdict:
            judged[port] = verdict
    return judged
