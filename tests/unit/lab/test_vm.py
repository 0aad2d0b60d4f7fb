"""Following the VM's console: a line qemu is still writing is read whole, later."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fixtures.lab import vm


def test_a_ready_line_read_half_written_is_still_seen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(b"lab: setup took 9.352 s\r\nlab: rea")  # qemu mid-way through a line
    relayed: list[str] = []

    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if console.read_bytes().endswith(b"rea"):  # qemu ends the line while the watcher waits
            with console.open("ab") as out:
                out.write(b"dy\r\n")
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    qemu: Any = SimpleNamespace(poll=lambda: None)
    vm.wait_for_setup(qemu, console, tmp_path / "qemu.log", 2, relayed.append)
    assert relayed == ["vm: setup took 9.352 s", "vm: ready"]
