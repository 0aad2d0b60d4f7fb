"""A run split by pytest-xdist (`vipcheck -n auto`): the target observed and judged once, for
every worker; the workers' results written by the controller, in collection order, as one JSON
summary and one set of reports, the same as a run without -n writes.

The controller collects nothing, so it cannot know whether a session has suite tests (a session
without any must contact nothing): it only hands each worker a shared directory. The first
worker that meets a suite test takes the directory's lock and leads: it observes as a run
without -n would (a live run's snapshot saved in the directory, unless --save-snapshot names
another), probes a live target if its selected items probe, judges every node
(vipcheck.judging) and leaves the judgements there, then lets go of the lock. The others wait
for the lock, then replay that snapshot and take those judgements: the cluster is read and
judged once. Each worker sends its results (before the gate) to the controller, which judges
them against the waivers and the baseline in collection order.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipcheck.cases import Case, Result
from vipcheck.checks import check_by_id
from vipcheck.judging import Found

SHARED = "vipcheck_shared"  # workerinput: the directory the workers share
RESULTS = "vipcheck_results"  # workeroutput: one worker's results, pickled
_LOCK, _OBSERVED, _JUDGED = "lock", "observed.json", "judged.pickle"


def is_worker(config: Any) -> bool:
    return hasattr(config, "workerinput")


def shared_directory(config: Any) -> Path | None:
    """The directory this xdist worker shares with the others, or None outside xdist."""
    given = getattr(config, "workerinput", {}).get(SHARED)
    return None if given is None else Path(given)


def judged(shared: Path) -> bytes:
    """What the leading worker judged (vipcheck.judging.Judgements.packed)."""
    return (shared / _JUDGED).read_bytes()


class Lead:
    """The shared directory's lock, held by one worker while it observes and judges."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared
        self._fd: int | None = os.open(shared / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # waits while another worker leads

    def observed(self) -> Path | None:
        """The snapshot the leader observed, once it has finished; None: lead now."""
        record = self.shared / _OBSERVED
        if not record.exists():
            return None
        return Path(json.loads(record.read_text())["snapshot"])

    def finish(self, snapshot: Path, judged: bytes) -> None:
        """Leave what was observed and judged for the other workers, and let them in."""
        (self.shared / _JUDGED).write_bytes(judged)
        (self.shared / _OBSERVED).write_text(json.dumps({"snapshot": str(snapshot)}))
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with the descriptor
            self._fd = None


@dataclass(frozen=True, slots=True)
class Shipped:
    """A worker's result before the gate, with its item's place in the collection."""

    index: int
    check: str
    subject: object
    found: Found

    @classmethod
    def of(cls, index: int, result: Result) -> Shipped:
        return cls(index, result.case.check.id, result.case.subject, Found.of(result))

    def result(self) -> Result:
        return self.found.result(Case(check_by_id(self.check), self.subject))


@dataclass
class WorkerOutput:
    """What one worker sends the controller: its results, the cases -k and -m left out, and the
    snapshot it judged."""

    results: list[Shipped] = field(default_factory=list)
    deselected: list[tuple[str, object]] = field(default_factory=list)  # (check id, subject)
    snapshot: str | None = None

    def packed(self) -> bytes:
        return pickle.dumps(self, pickle.HIGHEST_PROTOCOL)


def unpacked(outputs: Iterable[Mapping[str, Any]]) -> list[WorkerOutput]:
    """The workers' outputs, from what xdist carried back (a worker that sent none is left out)."""
    return [pickle.loads(output[RESULTS]) for output in outputs if RESULTS in output]  # noqa: S301


def in_collection_order(outputs: Iterable[WorkerOutput]) -> list[Result]:
    """Every result once (a rerun item's last), in the order the items were collected."""
    by_index = {shipped.index: shipped for output in outputs for shipped in output.results}
    return [by_index[index].result() for index in sorted(by_index)]


def deselected(outputs: Iterable[WorkerOutput]) -> list[Case[Any]]:
    """The cases -k or -m left out (every worker leaves out the same)."""
    seen = {
        (check, repr(subject)): (check, subject) for o in outputs for check, subject in o.deselected
    }
    return [Case(check_by_id(check), subject) for check, subject in seen.values()]
