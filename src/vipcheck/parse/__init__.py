"""Parsers from raw command output to the model, so a hand-made snapshot reads like a live run."""

from __future__ import annotations

# A message quoting a line of the input is cut to this: every item reading the file repeats it
# (terminal, JSON, JUnit, HTML), so a 100 MB line quoted whole took 20 GiB at 5 x 300.
MAX_MESSAGE = 400


class ParseError(ValueError):
    """Names the file and line a parser could not read, so the user can find and fix the input."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE:,} more characters)"
        self.source = source
        self.line = line
        self.message = message
        super().__init__(source, line, message)

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.message}"
