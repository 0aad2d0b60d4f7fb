"""pytest plugin entry point for vipcheck (options and suites arrive with the conformance issue)."""

from __future__ import annotations
