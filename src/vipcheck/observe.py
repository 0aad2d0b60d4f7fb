"""Observe the target once: replay a snapshot, or gather it live; probe lazily, on first use.

Callable without pytest: the plugin calls `observe` when the first suite test is collected, and
scripts or tests may call it directly. Only reads: the probes open and close TCP connections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from vipcheck.facts import ClusterFacts, Facts, NotProbed, ProbeLoader
from vipcheck.gather.cluster import ClusterConfigError
from vipcheck.gather.live import gather
from vipcheck.gather.vantage_points import ProbeError, vantage_points
from vipcheck.handshake_rounds import run_probes
from vipcheck.kind import find_kind_cluster
from vipcheck.options import RunOptions
from vipcheck.snapshot import (
    NodeSnapshot,
    NodeSpool,
    Snapshot,
    SnapshotError,
    load_snapshot,
    save_probes,
    save_snapshot,
)
from vipcheck.transport import TargetError
from vipcheck.vocabulary import Progress


class ObserveError(Exception):
    """The target cannot be observed as asked: a usage error, in one line saying what to fix."""


class Arrivals(Protocol):
    """Told of a live run's cluster and nodes as they are gathered: vipcheck.arrival's
    ArrivalJudge, which judges each node then (the catalogue sits above this layer)."""

    def cluster_read(self, files: Mapping[str, str]) -> None: ...

    def arrived(self, node: NodeSnapshot) -> NodeSnapshot: ...

    def gathered(self) -> ClusterFacts | None:
        """Gathering ended; the cluster's facts it made, if any."""
        ...

    def adopt(self, snapshot: Snapshot, facts: Facts) -> None:
        """What it made of the snapshot's nodes, put in the run's facts."""
        ...


def observe(
    options: RunOptions,
    progress: Progress,
    sysctl_keys: Sequence[str],
    arrivals: Arrivals | None = None,
) -> Facts:
    """The run's facts; a bad snapshot, kubeconfig, inventory or --probe-from is ObserveError.

    sysctl_keys: what the checks read (the catalogue's SYSCTL_KEYS: the catalogue sits above
    this layer, so its caller hands them down): asked of nodes without `sysctl`, and the only
    keys the facts keep of any node's sysctls. arrivals: told of a live run's cluster and
    nodes as they are gathered (a replay's are all there at once).
    """
    try:
        if options.replay is not None:
            progress(f"replaying snapshot {options.replay}")
            snapshot = load_snapshot(options.replay, options.max_file_bytes)
            probes = _replayed_probes(options, snapshot)
            return Facts.from_snapshot(snapshot, probes, sysctl_keys=sysctl_keys)
        if options.gather.kind is not None:
            options = _with_kind_nodes(options, progress)
        snapshot, cluster = _gather(options, progress, sysctl_keys, arrivals)
        if options.save_to is not None:
            save_snapshot(snapshot, options.save_to)
            progress(f"snapshot saved to {options.save_to}")
    except SnapshotError as error:
        raise ObserveError(str(error)) from None
    facts = _with_live_probes(options, snapshot, progress, sysctl_keys, cluster)
    if arrivals is not None:
        arrivals.adopt(snapshot, facts)
    return facts


def _with_kind_nodes(options: RunOptions, progress: Progress) -> RunOptions:
    """--kind NAME: the context kind-NAME, and a docker:// spec per node container.

    Other --hosts specs stay: they name no node, so they are outside hosts (`local://`, the Docker
    host) that probe from outside the cluster.
    """
    assert options.gather.kind is not None
    try:
        cluster = find_kind_cluster(options.gather.kind)
    except TargetError as error:
        raise ObserveError(str(error)) from None
    progress(f"kind cluster {cluster.name}: nodes {', '.join(cluster.nodes)} (docker exec)")
    target = replace(
        options.gather,
        context=cluster.context,
        hosts=(*cluster.specs, *options.gather.hosts),
    )
    return replace(options, gather=target)


def _gather(
    options: RunOptions,
    progress: Progress,
    sysctl_keys: Sequence[str],
    arrivals: Arrivals | None,
) -> tuple[Snapshot, ClusterFacts | None]:
    """The snapshot gathered, and the cluster's facts arrivals made of it."""
    try:
        # Each node's files on disk as it arrives, read as a replay's are (NodeSpool).
        spool = NodeSpool(options.max_file_bytes)
        if arrivals is None:
            return gather(options.gather, progress, sysctl_keys=sysctl_keys, keep=spool.keep), None
        try:
            snapshot = gather(
                options.gather,
                progress,
                sysctl_keys=sysctl_keys,
                keep=lambda node: arrivals.arrived(spool.keep(node)),
                cluster_read=arrivals.cluster_read,
            )
        finally:
            cluster = arrivals.gathered()
        return snapshot, cluster
    except ClusterConfigError as error:
        if options.gather.kind is not None:
            raise ObserveError(f"--kind {options.gather.kind}: {error}") from None
        raise ObserveError(str(error)) from None
    except TargetError as error:
        raise ObserveError(str(error)) from None


def _replayed_probes(options: RunOptions, snapshot: Snapshot) -> ProbeLoader | None:
    """The snapshot's own probes/ files (None), or why the handshake items skip."""
    if not options.probes.enabled:
        return _refuse("probing turned off (--no-probe)")
    if snapshot.probes is None:
        return _refuse("the replayed snapshot has no probes/ (the run that saved it did not probe)")
    return None


def _with_live_probes(
    options: RunOptions,
    snapshot: Snapshot,
    progress: Progress,
    sysctl_keys: Sequence[str],
    cluster: ClusterFacts | None,
) -> Facts:
    """Facts whose probes run when first read, so `-m "not probe"` opens no connection.

    Vantage points are resolved now, so a bad --probe-from fails before any item runs.
    """
    if not options.probes.enabled:
        refused = _refuse("probing turned off (--no-probe)")
        return Facts.from_snapshot(snapshot, refused, sysctl_keys=sysctl_keys, cluster=cluster)

    nodes_json = snapshot.cluster.get("nodes.json")
    try:
        points = vantage_points(options.gather, nodes_json, options.probes.probe_from)
    except ProbeError as error:
        raise ObserveError(str(error)) from None

    def probe() -> Mapping[str, str]:
        # A node nobody could observe is no vantage point: its node-observed item reports it once.
        unseen = facts.unobserved_nodes()
        usable = [p for p in points if p.vantage.node not in unseen]
        if len(usable) < len(points):
            progress(f"not probing from {', '.join(sorted(unseen))}: not observed")
        names = ", ".join(p.vantage.name for p in usable) or "nowhere"
        progress(f"probing from {names}")
        files = run_probes(
            facts, usable, options.probes.settings, progress, total_cap_s=options.probes.total_s
        )
        if options.save_to is not None:
            try:
                save_probes(files, options.save_to)
            except SnapshotError as error:
                progress(str(error))
        return files

    facts = Facts.from_snapshot(snapshot, probe, sysctl_keys=sysctl_keys, cluster=cluster)
    return facts


def _refuse(reason: str) -> ProbeLoader:
    def refuse() -> Mapping[str, str]:
        raise NotProbed(reason)

    return refuse
