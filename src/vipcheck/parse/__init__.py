"""Parsers from raw command output to the model, so a hand-made snapshot reads like a live run."""

from __future__ import annotations


class ParseError(ValueError):
    """Names the file and line a parser could not read, so the user can find and fix the input."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        super().__init__(source, line, message)

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.message}"
