"""What the user asked of one run, validated into one object the rest of vipcheck reads.

The plugin builds it from pytest's options and ini values; everything after it (observing the
target, the checks, the reports) takes it instead of reaching into pytest's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from vipcheck.model.handshakes import ProbeSettings
from vipcheck.saved_summaries import FindingKey, SummaryError, failure_keys, load_summary
from vipcheck.settings import Settings
from vipcheck.snapshot import MAX_FILE_BYTES
from vipcheck.vocabulary import Severity
from vipcheck.waivers import Waiver, WaiverError, load_waivers

DEFAULT_JSON = Path("reports") / "summary.json"
DEFAULT_HTML = Path("reports") / "vipcheck.html"
GATHER_PARALLEL = 32  # nodes gathered at once


@dataclass(frozen=True, slots=True)
class GatherOptions:
    """What the user said about the target: API access, node inventory, how to run there."""

    kubeconfig: str | None = None
    context: str | None = None
    hosts: tuple[str, ...] = ()
    ssh_config: str | None = None
    ssh_identity_file: str | None = None
    sudo: bool = False
    connection: str | None = None
    kind: str | None = None  # a kind cluster's name: its context and node containers
    via_agents: str | None = None  # the agents' namespace: nodes read by exec, through the API
    node_map: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0
    parallel: int = GATHER_PARALLEL

    def describe(self) -> str:
        """Which cluster and which inventory, for meta.json and the report header."""
        parts = [f"kubeconfig {self.kubeconfig or '(default)'}"]
        if self.kind:
            parts.append(f"kind cluster {self.kind}")
        if self.context:
            parts.append(f"context {self.context}")
        if self.hosts:
            parts.append(f"hosts {','.join(self.hosts)}")
        if self.ssh_config:
            parts.append(f"ssh_config {self.ssh_config}")
        if self.via_agents:
            parts.append(f"nodes via the agents in namespace {self.via_agents}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Whether the handshake probes may open connections, from where, and within which bounds."""

    enabled: bool = True
    probe_from: tuple[str, ...] = ()
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    total_s: int = 600  # the whole probe's time cap (vipcheck.handshake_rounds.TOTAL_CAP_S)


class OptionError(Exception):
    """An option whose value cannot be used: a usage error, in one line naming what to fix."""


@dataclass(frozen=True, slots=True)
class GateOptions:
    """What a failure means for the run, and the reports for people beside the JSON summary."""

    waivers: tuple[Waiver, ...] = ()
    waivers_file: Path | None = None
    fail_on: Severity = Severity.WARNING
    baseline: frozenset[FindingKey] | None = None
    baseline_file: Path | None = None
    html_path: Path = DEFAULT_HTML
    fix_script: Path | None = None


def gate_options(
    *,
    waivers_file: Path | None,
    fail_on: str,
    baseline_file: Path | None,
    html_path: Path,
    fix_script: Path | None,
    known_checks: tuple[str, ...],
    max_file_bytes: int = MAX_FILE_BYTES,
) -> GateOptions:
    """Validate the gate's options, reading the waivers and the baseline now, before any item.

    The baseline is a file from elsewhere, held to --vipcheck-max-file-size as snapshot files are.
    """
    try:
        severity = Severity(fail_on)
    except ValueError:
        choices = "|".join(s.value for s in Severity)
        raise OptionError(f"--vipcheck-fail-on {fail_on!r}: expected {choices}") from None
    try:
        waivers = () if waivers_file is None else load_waivers(waivers_file, known_checks)
        baseline = (
            None
            if baseline_file is None
            else failure_keys(load_summary(baseline_file, max_file_bytes))
        )
    except (WaiverError, SummaryError) as error:
        raise OptionError(str(error)) from None
    return GateOptions(
        waivers=waivers,
        waivers_file=waivers_file,
        fail_on=severity,
        baseline=baseline,
        baseline_file=baseline_file,
        html_path=html_path,
        fix_script=fix_script,
    )


@dataclass(frozen=True, slots=True)
class RunOptions:
    """One run: where the facts come from, what is written, the probe's and checks' limits."""

    gather: GatherOptions = field(default_factory=GatherOptions)
    replay: Path | None = None
    save_to: Path | None = None
    json_path: Path = DEFAULT_JSON
    max_file_bytes: int = MAX_FILE_BYTES  # a replayed snapshot's files, connection tables aside
    judge_jobs: int | None = None  # processes judging the nodes (vipcheck.judging); None: auto
    probes: ProbeOptions = field(default_factory=ProbeOptions)
    settings: Settings = field(default_factory=Settings)
    gate: GateOptions = field(default_factory=GateOptions)

    def header(self) -> list[str]:
        """The run in three lines for the top of a report: target, thresholds, probes."""
        return [
            f"vipcheck target: {self._target()}",
            "vipcheck thresholds: "
            + ", ".join(f"{f.name}={getattr(self.settings, f.name)}" for f in fields(Settings)),
            f"vipcheck probes: {self._probes()}",
        ]

    def _target(self) -> str:
        if self.replay is not None:
            return f"snapshot {self.replay} (replay: nothing is contacted)"
        saving = "" if self.save_to is None else f", saving the snapshot to {self.save_to}"
        return self.gather.describe() + saving

    def _probes(self) -> str:
        if not self.probes.enabled:
            return "off (--no-probe)"
        if self.replay is not None:
            return "replayed from the snapshot's probes/"
        where = ",".join(self.probes.probe_from) or "every node and outside host"
        settings = self.probes.settings
        return (
            f"from {where}, {settings.timeout_s} s per connection, "
            f"at most {settings.budget_s} s per vantage point and round "
            f"({self.probes.total_s} s in all for a large cluster)"
        )
