"""Each check reads exactly the snapshot files and sysctl keys it declares, its subjects' too."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fixtures.lab.objects import kube_proxy_daemon_set
from vipcheck.cases import cases_for, run_case
from vipcheck.checks import CATALOGUE, SYSCTL_KEYS
from vipcheck.checks.base import Check
from vipcheck.checks.docs import render_snapshot_page
from vipcheck.facts import Facts
from vipcheck.model.node import Sysctls
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import Snapshot, load_snapshot

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "fixtures" / "recorded" / "seed-incidents"
PROBED = ROOT / "fixtures" / "snapshots" / "seed-incidents-probed"
# node-2 with busybox's ip and sysctl and no ipvsadm: text interfaces, /proc/net/ip_vs.
NFT_DATA = ROOT / "tests" / "unit" / "parse" / "data"
OLD_NODE = ROOT / "fixtures" / "recorded" / "seed-incidents-old-node"
# The first of each pair of alternatives: removing it makes the facts read the second.
PRIMARIES = ("ipvsadm-Ln.txt", "ip_vs_conn.txt")
TIMEOUTS = "ipvsadm-timeout.txt"
SYSCTL = "sysctl.txt"
# What a check that lists every sysctl key is noted to read: no declaration covers it.
EVERY_KEY = "<every key>"


def without_primaries(snapshot: Snapshot) -> Snapshot:
    """Every node without the preferred file of each alternative pair, as ipvsadm-less nodes."""
    nodes = {
        name: replace(node, files={k: v for k, v in node.files.items() if k not in PRIMARIES})
        for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


def without_ip_or_sysctl(snapshot: Snapshot) -> Snapshot:
    """Nodes with neither `ip` nor `sysctl`: /sys/class/net and /proc/sys stand in."""
    gone = {"ip-addr.json", "ip-link.json", "ip-addr.txt", "ip-link.txt", "sysctl.txt"}
    nodes = {
        name: replace(node, files={k: v for k, v in node.files.items() if k not in gone})
        for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


def without_timeouts(snapshot: Snapshot) -> Snapshot:
    """Evidence without `ipvsadm -L --timeout` (not pasted, or no ipvsadm): tcpfin reads the
    connection table and the kube-proxy config instead."""
    nodes = {
        name: replace(node, files={k: v for k, v in node.files.items() if k != TIMEOUTS})
        for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


def with_tcp_tw_recycle_on(snapshot: Snapshot) -> Snapshot:
    """An old kernel's tcp_tw_recycle=1, so its check reads net.ipv4.tcp_timestamps too."""
    nodes = {
        name: replace(
            node, files={**node.files, SYSCTL: node.files[SYSCTL] + "net.ipv4.tcp_tw_recycle = 1\n"}
        )
        for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


def with_nodes_of(snapshot: Snapshot, other: Snapshot) -> Snapshot:
    """The snapshot's probes over another recording's nodes (the same scenario, old node-2)."""
    return replace(snapshot, nodes=other.nodes)


def without_connections_after_probing(snapshot: Snapshot) -> Snapshot:
    """Probes whose connection tables were not re-read, so the gathered ones stand in."""
    probes = snapshot.probes or {}
    return replace(snapshot, probes={k: v for k, v in probes.items() if not k.startswith("after/")})


def with_vantage_errors(snapshot: Snapshot) -> Snapshot:
    """The client could not probe the VIPs, node-1 not the real servers: error files instead."""
    probes = dict(snapshot.probes or {})
    del probes["client/vip.txt"], probes["node-1/real-server.txt"]
    probes["client/vip.error.txt"] = "client (ssh://client): Connection refused\n"
    probes["node-1/real-server.error.txt"] = "node-1 (ssh://node-1): Connection refused\n"
    return replace(snapshot, probes=probes)


def with_kube_proxy_daemon_set(snapshot: Snapshot) -> Snapshot:
    """The recorded lab predates gathering the kube-proxy DaemonSet: add the lab's."""
    daemon_set = json.dumps(kube_proxy_daemon_set())
    return replace(snapshot, cluster={**snapshot.cluster, "kube-proxy-daemonset.json": daemon_set})


def with_every_conntrack_setting(snapshot: Snapshot) -> Snapshot:
    """A kube-proxy config that sets tcpBeLiberal and the UDP timers too (1.29 on), so the
    conntrack check reads every key it declares."""
    config_map = json.loads(snapshot.cluster["kube-proxy.json"])
    config_map["data"]["config.conf"] = config_map["data"]["config.conf"].replace(
        "conntrack:\n",
        "conntrack:\n  tcpBeLiberal: true\n  udpTimeout: 30s\n  udpStreamTimeout: 2m0s\n",
    )
    return replace(
        snapshot, cluster={**snapshot.cluster, "kube-proxy.json": json.dumps(config_map)}
    )


def with_nft_tables(snapshot: Snapshot, suffix: str) -> Snapshot:
    """Every node with kube-proxy's ip and ip6 tables as nft listed them (tests/unit/parse/data,
    recorded from the kernel), as JSON or as text (an nft without JSON); no suffix: nft lists
    only another component's table."""
    tables = "table ip kube-proxy\ntable ip6 kube-proxy\n" if suffix else "table inet filter\n"
    listed = {
        f"nft-{family}-kube-proxy{suffix}": (NFT_DATA / f"{recording}{suffix}").read_text()
        for family, recording in (("ip", "endpoint-chains"), ("ip6", "ip6"))
        if suffix
    }
    nodes = {
        name: replace(node, files={**node.files, "nft-tables.txt": tables, **listed})
        for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


def with_leftovers(snapshot: Snapshot) -> Snapshot:
    """Every node with IPVS mode's ipsets and iptables chains as the real tools listed them
    (tests/unit/parse/data/leftovers), nft's version beside."""
    files = {
        name: (NFT_DATA / "leftovers" / f"{recorded}").read_text()
        for name, recorded in (
            ("nft-version.txt", "nft-version.txt"),
            ("ipset-list-names.txt", "ipvs-mode.ipset-list-names.txt"),
            ("iptables-chains.txt", "ipvs-mode.iptables-chains.txt"),
            ("ip6tables-chains.txt", "ipvs-mode.ip6tables-chains.txt"),
        )
    }
    nodes = {
        name: replace(node, files={**node.files, **files}) for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


def with_nft_version(snapshot: Snapshot) -> Snapshot:
    """Every node with `nft --version` gathered (issue 20), as the readiness check reads it."""
    version = {"nft-version.txt": "nftables v1.0.6 (Lester Gooch #5)\n"}
    nodes = {
        name: replace(node, files={**node.files, **version})
        for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


def with_node_port_reached(snapshot: Snapshot) -> Snapshot:
    """node-1's NodePort also on eth1 (10.10.0.1), outside nodePortAddresses, with a client's
    connection: the readiness check then reads the connection table for it."""
    node = snapshot.nodes["node-1"]
    table = node.files["ipvsadm-Ln.txt"].replace(
        "TCP  10.96.0.20:6379 rr\n",
        "TCP  10.10.0.1:30080 rr\n  -> 10.244.1.10:8080             Masq    1      1          0\n"
        "TCP  10.96.0.20:6379 rr\n",
    )
    row = "TCP 0A0A0024 9C40 0A0A0001 7580 0AF4010A 1F90 ESTABLISHED      899\n"
    pasted = "TCP 14:59  ESTABLISHED 10.10.0.36:40000   10.10.0.1:30080    10.244.1.10:8080\n"
    files = {
        **node.files,
        "ipvsadm-Ln.txt": table,
        "ip_vs_conn.txt": node.files["ip_vs_conn.txt"] + row,
        "ipvsadm-Lnc.txt": node.files["ipvsadm-Lnc.txt"] + pasted,
    }
    return replace(snapshot, nodes={**snapshot.nodes, "node-1": replace(node, files=files)})


def without_conn_table(snapshot: Snapshot) -> Snapshot:
    """Every node without ip_vs_conn.txt: the pasted `ipvsadm -Lnc` stands in."""
    nodes = {
        name: replace(node, files={k: v for k, v in node.files.items() if k != "ip_vs_conn.txt"})
        for name, node in snapshot.nodes.items()
    }
    return replace(snapshot, nodes=nodes)


@cache
def variants() -> dict[str, Snapshot]:
    seed, probed, old = load_snapshot(SEED), load_snapshot(PROBED), load_snapshot(OLD_NODE)
    return {
        "seed": seed,
        "old node": old,
        "old node without ip or sysctl": without_ip_or_sysctl(old),
        "seed without primaries": without_primaries(seed),
        "seed without timeouts or primaries": without_timeouts(without_primaries(seed)),
        "probed": probed,
        "probed without after": without_connections_after_probing(probed),
        "probed without after or primaries": without_primaries(
            without_connections_after_probing(probed)
        ),
        "probed with vantage errors": with_vantage_errors(probed),
        "seed with the kube-proxy DaemonSet": with_kube_proxy_daemon_set(seed),
        "seed with tcp_tw_recycle on": with_tcp_tw_recycle_on(seed),
        "seed with every conntrack setting": with_every_conntrack_setting(seed),
        "probed with the kube-proxy DaemonSet": with_kube_proxy_daemon_set(probed),
        "probed on an old node": with_nodes_of(probed, old),
        "probed without ip or sysctl": without_ip_or_sysctl(with_nodes_of(probed, old)),
        "seed with nft --version": with_nft_version(seed),
        "seed with a NodePort reached on a secondary address": with_node_port_reached(seed),
        "seed with a NodePort reached on a secondary address, ipvsadm -Lnc": without_conn_table(
            with_node_port_reached(seed)
        ),
        "seed with nft JSON": with_nft_tables(seed, ".json"),
        "seed with nft text": with_nft_tables(seed, ".txt"),
        "seed with nft, no kube-proxy table": with_nft_tables(seed, ""),
        # nftables-mode checks read their inputs only where kube-proxy runs that mode (issue 19)
        "seed in nftables mode": in_nftables_mode(
            with_nft_tables(with_kube_proxy_daemon_set(seed), ".json")
        ),
        "seed in nftables mode, nft text": in_nftables_mode(with_nft_tables(seed, ".txt")),
        "seed in nftables mode, no table listed": in_nftables_mode(with_nft_tables(seed, "")),
        "seed in nftables mode, dual-stack redis": in_nftables_mode(
            with_dual_stack_redis(with_nft_tables(seed, ".json"))
        ),
        "seed in nftables mode, dual-stack redis, nft text": in_nftables_mode(
            with_dual_stack_redis(with_nft_tables(seed, ".txt"))
        ),
        "probed in nftables mode": in_nftables_mode(with_nft_tables(probed, ".json")),
        "probed in nftables mode, nft text": in_nftables_mode(with_nft_tables(probed, ".txt")),
        "probed in nftables mode, dual-stack redis": in_nftables_mode(
            with_dual_stack_redis(with_nft_tables(probed, ".json"))
        ),
        "probed in nftables mode, dual-stack redis, nft text": in_nftables_mode(
            with_dual_stack_redis(with_nft_tables(probed, ".txt"))
        ),
        "probed in nftables mode, no table listed": in_nftables_mode(with_nft_tables(probed, "")),
        "old node in nftables mode": in_nftables_mode(old),
        # the leftovers checks read IPVS state only on nodes that switched (issue 20)
        "seed in nftables mode, IPVS leftovers": in_nftables_mode(
            with_leftovers(with_nft_tables(seed, ".json"))
        ),
        "old node in nftables mode, nft text, IPVS leftovers": in_nftables_mode(
            with_leftovers(with_nft_tables(old, ".txt"))
        ),
        "old node without ip or sysctl in nftables mode, IPVS leftovers": in_nftables_mode(
            with_leftovers(with_nft_tables(without_ip_or_sysctl(old), ".json"))
        ),
        "old node without ip in nftables mode": in_nftables_mode(without_ip_or_sysctl(old)),
    }


def with_dual_stack_redis(snapshot: Snapshot) -> Snapshot:
    """default/redis given an IPv6 ClusterIP too (no IPv6 endpoints), so the ip6 tables are read."""
    services = json.loads(snapshot.cluster["services.json"])
    [redis] = [s for s in services["items"] if s["metadata"]["name"] == "redis"]
    redis["spec"]["ipFamilies"] = ["IPv4", "IPv6"]
    redis["spec"]["ipFamilyPolicy"] = "PreferDualStack"
    redis["spec"]["clusterIPs"] = [redis["spec"]["clusterIP"], "fd00:10:96::20"]
    return replace(snapshot, cluster={**snapshot.cluster, "services.json": json.dumps(services)})


def in_nftables_mode(snapshot: Snapshot) -> Snapshot:
    """The snapshot's kube-proxy config switched to nftables mode."""
    config = snapshot.cluster["kube-proxy.json"]
    assert "mode: ipvs" in config
    return replace(
        snapshot,
        cluster={
            **snapshot.cluster,
            "kube-proxy.json": config.replace("mode: ipvs", "mode: nftables"),
        },
    )


def as_declared(path: str) -> str:
    """A file read, named as inputs declare it: bare cluster and node names, probes templated."""
    path = re.sub(r"^(cluster|nodes/[^/]+)/", "", path)
    path = re.sub(r"^probes/after/[^/]+/", "probes/after/<node>/", path)
    return re.sub(r"^probes/(?!after/|plan\.json$)[^/]+/", "probes/<vantage>/", path)


class KeysLookedUp(Mapping[str, str]):
    """A Sysctls fact's values, noting each key looked up; listing them all notes EVERY_KEY."""

    def __init__(self, values: Mapping[str, str], seen: set[str]) -> None:
        self.wrapped, self.seen = values, seen

    def __getitem__(self, key: str) -> str:
        self.seen.add(key)
        return self.wrapped[key]

    def __iter__(self) -> Iterator[str]:
        self.seen.add(EVERY_KEY)
        return iter(self.wrapped)

    def __len__(self) -> int:
        return len(self.wrapped)


@cache
def reads(check_id: str, variant: str) -> tuple[frozenset[str], frozenset[str]]:
    """The files and sysctl keys a check reads on a variant, listing its subjects included,
    each on fresh facts."""
    check, snapshot = CHECKS[check_id], variants()[variant]
    files: set[str] = set()
    keys: set[str] = set()
    built = Sysctls.__post_init__

    def noting_keys(sysctls: Sysctls) -> None:
        if isinstance(sysctls.values, KeysLookedUp):  # dataclasses.replace of a noted one
            object.__setattr__(sysctls, "values", sysctls.values.wrapped)
        built(sysctls)
        object.__setattr__(sysctls, "values", KeysLookedUp(sysctls.values, keys))

    def fresh() -> Facts:
        return Facts.from_snapshot(snapshot, observer=lambda path: files.add(as_declared(path)))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Sysctls, "__post_init__", noting_keys)
        for case in list(cases_for(check, fresh())):
            run_case(case, fresh(), DEFAULTS)
    return frozenset(files), frozenset(keys)


def files_read(check: Check[Any], variant: str) -> frozenset[str]:
    return reads(check.id, variant)[0]


def keys_read(check: Check[Any], variant: str) -> frozenset[str]:
    return reads(check.id, variant)[1]


def declares(pattern: str, key: str) -> bool:
    """Whether a declared sysctl key names this key: `*` stands for any part of one name."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", "[^.]*"), key) is not None


def declared(check: Check[Any]) -> set[str]:
    return {name for each in check.inputs for name in each.files}


def ids(checks: Iterable[Check[Any]]) -> list[str]:
    return [check.id for check in checks]


CHECKS = {check.id: check for check in CATALOGUE}
each_check: Callable[[Callable[..., None]], Callable[..., None]] = pytest.mark.parametrize(
    "check", CATALOGUE, ids=ids(CATALOGUE)
)


@each_check
@pytest.mark.parametrize("variant", list(variants()))
def test_every_file_a_check_reads_is_declared(check: Check[Any], variant: str) -> None:
    assert files_read(check, variant) - declared(check) == set()


@each_check
def test_every_declared_file_is_read_by_some_run(check: Check[Any]) -> None:
    read = set().union(*(files_read(check, variant) for variant in variants()))
    assert declared(check) - read == set()


@each_check
@pytest.mark.parametrize("variant", list(variants()))
def test_every_sysctl_key_a_check_reads_is_declared(check: Check[Any], variant: str) -> None:
    # A node without `sysctl` is asked for the declared keys alone (proc-sys.txt).
    read = keys_read(check, variant)
    assert {key for key in read if not any(declares(p, key) for p in check.sysctls)} == set()


@each_check
def test_every_declared_sysctl_key_is_read_by_some_run(check: Check[Any]) -> None:
    read = set().union(*(keys_read(check, variant) for variant in variants()))
    assert [p for p in check.sysctls if not any(declares(p, key) for key in read)] == []


def test_the_catalogues_sysctl_keys_are_every_checks_once() -> None:
    assert tuple(sorted({key for check in CATALOGUE for key in check.sysctls})) == SYSCTL_KEYS
    assert "net.ipv4.conf.*.rp_filter" in SYSCTL_KEYS


def test_snapshot_md_lists_the_catalogues_sysctl_keys() -> None:
    page = (ROOT / "docs" / "snapshot.md").read_text()
    assert render_snapshot_page(page) == page, "run `python -m vipcheck.checks.docs`"
    assert "/proc/sys/net/ipv4/conf/*/rp_filter" in page


def test_a_check_listing_every_sysctl_key_reads_what_no_declaration_covers() -> None:
    seen: set[str] = set()
    values = KeysLookedUp({"net.ipv4.ip_forward": "1"}, seen)
    assert (values.get("net.ipv4.ip_forward"), "net.ipv4.tcp_tw_recycle" in values) == ("1", False)
    assert list(values) == ["net.ipv4.ip_forward"]
    assert seen == {"net.ipv4.ip_forward", "net.ipv4.tcp_tw_recycle", EVERY_KEY}


def test_reads_are_named_as_declared() -> None:
    assert [
        as_declared(path)
        for path in (
            "cluster/nodes.json",
            "nodes/node-2/ip_vs_conn.txt",
            "probes/plan.json",
            "probes/client/vip.error.txt",
            "probes/after/node-3/ip_vs_conn.txt",
        )
    ] == [
        "nodes.json",
        "ip_vs_conn.txt",
        "probes/plan.json",
        "probes/<vantage>/vip.error.txt",
        "probes/after/<node>/ip_vs_conn.txt",
    ]
