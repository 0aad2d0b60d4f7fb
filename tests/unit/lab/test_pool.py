"""The lab pool: one boot per scenario, shared; a lab taken by a test that changes it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.lab import control, running
from fixtures.lab.running import LabPool
from fixtures.lab.scenario import ProxyMode


def test_a_taken_lab_is_not_shared_and_still_stopped_at_the_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    booted: list[str] = []
    stopped: list[Path] = []
    monkeypatch.setattr(control, "up", lambda scenario, workdir, *_a, **_k: booted.append(scenario))
    monkeypatch.setattr(control, "down", lambda workdir, _progress: stopped.append(workdir))
    monkeypatch.setattr(running, "load_scenario", lambda name: name)
    pool = LabPool(tmp_path, lambda _line: None)
    shared = pool.get("stale-real-server")
    assert pool.get("stale-real-server") is shared  # one boot, shared
    assert pool.take("stale-real-server") is shared  # the same lab, no boot
    assert booted == ["stale-real-server"]
    pool.get("stale-real-server")  # asked again after it was taken: booted anew
    assert booted == ["stale-real-server", "stale-real-server"]
    pool.down_all()
    assert len(stopped) == 2
    assert pool.running == {}
    assert pool.taken == []


def test_each_mode_of_a_scenario_is_its_own_lab(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    booted: list[tuple[str, Path, ProxyMode | None]] = []

    def up(scenario: str, workdir: Path, *_args: object, **options: object) -> None:
        mode = options["mode"]
        assert mode is None or isinstance(mode, ProxyMode)
        booted.append((scenario, workdir, mode))

    monkeypatch.setattr(control, "up", up)
    pool = LabPool(tmp_path, lambda _line: None)
    ipvs = pool.get("healthy")
    nftables = pool.get("healthy", mode=ProxyMode.NFTABLES)
    assert pool.get("healthy", mode=ProxyMode.NFTABLES) is nftables
    assert [(name, path.name, mode) for name, path, mode in booted] == [
        ("healthy", "healthy", None),
        ("healthy", "healthy-nftables", ProxyMode.NFTABLES),
    ]
    assert ipvs.scenario.kube_proxy.mode is ProxyMode.IPVS
    assert nftables.scenario.kube_proxy.mode is ProxyMode.NFTABLES
