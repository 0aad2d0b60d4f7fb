"""Lab fixtures: one VM per scenario, booted on first use and shared by the whole session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.lab.errors import LabError
from fixtures.lab.guest_script import Runtime
from fixtures.lab.running import LabPool, LabSpec, RunningLab
from fixtures.lab.scenario import ProxyMode


class FailingPool(LabPool):
    """A pool whose boot failures fail the asking test with the lab's own message."""

    def get(
        self, scenario: str, runtime: Runtime = Runtime.SSH, mode: ProxyMode | None = None
    ) -> RunningLab:
        try:
            return super().get(scenario, runtime, mode)
        except LabError as error:
            pytest.fail(f"lab {scenario} did not come up: {error}", pytrace=False)


# The whole lab suite (`make test` sets this) boots each next lab while the tests use the one
# before (LabPool.boot_ahead), on the CPU the tests leave idle. A run of some lab tests
# leaves it unset, and boots only the labs its tests ask for, when they ask.
BOOT_AHEAD_ENV = "VIPCHECK_LAB_BOOT_AHEAD"
# The labs of the whole suite in the order its tests first ask for them (test files in name
# order, tests/lab/conftest.py's late markers last). Out of date, it costs time, not results:
# a lab asked for before it was booted boots then, and one never asked for is stopped unused.
BOOT_ORDER = [
    LabSpec("seed-incidents", Runtime.DOCKER),  # test_agents_lab
    LabSpec("faulty-nodes"),
    LabSpec("healthy"),
    LabSpec("stale-real-server"),  # test_handshake
    LabSpec("rp-filter-strict"),
    LabSpec("tcpfin-default"),  # test_incidents
    LabSpec("big"),  # test_ip_vs_reads
    LabSpec("healthy", Runtime.DOCKER),  # test_kind_lab
    LabSpec("kube-proxy-rules"),
    LabSpec("healthy", mode=ProxyMode.NFTABLES),  # test_nftables_lab
    LabSpec("seed-incidents-nftables"),
    LabSpec("seed-incidents-nftables", Runtime.DOCKER),
    LabSpec("healthy-old-node"),  # test_old_nodes
    LabSpec("seed-incidents-old-node"),
    LabSpec("seed-incidents"),  # test_vipcheck
]


def _print(message: str) -> None:
    print(f"lab: {message}", flush=True)


def lab_unavailable() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    missing = [tool for tool in ("qemu-system-x86_64", "ssh", "cpio") if not shutil.which(tool)]
    if missing:
        return f"the lab needs {', '.join(missing)} (make deps installs them)"
    return None


@pytest.fixture(scope="session")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabPool]:
    reason = lab_unavailable()
    if reason:
        if os.environ.get("VIPCHECK_REQUIRE_LAB"):
            pytest.fail(f"VIPCHECK_REQUIRE_LAB is set but {reason}", pytrace=False)
        pytest.skip(reason)
    pool = FailingPool(tmp_path_factory.mktemp("labs"), _print)
    if os.environ.get(BOOT_AHEAD_ENV):
        pool.boot_ahead(BOOT_ORDER)
    yield pool
    pool.down_all()


@pytest.fixture(scope="session")
def docker_cli() -> str:
    """The docker CLI that reaches the kind-shaped lab's dockerd (inside the VM)."""
    docker = shutil.which("docker")
    if docker is None:
        if os.environ.get("VIPCHECK_REQUIRE_LAB"):
            pytest.fail("VIPCHECK_REQUIRE_LAB is set but there is no docker CLI (make deps)")
        pytest.skip("the kind-shaped lab needs a docker CLI (make deps installs one)")
    return docker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/lab needs the VM: mark it so `-m lab` / `-m "not lab"` split runs.

    Tests marked `lab_changes` change the lab they take (LabPool.take): they run after all
    others, so they reuse the labs the others booted instead of booting their own. Tests marked
    `lab_revisits` read again every lab the others booted: they run after those, and before the
    lab_changes ones change any.
    """
    lab_dir = Path(__file__).parent
    for item in items:
        if lab_dir in Path(item.path).parents:
            item.add_marker(pytest.mark.lab)
    items.sort(key=_lateness)


LATE = ("lab_revisits", "lab_changes")  # markers of tests run after the others, in this order


def _lateness(item: pytest.Item) -> int:
    """0 for most lab tests, then 1 + the index of the last of LATE the item is marked with."""
    marked = [1 + index for index, name in enumerate(LATE) if item.get_closest_marker(name)]
    return max(marked, default=0)
