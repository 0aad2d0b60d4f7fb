"""The host kernel's nftables, in a network namespace of its own: rulesets loaded with `nft -f`
and listed back, so the parsers and the node script are tested on the kernel's own output.

Needs root (unshare -n) and nft; a test using it skips naming what is missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "unit" / "parse" / "data"
# Each recorded ruleset (DATA/<name>.nft) with its table's family.
RULESETS = {"endpoint-chains": "ip", "dnat-maps": "ip", "ip6": "ip6"}
# The listings recorded beside each ruleset: file suffix -> nft's arguments.
LISTINGS = {".json": ("-j",), ".txt": (), ".a.txt": ("-a",)}


@functools.cache
def _unusable() -> str | None:
    """Why the kernel's nftables cannot be used here, or None."""
    if os.geteuid() != 0:
        return "needs root for unshare -n (a network namespace of its own)"
    for tool in ("unshare", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "-n", "nft", "list", "tables"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"unshare -n nft list tables failed: {probe.stderr.strip()[:200]}"
    return None


def require_kernel_nft() -> None:
    """Skip, naming why, where nftables cannot be driven in a namespace of its own."""
    if (reason := _unusable()) is not None:
        pytest.skip(reason)


def in_namespace(ruleset: str, script: str, env: dict[str, str] | None = None) -> str:
    """Load ruleset with `nft -f` in a fresh network namespace, then run the sh script there;
    its stdout. A failure fails the test with nft's error."""
    require_kernel_nft()
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'printf "%s" "$0" | nft -f - && eval "$1"', ruleset, script],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, f"in the namespace: {result.stderr.strip()}"
    return result.stdout


def list_table(ruleset: str, family: str) -> dict[str, str]:
    """The ruleset loaded and its kube-proxy table listed each way LISTINGS names, by suffix."""
    marker = "===listing "
    script = "".join(
        f"printf '%s\\n' '{marker}{suffix}'; nft {' '.join(args)} list table {family} kube-proxy;"
        for suffix, args in LISTINGS.items()
    )
    listings: dict[str, str] = {}
    for chunk in in_namespace(ruleset, script).split(marker)[1:]:
        suffix, _, text = chunk.partition("\n")
        listings[suffix] = text
    return listings
