"""kube-proxy's own nftables proxier tests as an oracle (fixtures/upstream/README.md).

Each ported test is a snapshot whose node files the kernel printed. The faithful case must
leave vipcheck with nothing to flag, and its broken twin's one injected fault must be caught by
the checks named below. These are the first tests of the nftables checks against rulesets that
kube-proxy's maintainers wrote, not ones derived from vipcheck's own reading of proxier.go.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fixtures.upstream.cases import CASES, OVERALL, Case, port_inputs
from fixtures.upstream.dumps import UPSTREAM_OVERALL
from fixtures.upstream.nftables import NODE_FILES, generate
from fixtures.upstream.rulesets import chain_hash, service_port_rules

ROOT = Path(__file__).resolve().parents[2]
CASES_DIR = ROOT / "fixtures" / "upstream" / "nftables"
NODE_DIR = "nodes/test-node"

# The nftables checks' ids (docs/checks.md).
NFT_SERVICE_IPS = "nft-service-maps"  # ClusterIP/external/LB ports in service-ips or the drop maps
NFT_SERVICE_ENDPOINTS = "nft-chains-reach-endpoints"  # numgen N and DNAT targets = usable endpoints
NFT_NO_STALE_CHAINS = "nft-no-stale-chains"  # no non-empty chain the API does not explain
# packets traced through the node's rules reach the expected endpoints
NFT_TRACE = "nft-trace-reaches-endpoints"

# The checks that must catch each broken twin's fault (at least one of them fails with it).
CATCHING: dict[str, frozenset[str]] = {
    "TestOverallNFTablesRules": frozenset({NFT_SERVICE_ENDPOINTS, NFT_TRACE}),
    "TestOverallNFTablesRules-endpoint-chains": frozenset({NFT_SERVICE_ENDPOINTS, NFT_TRACE}),
    "TestClusterIPGeneral": frozenset({NFT_SERVICE_IPS, NFT_TRACE}),
    "TestLoadBalancer": frozenset({NFT_SERVICE_ENDPOINTS, NFT_TRACE}),
    "TestNodePorts": frozenset({NFT_NO_STALE_CHAINS}),
    "TestNoEndpointsReject": frozenset({NFT_SERVICE_IPS, NFT_TRACE}),
}
FLAGGED = ("failed", "error")


def run_vipcheck(case: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Run `vipcheck --from-snapshot CASE` as a user would; the JSON summary's results."""
    summary = tmp_path / "summary.json"
    command = [
        sys.executable, "-m", "vipcheck.cli", "--from-snapshot", str(case),
        "--vipcheck-json", str(summary), "--vipcheck-html", str(tmp_path / "report.html"),
        "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert summary.exists(), result.stdout + result.stderr
    results: list[dict[str, Any]] = json.loads(summary.read_text())["results"]
    return results


def shown(results: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['check']} {r['subject']} {r['outcome']}: {r['message']}" for r in results)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_faithful_case_leaves_nothing_to_flag(case: Case, tmp_path: Path) -> None:
    results = run_vipcheck(CASES_DIR / case.name, tmp_path)
    flagged = [r for r in results if r["outcome"] in FLAGGED]
    assert not flagged, shown(flagged)
    # Nothing flagged must mean judged and found right, not skipped: the checks that catch
    # the twin judged this case.
    judged = {r["check"] for r in results if r["outcome"] == "passed"}
    assert CATCHING[case.name] <= judged, shown(results)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_broken_twin_is_caught(case: Case, tmp_path: Path) -> None:
    results = run_vipcheck(CASES_DIR / f"{case.name}-broken", tmp_path)
    errors = [r for r in results if r["outcome"] == "error"]
    assert not errors, shown(errors)
    caught = [
        r
        for r in results
        if r["outcome"] == "failed"
        and r["check"] in CATCHING[case.name]
        and case.fault.marker in json.dumps(r["violations"])
    ]
    assert caught, f"{case.fault.description}\nnot caught by {sorted(CATCHING[case.name])}:\n" + (
        shown(results)
    )


def test_chain_names_hash_as_kube_proxy_does() -> None:
    # proxier_test.go Test_servicePortChainNameBase and TestOverallNFTablesRules @edca5633
    assert chain_hash("ns1/svc1/tcp/p80") == "ULMVA6XW"
    assert chain_hash("ns5/svc5/tcp/p80") == "HVFWP5L3"
    assert chain_hash("ns5/svc5/tcp/p80__10.180.0.3/80") == "GTK6MW7G"


def test_derived_rules_reproduce_the_upstream_dump() -> None:
    """The four derived rulesets are only as good as the derivation: held to the one dump
    upstream wrote out, line for line (the dump lists a shared hairpin element once)."""
    derived = [line for port in port_inputs(OVERALL) for line in service_port_rules(port)]
    upstream = UPSTREAM_OVERALL.splitlines()
    assert set(derived) == set(upstream)
    assert len(set(derived)) == len(upstream)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_twin_differs_from_its_case_by_its_fault(case: Case) -> None:
    listing = f"{NODE_DIR}/nft-ip-kube-proxy.txt"
    faithful = (CASES_DIR / case.name / listing).read_text().splitlines()
    broken = (CASES_DIR / f"{case.name}-broken" / listing).read_text().splitlines()
    changed = set(faithful) ^ set(broken)
    assert changed
    assert any(case.fault.marker in line for line in changed), changed
    for name in ("services.json", "endpointslices.json", "kube-proxy.json"):
        cluster = f"cluster/{name}"
        assert (CASES_DIR / case.name / cluster).read_text() == (
            CASES_DIR / f"{case.name}-broken" / cluster
        ).read_text()


def _recorded_nft_version() -> str:
    listing = json.loads(
        (CASES_DIR / CASES[0].name / NODE_DIR / "nft-ip-kube-proxy.json").read_text()
    )
    version: str = listing["nftables"][0]["metainfo"]["version"]
    return version


def _cannot_record() -> str | None:
    """Why this machine cannot re-record the cases as they were recorded, or None."""
    if os.geteuid() != 0:
        return "re-recording needs root (unshare -n, nft -f)"
    if not (shutil.which("nft") and shutil.which("unshare") and shutil.which("ip")):
        return "re-recording needs nft, unshare and ip"
    printed = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False)
    recorded = _recorded_nft_version()
    if f"v{recorded} " not in printed.stdout + " ":
        return f"the cases were recorded with nft {recorded}; this is {printed.stdout.strip()}"
    return None


def test_regenerating_gives_the_committed_cases(tmp_path: Path) -> None:
    reason = _cannot_record()
    if reason is not None:
        pytest.skip(reason)
    generate(tmp_path)
    committed = sorted(p.relative_to(CASES_DIR) for p in CASES_DIR.rglob("*") if p.is_file())
    regenerated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert regenerated == committed
    for relative in committed:
        assert (tmp_path / relative).read_text() == (CASES_DIR / relative).read_text(), relative
    assert set(NODE_FILES) <= {p.name for p in (tmp_path / CASES[0].name / NODE_DIR).iterdir()}
