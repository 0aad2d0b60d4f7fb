"""kubectl for the tests that show the lab's API server answers it unchanged (README)."""

from __future__ import annotations

import shutil

import pytest

from tests.browser import IN_CI


def kubectl() -> str:
    """kubectl's path on PATH, or skip naming how to get it (but never in CI: make deps installs
    Debian's kubernetes-client, so a missing kubectl there is a broken install step)."""
    path = shutil.which("kubectl")
    if path:
        return path
    if IN_CI:
        pytest.fail(
            "kubectl is missing in CI (make deps installs kubernetes-client)", pytrace=False
        )
    pytest.skip(
        "kubectl is not installed (make deps installs the Debian package kubernetes-client)"
    )
