"""The HTML report: one self-contained file, rendered here, that opens from disk with no network.

No script, no external style, font or image (a Content-Security-Policy forbids them), so the
browser only lays out what is written: it stays quick at tens of thousands of results, because
passes are counted in a node x check matrix and a per-check table, never listed one by one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

from vipcheck.checks import CHECKS_BY_ID

# Worst first: a cell shows its worst outcome, in words and in colour.
OUTCOME_ORDER = ("error", "failed", "known", "waived", "passed", "skipped")
MARK = {"error": "!", "failed": "✗", "known": "≈", "waived": "W", "passed": "✓", "skipped": "-"}
SERVICE_PORTS_ROW = "(Service ports)"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dl.meta dt{font-weight:600}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #bbb;padding:.2em .45em;
vertical-align:top;text-align:left}th{background:#f2f2f2}
table.matrix td{white-space:nowrap;font-size:12px}
table.matrix th.check{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:500;
font-size:12px}
.failed{background:#f8c9c4}.error{background:#f3a0e8}.known{background:#ffe2b3}
.waived{background:#fff3a8}.passed{background:#c9ecc9}.skipped{background:#e8e8e8}
.none{color:#888}div.scroll{overflow-x:auto}
section.failure{border-left:4px solid #c0392b;padding:.2em .8em;margin:.8em 0}
section.failure.known{border-color:#e69500}
pre{background:#f7f7f7;padding:.4em;overflow-x:auto;margin:.2em 0;font-size:12px}
.note{font-weight:600}.why{color:#444}
"""


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What the run was, for the report's header: target, time, version, snapshot, the gate."""

    target: str
    created: str
    version: str
    snapshot: str
    fail_on: str = "warning"
    unmatched_waivers: tuple[str, ...] = ()
    baseline: str | None = None


def render_html(summary: Mapping[str, Any], context: ReportContext) -> str:
    """The whole report for one JSON summary."""
    results: list[Mapping[str, Any]] = summary["results"]
    present = {r["check"] for r in results}
    checks = [c for c in CHECKS_BY_ID if c in present] + sorted(present - set(CHECKS_BY_ID))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>vipcheck report: {_e(context.target)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>vipcheck report</h1>",
        _meta(summary, context),
        _matrix(results, checks),
        _by_check(results, checks),
        _failures(results),
        _errors(results),
        _waived(results, context),
        _skipped(results),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _meta(summary: Mapping[str, Any], context: ReportContext) -> str:
    totals = summary.get("totals") or Counter(r["outcome"] for r in summary["results"])
    rows = [
        ("target", context.target),
        ("time", context.created),
        ("vipcheck", context.version),
        ("snapshot", context.snapshot),
        ("fails the run", f"failures of severity {context.fail_on} and above"),
        ("totals", ", ".join(f"{n} {outcome}" for outcome, n in totals.items() if n) or "none"),
    ]
    if context.baseline:
        rows.append(("baseline", f"{context.baseline}: its failures are known, not failing"))
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<dl class="meta" id="meta">{items}</dl>'


def _cell_rows(record: Mapping[str, Any]) -> Iterable[str]:
    """The matrix rows a result counts in: its node, or each node its failure names."""
    if record.get("node"):
        return [record["node"]]
    nodes = {v.get("node") for v in record.get("violations") or () if v.get("node")}
    return [SERVICE_PORTS_ROW, *sorted(nodes)]


def _matrix(results: list[Mapping[str, Any]], checks: list[str]) -> str:
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    anchors: dict[tuple[str, str], int] = {}
    for index, record in enumerate(results):
        for row in _cell_rows(record):
            key = (row, record["check"])
            counts[key][record["outcome"]] += 1
            if record["outcome"] in ("failed", "error", "known") and key not in anchors:
                anchors[key] = index
    rows = sorted({row for row, _ in counts}, key=lambda r: (r != SERVICE_PORTS_ROW, r))
    head = "".join(f'<th class="check" title="{_e(_title(c))}">{_e(c)}</th>' for c in checks)
    body = []
    for row in rows:
        cells = [f"<th>{_e(row)}</th>"]
        for check in checks:
            count = counts.get((row, check))
            if not count:
                cells.append('<td class="none" data-outcome="none">—</td>')
                continue
            worst = next(o for o in OUTCOME_ORDER if count[o])
            text = ", ".join(_count_text(o, count[o]) for o in OUTCOME_ORDER if count[o])
            if (row, check) in anchors:
                text = f'<a href="#r{anchors[(row, check)]}">{text}</a>'
            cells.append(
                f'<td class="{worst}" data-node="{_e(row)}" data-check="{_e(check)}" '
                f'data-outcome="{worst}">{text}</td>'
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<h2 id="matrix">Nodes &times; checks</h2>'
        "<p>Each cell counts the items of one check on one node, worst outcome first "
        f"({', '.join(f'{MARK[o]} {o}' for o in OUTCOME_ORDER)}). A Service port spans nodes: "
        f"it counts in the {SERVICE_PORTS_ROW} row, and a failure also on each node it names."
        "</p>"
        f'<div class="scroll"><table class="matrix"><thead><tr><th>node</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _count_text(outcome: str, count: int) -> str:
    """`✗ 2 failed`; passes and skips as `✓ 3`, `- 1`, which the legend names, to stay narrow."""
    if outcome in ("passed", "skipped"):
        return f"{MARK[outcome]} {count}"
    return f"{MARK[outcome]} {count} {outcome}"


def _by_check(results: list[Mapping[str, Any]], checks: list[str]) -> str:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for record in results:
        counts[record["check"]][record["outcome"]] += 1
    head = "".join(f"<th>{o}</th>" for o in OUTCOME_ORDER)
    rows = []
    for check in checks:
        known = CHECKS_BY_ID.get(check)
        severity = known.severity.value if known else ""
        cells = "".join(
            f'<td class="{o if counts[check][o] else "none"}">{counts[check][o]}</td>'
            for o in OUTCOME_ORDER
        )
        rows.append(
            f"<tr><th>{_e(check)}</th><td>{_e(_title(check))}</td><td>{severity}</td>{cells}</tr>"
        )
    return (
        '<h2 id="checks">By check</h2>'
        f"<table><thead><tr><th>check</th><th>title</th><th>severity</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _failures(results: list[Mapping[str, Any]]) -> str:
    sections = [
        _failure(index, record)
        for index, record in enumerate(results)
        if record["outcome"] in ("failed", "known")
    ]
    text = "".join(sections) or "<p>None.</p>"
    return f'<h2 id="failures">Failures ({len(sections)})</h2>{text}'


def _failure(index: int, record: Mapping[str, Any]) -> str:
    check = CHECKS_BY_ID.get(record["check"])
    title = check.title if check else record["check"]
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in record.get("notes") or ())
    violations = []
    for v in record.get("violations") or ():
        evidence = "\n".join(v.get("evidence") or ())
        violations.append(
            "<tr>"
            f"<td>{_e(v.get('node') or '')}</td><td>{_e(v.get('subject', ''))}</td>"
            f"<td>{_e(v.get('observed', ''))}</td><td>{_e(v.get('expected', ''))}</td>"
            f"<td>{_e(v.get('fix', ''))}</td>"
            f"<td><details><summary>{len(v.get('evidence') or ())} line(s)</summary>"
            f"<pre>{_e(evidence)}</pre></details></td></tr>"
        )
    why = (
        f'<p class="why"><b>why:</b> {_e(check.why)}</p><p><b>fix:</b> {_e(check.fix)}</p>'
        if check
        else ""
    )
    known = " known" if record["outcome"] == "known" else ""
    return (
        f'<section class="failure{known}" id="r{index}" data-check="{_e(record["check"])}" '
        f'data-subject="{_e(record["subject"])}">'
        f"<h3>{_e(record['subject'])}: {_e(title)} "
        f"[{_e(record['check'])}, {_e(record.get('severity', ''))}, {record['outcome']}]</h3>"
        f"{notes}<table><thead><tr><th>node</th><th>subject</th><th>observed</th>"
        f"<th>expected</th><th>fix</th><th>evidence</th></tr></thead>"
        f"<tbody>{''.join(violations)}</tbody></table>{why}</section>"
    )


def _errors(results: list[Mapping[str, Any]]) -> str:
    rows = [
        f'<tr id="r{index}"><td>{_e(r["check"])}</td><td>{_e(r["subject"])}</td>'
        f"<td>{_e(r.get('message', ''))}</td></tr>"
        for index, r in enumerate(results)
        if r["outcome"] == "error"
    ]
    if not rows:
        return ""
    return (
        f'<h2 id="errors">Could not observe ({len(rows)})</h2>'
        "<table><thead><tr><th>check</th><th>subject</th><th>why</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _waived(results: list[Mapping[str, Any]], context: ReportContext) -> str:
    rows = []
    for r in results:
        if r["outcome"] != "waived":
            continue
        w = r.get("waiver") or {}
        rows.append(
            f'<tr class="waived"><td>{_e(r["check"])}</td><td>{_e(r["subject"])}</td>'
            f"<td>{_e(w.get('reason', ''))}</td><td>{_e(w.get('owner', ''))}</td>"
            f"<td>{_e(w.get('expires', ''))}</td><td>{_e(w.get('source', ''))}</td></tr>"
        )
    unmatched = "".join(f"<li>{_e(text)}</li>" for text in context.unmatched_waivers)
    if not rows and not unmatched:
        return ""
    table = (
        "<table><thead><tr><th>check</th><th>subject</th><th>reason</th><th>owner</th>"
        f"<th>expires</th><th>waiver</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else ""
    )
    extra = f"<p>Waivers that matched nothing in this run:</p><ul>{unmatched}</ul>"
    return f'<h2 id="waived">Waived ({len(rows)})</h2>{table}{extra if unmatched else ""}'


def _skipped(results: list[Mapping[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in results:
        if r["outcome"] == "skipped":
            groups[(r["check"], r.get("message") or "")].append(r["subject"])
    if not groups:
        return ""
    rows = "".join(
        f"<tr><td>{_e(check)}</td><td>{_e(reason)}</td><td><details><summary>{len(subjects)}"
        f"</summary>{_e(', '.join(subjects))}</details></td></tr>"
        for (check, reason), subjects in groups.items()
    )
    total = sum(len(s) for s in groups.values())
    return (
        f'<h2 id="skipped">Skipped ({total})</h2>'
        "<table><thead><tr><th>check</th><th>reason</th><th>items</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _title(check: str) -> str:
    known = CHECKS_BY_ID.get(check)
    return known.title if known else check


def _e(text: object) -> str:
    return escape(str(text), quote=True)
