"""The lab pool: one boot per scenario, shared; a lab taken by a test that changes it is not;
told the run's order, the next lab boots while the tests use the one before."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fixtures.lab import control, running
from fixtures.lab.errors import LabError
from fixtures.lab.guest_script import Runtime
from fixtures.lab.running import LabPool, LabSpec
from fixtures.lab.scenario import ProxyMode


@dataclass
class Boots:
    """control.start's stand-in: what was started, made ready and stopped, in order."""

    events: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def start(self, scenario: str, workdir: Path, *_args: object, **options: object) -> FakeBooting:
        if workdir.name in self.failing:
            raise LabError(f"{workdir.name} cannot boot here")
        mode = options["mode"]
        assert mode is None or isinstance(mode, ProxyMode)
        self.events.append(f"start {workdir.name}")
        return FakeBooting(self, workdir)


@dataclass
class FakeBooting:
    boots: Boots
    workdir: Path

    def ready(self) -> None:
        self.boots.events.append(f"ready {self.workdir.name}")

    def stop(self) -> None:
        self.boots.events.append(f"stop {self.workdir.name}")


@pytest.fixture
def boots(monkeypatch: pytest.MonkeyPatch) -> Boots:
    made = Boots()
    monkeypatch.setattr(control, "start", made.start)
    monkeypatch.setattr(
        control, "down", lambda workdir, _p: made.events.append(f"down {workdir.name}")
    )
    return made


def test_a_taken_lab_is_not_shared_and_still_stopped_at_the_end(
    boots: Boots, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(running, "load_scenario", lambda name: name)
    monkeypatch.setattr(running, "with_mode", lambda scenario, _mode: scenario)
    pool = LabPool(tmp_path, lambda _line: None)
    shared = pool.get("stale-real-server")
    assert pool.get("stale-real-server") is shared  # one boot, shared
    assert pool.take("stale-real-server") is shared  # the same lab, no boot
    assert boots.events == ["start stale-real-server", "ready stale-real-server"]
    pool.get("stale-real-server")  # asked again after it was taken: booted anew
    assert boots.events.count("start stale-real-server") == 2
    pool.down_all()
    assert boots.events[-2:] == ["down stale-real-server"] * 2
    assert pool.running == {}
    assert pool.taken == []


def test_each_mode_of_a_scenario_is_its_own_lab(boots: Boots, tmp_path: Path) -> None:
    pool = LabPool(tmp_path, lambda _line: None)
    ipvs = pool.get("healthy")
    nftables = pool.get("healthy", mode=ProxyMode.NFTABLES)
    assert pool.get("healthy", mode=ProxyMode.NFTABLES) is nftables
    assert boots.events == [
        "start healthy",
        "ready healthy",
        "start healthy-nftables",
        "ready healthy-nftables",
    ]
    assert ipvs.scenario.kube_proxy.mode is ProxyMode.IPVS
    assert nftables.scenario.kube_proxy.mode is ProxyMode.NFTABLES


def test_the_next_lab_boots_while_the_one_before_is_used(boots: Boots, tmp_path: Path) -> None:
    pool = LabPool(tmp_path, lambda _line: None)
    pool.boot_ahead([LabSpec("healthy"), LabSpec("big"), LabSpec("healthy", Runtime.DOCKER)])
    assert boots.events == ["start healthy"]  # one VM booting ahead at a time
    pool.get("healthy")
    assert boots.events == ["start healthy", "ready healthy", "start big"]
    pool.get("tcpfin-default")  # not in the order: booted when asked, beside big
    pool.get("big")
    assert boots.events[3:] == [
        "start tcpfin-default",
        "ready tcpfin-default",
        "ready big",
        "start healthy-docker",
    ]
    pool.down_all()  # the one still booting is stopped, the others taken down
    assert sorted(boots.events[7:]) == [
        "down big",
        "down healthy",
        "down tcpfin-default",
        "stop healthy-docker",
    ]


def test_a_lab_that_cannot_boot_ahead_is_left_to_the_test_that_asks(
    boots: Boots, tmp_path: Path
) -> None:
    said: list[str] = []
    boots.failing = {"big"}
    pool = LabPool(tmp_path, said.append)
    pool.boot_ahead([LabSpec("big"), LabSpec("healthy")])
    assert boots.events == ["start healthy"]
    assert said == ["booting big ahead failed (big cannot boot here); left for later"]
    with pytest.raises(LabError, match="big cannot boot here"):
        pool.get("big")  # the asking test gets the lab's own error
