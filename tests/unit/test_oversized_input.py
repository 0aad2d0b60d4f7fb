"""Oversized snapshot files: refused at load in one line, or, for the connection tables, streamed.

Unit tests use a lowered limit or a line just over the streamed-line limit, never giant files;
`python -m bench --oversized` measures the memory of real several-hundred-MB files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vipcheck import snapshot as snapshot_module
from vipcheck.cases import Outcome, Result, cases_for, run_case
from vipcheck.checks import check_by_id
from vipcheck.facts import Facts, NodeFacts, ProbeFacts
from vipcheck.parse import ParseError
from vipcheck.settings import Settings
from vipcheck.snapshot import (
    MAX_KEPT_OTHERS,
    MAX_KEPT_ROWS,
    MAX_STREAMED_LINE,
    KeptLines,
    NodeSnapshot,
    SnapshotError,
    SnapshotLineError,
    lines_with,
    load_snapshot,
    parse_size,
)

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "seed-incidents"
ROW = "TCP 0A0A0024 9CB8 0A60001E 0050 0AF4030B 1F90 {state:<11} {expires:>7}\n"
TABLE = (
    "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
    + ROW.format(state="ESTABLISHED", expires=900) * 3
    + ROW.format(state="SYN_RECV", expires=51)
    + ROW.format(state="TIME_WAIT", expires=60) * 2
    + ROW.format(state="SYN_RECV", expires=40)
)


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    shutil.copytree(SEED, tmp_path / "snap")
    return tmp_path / "snap"


def test_a_file_over_the_limit_is_refused_at_load_naming_it_and_the_fix(snap: Path) -> None:
    sysctl = snap / "nodes/node-1/sysctl.txt"
    sysctl.write_bytes(b"net.ipv4.ip_forward = 1\n" * 2000)  # 48,000 bytes
    with pytest.raises(SnapshotError) as raised:
        load_snapshot(snap, max_file_bytes=16 << 10)
    assert str(raised.value) == (
        f"{sysctl}: 47 KiB, more than the 16 KiB a snapshot file may hold (it would be read "
        "whole into memory); check that it is the output of `sysctl -a`, or raise the limit "
        "with --vipcheck-max-file-size 94K"
    )
    assert load_snapshot(snap, max_file_bytes=64 << 10).nodes["node-1"].files["sysctl.txt"]


@pytest.mark.parametrize(
    "name", ["cluster/services.json", "meta.json", "nodes/node-2/error.txt", "probes/plan.json"]
)
def test_every_file_read_whole_is_limited(snap: Path, name: str) -> None:
    (snap / name).parent.mkdir(parents=True, exist_ok=True)
    (snap / name).write_bytes(b"x" * 100_000)  # the seed's files are at most 56 KiB
    with pytest.raises(SnapshotError, match=rf"{name}: 98 KiB, more than the 64 KiB"):
        load_snapshot(snap, max_file_bytes=64 << 10)


def test_one_long_line_is_refused_as_an_oversized_file(snap: Path) -> None:
    # One line bigger than the limit: refused before it is read (the benchmark does 100 MB).
    (snap / "nodes/node-1/ipvsadm-Ln.txt").write_bytes(b"TCP " * 4096)
    with pytest.raises(SnapshotError, match=r"ipvsadm-Ln\.txt: 16 KiB, more than the 8 KiB"):
        load_snapshot(snap, max_file_bytes=8 << 10)


def test_connection_tables_are_not_limited_but_streamed(snap: Path) -> None:
    node = snap / "nodes/node-1"
    (node / "ip_vs_conn.txt").write_text(TABLE * 200)  # 200 x 650 bytes, over the limit below
    (node / "ipvsadm-Lnc.txt").write_text((node / "ipvsadm-Lnc.txt").read_text() * 100)
    (snap / "probes/after/node-1").mkdir(parents=True)
    (snap / "probes/plan.json").write_text('{"vantages": []}')
    (snap / "probes/after/node-1/ip_vs_conn.txt").write_text(TABLE * 200)
    loaded = load_snapshot(snap, max_file_bytes=64 << 10)
    facts = Facts.from_snapshot(loaded)
    assert len(facts.nodes["node-1"].syn_recv_connections) == 400
    assert len(facts.probes.connections_after("node-1") or ()) == 400


@pytest.mark.parametrize("chunk", [7, 64, 100, 1 << 20])
@pytest.mark.parametrize(
    "text",
    [
        TABLE.removesuffix("\n"),
        TABLE + "\n",
        TABLE.replace("\n", "\r\n"),
        "\n\n" + TABLE,
        "SYN_RECV",
        "no match\nat all\n",
    ],
    ids=["no-final-newline", "final-newline", "crlf", "leading-blanks", "one-line", "none"],
)
def test_streaming_keeps_the_same_lines_at_the_same_numbers_as_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, text: str
) -> None:
    monkeypatch.setattr(snapshot_module, "_CHUNK", chunk)
    (tmp_path / "nodes/node-1").mkdir(parents=True)
    (tmp_path / "nodes/node-1/ip_vs_conn.txt").write_bytes(text.encode())
    on_disk = load_snapshot(tmp_path).nodes["node-1"].files
    in_memory = {"ip_vs_conn.txt": text.replace("\r\n", "\n")}
    streamed = lines_with(on_disk, "ip_vs_conn.txt", "SYN_RECV")
    assert streamed == lines_with(in_memory, "ip_vs_conn.txt", "SYN_RECV")
    kept = [
        (number, line)
        for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1)
        if "SYN_RECV" in line
    ]
    lines = streamed.text.split("\n")
    assert [(n, lines[n - 1]) for n, _ in kept] == kept
    assert all(line == "" or "SYN_RECV" in line for line in lines)


def test_blank_tables_are_blank_both_ways(tmp_path: Path) -> None:
    (tmp_path / "nodes/node-1").mkdir(parents=True)
    (tmp_path / "nodes/node-1/ip_vs_conn.txt").write_text(" \n\n")
    on_disk = load_snapshot(tmp_path).nodes["node-1"].files
    assert lines_with(on_disk, "ip_vs_conn.txt", "SYN_RECV") == KeptLines("", False)
    assert lines_with({"ip_vs_conn.txt": " \n\n"}, "ip_vs_conn.txt", "SYN_RECV") == KeptLines(
        "", False
    )


@pytest.mark.parametrize("chunk", [1000, 1 << 20])
@pytest.mark.parametrize("at_end", [False, True], ids=["inside", "last-line"])
def test_a_line_too_long_for_a_table_is_refused_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, at_end: bool
) -> None:
    monkeypatch.setattr(snapshot_module, "_CHUNK", chunk)
    long = "SYN_RECV " + "x" * MAX_STREAMED_LINE
    text = TABLE + long + ("" if at_end else "\n" + TABLE)
    (tmp_path / "nodes/node-1").mkdir(parents=True)
    (tmp_path / "nodes/node-1/ip_vs_conn.txt").write_text(text)
    loaded = load_snapshot(tmp_path)
    with pytest.raises(SnapshotLineError) as raised:
        lines_with(loaded.nodes["node-1"].files, "ip_vs_conn.txt", "SYN_RECV")
    assert raised.value.line == 9
    # A check reading the table errors its item, naming file and line.
    with pytest.raises(ParseError) as parsed:
        Facts.from_snapshot(loaded).nodes["node-1"].syn_recv_connections  # noqa: B018
    assert str(parsed.value) == (
        "nodes/node-1/ip_vs_conn.txt:9: a line longer than 65,536 bytes: not a line of "
        "`cat /proc/net/ip_vs_conn`"
    )


def test_the_after_probe_table_is_streamed_and_read_on_use(snap: Path) -> None:
    after = snap / "probes/after/node-1/ip_vs_conn.txt"
    after.parent.mkdir(parents=True)
    (snap / "probes/plan.json").write_text('{"vantages": []}')
    after.write_text(TABLE)
    loaded = load_snapshot(snap)
    after.write_text(TABLE * 2)  # read on use, not at load
    facts = Facts.from_snapshot(loaded)
    assert [c.expires_s for c in facts.probes.connections_after("node-1") or ()] == [51, 40] * 2
    assert facts.probes.connections_after("node-2") is None


def test_a_live_tables_syn_recv_rows_are_found_in_memory_without_a_split() -> None:
    node = NodeFacts(NodeSnapshot("node-1", {"ip_vs_conn.txt": TABLE}))
    assert [c.expires_s for c in node.syn_recv_connections] == [51, 40]


@pytest.mark.parametrize(
    ("text", "size"), [("64M", 64 << 20), ("1G", 1 << 30), ("512k", 512 << 10), ("1000", 1000)]
)
def test_sizes_the_option_takes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "0", "-1M", "1.5G", "10X"])
def test_sizes_the_option_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size above 0"):
        parse_size(text)


def test_the_option_raises_the_limit_and_a_bad_value_is_a_usage_error(snap: Path) -> None:
    (snap / "nodes/node-1/sysctl.txt").write_bytes(b"net.ipv4.ip_forward = 1\n" * 2000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}

    def vipcheck(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vipcheck.cli", "--from-snapshot", str(snap), "-q", *args,
             "--vipcheck-json", str(snap.parent / "summary.json"), "-p", "no:cacheprovider"],
            capture_output=True, text=True, timeout=120, check=False, cwd=snap.parent, env=env,
        )  # fmt: skip

    refused = vipcheck("--vipcheck-max-file-size", "16K")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert f"ERROR: {snap}/nodes/node-1/sysctl.txt: 47 KiB, more than the 16 KiB" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stdout + refused.stderr
    raised = vipcheck("--vipcheck-max-file-size", "1M")
    assert raised.returncode == 1, raised.stdout + raised.stderr  # the seed's incidents fail
    bad = vipcheck("--vipcheck-max-file-size", "lots")
    assert bad.returncode == 4
    assert "--vipcheck-max-file-size: expected a size above 0" in bad.stderr


def test_a_long_line_under_the_limit_is_quoted_cut_in_every_item(snap: Path) -> None:
    # Every item reading ipvsadm-Ln.txt errors quoting the line: quoted whole, 1 MB became
    # 1 MB per item (a 100 MB line took 20 GiB at 5 x 300); cut, the summary stays small.
    (snap / "nodes/node-1/ipvsadm-Ln.txt").write_text("x" * (1 << 20) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "VIPCHECK"))}
    summary = snap.parent / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", "--from-snapshot", str(snap), "-q", "-rE",
         "--vipcheck-json", str(summary), "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=120, check=False, cwd=snap.parent, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr
    assert (
        "cannot read nodes/node-1/ipvsadm-Ln.txt:1: not a line of `ipvsadm -Ln` output: 'xxx"
        in (result.stdout)
    )
    assert re.search(r"x\.\.\. \(1,04\d,\d{3} more characters\)", result.stdout)
    assert len(result.stdout) < 200_000
    assert summary.stat().st_size < 200_000


def test_a_parse_error_message_is_cut_to_its_first_characters() -> None:
    error = ParseError("nodes/node-1/sysctl.txt", 3, "got " + "y" * 1000)
    assert error.message == "got " + "y" * 396 + "... (604 more characters)"
    assert str(error).startswith("nodes/node-1/sysctl.txt:3: got yyy")
    assert ParseError("f", 1, "short").message == "short"


class CountingFiles(dict[str, str]):
    """A node's files that count how often each is read."""

    def __init__(self, files: dict[str, str]) -> None:
        super().__init__(files)
        self.reads: dict[str, int] = {}

    def __getitem__(self, name: str) -> str:
        self.reads[name] = self.reads.get(name, 0) + 1
        return super().__getitem__(name)


def test_a_file_that_does_not_parse_is_read_and_parsed_once() -> None:
    files = CountingFiles({"ipvsadm-Ln.txt": "x" * 1000 + "\n", "sysctl.txt": "a = 1\nnot one\n"})
    node = NodeFacts(NodeSnapshot("node-1", files))
    for _ in range(3):
        with pytest.raises(ParseError, match=r"ipvsadm-Ln\.txt:1"):
            node.ipvs  # noqa: B018
        with pytest.raises(ParseError, match=r"sysctl\.txt:2"):
            node.sysctls  # noqa: B018
    assert files.reads == {"ipvsadm-Ln.txt": 1, "sysctl.txt": 1}


def test_the_after_probe_table_is_read_once_per_node_not_once_per_failing_vip() -> None:
    files = CountingFiles({"plan.json": "{}", "after/node-1/ip_vs_conn.txt": TABLE})
    probes = ProbeFacts(lambda: files)
    for _ in range(3):
        assert [c.expires_s for c in probes.connections_after("node-1") or ()] == [51, 40]
    assert files.reads == {"after/node-1/ip_vs_conn.txt": 1}


@pytest.mark.parametrize(
    ("check_id", "name"),
    [
        ("ip-forward-enabled", "sysctl.txt"),
        ("ipvs-no-stuck-syn-recv", "ip_vs_conn.txt"),
        ("ipvs-virtual-servers-complete", "ipvsadm-Ln.txt"),
    ],
)
def test_a_file_gone_since_the_snapshot_loaded_errors_its_items_naming_it(
    snap: Path, check_id: str, name: str
) -> None:
    # Replays read a file when a fact first parses it: one deleted mid-run (a cleanup job, a
    # full disk's tmpwatch) is an ERROR naming the file, as an unreadable file is, not a crash.
    facts = Facts.from_snapshot(load_snapshot(snap))
    (snap / "nodes/node-1" / name).unlink()
    check = check_by_id(check_id)
    results = [run_case(case, facts, Settings()) for case in cases_for(check, facts)]
    gone = [r for r in results if r.outcome is Outcome.ERROR]
    assert gone, [r.outcome for r in results]
    reason = f"cannot read {snap}/nodes/node-1/{name}: No such file or directory"
    assert {r.reason for r in gone} == {reason}


SYN_ROW = ROW.format(state="SYN_RECV", expires=51)


def test_a_table_of_only_syn_recv_rows_keeps_the_first_rows_up_to_the_cap(tmp_path: Path) -> None:
    # Issue 23: 100 MB of SYN_RECV rows were all kept and parsed (1.27 GB RSS, 15 s); now the
    # first MAX_KEPT_ROWS are, the rest counted, streamed and in memory alike.
    text = SYN_ROW * (MAX_KEPT_ROWS + 5_000)
    (tmp_path / "nodes/node-1").mkdir(parents=True)
    (tmp_path / "nodes/node-1/ip_vs_conn.txt").write_text(text)
    on_disk = lines_with(
        load_snapshot(tmp_path).nodes["node-1"].files, "ip_vs_conn.txt", "SYN_RECV"
    )
    in_memory = lines_with({"ip_vs_conn.txt": text}, "ip_vs_conn.txt", "SYN_RECV")
    assert on_disk == in_memory
    assert (on_disk.kept, on_disk.cut) == (MAX_KEPT_ROWS, 5_000)
    assert on_disk.text.count("\n") == MAX_KEPT_ROWS


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(snapshot_module, "MAX_KEPT_ROWS", 50)
    return 50


def stuck_syn_recv(snap: Path, settings: Settings) -> list[Result]:
    facts = Facts.from_snapshot(load_snapshot(snap))
    check = check_by_id("ipvs-no-stuck-syn-recv")
    return [run_case(case, facts, settings) for case in cases_for(check, facts)]


def test_a_cut_table_fails_on_its_first_rows_saying_at_least_and_why(
    snap: Path, small_cap: int
) -> None:
    (snap / "nodes/node-1/ip_vs_conn.txt").write_text(TABLE + SYN_ROW * 1_000)
    node = Facts.from_snapshot(load_snapshot(snap)).nodes["node-1"]
    assert len(node.syn_recv_connections) == small_cap
    cut = (
        "nodes/node-1/ip_vs_conn.txt: 1,002 lines name SYN_RECV, more than vipcheck keeps of "
        "one state: only the first 50 were kept"
    )
    assert node.syn_recv_cut == cut
    [result] = [r for r in stuck_syn_recv(snap, Settings()) if r.case.node == "node-1"]
    assert result.outcome is Outcome.FAILED
    [violation] = result.violations
    assert violation.observed.startswith("at least 50 connection(s) in SYN_RECV")
    assert violation.evidence[-1] == cut


def test_a_cut_table_with_no_pair_over_the_limit_errors_and_never_passes(
    snap: Path, small_cap: int
) -> None:
    (snap / "nodes/node-1/ip_vs_conn.txt").write_text(SYN_ROW * 1_000)
    [result] = [
        r for r in stuck_syn_recv(snap, Settings(syn_recv_max=100)) if r.case.node == "node-1"
    ]
    assert result.outcome is Outcome.ERROR
    assert result.reason == (
        "cannot read nodes/node-1/ip_vs_conn.txt: 1,000 lines name SYN_RECV, more than vipcheck "
        "keeps of one state: only the first 50 were kept, and none of those is over "
        "vipcheck_syn_recv_max (100) for one VIP and destination: the rest were not judged"
    )


def test_a_whole_table_under_the_limit_still_passes(snap: Path, small_cap: int) -> None:
    (snap / "nodes/node-1/ip_vs_conn.txt").write_text(SYN_ROW * small_cap)
    results = stuck_syn_recv(snap, Settings(syn_recv_max=small_cap))
    assert [r.outcome for r in results if r.case.node == "node-1"] == [Outcome.PASSED]


def test_lines_naming_the_state_that_are_no_rows_are_kept_only_a_few(snap: Path) -> None:
    # A forged table of junk naming SYN_RECV is not kept whole: the parser names its first line.
    junk = "SYN_RECV " + "x" * 500 + "\n"
    (snap / "nodes/node-1/ip_vs_conn.txt").write_text(TABLE + junk * 20_000)
    kept = lines_with(load_snapshot(snap).nodes["node-1"].files, "ip_vs_conn.txt", "SYN_RECV")
    assert kept.kept == 2 + MAX_KEPT_OTHERS
    with pytest.raises(ParseError, match=r"^nodes/node-1/ip_vs_conn\.txt:9: expected `Pro"):
        Facts.from_snapshot(load_snapshot(snap)).nodes["node-1"].syn_recv_connections  # noqa: B018


def test_a_pasted_grep_for_the_state_is_still_read(snap: Path) -> None:
    text = "root@node-1:~# ipvsadm -Lnc | grep SYN_RECV\n" + (
        "TCP 00:51  SYN_RECV    10.10.0.36:40120   10.96.0.30:80      10.244.3.11:8080\n"
    )
    (snap / "nodes/node-1/ip_vs_conn.txt").unlink()
    (snap / "nodes/node-1/ipvsadm-Lnc.txt").write_text(text)
    node = Facts.from_snapshot(load_snapshot(snap)).nodes["node-1"]
    assert [c.expires_s for c in node.syn_recv_connections] == [51]
    assert node.syn_recv_cut is None
