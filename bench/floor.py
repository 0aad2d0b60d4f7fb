"""The floor: read every file of a snapshot and split each line into words, the least a replay does.

Run as its own process (`python -m bench.floor DIR`), so its wall time and peak RSS are measured
the way a replay's are, interpreter start-up included.
"""

from __future__ import annotations

import sys
from pathlib import Path


def read_and_split(directory: Path) -> tuple[int, int]:
    """Files and lines read; every line is split into words and the words dropped."""
    files = lines = 0
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        files += 1
        for line in path.read_text(errors="replace").splitlines():
            line.split()
            lines += 1
    return files, lines


def main() -> None:
    files, lines = read_and_split(Path(sys.argv[1]))
    print(f"{files} files, {lines} lines")


if __name__ == "__main__":
    main()
