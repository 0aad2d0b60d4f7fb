"""Reading JSON summaries back: for --vipcheck-baseline, `vipcheck diff`, the HTML report."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# (check id, subject, node): how failures are compared between runs.
FindingKey = tuple[str, str, str | None]
# Outcomes that are a failure observed, whatever the gate made of it.
FAILING = frozenset({"failed", "waived", "known"})


class SummaryError(Exception):
    """A summary file that cannot be used, named with what is wrong."""


def load_summary(path: Path) -> dict[str, Any]:
    """A JSON summary as vipcheck writes it: an object with a `results` list of records."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise SummaryError(f"{path}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise SummaryError(f"{path}:{error.lineno}: not JSON: {error.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise SummaryError(f"{path}: not a vipcheck JSON summary (no `results` list)")
    for index, record in enumerate(data["results"]):
        if not isinstance(record, dict) or not {"check", "subject", "outcome"} <= set(record):
            raise SummaryError(
                f"{path}: results[{index}]: expected a record with check, subject and outcome"
            )
    return data


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
