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
from functools import partial

PROC_SYS = "/proc/sys"
# procps-ng sysctl.c: DEPRECATED[], left out of `sysctl -a` without --deprecated.
_DEPRECATED = frozenset({"base_reachable_time", "retrans_time"})
_NAME_TO_KEY = str.maketrans("./", "/.")
_CHUNK = 65536


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
    """One file's lines as `key = line`; nothing where the kernel refuses the read. Read with
    os.open/os.read: a node holds thousands of these files, and pathlib's text I/O costs the
    reader about as much again (half the walk's time on the lab's emulated CPU)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        chunks = list(iter(partial(os.read, fd, _CHUNK), b""))
    except OSError:
        return
    finally:
        os.close(fd)
    text = b"".join(chunks).decode("utf-8", "surrogateescape")
    for line in text.splitlines():
        yield f"{key} = {line}\n"
