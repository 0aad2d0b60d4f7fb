"""What the node reader needs of a message pyroute2 decoded: its fields and its attributes."""

from __future__ import annotations

from typing import Any, Protocol


class Message(Protocol):
    """A decoded netlink message or nested attribute (pyroute2's nlmsg_base)."""

    def __getitem__(self, key: str) -> Any: ...

    def get_attr(self, name: str, default: Any = None) -> Any: ...

    def get_nested(self, *names: str) -> Any: ...


class ReadError(Exception):
    """What could not be read, in one line naming the source (a netlink request, a file)."""
