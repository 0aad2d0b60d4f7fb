"""The HTML report: self-contained, rendered when written, and read back from a real browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium, parse, rendered_dom
from vipcheck.cli import SUITES_DIR
from vipcheck.html_report import ReportContext, render_html

pytest_plugins = ["pytester"]

# A --save-snapshot of the live seed-incidents lab, probes included: a lab run's evidence.
PROBED = Path(__file__).parents[2] / "fixtures" / "snapshots" / "seed-incidents-probed"
CONTEXT = ReportContext(
    target="lab", created="2026-11-30T12:00:00+00:00", version="0.1.0", snapshot="replayed"
)


def record(check: str, subject: str, node: str | None, outcome: str, **extra: Any) -> Any:
    return {"check": check, "subject": subject, "node": node, "outcome": outcome, **extra}


SUMMARY = {
    "results": [
        record("rp-filter-not-strict", "node-2/tunl0", "node-2", "failed", severity="critical",
               violations=[{"node": "node-2", "subject": "tunl0", "observed": "<all=1>",
                            "expected": "0 or 2", "fix": "sysctl -w x=2",
                            "evidence": ["net.ipv4.conf.all.rp_filter = 1"]}]),
        record("rp-filter-not-strict", "node-1/tunl0", "node-1", "passed"),
        record("ipvs-tcpfin-timeout", "node-1", "node-1", "waived",
               waiver={"reason": "vendor kernel", "owner": "alice", "expires": "2999-01-01"},
               violations=[{"node": "node-1", "observed": "120"}]),
        record("ipvs-tcpfin-timeout", "node-2", "node-2", "skipped",
               message="no ipvsadm -L --timeout in the snapshot"),
        record("ipvs-real-servers-match-endpoints", "default/redis:6379/TCP", None, "failed",
               violations=[{"node": "node-3", "observed": "stale"}]),
    ]
}  # fmt: skip


def test_the_report_is_self_contained_and_escapes_what_it_shows() -> None:
    html = render_html(SUMMARY, CONTEXT)
    lowered = html.lower()
    for external in ("<script", "src=", "<link", "@import", "url(", "http://", "https://"):
        assert external not in lowered, external
    assert "default-src 'none'" in html  # the browser itself refuses any fetch
    assert "&lt;all=1&gt;" in html
    assert "<all=1>" not in html


def test_the_matrix_says_each_outcome_in_words_and_places_service_ports_on_their_nodes() -> None:
    cells = {
        (c["data-node"], c["data-check"]): c for c in parse(render_html(SUMMARY, CONTEXT)).cells
    }
    assert cells[("node-2", "rp-filter-not-strict")]["data-outcome"] == "failed"
    assert "failed" in cells[("node-2", "rp-filter-not-strict")]["text"]
    assert cells[("node-1", "ipvs-tcpfin-timeout")]["data-outcome"] == "waived"
    assert "waived" in cells[("node-1", "ipvs-tcpfin-timeout")]["text"]
    assert cells[("node-3", "ipvs-real-servers-match-endpoints")]["data-outcome"] == "failed"
    assert (
        cells[("(Service ports)", "ipvs-real-servers-match-endpoints")]["data-outcome"] == "failed"
    )
    assert cells[("node-1", "rp-filter-not-strict")]["data-outcome"] == "passed"


def test_failures_waivers_and_skips_are_shown_with_their_reasons() -> None:
    html = render_html(SUMMARY, CONTEXT)
    shown = (
        "sysctl -w x=2",
        "net.ipv4.conf.all.rp_filter = 1",
        "0 or 2",
        "why:",
        "vendor kernel",
        "alice",
        "2999-01-01",
        "no ipvsadm -L --timeout in the snapshot",
    )
    for text in shown:
        assert text in html, text
    assert "<dt>target</dt><dd>lab</dd>" in html
    assert "<dt>vipcheck</dt><dd>0.1.0</dd>" in html


def test_chromium_renders_a_lab_runs_report_and_finds_the_failing_cells(
    pytester: pytest.Pytester,
) -> None:
    chromium()  # skip before running anything where there is no browser
    result = pytester.runpytest_subprocess(
        str(SUITES_DIR), "-p", "no:cacheprovider", "--from-snapshot", str(PROBED),
        "--vipcheck-json", "summary.json", "--vipcheck-html", "report.html",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["vipcheck: HTML report: report.html"])
    meta = json.loads((PROBED / "meta.json").read_text())
    assert f"taken {meta['created']} by vipcheck" in (pytester.path / "report.html").read_text()
    summary = json.loads((pytester.path / "summary.json").read_text())
    failing = {
        (v["node"] or r["node"], r["check"])
        for r in summary["results"]
        if r["outcome"] == "failed"
        for v in r["violations"]
    }
    assert ("node-2", "rp-filter-not-strict") in failing
    dom = parse(rendered_dom(pytester.path / "report.html"))
    shown = {(c["data-node"], c["data-check"]) for c in dom.cells if c["data-outcome"] == "failed"}
    assert shown - {("(Service ports)", c) for _, c in failing} == failing
    assert all("failed" in c["text"] for c in dom.cells if c["data-outcome"] == "failed")
    sections = {(s["data-check"], s["data-subject"]) for s in dom.sections}
    assert sections == {
        (r["check"], r["subject"]) for r in summary["results"] if r["outcome"] == "failed"
    }


def test_twenty_thousand_results_make_a_small_report_that_lists_every_failure() -> None:
    node_checks = ("rp-filter-not-strict", "ipvs-tcpfin-timeout", "ip-forward-enabled")
    port_checks = ("ipvs-real-servers-match-endpoints", "vip-handshake", "ipvs-present")
    results = [
        record(check, f"node-{n}", f"node-{n}", "failed" if n % 25 == 0 else "passed")
        for n in range(100)
        for check in node_checks
    ]
    results += [
        record(check, f"ns/svc-{s}:80/TCP", None, "failed" if s % 500 == 0 else "passed")
        for s in range(7000)
        for check in port_checks
    ]
    for r in results:
        if r["outcome"] == "failed":
            r["violations"] = [{"node": r["node"] or "node-7", "observed": "wrong"}]
    assert len(results) > 20_000
    html = render_html({"results": results}, CONTEXT)
    assert len(html.encode()) < 300_000  # passes are counted in the matrix, never listed
    sections = {(s["data-check"], s["data-subject"]) for s in parse(html).sections}
    assert sections == {(r["check"], r["subject"]) for r in results if r["outcome"] == "failed"}
