"""Judging node by node: each node's files read, judged by every selected check, then let go.

Before any item runs, every node is judged by the checks the session selected: a node item's
result is made, and a check spanning nodes (a Service-port one) keeps its verdict on the node's
Service ports in Facts.node_verdict. Then the node's parsed tables are dropped
(NodeFacts.forget). Items look their results up, so a run holds the verdicts of every node
but the tables of one (per process), and its memory grows with Services and findings, not
with nodes x Services.

The first node is judged in this process; the others, when there are enough of them, in worker
processes forked from it, which inherit what the first node computed once for all (the
cluster's objects, the expected state nodes share, compiled rules, traces). From a worker come,
per node, each verdict (pickled one by one: one that cannot be is left behind, and made again
here if an item asks) and each node item's result.

The handshake check is not judged here: it reads the probes, which run later, in this process,
when its first item asks.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from vipcheck.cases import Case, Outcome, Result, run_case
from vipcheck.checks.base import Check, Violation
from vipcheck.facts import PROBE_PLAN_INPUT, Facts
from vipcheck.settings import Settings
from vipcheck.vocabulary import Progress

# With `--vipcheck-jobs auto`, one worker process per CPU and this many nodes: below that,
# forking costs more than it saves, and a cluster of fewer nodes is judged in this process alone.
NODES_PER_WORKER = 4
# Nor more than this many workers: each holds its own parse and trace caches (a few hundred MB
# at 1,000 nodes), which a 64-CPU runner would multiply past its memory.
MOST_WORKERS = 4
# Nor does a worker judge more than this many nodes: then fresh ones are forked. A worker's
# private memory grew with the nodes it judged (freed tables scattered over arenas it cannot
# give back, and more of what it inherited copied as it is touched): the run's peak at 1,000 x
# 10,000 was 812 MiB with fresh workers every 100 nodes, 760 every 50, 724 every 25, 693 every
# 10; at 100 x 10,000 626 and 585 MiB (100 and 25); the wall time the same (issue 22).
NODES_PER_FORK = 25
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Found:
    """A result without its case: what crosses between processes (from a judging worker, from
    an xdist worker), the case put back where it lands."""

    outcome: Outcome
    violations: tuple[Violation, ...]
    reason: str
    unseen: tuple[str, ...]
    other_mode: bool

    @classmethod
    def of(cls, result: Result) -> Found:
        found = result
        return cls(found.outcome, found.violations, found.reason, found.unseen, found.other_mode)

    def result(self, case: Case[Any]) -> Result:
        return Result(
            case,
            self.outcome,
            self.violations,
            self.reason,
            self.unseen,
            other_mode=self.other_mode,
        )


CaseKey = tuple[str, str]  # (check id, item id)


@dataclass(frozen=True, slots=True)
class _Judged:
    """One node judged in a worker: its verdicts (pickled one by one) and its items' results."""

    node: str
    verdicts: dict[Hashable, bytes]
    results: dict[CaseKey, Found]


@dataclass(frozen=True, slots=True)
class Work:
    """What judging a node takes: the run's facts, its settings, the selected cases."""

    facts: Facts
    settings: Settings
    spanning: tuple[Case[Any], ...]  # one case of each selected check that spans nodes
    per_node: Mapping[str, tuple[Case[Any], ...]]  # the selected node items, by node


class Judgements:
    """What the per-node pass made: each node item's result, looked up by its case; and the
    nodes judged already (as they arrived: vipcheck.arrival), which the pass leaves out."""

    def __init__(self) -> None:
        self._results: dict[CaseKey, Found] = {}
        self.nodes: set[str] = set()

    def add(self, results: Mapping[CaseKey, Found]) -> None:
        self._results.update(results)

    def packed(self, facts: Facts) -> bytes:
        """These results and every node's verdicts in the facts, for another process to take
        (an xdist worker: vipcheck.distributed)."""
        verdicts = {node: dict(_pickled(facts.verdicts.entries(node))) for node in facts.nodes}
        return pickle.dumps((self._results, verdicts), pickle.HIGHEST_PROTOCOL)

    @classmethod
    def unpacked(cls, packed: bytes, facts: Facts) -> Judgements:
        """What packed gave: its results, its verdicts put in these facts."""
        results, verdicts = pickle.loads(packed)  # noqa: S301 (our own run's, in its directory)
        for node, entries in verdicts.items():
            facts.verdicts.put(node, _unpickled(entries))
        judgements = cls()
        judgements.add(results)
        return judgements

    def result(self, case: Case[Any]) -> Result | None:
        """The case's result if the pass made it, else None (the item runs its case)."""
        found = self._results.get((case.check.id, case.id))
        return None if found is None else found.result(case)


def judge_nodes(
    cases: Iterable[Case[Any]],
    facts: Facts,
    settings: Settings,
    jobs: int | None,
    progress: Progress,
    *,
    judgements: Judgements | None = None,
) -> Judgements:
    """Judge every node the cases need, node by node, in up to `jobs` processes (None: one per
    CPU, for clusters big enough); each node's verdicts kept in facts, its tables let go.
    judgements: what was judged before (its nodes left out), to add to."""
    work = _work(cases, facts, settings)
    judgements = Judgements() if judgements is None else judgements
    for name in judgements.nodes & facts.nodes.keys():
        facts.nodes[name].forget()  # what collection parsed (a node's interfaces)
    names = [
        name
        for name in facts.nodes
        if (work.spanning or name in work.per_node) and name not in judgements.nodes
    ]
    if not names:
        return judgements
    first, rest = names[0], names[1:]
    workers = _workers(jobs, len(names))
    if workers > 1:
        progress(f"judging {len(names)} nodes in {workers} processes")
    tally = _Tally(len(names), progress)
    judgements.add(judge_node(work, first))
    tally.one_more()
    if workers > 1:
        rest = _in_workers(work, rest, workers, judgements, tally)
    for name in rest:
        judgements.add(judge_node(work, name))
        tally.one_more()
    return judgements


def _work(cases: Iterable[Case[Any]], facts: Facts, settings: Settings) -> Work:
    spanning: dict[str, Case[Any]] = {}
    per_node: dict[str, list[Case[Any]]] = defaultdict(list)
    for case in cases:
        if case.unavailable is not None or reads_probes(case.check):
            continue  # an item whose subjects could not be listed, or a probe: run as it comes
        if case.node is None:
            spanning.setdefault(case.check.id, case)
        else:
            per_node[case.node].append(case)
    by_node = {node: tuple(found) for node, found in per_node.items()}
    return Work(facts, settings, tuple(spanning.values()), by_node)


def reads_probes(check: Check[Any]) -> bool:
    """Whether the check reads the handshake probes (which run on first use, not in the pass)."""
    return PROBE_PLAN_INPUT in check.inputs


def _workers(jobs: int | None, nodes: int) -> int:
    """Worker processes for this many nodes: none (1) unless forking is possible and safe (no
    other thread, such as an xdist worker's I/O thread, holds a lock the child would inherit)."""
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    if jobs is None:
        cpus = len(os.sched_getaffinity(0))
        return max(1, min(cpus, MOST_WORKERS, nodes // NODES_PER_WORKER))
    return max(1, min(jobs, nodes - 1))  # the first node is judged here


def judge_node(work: Work, name: str) -> dict[CaseKey, Found]:
    """Judge one node: each spanning check's verdict kept in the facts, each node item's result
    returned; then the node's parsed tables let go."""
    facts, settings = work.facts, work.settings
    only = facts.judging_only(name)
    for case in work.spanning:
        run_case(case, only, settings)  # its result is for this node alone: only the verdict stays
    results = {
        (case.check.id, case.id): Found.of(run_case(case, facts, settings))
        for case in work.per_node.get(name, ())
    }
    facts.nodes[name].forget()
    return results


class _Tally:
    """Nodes judged, told every PROGRESS_EVERY_S seconds: a quick pass says nothing."""

    def __init__(self, total: int, progress: Progress) -> None:
        self.total = total
        self.done = 0
        self.say = progress
        self._started = self._told = time.monotonic()

    def one_more(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self._told >= PROGRESS_EVERY_S and self.done < self.total:
            self._told = now
            self.say(f"judged {self.done}/{self.total} nodes ({now - self._started:.0f} s)")


def _in_workers(
    work: Work,
    names: Sequence[str],
    workers: int,
    judgements: Judgements,
    tally: _Tally,
) -> list[str]:
    """Judge the nodes in forked workers, NODES_PER_FORK each before fresh ones are forked; the
    nodes left when a worker died, to judge here."""
    left = dict.fromkeys(names)
    context = multiprocessing.get_context("fork")
    batch = workers * NODES_PER_FORK
    try:
        for start in range(0, len(names), batch):
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start_worker, initargs=(work,)
            ) as pool:
                for judged in pool.map(_judge_in_worker, names[start : start + batch]):
                    work.facts.verdicts.put(judged.node, _unpickled(judged.verdicts))
                    judgements.add(judged.results)
                    work.facts.nodes[judged.node].forget()  # what collection parsed here
                    del left[judged.node]
                    tally.one_more()
    except BrokenProcessPool as error:
        tally.say(f"a judging process died ({error}): judging the {len(left)} nodes left here")
    return list(left)


_WORK: Work | None = None  # a worker's: the run's, inherited when it was forked


def _start_worker(work: Work) -> None:
    global _WORK  # noqa: PLW0603 (a forked worker's one piece of state)
    _WORK = work
    # Ctrl-C is the run's to handle: it stops handing out nodes, and workers finish their one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What was inherited lives until the worker ends: collections need not walk (and so copy) it.
    gc.freeze()


def _judge_in_worker(name: str) -> _Judged:
    assert _WORK is not None
    results = judge_node(_WORK, name)
    return _Judged(name, dict(_pickled(_WORK.facts.verdicts.take(name))), results)


def _pickled(entries: Mapping[Hashable, Any]) -> Iterator[tuple[Hashable, bytes]]:
    for key, value in entries.items():
        try:
            yield key, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            continue  # made again where it is asked for


def _unpickled(entries: Mapping[Hashable, bytes]) -> dict[Hashable, Any]:
    return {key: pickle.loads(value) for key, value in entries.items()}  # noqa: S301 (our own)
