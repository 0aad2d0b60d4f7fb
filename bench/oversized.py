"""`python -m bench --oversized`: replay a small snapshot with one file made huge, for memory.

Each case copies the 5 x 300 snapshot, makes one file of one node several hundred MB (or one line
of 100 MB), replays it as `vipcheck --from-snapshot` in its own process, and compares the peak RSS
(os.wait4) with the unchanged snapshot's. Connection tables are streamed, so a 400 MB table may
add little, and one of only SYN_RECV rows no more than the rows kept (MAX_KEPT_ROWS); any other
file over --vipcheck-max-file-size (64M) is refused at load with exit 4, before it is read; with
the limit raised, a 100 MB line is read whole once.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.measuring import Measure

MIB = 1 << 20
BIG = 400 * MIB
LINE = 100 * MIB
CONN_ROW = b"TCP 0A0A0024 9CB8 0A60001E 0050 0AF4030B 1F90 ESTABLISHED    900\n"
SYN_RECV_ROW = b"TCP 0A0A0024 9CB8 0A60001E 0050 0AF4030B 1F90 SYN_RECV        51\n"
SYSCTL_ROW = b"net.ipv4.conf.veth0000.rp_filter = 0\n"
# What streaming may add to the unchanged replay's peak: chunks, one line, the SYN_RECV rows.
STREAMED_ADDS = 64 * MIB
# A table of nothing but SYN_RECV rows: the first snapshot.MAX_KEPT_ROWS (100,000) are kept and
# parsed, about 800 bytes each; the rest (1.5 million at 100 MB) are counted. Before the cap,
# every one was kept: 100 MB took 1.27 GB and 15 s on the seed snapshot (issue 23).
KEPT_ADDS = 128 * MIB
# A refused file is never read: the replay stops before any item, below the unchanged peak.
REFUSED_ADDS = 16 * MIB
AS_CAP = 4 << 30


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    file: str  # under nodes/<first node>/
    write: Callable[[Path], None] | None
    args: tuple[str, ...] = ()
    rc: int = 1  # the synthetic snapshot's faults fail
    adds: int | None = STREAMED_ADDS  # None: measured, no target


def _repeat(row: bytes, size: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        block = row * (MIB // len(row))
        with path.open("wb") as out:
            for _ in range(size // len(block)):
                out.write(block)

    return write


def _one_line(head: bytes, size: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as out:
            out.write(head)
            for _ in range(size // MIB):
                out.write(b"x" * MIB)
            out.write(b"\n")

    return write


CONN_HEADER = b"Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
CASES = (
    Case("unchanged", "uname.txt", None),
    Case("conn table 400 MB", "ip_vs_conn.txt", _repeat(CONN_ROW, BIG)),
    Case("conn table, a 100 MB line", "ip_vs_conn.txt", _one_line(CONN_HEADER, LINE)),
    Case("conn table 100 MB, all SYN_RECV", "ip_vs_conn.txt", _repeat(SYN_RECV_ROW, LINE),
         adds=KEPT_ADDS),
    Case("sysctl.txt 400 MB", "sysctl.txt", _repeat(SYSCTL_ROW, BIG), rc=4, adds=REFUSED_ADDS),
    Case("ipvsadm-Ln.txt, a 100 MB line", "ipvsadm-Ln.txt", _one_line(b"", LINE), rc=4,
         adds=REFUSED_ADDS),
    Case("the same, limit raised to 256M", "ipvsadm-Ln.txt", _one_line(b"", LINE),
         args=("--vipcheck-max-file-size", "256M"), adds=None),
)  # fmt: skip


def _capped() -> list[str]:
    prlimit = shutil.which("prlimit")
    return [prlimit, f"--as={AS_CAP}"] if prlimit else []


def _mib(size: int) -> str:
    return f"{size / MIB:.0f} MiB"


def _cases(base: Path, workdir: Path) -> Iterator[tuple[Case, Path, int]]:
    """Each case's snapshot (a copy of base, one file rewritten) and that file's size."""
    for index, case in enumerate(CASES):
        directory = workdir / "oversized" / f"case-{index}"
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(base, directory)
        node = sorted((directory / "nodes").iterdir())[0]
        path = node / case.file
        if case.write is not None:
            case.write(path)
        yield case, directory, path.stat().st_size
        shutil.rmtree(directory)  # hundreds of MB each: not kept


def run_oversized(base: Path, workdir: Path, measure: Measure, timeout_s: float) -> list[str]:
    """Replay every case; print its peak RSS beside the unchanged one's; return targets missed."""
    vipcheck = Path(sys.executable).with_name("vipcheck")
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    missed: list[str] = []
    unchanged: int | None = None
    print(f"\n{'oversized input (5 x 300)':<34} {'file':>8} {'rc':>3} {'wall':>7} "
          f"{'peak RSS':>9} {'adds':>9}  target")  # fmt: skip
    for index, (case, directory, size) in enumerate(_cases(base, workdir)):
        # An address-space cap, so a regression fails this case instead of the shared machine.
        argv = [*_capped(), str(vipcheck), "--from-snapshot", str(directory)]
        argv += ["-p", "no:cacheprovider", "-q"]
        argv += [*case.args, "--vipcheck-json", str(workdir / "summaries" / f"oversized-{index}")]
        measured = measure(argv, logs / f"oversized-{index}", timeout_s)
        if unchanged is None:
            unchanged = measured.peak_rss
        added = measured.peak_rss - unchanged
        ok = measured.rc == case.rc and (case.adds is None or added <= case.adds)
        target = f"exit {case.rc}" + ("" if case.adds is None else f", adds <= {_mib(case.adds)}")
        print(
            f"{case.name:<34} {_mib(size):>8} {measured.rc!s:>3} {measured.wall_s:6.1f}s "
            f"{_mib(measured.peak_rss):>9} {_mib(added):>9}  {target}: "
            f"{'met' if ok else 'MISSED'}",
            flush=True,
        )
        if not ok:
            missed.append(f"oversized {case.name}: exit {measured.rc}, adds {_mib(added)}")
    return missed
