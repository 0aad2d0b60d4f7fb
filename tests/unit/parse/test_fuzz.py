"""Hostile input: every parser, fed generated and mutated recorded outputs, raises only
ParseError naming its file; a replay with a mutated file ends in 0, 1 or 4, no traceback.

The hypothesis profile comes from VIPCHECK_HYPOTHESIS_PROFILE: `quick` (default, in `make test`,
derandomized so a CI failure reproduces) or `long` (`tox -e fuzz`, `make fuzz`, random).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.lab.objects import kube_proxy_daemon_set
from vipcheck.cases import cases_for, run_case
from vipcheck.checks import CATALOGUE
from vipcheck.facts import Facts
from vipcheck.parse import ParseError
from vipcheck.parse.handshakes import parse_probe_output, parse_probe_plan
from vipcheck.parse.iproute import parse_interfaces, parse_ip_json, parse_ip_text
from vipcheck.parse.ipvsadm import (
    parse_ipvsadm_connections,
    parse_ipvsadm_list,
    parse_ipvsadm_timeout,
)
from vipcheck.parse.kube import (
    parse_endpoint_slices,
    parse_kube_proxy_config,
    parse_kube_proxy_daemonset,
    parse_nodes,
    parse_services,
)
from vipcheck.parse.nft import parse_nft_json, parse_nft_text
from vipcheck.parse.procfs import parse_proc_ip_vs, parse_proc_ip_vs_conn
from vipcheck.parse.sysctl import parse_proc_sys, parse_sysctl
from vipcheck.parse.tool_outputs import parse_ipset_names, parse_nft_version
from vipcheck.parse.xtables import parse_iptables_save
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import Snapshot, load_snapshot

ROOT = Path(__file__).resolve().parents[3]
# The nft listings recorded from the kernel (tests/unit/parse/test_nft.py) seed the nft parsers.
NFT_DATA = ROOT / "tests" / "unit" / "parse" / "data"
FIXTURES = (ROOT / "fixtures" / "recorded", ROOT / "fixtures" / "snapshots", NFT_DATA)
SEED = ROOT / "fixtures" / "recorded" / "seed-incidents"
PROBED = ROOT / "fixtures" / "snapshots" / "seed-incidents-probed"
SOURCE = "nodes/fuzz/input"

# quick is derandomized (examples seeded from each test's own hash), so a failure in `make test`
# or CI fails the same way on the next run and on a developer's machine; long stays random, to
# find new inputs, even where CI=true makes hypothesis's own default profile derandomized. Both
# print the failing example's blob, which @reproduce_failure replays.
settings.register_profile(
    "quick",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
    print_blob=True,
)
PROFILE = os.environ.get("VIPCHECK_HYPOTHESIS_PROFILE", "quick")
settings.load_profile(PROFILE)
# Replays run vipcheck as a subprocess: a few in the quick profile, more in the long one.
REPLAY_EXAMPLES = 3 if PROFILE == "quick" else 60

Parser = Callable[[str, str], Any]


def _interfaces_json(text: str, source: str) -> Any:
    return parse_interfaces((text, source), (text, source))


def _interfaces_text(text: str, source: str) -> Any:
    return parse_ip_text(text, text, source, source)


def _interfaces_sys(text: str, source: str) -> Any:
    return parse_interfaces(None, (text, source + "/sys-class-net.txt"))


def _ip_json(text: str, source: str) -> Any:
    return parse_ip_json(text, text, source, source)


# Each parser, and the recorded files that seed its mutations.
PARSERS: dict[str, tuple[Parser, tuple[str, ...]]] = {
    "ipvsadm -Ln": (
        parse_ipvsadm_list,
        ("ipvsadm-Ln.txt", "ipvsadm-S.txt", "ipvsadm-Ln-exact.txt"),
    ),
    "ipvsadm --timeout": (parse_ipvsadm_timeout, ("ipvsadm-timeout.txt",)),
    "ipvsadm -Lnc": (parse_ipvsadm_connections, ("ipvsadm-Lnc.txt",)),
    "/proc/net/ip_vs": (parse_proc_ip_vs, ("proc-ip_vs.txt",)),
    "/proc/net/ip_vs_conn": (parse_proc_ip_vs_conn, ("ip_vs_conn.txt",)),
    "sysctl -a": (parse_sysctl, ("sysctl.txt",)),
    "/proc/sys": (parse_proc_sys, ("proc-sys.txt",)),
    "ip -j": (_ip_json, ("ip-addr.json", "ip-link.json")),
    "ip -j (interfaces)": (_interfaces_json, ("ip-addr.json", "ip-link.json")),
    "ip text": (_interfaces_text, ("ip-addr.txt", "ip-link.txt")),
    "/sys/class/net": (_interfaces_sys, ("sys-class-net.txt",)),
    "services": (parse_services, ("services.json",)),
    "endpointslices": (parse_endpoint_slices, ("endpointslices.json",)),
    "nodes": (parse_nodes, ("nodes.json",)),
    "kube-proxy config": (parse_kube_proxy_config, ("kube-proxy.json",)),
    "kube-proxy daemonset": (parse_kube_proxy_daemonset, ("kube-proxy-daemonset.json",)),
    "probe output": (parse_probe_output, ("vip.txt", "real-server.txt")),
    "probe plan": (parse_probe_plan, ("plan.json",)),
    "nft -j list table": (parse_nft_json, ("endpoint-chains.json", "dnat-maps.json", "ip6.json")),
    "nft list table": (
        parse_nft_text,
        ("endpoint-chains.txt", "endpoint-chains.a.txt", "dnat-maps.txt", "ip6.a.txt"),
    ),
    # The leftovers inputs (issue 20), recorded from the real tools (data/leftovers).
    "iptables-save": (parse_iptables_save, ("*iptables-chains.txt", "*.v4.rules", "*.v6.rules")),
    "ipset list -n": (parse_ipset_names, ("*ipset-list-names.txt",)),
    "nft --version": (parse_nft_version, ("nft-version.txt",)),
}


@cache
def seeds(names: tuple[str, ...]) -> tuple[str, ...]:
    """The distinct recorded texts of these file names, under fixtures/ (and the lab's)."""
    found = {
        path.read_text(errors="replace")
        for root in FIXTURES
        for name in names
        for path in sorted(root.rglob(name))
    }
    if "kube-proxy-daemonset.json" in names:  # the recordings predate gathering it
        found.add(json.dumps(kube_proxy_daemon_set(), indent=1))
    return tuple(sorted(found))


@st.composite
def mutated(draw: st.DrawFn, texts: tuple[str, ...]) -> str:
    """A recorded text cut, spliced, with lines dropped, doubled, swapped or bytes changed; or
    text made up from scratch."""
    if not texts or draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=400))
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.splitlines(keepends=True) or [""]
        at = draw(st.integers(0, len(lines) - 1))
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["cut", "insert", "drop", "double", "swap", "line", "char"]))
        if kind == "cut":
            text = text[:pos]
        elif kind == "insert":
            text = text[:pos] + draw(st.text(max_size=40)) + text[pos:]
        elif kind == "drop":
            text = "".join(lines[:at] + lines[at + 1 :])
        elif kind == "double":
            text = "".join(lines[: at + 1] + lines[at:])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
            text = "".join(lines)
        elif kind == "line":
            lines[at] = draw(st.text(max_size=80)) + "\n"
            text = "".join(lines)
        elif text:
            pos = min(pos, len(text) - 1)
            text = text[:pos] + draw(st.characters()) + text[pos + 1 :]
    return text


def drawn(profile: str) -> list[str]:
    """The texts one run of a small property draws under a profile."""
    seen: list[str] = []

    @settings(settings.get_profile(profile), max_examples=10)
    @given(st.text(min_size=1))
    def draw(text: str) -> None:
        seen.append(text)

    draw()
    return seen


def test_quick_runs_draw_the_same_examples_and_long_runs_new_ones() -> None:
    assert drawn("quick") == drawn("quick")  # a CI failure reproduces
    assert drawn("long") != drawn("long")  # the long fuzz explores


def test_every_parser_has_recorded_seeds() -> None:
    assert {name: seeds(files) for name, (_, files) in PARSERS.items() if not seeds(files)} == {}


@pytest.mark.parametrize("name", list(PARSERS))
@given(data=st.data())
def test_a_parser_raises_only_parse_error_naming_its_file(name: str, data: st.DataObject) -> None:
    parser, files = PARSERS[name]
    text = data.draw(mutated(seeds(files)), label="text")
    try:
        parser(text, SOURCE)
    except ParseError as error:
        raised = error
    else:
        return
    assert raised.source.startswith(SOURCE), raised


@cache
def recorded(path: Path) -> Snapshot:
    return load_snapshot(path)


def snapshot_files(snapshot: Snapshot) -> list[str]:
    names = [f"cluster/{name}" for name in snapshot.cluster]
    names += [f"nodes/{n}/{f}" for n, node in snapshot.nodes.items() for f in node.files]
    return names + [f"probes/{name}" for name in snapshot.probes or {}]


def with_file(snapshot: Snapshot, name: str, text: str) -> Snapshot:
    where, _, rest = name.partition("/")
    if where == "cluster":
        return replace(snapshot, cluster={**snapshot.cluster, rest: text})
    if where == "probes":
        return replace(snapshot, probes={**(snapshot.probes or {}), rest: text})
    node_name, _, file = rest.partition("/")
    node = snapshot.nodes[node_name]
    nodes = {**snapshot.nodes, node_name: replace(node, files={**node.files, file: text})}
    return replace(snapshot, nodes=nodes)


@given(data=st.data())
def test_every_check_on_a_snapshot_with_a_mutated_file_only_errors_its_items(
    data: st.DataObject,
) -> None:
    snapshot = recorded(data.draw(st.sampled_from([SEED, PROBED]), label="snapshot"))
    name = data.draw(st.sampled_from(snapshot_files(snapshot)), label="file")
    original = with_file(snapshot, name, "")
    text = data.draw(mutated((_text_of(snapshot, name),)), label="text")
    facts = Facts.from_snapshot(with_file(original, name, text))
    for check in CATALOGUE:
        for case in cases_for(check, facts):
            run_case(case, facts, DEFAULTS)  # any exception but ParseError escapes and fails


def _text_of(snapshot: Snapshot, name: str) -> str:
    where, _, rest = name.partition("/")
    if where == "cluster":
        return snapshot.cluster[rest]
    if where == "probes":
        return (snapshot.probes or {})[rest]
    node_name, _, file = rest.partition("/")
    return snapshot.nodes[node_name].files[file]


@settings(max_examples=REPLAY_EXAMPLES)
@given(
    file=st.sampled_from(
        sorted(str(p.relative_to(PROBED)) for p in PROBED.rglob("*") if p.is_file())
    ),
    data=st.binary(max_size=2000) | st.text(max_size=400).map(str.encode),
)
def test_replay_of_a_mutated_snapshot_exits_cleanly(
    tmp_path_factory: pytest.TempPathFactory, file: str, data: bytes
) -> None:
    snapshot = tmp_path_factory.mktemp("mutated") / "snap"
    shutil.copytree(PROBED, snapshot)
    (snapshot / file).write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "vipcheck.cli", "--from-snapshot", str(snapshot), "-q",
         "--vipcheck-json", str(snapshot.parent / "summary.json")],
        capture_output=True, text=True, timeout=120, check=False, cwd=snapshot.parent,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1, 4), output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("text", ["-A\n", "-a\n", "-A -t\n"])
def test_a_rule_without_its_service_is_a_parse_error(text: str) -> None:
    """Found by the long profile: a bare `-A` line raised IndexError."""
    with pytest.raises(ParseError, match=r"^f:1: expected a service after -[Aa]$"):
        parse_ipvsadm_list(text, "f")
