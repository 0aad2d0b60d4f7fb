"""Parsed views of a snapshot, built on first use, so a check reads the model, never raw text.

A fact whose file is missing raises MissingInput (the check is skipped, naming the file and the
command that produces it); a node that could not be observed raises Unobserved (the check errors);
a file that cannot be parsed raises ParseError (the check errors, naming file and line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TypeVar

from vipcheck.model.cluster import Cluster, KubeProxyConfig
from vipcheck.model.node import Connection, Interfaces, IpvsTable, IpvsTimeouts, Sysctls
from vipcheck.model.probe import ProbeOutput, ProbePlan, ProbeRound
from vipcheck.parse.iproute import parse_ip_json
from vipcheck.parse.ipvsadm import (
    parse_ipvsadm_connections,
    parse_ipvsadm_list,
    parse_ipvsadm_timeout,
)
from vipcheck.parse.kube import (
    parse_endpoint_slices,
    parse_kube_proxy_config,
    parse_nodes,
    parse_services,
)
from vipcheck.parse.probe import parse_probe_output, parse_probe_plan
from vipcheck.parse.procfs import parse_proc_ip_vs, parse_proc_ip_vs_conn
from vipcheck.parse.sysctl import parse_sysctl
from vipcheck.snapshot import (
    CLUSTER_FILES,
    NODE_FILES,
    PROBE_DIR,
    PROBE_FILES,
    PROBE_PLAN,
    NodeSnapshot,
    Snapshot,
)

T = TypeVar("T")


class MissingInput(Exception):
    """A check's input is not in the snapshot: the check does not apply (SKIP), and says why."""

    def __init__(self, where: str, files: tuple[str, ...], known_reason: str | None = None) -> None:
        self.where = where
        self.files = files
        self.known_reason = known_reason
        commands = " or ".join(f"{name} (`{_command(name)}`)" for name in files)
        reason = f": {known_reason}" if known_reason else ""
        super().__init__(f"{where}: no {commands} in the snapshot{reason}")


class NotProbed(MissingInput):
    """The handshake probes were not run, and why (turned off, replay without them)."""

    def __init__(self, reason: str) -> None:
        self.where = "probes"
        self.files = (f"{PROBE_DIR}/{PROBE_PLAN}",)
        self.known_reason = reason
        Exception.__init__(self, f"no handshake probes: {reason}")


class Unobserved(Exception):
    """The node could not be observed at all: its checks ERROR, never pass or fail."""


def _command(name: str) -> str:
    probe_file = PROBE_FILES.get(name.removeprefix(f"{PROBE_DIR}/"))
    return NODE_FILES.get(name) or CLUSTER_FILES.get(name) or probe_file or "?"


@dataclass(frozen=True, slots=True)
class _Source:
    """One input file: its snapshot path (for messages) and text."""

    path: str
    text: str


class ClusterFacts:
    """What the API says, parsed from cluster/*.json."""

    def __init__(self, files: Mapping[str, str], error: str | None = None) -> None:
        self._files = files
        self.error = error

    def _source(self, name: str) -> _Source:
        if name not in self._files:
            if self.error:
                raise Unobserved(f"the cluster could not be read: {self.error}")
            raise MissingInput("cluster", (name,))
        return _Source(f"cluster/{name}", self._files[name])

    def _parse(self, name: str, parser: Callable[[str, str], T]) -> T:
        source = self._source(name)
        return parser(source.text, source.path)

    @cached_property
    def cluster(self) -> Cluster:
        services = self._parse("services.json", parse_services)
        slices = self._parse("endpointslices.json", parse_endpoint_slices)
        nodes = self._parse("nodes.json", parse_nodes) if "nodes.json" in self._files else ()
        return Cluster(services, slices, nodes, self.kube_proxy_or_none)

    @cached_property
    def kube_proxy(self) -> KubeProxyConfig:
        return self._parse("kube-proxy.json", parse_kube_proxy_config)

    @property
    def kube_proxy_or_none(self) -> KubeProxyConfig | None:
        return self.kube_proxy if "kube-proxy.json" in self._files else None

    @cached_property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self._parse("nodes.json", parse_nodes))


class NodeFacts:
    """What one node really does, parsed from nodes/<node>/*."""

    def __init__(self, snapshot: NodeSnapshot) -> None:
        self.name = snapshot.name
        self._snapshot = snapshot

    def _first(self, *names: str) -> _Source:
        if self._snapshot.error:
            raise Unobserved(self.unobserved_reason)
        for name in names:
            if name in self._snapshot.files:
                return _Source(f"nodes/{self.name}/{name}", self._snapshot.files[name])
        reasons = [self._snapshot.missing.get(name) for name in names]
        known = "; ".join(r for r in reasons if r) or None
        raise MissingInput(self.name, names, known)

    @property
    def observed(self) -> bool:
        return self._snapshot.error is None

    @property
    def unobserved_reason(self) -> str | None:
        """Why this node could not be observed, or None when it was."""
        error = self._snapshot.error
        return None if error is None else f"{self.name} could not be observed: {error}"

    @cached_property
    def ipvs(self) -> IpvsTable:
        source = self._first("ipvsadm-Ln.txt", "proc-ip_vs.txt")
        if source.path.endswith("proc-ip_vs.txt"):
            return parse_proc_ip_vs(source.text, source.path)
        return parse_ipvsadm_list(source.text, source.path)

    @cached_property
    def timeouts(self) -> IpvsTimeouts:
        source = self._first("ipvsadm-timeout.txt")
        return parse_ipvsadm_timeout(source.text, source.path)

    @cached_property
    def connections(self) -> tuple[Connection, ...]:
        source = self._first("ip_vs_conn.txt", "ipvsadm-Lnc.txt")
        if source.path.endswith("ip_vs_conn.txt"):
            return parse_proc_ip_vs_conn(source.text, source.path)
        return parse_ipvsadm_connections(source.text, source.path)

    @cached_property
    def sysctls(self) -> Sysctls:
        source = self._first("sysctl.txt")
        return parse_sysctl(source.text, source.path)

    @cached_property
    def interfaces(self) -> Interfaces:
        addr = self._first("ip-addr.json")
        link = self._first("ip-link.json")
        return parse_ip_json(addr.text, link.text, addr.path, link.path)

    @cached_property
    def kernel_release(self) -> str:
        return self._first("uname.txt").text.strip()


ProbeLoader = Callable[[], Mapping[str, str]]


def _not_probed() -> Mapping[str, str]:
    raise NotProbed("this run did not probe")


class ProbeFacts:
    """What the handshake probes saw, from probes/* files loaded on first use.

    Live runs load by probing, so no connection is opened until a probe item runs; replay loads
    the snapshot's files; a loader that cannot give them raises MissingInput (items skip).
    """

    def __init__(self, load: ProbeLoader = _not_probed) -> None:
        self._load = load

    @cached_property
    def files(self) -> Mapping[str, str]:
        return self._load()

    @cached_property
    def plan(self) -> ProbePlan:
        text = self.files.get(PROBE_PLAN)
        if text is None:
            raise MissingInput("probes", (f"{PROBE_DIR}/{PROBE_PLAN}",))
        return parse_probe_plan(text, f"{PROBE_DIR}/{PROBE_PLAN}")

    def output(self, vantage: str, round_: ProbeRound) -> ProbeOutput | None:
        """One vantage point's parsed output for a round; None when it did not probe then."""
        error = self.files.get(f"{vantage}/{round_.value}.error.txt")
        if error is not None:
            return ProbeOutput(None, (), {}, error.strip())
        name = f"{vantage}/{round_.value}.txt"
        text = self.files.get(name)
        return None if text is None else parse_probe_output(text, f"{PROBE_DIR}/{name}")

    def connections_after(self, node: str) -> tuple[Connection, ...] | None:
        """A node's IPVS connection table re-read after the probes, if it was."""
        name = f"after/{node}/ip_vs_conn.txt"
        text = self.files.get(name)
        return None if text is None else parse_proc_ip_vs_conn(text, f"{PROBE_DIR}/{name}")


@dataclass(frozen=True)
class Facts:
    """A whole snapshot's facts: the cluster's, every node's, and the handshake probes'."""

    cluster: ClusterFacts
    nodes: Mapping[str, NodeFacts]
    probes: ProbeFacts = field(default_factory=ProbeFacts)

    def unobserved_nodes(self) -> dict[str, str]:
        """Each node that could not be observed, with why."""
        reasons = {name: node.unobserved_reason for name, node in self.nodes.items()}
        return {name: reason for name, reason in reasons.items() if reason}

    def observed_only(self) -> Facts:
        """The same facts without the nodes that could not be observed."""
        nodes = {name: node for name, node in self.nodes.items() if node.observed}
        return replace(self, nodes=nodes)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, probes: ProbeLoader | None = None) -> Facts:
        """Facts of a snapshot; probes from the loader, else the snapshot's probes/ files."""
        recorded = snapshot.probes
        if probes is None and recorded is not None:
            probes = lambda: recorded  # noqa: E731
        return cls(
            ClusterFacts(snapshot.cluster, snapshot.cluster_error),
            {name: NodeFacts(node) for name, node in snapshot.nodes.items()},
            ProbeFacts(probes or _not_probed),
        )
