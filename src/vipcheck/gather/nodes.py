"""Observe nodes in parallel: one round trip per node, each bounded by its own timeout."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from vipcheck.gather.node_script import CUT_OFF, split_node_frames
from vipcheck.options import GATHER_PARALLEL
from vipcheck.snapshot import NODE_FILES, NodeSnapshot
from vipcheck.transport import HOST_SPEC_RUNNER, NodeRunner, NodeTarget, TransportError
from vipcheck.vocabulary import Progress

Keep = Callable[[NodeSnapshot], NodeSnapshot]
"""What a gathered node becomes as it arrives (a NodeSpool's keep: its files on disk)."""


def in_memory(node: NodeSnapshot) -> NodeSnapshot:
    """The node as gathered, its files in memory (what a caller without a spool keeps)."""
    return node


def gather_nodes(
    targets: Sequence[NodeTarget],
    timeout_s: float,
    progress: Progress,
    *,
    parallel: int = GATHER_PARALLEL,
    script: str,
    runner: NodeRunner = HOST_SPEC_RUNNER,
    keep: Keep = in_memory,
) -> dict[str, NodeSnapshot]:
    """Every target's snapshot, keyed by node name in the targets' order; failures are kept.
    Each is handed to `keep` as it arrives (a NodeSpool's puts its files on disk)."""
    if not targets:
        return {}
    workers = max(1, min(parallel, len(targets)))

    def gather_and_keep(target: NodeTarget) -> NodeSnapshot:
        return keep(gather_node(target, timeout_s, progress, script=script, runner=runner))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vipcheck-gather") as pool:
        futures = [pool.submit(gather_and_keep, t) for t in targets]
        return {t.node: future.result() for t, future in zip(targets, futures, strict=True)}


def gather_node(
    target: NodeTarget,
    timeout_s: float,
    progress: Progress,
    *,
    script: str,
    runner: NodeRunner = HOST_SPEC_RUNNER,
) -> NodeSnapshot:
    """One node's raw files, or why it could not be observed (its items ERROR, never FAIL)."""
    started = time.monotonic()
    try:
        result = runner.run(target, script, timeout_s)
    except TransportError as error:
        progress(f"{target.node}: not observed: {error}")
        return NodeSnapshot(target.node, error=str(error))
    frames = split_node_frames(result.stdout)
    # A frame's name is the node's text: only the format's names are kept, so none reaches a
    # path (--save-snapshot writes nodes/<node>/<name>; `../../etc/x` would leave the directory).
    files = {name: text for name, text in frames.files.items() if name in NODE_FILES}
    missing = {name: why for name, why in frames.missing.items() if name in NODE_FILES}
    notes = {name: note for name, note in frames.notes.items() if name in NODE_FILES}
    elapsed = time.monotonic() - started
    if result.rc != 0 or not (files or missing):
        stderr = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        why = stderr[0] if stderr else "no output vipcheck can read"
        failure = f"{target.describe()}: the gather script exited {result.rc}: {why}"
        progress(f"{target.node}: not observed: {failure}")
        return NodeSnapshot(target.node, error=failure)
    cut = [name for name, why in missing.items() if why.startswith(CUT_OFF)]
    if cut:
        # The frame tells: a node whose output stops mid-file is not judged on its first half.
        failure = f"{target.describe()}: output truncated: {cut[0]}: {missing[cut[0]]}"
        progress(f"{target.node}: not observed: {failure}")
        return NodeSnapshot(target.node, error=failure)
    if not frames.complete:
        # Cut exactly between two frames: what was read is whole, but the files after it are not
        # missing, they were never sent; only the end marker's absence tells.
        failure = (
            f"{target.describe()}: output truncated: {CUT_OFF} after {frames.last}, "
            "before the end marker (connection lost?)"
        )
        progress(f"{target.node}: not observed: {failure}")
        return NodeSnapshot(target.node, error=failure)
    note = f", {len(missing)} missing ({', '.join(missing)})" if missing else ""
    progress(f"{target.node}: gathered {len(files)} files in {elapsed:.1f} s{note}")
    return NodeSnapshot(target.node, files, None, missing, notes)
