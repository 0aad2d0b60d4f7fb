"""Read `sysctl -a`, which is where rp_filter, conntrack and IPVS knobs are observed."""

from __future__ import annotations

import re

from vipcheck.model.node import Sysctls
from vipcheck.parse import ParseError

# stderr lines `sysctl -a` prints for keys it may not read (procps; busybox: `error reading key`);
# they are not values.
_IGNORED = re.compile(r"sysctl: (?:permission denied on key|reading key|error reading key) .*")
_PROC_SYS = "/proc/sys/"


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


def parse_proc_sys(text: str, source: str) -> Sysctls:
    """`grep -H . /proc/sys/...` lines (`/proc/sys/net/ipv4/ip_forward:1`), as sysctl keys.

    sysctl names a path's `/` as `.` and a `.` in it (eth0.100) as `/`, so both are swapped.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        path, colon, value = line.partition(":")
        if not colon or not path.startswith(_PROC_SYS) or " " in path:
            raise ParseError(
                source,
                number,
                f"expected `/proc/sys/PATH:VALUE` as `grep -H .` prints, got {line!r}",
            )
        key = path.removeprefix(_PROC_SYS).translate(str.maketrans("./", "/."))
        if key in values:
            raise ParseError(
                source, number, f"{key} appears twice: give one node's output per file"
            )
        values[key] = value.strip()
    if not values:
        raise ParseError(source, None, "empty: expected `grep -H .` lines of /proc/sys files")
    return Sysctls(values, source)
