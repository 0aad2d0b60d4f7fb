"""Read the short outputs of the tools the migration checks ask: `nft --version` and `ipset list
-n`. Each is a line or a list of names, and a paste of either may carry a prompt or the command
line itself, which is skipped; anything else is named with its file and line."""

from __future__ import annotations

import re

from vipcheck.parse import ParseError
from vipcheck.untrusted import ipset_name_problem

# `nftables v1.0.6 (Lester Gooch #5)`; nft before 0.9.1 printed `nftables v0.9.0 (Fearless Fosdick)`
_NFT_VERSION = re.compile(r"nftables v(\d+(?:\.\d+)*)\b")
# A shell prompt or command line pasted above the output: `$ ipset list -n`, `# nft --version`.
_COMMAND_LINE = re.compile(r"(?:\S*[$#]\s+)?(?:sudo\s+)?(?:ipset|nft)\s.*")


def parse_nft_version(text: str, source: str) -> tuple[int, ...]:
    """The version `nft --version` printed, as numbers: (1, 0, 6)."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or _COMMAND_LINE.fullmatch(stripped):
            continue
        match = _NFT_VERSION.match(stripped)
        if match is None:
            raise ParseError(
                source, number, f"expected `nftables vX.Y.Z` from `nft --version`, got {line!r}"
            )
        return tuple(int(part) for part in match[1].split("."))
    raise ParseError(source, None, "empty: expected the output of `nft --version`")


def parse_ipset_names(text: str, source: str) -> frozenset[str]:
    """The set names `ipset list -n` printed, one per line; none is a node without sets."""
    names: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name or _COMMAND_LINE.fullmatch(name):
            continue
        if problem := ipset_name_problem(name):
            raise ParseError(
                source, number, f"{line!r} is not an ipset name as `ipset list -n` lists: {problem}"
            )
        if name in names:
            raise ParseError(
                source,
                number,
                f"{name} appears twice (first on line {names[name]}): two outputs pasted "
                "together? give one node's output per file",
            )
        names[name] = number
    return frozenset(names)
