"""What the plugin's hooks hand over: JUnit properties, failure text made safe for a terminal, the
gate's terminal lines, the exit-code tally, and the HTML report and fix script written from the
JSON summary.

The reports are rendered from the JSON summary as written (read back), so they show exactly what
dashboards and `vipcheck diff` see, and no second copy of the results is kept during the run.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from vipcheck.cases import Case, Outcome, Result
from vipcheck.checks.base import Severity
from vipcheck.fix_script import reach_targets, render_fix_script
from vipcheck.gate import Gate, blocks
from vipcheck.html_report import ReportContext, render_html
from vipcheck.saved_summaries import load_summary
from vipcheck.untrusted import printable

if TYPE_CHECKING:
    import pytest

    from vipcheck.facts import Facts
    from vipcheck.options import RunOptions

GATE_CATEGORIES = (Outcome.WAIVED.value, Outcome.KNOWN.value)
SHOWN_WAIVED = 20  # waived items listed in the terminal; the rest are in the JSON and HTML


def junit_properties(result: Result) -> list[tuple[str, str]]:
    """The result's check, severity and outcome, and its waiver: JUnit <properties> per test."""
    check = result.case.check
    properties = [
        ("vipcheck_check", check.id),
        ("vipcheck_severity", check.severity.value),
        ("vipcheck_outcome", result.outcome.value),
    ]
    if result.waiver is not None:
        waiver = result.waiver
        properties += [
            ("vipcheck_waiver_reason", waiver.reason),
            ("vipcheck_waiver_owner", waiver.owner),
            ("vipcheck_waiver_expires", waiver.expires.isoformat()),
            ("vipcheck_waiver_source", waiver.source),
        ]
    properties += [("vipcheck_note", note) for note in result.notes]
    return properties


def deselected_cases(items: Iterable[pytest.Item]) -> Iterator[Case[Any]]:
    """The vipcheck cases of items -k or -m deselected; other tests have none."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = {} if callspec is None else callspec.params
        yield from (value for value in params.values() if isinstance(value, Case))


def gate_category(report: pytest.TestReport) -> str | None:
    """`waived` or `known` for the skip the gate made of a failure; None for anything else."""
    if not report.skipped:
        return None
    outcome = dict(report.user_properties).get("vipcheck_outcome")
    return outcome if outcome in GATE_CATEGORIES else None


def make_printable(report: pytest.TestReport) -> None:
    """Show the controls in a report's failure or skip text and captured output as escapes.

    The text holds what nodes and snapshots wrote (an interface named `\\x1b]0;t\\x07`, an error
    file); pytest prints it, and builds -rf/-rs lines and JUnit from it, as it is. Only controls
    change: pytest's ids are escaped already, and a multi-line failure keeps its lines. A skip
    reason is one line of the short summary, so its newlines are shown too.
    """
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        path, lineno, reason = longrepr
        report.longrepr = (path, lineno, printable(reason, one_line=True))
    elif longrepr is not None:
        report.longrepr = _printable(longrepr)
    if report.sections:  # most reports have none: no new empty list per report
        report.sections = _printable(report.sections)


def _printable(value: Any) -> Any:
    """`value` with every string in it made printable: pytest's failure representations are
    dataclasses (ExceptionChainRepr, ReprEntry, ReprFileLocation...) of strings, lists and
    tuples, changed in place; anything else is left as it is."""
    if isinstance(value, str):
        return printable(value)
    if type(value) in (list, tuple):
        return type(value)(_printable(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for member in dataclasses.fields(value):
            setattr(value, member.name, _printable(getattr(value, member.name)))
    return value


@dataclass
class FailureTally:
    """Failed reports: those that fail the run, and those below --vipcheck-fail-on, by severity."""

    blocking: int = 0
    tolerated: Counter[str] = field(default_factory=Counter)

    def count(self, report: pytest.TestReport, fail_on: Severity) -> None:
        severity = dict(report.user_properties).get("vipcheck_severity")
        # Only a check's own failure (call phase) can be tolerated; an ERROR never is.
        if report.when == "call" and severity and not blocks(Severity(str(severity)), fail_on):
            self.tolerated[str(severity)] += 1
        else:
            self.blocking += 1

    @property
    def tolerated_only(self) -> bool:
        return self.blocking == 0 and sum(self.tolerated.values()) > 0


def gate_lines(options: RunOptions, gate: Gate, tally: FailureTally) -> Iterator[str]:
    """What the gate did, for the end of the terminal output."""
    for check, subject, waiver in gate.waived[:SHOWN_WAIVED]:
        yield (
            f"waived: {check} {subject}: {waiver.reason} "
            f"({waiver.owner}, until {waiver.expires.isoformat()})"
        )
    if len(gate.waived) > SHOWN_WAIVED:
        yield f"... and {len(gate.waived) - SHOWN_WAIVED} more waived (see the JSON summary)"
    for waiver in gate.deselected():
        state = "expired; " if not waiver.live(gate.today) else ""
        yield (
            f"waiver not judged in this run ({state}its items were deselected, -k or -m): "
            f"{waiver.describe()}"
        )
    for waiver in gate.unmatched():
        state = "expired, " if not waiver.live(gate.today) else ""
        yield f"waiver matched nothing in this run ({state}remove it?): {waiver.describe()}"
    if gate.baseline is not None:
        yield (
            f"baseline {options.gate.baseline_file}: carried {gate.carried} known "
            f"failure(s); only new failures fail"
        )
    if tally.tolerated:
        counts = ", ".join(f"{n} {severity}" for severity, n in sorted(tally.tolerated.items()))
        yield (
            f"{sum(tally.tolerated.values())} failure(s) below --vipcheck-fail-on="
            f"{options.gate.fail_on} ({counts}): shown and counted, not failing the run"
        )


def written_lines(options: RunOptions) -> Iterator[str]:
    yield f"HTML report: {options.gate.html_path}"
    if options.gate.fix_script is not None:
        yield (
            f"fix script: {options.gate.fix_script} (review it; it prints what it would do, "
            "and runs the node commands only with --apply)"
        )


def write_reports(options: RunOptions, facts: Facts, gate: Gate) -> None:
    """The HTML report, and the fix script when asked, from the JSON summary just written."""
    summary = load_summary(options.json_path)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    context = ReportContext(
        target=options.header()[0].removeprefix("vipcheck target: "),
        created=now,
        version=vipcheck_version(),
        snapshot=_snapshot_text(options, facts),
        fail_on=options.gate.fail_on.value,
        unmatched_waivers=tuple(w.describe() for w in gate.unmatched()),
        baseline=None if options.gate.baseline_file is None else str(options.gate.baseline_file),
    )
    html_path = options.gate.html_path
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(summary, context))
    script = options.gate.fix_script
    if script is not None:
        targets = reach_targets(options.gather, _node_addresses(facts))
        text = render_fix_script(summary, targets, generated=now, target=context.target)
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        script.chmod(0o755)


def vipcheck_version() -> str:
    try:
        return version("vipcheck")
    except PackageNotFoundError:
        return "unknown"


def _snapshot_text(options: RunOptions, facts: Facts) -> str:
    """Where the facts came from; a replay's meta.json as loaded (read once, within limits)."""
    if options.replay is not None:
        created = facts.meta.get("created")
        # A hand-made snapshot need not have meta.json, nor these keys.
        taken = (
            f", taken {created} by vipcheck {facts.meta.get('vipcheck', '?')}" if created else ""
        )
        return f"replayed from {options.replay}{taken}"
    if options.save_to is not None:
        return f"live, saved to {options.save_to}"
    return "live, not saved (--save-snapshot DIR keeps the evidence)"


def _node_addresses(facts: Facts) -> dict[str, list[str]]:
    """Each node's InternalIPs and hostname, to pair --hosts specs with nodes as gathering did."""
    try:
        nodes = facts.cluster.nodes
    except Exception:
        return {name: [] for name in facts.nodes}
    addresses = {
        node.name: [*(str(ip) for ip in node.internal_ips), *filter(None, [node.hostname])]
        for node in nodes
    }
    for name in facts.nodes:
        addresses.setdefault(name, [])
    return addresses
