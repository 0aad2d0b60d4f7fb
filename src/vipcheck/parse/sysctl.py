"""Read `sysctl -a`, which is where rp_filter, conntrack and IPVS knobs are observed."""

from __future__ import annotations

import re
from collections.abc import Sequence

from vipcheck.model.node import Sysctls
from vipcheck.parse import ParseError

# stderr lines `sysctl -a` prints for keys it may not read (procps; busybox: `error reading key`);
# they are not values.
_IGNORED = re.compile(r"sysctl: (?:permission denied on key|reading key|error reading key) .*")
_PROC_SYS = "/proc/sys/"


def keys_named(patterns: Sequence[str]) -> re.Pattern[str]:
    """The keys the patterns name, `*` standing for any part of one name
    (`net.ipv4.conf.*.rp_filter`)."""
    alternatives = (re.escape(pattern).replace(r"\*", "[^.]*") for pattern in patterns)
    return re.compile("|".join(alternatives) or "(?!)")


def parse_sysctl(text: str, source: str, keep: re.Pattern[str] | None = None) -> Sysctls:
    """`key = value` lines (also `key=value`); values keep inner tabs, e.g. port ranges.

    keep: only the keys it matches are kept (keys_named: what the checks read). Every line is
    still read and refused where it is not a sysctl line; a node lists about 20,000 keys, most
    of them per interface, and a replay of 100 nodes would hold all of them.
    """
    values: dict[str, str] = {}
    first_line: dict[str, int] = {}
    read = 0
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
        read += 1
        if keep is not None and keep.fullmatch(key) is None:
            continue
        if key in values:
            raise ParseError(
                source,
                number,
                f"{key} appears twice (first on line {first_line[key]}): "
                "two outputs pasted together? give one node's output per file",
            )
        values[key] = value.strip()
        first_line[key] = number
    if not read:
        raise ParseError(source, None, "empty: expected the output of `sysctl -a`")
    return Sysctls(values, source)


def parse_proc_sys(text: str, source: str, keep: re.Pattern[str] | None = None) -> Sysctls:
    """`grep -H . /proc/sys/...` lines (`/proc/sys/net/ipv4/ip_forward:1`), as sysctl keys.

    sysctl names a path's `/` as `.` and a `.` in it (eth0.100) as `/`, so both are swapped.
    keep: as parse_sysctl's.
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
        if keep is not None and keep.fullmatch(key) is None:
            continue
        if key in values:
            raise ParseError(
                source, number, f"{key} appears twice: give one node's output per file"
            )
        values[key] = value.strip()
    if not text.strip():
        raise ParseError(source, None, "empty: expected `grep -H .` lines of /proc/sys files")
    return Sysctls(values, source)
