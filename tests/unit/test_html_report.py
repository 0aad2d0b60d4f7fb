"""The HTML report: self-contained, rendered when written, and read back from a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from vipcheck.cli import SUITES_DIR
from vipcheck.html_report import ReportContext, render_html

pytest_plugins = ["pytester"]

# A --save-snapshot of the live seed-incidents lab, probes included: a lab run's evidence.
PROBED = Path(__file__).parents[2] / "fixtures" / "snapshots" / "seed-incidents-probed"
IN_CI = bool(os.environ.get("VIPCHECK_REQUIRE_LAB")) or os.environ.get("CI") == "true"
CONTEXT = ReportContext(
    target="lab", created="2026-11-30T12:00:00+00:00", version="0.1.0", snapshot="replayed"
)


def chromium() -> str:
    """The browser, or skip naming what is missing (but never in CI)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if IN_CI:
        pytest.fail("chromium is missing in CI (make deps installs it)", pytrace=False)
    pytest.skip("chromium is not installed (make deps installs the Debian package chromium)")


def rendered_dom(page: Path) -> str:
    """What headless Chromium has in its DOM once it loaded the file, scripts and all."""
    result = subprocess.run(
        [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Cells(HTMLParser):
    """Matrix cells (node, check, outcome, text) and the ids of failure sections."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.sections: list[dict[str, str]] = []
        self._open: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "td" and "data-check" in attributes:
            self._open = {**attributes, "text": ""}
        if tag == "section" and "data-check" in attributes:
            self.sections.append(attributes)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open is not None:
            self.cells.append(self._open)
            self._open = None


def parse(html: str) -> Cells:
    cells = Cells()
    cells.feed(html)
    return cells


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
