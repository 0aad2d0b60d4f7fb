"""Judging a live run's nodes as they arrive, while the others are still being gathered.

A live run of a big cluster spends its gather mostly waiting on nodes (1,000 nodes, 32 at a
time). When the run selects every check (no -k or -m: a nightly run), each observed node is
judged as soon as it and the cluster's objects are in, in one thread beside the gather: the
per-node pass of vipcheck.judging, against every check of the catalogue it runs (the handshake
is not: its probes run later; nor the migration readiness checks, which run only when -m
names them). When gathering ends the thread stops after its node: those it did not reach are
judged by the pass after collection, in worker processes where there are enough of them.

What a node's judging made moves into the run's facts (adopt), and that pass leaves the node
out; unless the node the run kept under its name is not the one judged (a --hosts spec,
named by its host until the API's nodes are paired, paired with another node).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vipcheck.cases import Case, cases_for
from vipcheck.checks.base import Check
from vipcheck.facts import ArrivingFacts, ClusterFacts, Facts
from vipcheck.judging import CaseKey, Found, Judgements, Work, judge_node
from vipcheck.settings import Settings
from vipcheck.snapshot import NodeSnapshot, Snapshot
from vipcheck.vocabulary import Progress

_Event = Mapping[str, str] | NodeSnapshot | None  # the cluster's files, a node, or stop


class ArrivalJudge:
    """Judges each observed node as it is gathered (vipcheck.observe tells it of each), in a
    thread of its own; gathered() stops it, adopt() hands what it made to the run's facts."""

    def __init__(
        self,
        checks: Sequence[Check[Any]],
        settings: Settings,
        sysctl_keys: Sequence[str],
        progress: Progress,
    ) -> None:
        self._checks = checks
        self._settings = settings
        self._sysctl_keys = sysctl_keys
        self._progress = progress
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._cluster: ClusterFacts | None = None
        # Each node judged: the snapshot judged, its items' results.
        self._judged: dict[str, tuple[NodeSnapshot, dict[CaseKey, Found]]] = {}
        self._verdicts: Facts | None = None  # the facts whose verdicts hold what was judged
        self.judgements = Judgements()
        # Started once the cluster is read: a gather that fails before leaves no thread.
        self._thread = threading.Thread(target=self._run, name="vipcheck-judge", daemon=True)

    def cluster_read(self, files: Mapping[str, str]) -> None:
        """The API's objects are all read (in the gather's API thread): judging starts."""
        self._events.put(files)
        self._thread.start()

    def arrived(self, node: NodeSnapshot) -> NodeSnapshot:
        """A node gathered (in a gather thread): judged when the thread reaches it."""
        if node.error is None:
            self._events.put(node)
        return node

    def gathered(self) -> ClusterFacts | None:
        """Gathering ended: stop once the node being judged is; the cluster's facts as parsed
        here (None when the cluster was never read)."""
        self._stopping.set()
        self._events.put(None)
        if self._thread.ident is not None:
            self._thread.join()
        return self._cluster

    def adopt(self, snapshot: Snapshot, facts: Facts) -> None:
        """Put what was judged in the run's facts (the nodes' verdicts) and in `judgements`
        (their items' results, and the nodes, which the pass after collection leaves out)."""
        assert not self._thread.is_alive()
        for name, (judged, results) in self._judged.items():
            verdicts = self._verdicts.verdicts.take(name) if self._verdicts else {}
            kept = snapshot.nodes.get(name)
            if kept is None or kept.files is not judged.files:
                continue  # another node under that name now: judged after collection
            facts.verdicts.put(name, verdicts)
            self.judgements.add(results)
            self.judgements.nodes.add(name)
        self._judged.clear()
        self._verdicts = None
        if self.judgements.nodes:
            self._progress(
                f"judged {len(self.judgements.nodes)} of {len(snapshot.nodes)} nodes as they "
                "arrived"
            )

    def _run(self) -> None:
        try:
            self._judge_arrivals()
        except Exception:
            self._stopping.set()

    def _judge_arrivals(self) -> None:
        waiting: list[NodeSnapshot] = []
        arriving: _Arriving | None = None
        while not self._stopping.is_set():
            event = self._events.get()
            if event is None:
                break
            if isinstance(event, NodeSnapshot):
                waiting.append(event)
            elif arriving is None:
                arriving = self._start(event)
            if arriving is None:
                continue  # the cluster is not read yet
            while waiting and not self._stopping.is_set():
                self._judge(arriving, waiting.pop(0))

    def _start(self, cluster: Mapping[str, str]) -> _Arriving:
        arriving = ArrivingFacts(cluster, self._sysctl_keys)
        self._cluster = arriving.facts.cluster
        self._verdicts = arriving.facts
        spanning: list[Case[Any]] = []
        per_node: list[Check[Any]] = []
        for check in self._checks:
            first = next(cases_for(check, arriving.facts), None)  # no node yet: spanning ones
            if first is None:
                per_node.append(check)
            elif first.unavailable is None:
                spanning.append(first)  # one case judges every Service port of a node
        return _Arriving(arriving, tuple(spanning), tuple(per_node))

    def _judge(self, arriving: _Arriving, node: NodeSnapshot) -> None:
        """Judge one node; one that judging fails on (a bug) is left to the pass after
        collection, which reports what fails."""
        if node.name in self._judged:
            return  # two specs gathered under one name: paired after collection
        try:
            node_facts = arriving.facts.add(node)
            alone = replace(arriving.facts.facts, nodes={node.name: node_facts})
            cases = tuple(case for check in arriving.per_node for case in cases_for(check, alone))
            work = Work(arriving.facts.facts, self._settings, arriving.spanning, {node.name: cases})
            self._judged[node.name] = (node, judge_node(work, node.name))
        except Exception:
            arriving.facts.facts.verdicts.take(node.name)  # what it made before it failed


@dataclass(frozen=True, slots=True)
class _Arriving:
    """The facts nodes are added to, and what is judged of each."""

    facts: ArrivingFacts
    spanning: tuple[Case[Any], ...]  # one case of each check spanning nodes
    per_node: tuple[Check[Any], ...]  # the checks with items per node
