"""The node script's framing (vipcheck.gather.node_script), written from Python.

Each file is `===vipcheck:file=NAME`, its output as produced, a newline that belongs to the
frame, `===vipcheck:error=...` where producing it failed, and `===vipcheck:rc=N`; a file the
node cannot produce is one `===vipcheck:missing=NAME:WHY` line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import BinaryIO

from vipcheck.gather.node_script import ERROR, FILE, MISSING, RC
from vipcheck.node_reader.messages import ReadError
from vipcheck.untrusted import printable

# What an output's text becomes on the wire: a node's names may hold bytes that are no UTF-8
# (an interface name), kept as they are, as a command's output would.
_ENCODING, _ERRORS = "utf-8", "surrogateescape"


class FrameWriter:
    """Writes frames to a binary stream, each output as it is produced."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def file(self, name: str, produce: Callable[[], Iterable[str | bytes]]) -> bool:
        """One file's frame; a ReadError while producing it ends the frame as a failed command
        ends the script's (its message the error line, exit status 1). Whether it was whole."""
        self._line(FILE + name)
        try:
            for chunk in produce():
                self._out.write(chunk if isinstance(chunk, bytes) else self._encode(chunk))
        except ReadError as error:
            self._out.write(b"\n")
            self._line(ERROR + printable(str(error), one_line=True))
            self._line(RC + "1")
            return False
        self._out.write(b"\n")
        self._line(RC + "0")
        return True

    def missing(self, name: str, why: str) -> None:
        self._line(f"{MISSING}{name}:{why}")

    def flush(self) -> None:
        self._out.flush()

    def _line(self, text: str) -> None:
        self._out.write(self._encode(text + "\n"))

    @staticmethod
    def _encode(text: str) -> bytes:
        return text.encode(_ENCODING, _ERRORS)
