"""Checks on a pasted part of a table judge what was shown and never call the rest missing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vipcheck.cases import Case, Outcome, Result, run_case
from vipcheck.checks import check_by_id
from vipcheck.checks.base import FindingKind, NodeSubject
from vipcheck.facts import Facts
from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import L4Protocol
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import load_snapshot

SEED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded" / "seed-incidents"
REDIS = ServicePortKey("default/redis", 6379, L4Protocol.TCP)
WEB = ServicePortKey("default/web", 80, L4Protocol.TCP)
GREPPED = (
    "$ sudo ipvsadm -Ln | grep -A2 6379\n"
    "TCP  10.96.0.20:6379 rr\n"
    "  -> 10.244.3.10:80               Masq    1      0          0\n"
    "  -> 10.244.3.10:6379             Masq    1      0          0\n"
)
ONE_SERVICE_WITHOUT_6379 = (
    "ipvsadm -Ln -t 10.96.0.20:6379\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    "TCP  10.96.0.20:6379 rr\n"
    "  -> 10.244.3.10:80               Masq    1      0          0\n"
)


def run(check: str, subject: ServicePortKey | NodeSubject, paste: str) -> Result:
    snapshot = load_snapshot(SEED)
    node = snapshot.nodes["node-2"]
    node = replace(node, files={**node.files, "ipvsadm-Ln.txt": paste})
    facts = Facts.from_snapshot(replace(snapshot, nodes={**snapshot.nodes, "node-2": node}))
    return run_case(Case(check_by_id(check), subject), facts, DEFAULTS)


def test_a_service_not_in_the_pasted_part_is_not_called_missing() -> None:
    result = run("ipvs-virtual-servers-complete", WEB, GREPPED)
    assert result.outcome is Outcome.SKIPPED
    assert result.reason == (
        "node-2: TCP 10.96.0.30:80 not in the pasted part of its IPVS table (cut by "
        "`grep -A2 6379` in the command on line 1); TCP 192.168.58.12:30080 not in the pasted "
        "part of its IPVS table (cut by `grep -A2 6379` in the command on line 1)"
    )


def test_a_stale_real_server_shown_in_a_grep_still_fails() -> None:
    result = run("ipvs-real-servers-match-endpoints", REDIS, GREPPED)
    assert result.outcome is Outcome.FAILED
    on_node_2 = [v for v in result.violations if v.node == "node-2"]
    assert [v.kind for v in on_node_2] == [FindingKind.STALE_REAL_SERVER]
    assert "node-2: TCP 10.96.0.20:6379: real servers may be cut (cut by `grep -A2 6379`" in (
        result.reason
    )


def test_a_one_service_listing_is_whole_so_a_missing_real_server_is_claimed() -> None:
    result = run("ipvs-real-servers-match-endpoints", REDIS, ONE_SERVICE_WITHOUT_6379)
    assert result.outcome is Outcome.FAILED
    kinds = {v.kind for v in result.violations if v.node == "node-2"}
    assert kinds == {FindingKind.STALE_REAL_SERVER, FindingKind.MISSING_REAL_SERVER}
    assert result.reason == ""


def test_orphans_are_judged_on_what_was_pasted() -> None:
    result = run("ipvs-no-orphan-virtual-servers", NodeSubject("node-2"), GREPPED)
    assert result.outcome is Outcome.PASSED
