"""Reading JSON summaries back: for --vipcheck-baseline, `vipcheck diff`, the HTML report."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vipcheck.snapshot import file_kind, format_size
from vipcheck.untrusted import printable

# (check id, subject, node): how failures are compared between runs.
FindingKey = tuple[str, str, str | None]
# Outcomes that are a failure observed, whatever the gate made of it.
FAILING = frozenset({"failed", "waived", "known"})
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class SummaryError(Exception):
    """A summary file that cannot be used, named with what is wrong."""


def load_summary(path: Path, max_bytes: int | None = None) -> dict[str, Any]:
    """A JSON summary as vipcheck writes it: an object with a `results` list of records.

    One from elsewhere (a baseline, a side of a diff) is read with max_bytes: a regular file no
    larger (a FIFO would block the run, /dev/zero fill memory), read to at most max_bytes + 1.
    Every record is checked to be what the gate and the diff read (check, subject and outcome
    strings, node a string or null, violations objects), so neither can fail on one later.
    None: the summary this run has just written.
    """
    shown = printable(str(path), one_line=True)
    text = _read(path, shown, max_bytes)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SummaryError(f"{shown}:{error.lineno}: not JSON: {error.msg}") from None
    except RecursionError:
        raise SummaryError(f"{shown}: JSON nested too deeply to read") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise SummaryError(f"{shown}: not a vipcheck JSON summary (no `results` list)")
    for index, record in enumerate(data["results"]):
        problem = _record_problem(record)
        if problem is not None:
            raise SummaryError(f"{shown}: results[{index}]: {problem}")
    return data


def _read(path: Path, shown: str, max_bytes: int | None) -> str:
    """The file's text; looked at before it is opened, and opened without blocking."""
    try:
        _regular(shown, path.stat().st_mode)
        with os.fdopen(os.open(path, _OPEN_FLAGS), "rb") as stream:
            info = os.fstat(stream.fileno())
            _regular(shown, info.st_mode)
            if max_bytes is None:
                return stream.read().decode()
            if info.st_size > max_bytes:
                raise SummaryError(_too_big(shown, info.st_size, max_bytes))
            data = stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise SummaryError(_too_big(shown, len(data), max_bytes))
        return data.decode()
    except (OSError, UnicodeDecodeError) as error:
        raise SummaryError(f"{shown}: cannot read: {error}") from None


def _regular(shown: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise SummaryError(f"{shown}: {file_kind(mode)}, not a summary (a regular file)")


def _too_big(shown: str, size: int, limit: int) -> str:
    return (
        f"{shown}: {format_size(size)}, more than the {format_size(limit)} a summary may hold "
        f"(it is read whole into memory); raise the limit with --vipcheck-max-file-size "
        f"{format_size(2 * size, unit=True)}"
    )


def _record_problem(record: object) -> str | None:
    """What makes one record unlike those vipcheck writes, or None."""
    if not isinstance(record, dict) or not {"check", "subject", "outcome"} <= set(record):
        return "expected a record with check, subject and outcome"
    for key in ("check", "subject", "outcome"):
        if not isinstance(record[key], str):
            return f"{key}: expected a string"
    if not isinstance(record.get("node"), str | None):
        return "node: expected a string or null"
    return _violations_problem(record.get("violations"))


def _violations_problem(violations: object) -> str | None:
    if violations is None:
        return None
    if not isinstance(violations, list) or not all(isinstance(v, dict) for v in violations):
        return "violations: expected a list of objects"
    if not all(isinstance(v.get("node"), str | None) for v in violations):
        return "violations: node: expected a string or null"
    return None


def record_findings(record: Mapping[str, Any]) -> Iterator[FindingKey]:
    """The (check, subject, node) keys of one failing record: one per node its violations name."""
    check, subject, node = record["check"], record["subject"], record.get("node")
    nodes = {v.get("node") or node for v in record.get("violations") or ()} or {node}
    for each in sorted(nodes, key=lambda n: n or ""):
        yield check, subject, each


def failure_keys(summary: Mapping[str, Any]) -> frozenset[FindingKey]:
    """Every failure a summary observed (failed, waived or known)."""
    return frozenset(
        key
        for record in summary["results"]
        if record["outcome"] in FAILING
        for key in record_findings(record)
    )
