"""Gathering: observe a live cluster and its nodes, read-only, into a Snapshot.

The cluster's Nodes are listed first, because they say which nodes exist and by which addresses a
host spec finds its node; then every node is observed in parallel, one round trip each, while the
rest of the API (Services, EndpointSlices: most of a big cluster's listing) is read. A node that
cannot be reached, or that no spec names, is kept with the reason, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import replace
from typing import Any, Protocol

from vipcheck.gather.cluster import ClusterError, gather_cluster
from vipcheck.gather.local_reader import NODE_GATHER_RUNNER
from vipcheck.gather.node_script import build_node_script
from vipcheck.gather.nodes import Keep, gather_nodes, in_memory
from vipcheck.options import GatherOptions
from vipcheck.parse import ParseError
from vipcheck.parse.kube import parse_nodes
from vipcheck.snapshot import NodeSnapshot, Snapshot, new_meta
from vipcheck.transport import (
    NodeRunner,
    NodeTarget,
    Resolution,
    TargetError,
    resolve_targets,
)
from vipcheck.vocabulary import Progress


class ClusterReader(Protocol):
    """Reads the API's lists into cluster files, so gathering runs against a fake API in tests.

    A reader may call nodes_listed with nodes.json as soon as it has it (before the rest).
    """

    def __call__(
        self,
        kubeconfig: str | None,
        context: str | None,
        progress: Progress,
        nodes_listed: Callable[[str], None],
        /,
    ) -> dict[str, str]: ...


ClusterRead = Callable[[Mapping[str, str]], None]
"""Told the cluster's files once the API is read (vipcheck.arrival: judging may start)."""


def _nobody(files: Mapping[str, str]) -> None:
    """A ClusterRead telling nobody."""


def gather(
    options: GatherOptions,
    progress: Progress,
    *,
    runner: NodeRunner | None = None,
    read_cluster: ClusterReader = gather_cluster,
    sysctl_keys: Sequence[str],
    keep: Keep = in_memory,
    cluster_read: ClusterRead = _nobody,
) -> Snapshot:
    """Observe the cluster and its nodes; an unreadable API still lets the given hosts be read.

    The nodes are reached by `runner`, else through their agent pods with --via-agents, else
    by their host specs (`local://` by the netlink reader: vipcheck.gather.local_reader). The
    agents' runner is made before the cluster is read, so a bad kubeconfig is one
    ClusterConfigError whichever reads it first.

    With --hosts the specs are known before the API answers, so they are gathered while it is
    listed, and paired with nodes afterwards (a spec that is no node was read for nothing and is
    dropped); otherwise the API's node list says which nodes to gather: they are gathered as soon
    as it is listed, while the rest of the API (Services, EndpointSlices) is. Nodes without
    `sysctl` are read the files of sysctl_keys (the checks' keys, which this layer does not know).
    Each node is handed to `keep` as it arrives: a NodeSpool's keeps its files on disk; the
    cluster's files to `cluster_read` once all are read (vipcheck.arrival starts judging then).
    """
    with ExitStack() as stack:
        if runner is None and options.via_agents is not None:
            # Imported here: it loads the kubernetes client, which a replay (and every pytest
            # session with the plugin) must not pay for (vipcheck.gather.cluster says why).
            from vipcheck.gather.agent_exec import agent_runner  # noqa: PLC0415

            runner = stack.enter_context(agent_runner(options, progress))
        runner = runner or NODE_GATHER_RUNNER
        return _observe(
            options,
            progress,
            runner,
            read_cluster,
            sysctl_keys,
            keep=keep,
            cluster_read=cluster_read,
        )


def _observe(
    options: GatherOptions,
    progress: Progress,
    runner: NodeRunner,
    read_cluster: ClusterReader,
    sysctl_keys: Sequence[str],
    *,
    keep: Keep,
    cluster_read: ClusterRead,
) -> Snapshot:
    """gather's work, with the runner it chose."""
    script = build_node_script(sysctl_keys=sysctl_keys)
    early = _early_targets(options)
    nodes_listed: Future[str] = Future()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipcheck-api") as api:
        listing = api.submit(
            _read_cluster, read_cluster, options, progress, nodes_listed, cluster_read
        )
        if not early:
            either: list[Future[Any]] = [nodes_listed, listing]
            wait(either, return_when=FIRST_COMPLETED)
            if nodes_listed.done():
                early = _listed_targets(options, nodes_listed.result())
        gathered = _gather(early, options, progress, runner, script, keep=keep)
        cluster, cluster_error = listing.result()
    names, resolution = resolve(options, cluster.get("nodes.json"))
    _report_unpaired(resolution, names, progress)
    by_spec = {target.spec: gathered[target.node] for target in early}
    later = [target for target in resolution.targets if target.spec not in by_spec]
    observed = _gather(later, options, progress, runner, script, keep=keep)
    observed |= {
        target.node: replace(by_spec[target.spec], name=target.node)
        for target in resolution.targets
        if target.spec in by_spec
    }
    observed = {t.node: observed[t.node] for t in resolution.targets}
    nodes = {
        name: observed.get(name) or NodeSnapshot(name, error=resolution.reasons[name])
        for name in (*names, *(n for n in observed if n not in names))
    }
    meta = new_meta(options.describe())
    if resolution.unknown:
        meta["unknown_hosts"] = list(resolution.unknown)
    return Snapshot(cluster, nodes, meta, cluster_error)


def _read_cluster(
    read_cluster: ClusterReader,
    options: GatherOptions,
    progress: Progress,
    nodes_listed: Future[str],
    cluster_read: ClusterRead,
) -> tuple[dict[str, str], str | None]:
    """The cluster files (handed to cluster_read), or none and why the API could not be read."""

    def listed(nodes_json: str) -> None:
        if not nodes_listed.done():
            nodes_listed.set_result(nodes_json)

    try:
        files = read_cluster(options.kubeconfig, options.context, progress, listed)
    except ClusterError as error:
        progress(f"cluster not read: {error}")
        return {}, str(error)
    cluster_read(files)
    return files, None


def _listed_targets(options: GatherOptions, nodes_json: str) -> tuple[NodeTarget, ...]:
    """The targets of the nodes listed so far, gathered while the API listing goes on."""
    try:
        return resolve(options, nodes_json)[1].targets
    except TargetError:
        return ()  # reported when the whole listing is paired


def _early_targets(options: GatherOptions) -> tuple[NodeTarget, ...]:
    """The --hosts specs, named provisionally (mapped name or host), to gather before pairing."""
    if not options.hosts:
        return ()
    try:
        return resolve(options, None)[1].targets
    except TargetError:
        return ()  # two specs for one host: pairing with the API's nodes reports it


def _gather(
    targets: Sequence[NodeTarget],
    options: GatherOptions,
    progress: Progress,
    runner: NodeRunner,
    script: str,
    *,
    keep: Keep,
) -> dict[str, NodeSnapshot]:
    return gather_nodes(
        targets,
        options.timeout_s,
        progress,
        parallel=options.parallel,
        runner=runner,
        script=script,
        keep=keep,
    )


def resolve(options: GatherOptions, nodes_json: str | None) -> tuple[list[str], Resolution]:
    """The API's node names, and the host spec that reaches each: for gathering and probing."""
    names, addresses = node_inventory(nodes_json)
    return names, resolve_targets(options, names, addresses)


def node_inventory(nodes_json: str | None) -> tuple[list[str], dict[str, list[str]]]:
    """Node names and their InternalIP/Hostname addresses, from the API's NodeList.

    A NodeList that does not parse gives no inventory: the checks report its ParseError later.
    """
    if nodes_json is None:
        return [], {}
    try:
        nodes = parse_nodes(nodes_json, "cluster/nodes.json")
    except ParseError:
        return [], {}
    names = [node.name for node in nodes]
    addresses = {
        node.name: [
            *(str(address) for address in node.internal_ips),
            *([node.hostname] if node.hostname else []),
        ]
        for node in nodes
    }
    return names, addresses


def _report_unpaired(resolution: Resolution, names: list[str], progress: Progress) -> None:
    """Say which API nodes will not be observed, and which specs name no node, and why."""
    for name in resolution.not_given:
        progress(f"{name}: {resolution.reasons[name]}")
    for spec in resolution.unknown:
        progress(
            f"--hosts {spec}: matches no node ({', '.join(names)}) by name, InternalIP "
            "or hostname; not observed (map it with --vipcheck-node HOST=NODE)"
        )
