"""What a check is and what it returns: declared data, so the catalogue and docs come from code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from vipcheck import vocabulary
from vipcheck.facts import Facts, Input
from vipcheck.model.cluster import ProxyMode
from vipcheck.settings import Settings

# A check declares its severity: the leaf module's, named here so a check imports from one place.
Severity = vocabulary.Severity

# A command as the argument list a program receives: argv[0] is the program.
Argv = tuple[str, ...]


class FindingKind(StrEnum):
    """What kind of wrong a violation is, so diagnoses and summaries join on it, not on text."""

    IPVS_ABSENT = "ipvs-absent"
    WRONG_PROXY_MODE = "wrong-proxy-mode"
    STALE_REAL_SERVER = "stale-real-server"
    MISSING_REAL_SERVER = "missing-real-server"
    READY_REAL_SERVER_AT_WEIGHT_ZERO = "ready-real-server-at-weight-zero"
    MISSING_VIRTUAL_SERVICE = "missing-virtual-service"
    WRONG_PERSISTENCE_OR_SCHEDULER = "wrong-persistence-or-scheduler"
    ORPHAN_VIRTUAL_SERVICE = "orphan-virtual-service"
    KUBE_IPVS0_MISSING = "kube-ipvs0-missing"
    KUBE_IPVS0_NOT_DUMMY = "kube-ipvs0-not-dummy"
    KUBE_IPVS0_MISSING_ADDRESS = "kube-ipvs0-missing-address"
    KUBE_IPVS0_EXTRA_ADDRESS = "kube-ipvs0-extra-address"
    TCPFIN_TIMEOUT_TOO_LONG = "tcpfin-timeout-too-long"
    TIMEOUTS_DIFFER_FROM_CONFIG = "timeouts-differ-from-config"
    STUCK_SYN_RECV = "stuck-syn-recv"
    STRICT_RP_FILTER = "strict-rp-filter"
    WRONG_SYSCTL_VALUE = "wrong-sysctl-value"
    CONNTRACK_NEARLY_FULL = "conntrack-nearly-full"
    HANDSHAKE_FAILURE = "handshake-failure"
    TRACE_MISMATCH = "trace-mismatch"
    NFT_MISSING_ELEMENT = "nft-missing-element"
    NFT_WRONG_VERDICT = "nft-wrong-verdict"
    NFT_STALE_ELEMENT = "nft-stale-element"
    NFT_MISSING_CHAIN = "nft-missing-chain"
    NFT_WRONG_ENDPOINTS = "nft-wrong-endpoints"
    NFT_STALE_DNAT = "nft-stale-dnat"
    NFT_WRONG_AFFINITY = "nft-wrong-affinity"
    NFT_STALE_CHAIN = "nft-stale-chain"
    NFT_DANGLING_REFERENCE = "nft-dangling-reference"
    NFT_WRONG_SET = "nft-wrong-set"
    NFT_WRONG_FIREWALL = "nft-wrong-firewall"
    NFT_MISSING_TABLE = "nft-missing-table"
    # Leftovers of IPVS mode on a node switched to nftables mode (issue 20).
    IPVS_LEFTOVER_VIRTUAL_SERVER = "ipvs-leftover-virtual-server"
    IPVS_LEFTOVER_KUBE_IPVS0 = "ipvs-leftover-kube-ipvs0"
    IPVS_LEFTOVER_IPSET = "ipvs-leftover-ipset"
    IPTABLES_LEFTOVER_CHAIN = "iptables-leftover-chain"
    IPVS_LEFTOVER_SYSCTL = "ipvs-leftover-sysctl"
    # Readiness for the switch to nftables mode (issue 20): what the switch breaks or drops.
    KERNEL_TOO_OLD_FOR_NFTABLES = "kernel-too-old-for-nftables"
    NFT_TOO_OLD = "nft-too-old"
    FOREIGN_VIRTUAL_SERVICE = "foreign-virtual-service"
    NODE_PORT_ADDRESS_DROPPED = "node-port-address-dropped"
    IPVS_ONLY_SETTING = "ipvs-only-setting"
    CALICO_READS_KUBE_IPVS0 = "calico-reads-kube-ipvs0"


@dataclass(frozen=True, slots=True)
class Violation:
    """One thing observed wrong: its kind, subject first, observed vs expected, fix, evidence."""

    kind: FindingKind
    subject: str
    node: str | None
    observed: str
    expected: str
    fix: str
    evidence: tuple[str, ...] = ()
    # The fix as data, for the fix script: commands to run on `node`, and cluster-level commands
    # (kubectl) a person reviews and runs. Each is an argument list, never a shell string: names
    # from a node or the API may hold `$(...)`, so only the fix script quotes them, once for each
    # shell they pass through. `fix` stays the text a person reads (commands in it shlex.join'ed).
    commands: tuple[Argv, ...] = ()
    cluster_commands: tuple[Argv, ...] = ()


class Subject(Protocol):
    """What a check runs over: `str()` is its pytest id, `node` the node it is confined to."""

    @property
    def node(self) -> str | None: ...


S = TypeVar("S", bound=Subject)


@dataclass(frozen=True, slots=True)
class NodeSubject:
    """A node, for checks of one node's state."""

    node: str

    def __str__(self) -> str:
        return self.node


@dataclass(frozen=True, slots=True)
class InterfaceSubject:
    """An interface on a node, for per-interface checks such as rp_filter."""

    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}/{self.interface}"


@dataclass(frozen=True, slots=True)
class ClusterSubject:
    """The cluster as one subject, for a check of its configuration across every node: one
    item, not one per node repeating the same ConfigMap."""

    @property
    def node(self) -> None:
        """No node: the subject spans them all."""
        return None

    def __str__(self) -> str:
        return "cluster"


@dataclass(frozen=True, slots=True)
class Unlisted:
    """Where subjects could not be listed (the cluster, or one node), and why: one case errors."""

    where: str
    node: str | None
    error: Exception

    def __str__(self) -> str:
        return self.where


@dataclass(frozen=True, slots=True)
class Scope(Generic[S]):
    """How a check's subjects are listed, so test items grow with services + nodes, not both."""

    name: str  # what one test item covers, as the docs say it
    subjects: Callable[[Facts], Iterator[S | Unlisted]]

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Check(Generic[S]):
    """A catalogue entry: stable id, what it asserts, why (with the reference), the generic fix."""

    id: str
    title: str
    why: str
    fix: str
    severity: Severity
    scope: Scope[S]
    inputs: tuple[Input, ...]
    run: Callable[[S, Facts, Settings], list[Violation]]
    # The sysctl keys `run` reads, `*` a glob within one name (net.ipv4.conf.*.rp_filter): a node
    # without `sysctl` is asked for the catalogue's keys alone (proc-sys.txt), so declare each.
    sysctls: tuple[str, ...] = ()
    # The kube-proxy modes whose datapath it judges (None: every mode). Where the ConfigMap names
    # another mode its items SKIP, saying so, before it runs (vipcheck.cases.run_case); without
    # the ConfigMap an IPVS check runs (the mode vipcheck began with) and an nftables one skips.
    modes: frozenset[ProxyMode] | None = None
    # The one check that reports an unobserved node (its cause and fix); the node's other items
    # SKIP pointing to it (vipcheck.cases.run_case).
    reports_node_observation: bool = False


class NotApplicable(Exception):
    """The check does not apply to this subject (e.g. IPVS not in use): SKIP with this reason."""


class OtherMode(NotApplicable):
    """The check judges another kube-proxy mode than the cluster's (Check.modes): SKIP, and no
    gap in what the run proved, so never listed among the critical checks not judged."""


class PartlyJudged(Exception):
    """A check spanning nodes judged only some: what it found there, and why each other was not.

    Violations on the judged nodes FAIL the case (naming the others); without any it SKIPS, as a
    pass is not claimed for nodes nobody judged.
    """

    def __init__(self, violations: list[Violation], unjudged: dict[str, str]) -> None:
        self.violations = violations
        self.unjudged = unjudged
        super().__init__("; ".join(unjudged.values()))
