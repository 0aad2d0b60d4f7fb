"""Handshake probing, the execution: vantage points, one round of given targets, the re-read.

Each round is one round trip per vantage point, vantage points in parallel (bounded); what to
probe is planned above the gathering layer (vipcheck.handshake_rounds), from the facts. Outputs
are kept as printed, for probes/ in the snapshot; the check reads them through facts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vipcheck.gather.connect_script import build_probe_script
from vipcheck.gather.live import resolve
from vipcheck.gather.node_script import build_node_script, split_node_output
from vipcheck.model.handshakes import ProbeRound, ProbeSettings, ProbeTarget, Vantage
from vipcheck.model.node import HostPort
from vipcheck.options import GatherOptions
from vipcheck.transport import (
    HOST_SPEC_RUNNER,
    NodeRunner,
    NodeTarget,
    TransportError,
    spec_host,
    ssh_config_hosts,
)
from vipcheck.vocabulary import Progress

AFTER_SCRIPT = build_node_script({"ip_vs_conn.txt": "cat /proc/net/ip_vs_conn"})
_WILDCARDS = frozenset("*?!")
# Seconds beyond the script's own time cap for ssh to connect and the output to come back.
_TRANSPORT_SLACK_S = 30.0


class ProbeError(Exception):
    """A probe request the user must fix, such as --probe-from naming no vantage point."""


@dataclass(frozen=True, slots=True)
class VantagePoint:
    """A vantage point and how to reach it."""

    vantage: Vantage
    target: NodeTarget


def vantage_points(
    options: GatherOptions, nodes_json: str | None, probe_from: Sequence[str] = ()
) -> tuple[VantagePoint, ...]:
    """Every node with a host spec, then hosts outside the cluster; only those named, if any.

    Outside hosts are --hosts specs that match no node, or, without --hosts, ssh_config Host
    entries (plain names, no patterns) that are not node names: the lab's `client`.
    """
    names, resolution = resolve(options, nodes_json)
    points = [VantagePoint(Vantage(t.node, t.node, t.spec), t) for t in resolution.targets]
    outside: list[tuple[str, str]] = [
        (spec_host(spec, options.connection), spec) for spec in resolution.unknown
    ]
    if not options.hosts and options.ssh_config:
        outside += [
            (host, f"ssh://{host}")
            for patterns in ssh_config_hosts(options.ssh_config)
            for host in patterns
            if not _WILDCARDS & set(host) and host not in names
        ]
    taken = {point.vantage.name for point in points}
    for name, spec in outside:
        if name in taken:
            continue
        taken.add(name)
        target = NodeTarget(
            name,
            spec,
            options.ssh_config,
            options.ssh_identity_file,
            options.sudo,
            options.connection,
        )
        points.append(VantagePoint(Vantage(name, None, spec), target))
    if not probe_from:
        return tuple(points)
    unknown = sorted(set(probe_from) - taken)
    if unknown:
        raise ProbeError(
            f"--probe-from {','.join(unknown)}: no such vantage point "
            f"(known: {', '.join(sorted(taken)) or 'none'})"
        )
    return tuple(point for point in points if point.vantage.name in probe_from)


def run_round(
    round_: ProbeRound,
    targets: Sequence[ProbeTarget],
    reach: Mapping[str, NodeTarget],
    settings: ProbeSettings,
    progress: Progress,
    *,
    runner: NodeRunner = HOST_SPEC_RUNNER,
) -> dict[str, str]:
    """One round trip per vantage point with targets in this round, in parallel, bounded."""
    per_vantage: dict[str, list[tuple[HostPort, int]]] = defaultdict(list)
    for target in targets:
        per_vantage[target.vantage].append((target.address, target.attempts))
    if not per_vantage:
        return {}
    files: dict[str, str] = {}
    workers = max(1, min(settings.parallel, len(per_vantage)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vipcheck-probe") as pool:
        futures = {
            name: pool.submit(
                _probe_one, runner, reach[name], build_probe_script(work, settings), settings
            )
            for name, work in per_vantage.items()
        }
        for name, future in futures.items():
            probed = future.result()
            if probed.error is not None:
                progress(f"{name}: {round_.value} probes not run: {probed.error}")
                files[f"{name}/{round_.value}.error.txt"] = probed.error + "\n"
                continue
            if probed.cut is not None:
                progress(
                    f"{name}: {round_.value} probes cut off ({probed.cut}); the attempts "
                    "made are judged, the others are not"
                )
            files[f"{name}/{round_.value}.txt"] = probed.output
    return files


@dataclass(frozen=True, slots=True)
class _Probed:
    """One probe script's output as printed; or why the vantage point could not probe at all;
    cut: why an output that began ends early (killed at its deadline, the script failed)."""

    output: str = ""
    error: str | None = None
    cut: str | None = None


def _probe_one(
    runner: NodeRunner, target: NodeTarget, script: str, settings: ProbeSettings
) -> _Probed:
    """Run one probe script: its output, whole or as far as it got, or why it could not probe."""
    try:
        result = runner.run(target, script, settings.budget_s + _TRANSPORT_SLACK_S)
    except TransportError as error:
        if error.partial.startswith("TOOL "):
            return _Probed(error.partial, cut=str(error))
        return _Probed(error=str(error))
    if result.rc == 0 and result.stdout.startswith("TOOL "):
        return _Probed(result.stdout)
    stderr = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    why = stderr[0] if stderr else "no output vipcheck can read"
    failed = f"{target.describe()}: the probe script exited {result.rc}: {why}"
    if result.stdout.startswith("TOOL "):  # what it printed before failing is kept
        return _Probed(result.stdout, cut=None if "\nDONE" in result.stdout else failed)
    return _Probed(error=failed)


def reread_connections(
    nodes: Sequence[NodeTarget],
    settings: ProbeSettings,
    progress: Progress,
    *,
    runner: NodeRunner = HOST_SPEC_RUNNER,
) -> dict[str, str]:
    """/proc/net/ip_vs_conn on each node once more, now holding the probes' own entries."""
    files: dict[str, str] = {}
    if not nodes:
        return files
    workers = max(1, min(settings.parallel, len(nodes)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vipcheck-reread") as pool:
        futures = {
            t.node: pool.submit(runner.run, t, AFTER_SCRIPT, _TRANSPORT_SLACK_S) for t in nodes
        }
        for node, future in futures.items():
            try:
                result = future.result()
            except TransportError as error:
                progress(f"{node}: connection table not re-read: {error}")
                continue
            read, _ = split_node_output(result.stdout)
            if "ip_vs_conn.txt" in read:
                files[f"after/{node}/ip_vs_conn.txt"] = read["ip_vs_conn.txt"]
    return files
