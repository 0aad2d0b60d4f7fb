"""`nft --version` to a version tuple (temporary: the leftovers branch owns this input)."""

from __future__ import annotations

import re

from vipcheck.parse import ParseError

# `nftables v1.0.6 (Lester Gooch #5)`; a prompt or the command line may stand before it.
_VERSION = re.compile(r"nftables v(\d+(?:\.\d+)*)\b")


def parse_nft_version(text: str, source: str) -> tuple[int, ...]:
    """(1, 0, 6) from `nftables v1.0.6 (Lester Gooch #5)`; a ParseError naming the file and
    its first line when no line says which nft it is."""
    lines = text.splitlines()
    for line in lines:
        match = _VERSION.match(line.strip())
        if match is not None:
            return tuple(int(part) for part in match[1].split("."))
    shown = next(((n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()), None)
    if shown is None:
        raise ParseError(
            source, None, "empty: expected `nftables vX.Y.Z` as `nft --version` prints"
        )
    raise ParseError(
        source, shown[0], f"expected `nftables vX.Y.Z` as `nft --version` prints, got {shown[1]!r}"
    )
