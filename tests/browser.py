"""Headless Chromium for the tests that read the HTML report as a browser renders it."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("VIPCHECK_REQUIRE_LAB")) or os.environ.get("CI") == "true"


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
