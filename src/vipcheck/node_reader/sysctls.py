"""sysctl.txt as procps-ng's `sysctl -a` prints it, read from /proc/sys without sysctl.

`sysctl -a` walks /proc/sys in directory order and prints each line of each readable file as
`key = line`, the key the path with `/` as `.` and a `.` of a name as `/` (eth0.100 is
`net.ipv4.conf.eth0/100`). Like it, this skips files no one may read (mode without S_IRUSR:
`net.ipv4.route.flush`), files the kernel refuses to read (`stable_secret` gives EIO until set)
and the names procps calls deprecated (`base_reachable_time`, `retrans_time`: their `_ms`
twins stay). A file vanishing while the walk goes on (an interface deleted) is skipped too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

PROC_SYS = "/proc/sys"
# procps-ng sysctl.c: DEPRECATED[], left out of `sysctl -a` without --deprecated.
_DEPRECATED = frozenset({"base_reachable_time", "retrans_time"})
_NAME_TO_KEY = str.maketrans("./", "/.")


def sysctl_lines(root: str = PROC_SYS) -> Iterator[str]:
    """Every `key = value` line `sysctl -a` prints, one file at a time."""
    yield from _walk(root, "")


def _walk(directory: str, prefix: str) -> Iterator[str]:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # gone since it was listed (an interface deleted): sysctl skips it too
    for entry in entries:
        if entry.name in _DEPRECATED:
            continue
        key = prefix + entry.name.translate(_NAME_TO_KEY)
        try:
            mode = entry.stat().st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            yield from _walk(entry.path, key + ".")
        elif mode & stat.S_IRUSR:
            yield from _setting(entry.path, key)


def _setting(path: str, key: str) -> Iterator[str]:
    """One file's lines as `key = line`; nothing where the kernel refuses the read."""
    try:
        with Path(path).open(encoding="utf-8", errors="surrogateescape") as file:
            text = file.read()
    except OSError:
        return
    for line in text.splitlines():
        yield f"{key} = {line}\n"
