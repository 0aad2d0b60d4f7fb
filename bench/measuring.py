"""What the bench's parts ask of a measured replay (bench.__main__.measure and its Measured),
without importing bench.__main__, which imports them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Measured(Protocol):
    @property
    def wall_s(self) -> float: ...
    @property
    def peak_rss(self) -> int: ...
    @property
    def rc(self) -> int | None: ...


class Measure(Protocol):
    def __call__(self, argv: list[str], log: Path, timeout_s: float) -> Measured: ...
