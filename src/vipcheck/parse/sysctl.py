"""Read `sysctl -a`, which is where rp_filter, conntrack and IPVS knobs are observed."""

from __future__ import annotations

import re

from vipcheck.model.node import Sysctls
from vipcheck.parse import ParseError

# stderr lines `sysctl -a` prints for keys it may not read; they are not values.
_IGNORED = re.compile(r"sysctl: (?:permission denied on key|reading key) .*")


def parse_sysctl(text: str, source: str) -> Sysctls:
    """`key = value` lines (also `key=value`); values keep inner tabs, e.g. port ranges."""
    values: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or (stripped[0] == "s" and _IGNORED.fullmatch(stripped)):
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not key or " " in key or "\t" in key:
            raise ParseError(
                source, number, f"expected `key = value` from `sysctl -a`, got {line!r}"
            )
        if key in values:
            raise ParseError(
                source,
                number,
                f"{key} appears twice (first on line {first_line[key]}): "
                "two outputs pasted together? give one node's output per file",
            )
        values[key] = value.strip()
        first_line[key] = number
    if not values:
        raise ParseError(source, None, "empty: expected the output of `sysctl -a`")
    return Sysctls(values, source)
