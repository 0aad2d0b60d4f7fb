"""Handshake probes: what was planned from where, and what each TCP connection attempt came to."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.node import HostPort

# Under round robin with n real servers, k attempts reach all of them with this probability.
COVERAGE = 0.99
MIN_ATTEMPTS = 2


class ConnectOutcome(StrEnum):
    """How one TCP connect ended, as the probe script prints it."""

    CONNECTED = "CONNECTED"  # the handshake completed (then the probe closed it)
    REFUSED = "REFUSED"  # RST to the SYN (or ICMP port unreachable): nothing listens
    TIMEOUT = "TIMEOUT"  # no answer within the per-attempt timeout: dropped somewhere
    RESET = "RESET"  # reset after or during the handshake
    ERROR = "ERROR"  # anything else (no route, the host cannot connect at all); detail says


class ProbeRound(StrEnum):
    """Which round trip a target belongs to: the VIPs, then real servers behind failing ones."""

    VIP = "vip"
    REAL_SERVER = "real-server"


class TargetKind(StrEnum):
    """What a probed address is, so messages say `NodePort 192.168.58.11:30080`."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    EXTERNAL_IP = "ExternalIP"
    LOAD_BALANCER = "LoadBalancer"
    REAL_SERVER = "real server"


class RealServerOrigin(StrEnum):
    """Why a real server was probed: it is an endpoint, IPVS has it, or both."""

    ENDPOINT = "endpoint"
    IPVS = "ipvs"  # in an IPVS table but not an endpoint: a stale real server
    BOTH = "endpoint+ipvs"


def attempts_for(real_servers: int, coverage: float = COVERAGE) -> int:
    """Attempts so every one of n real servers is reached with probability >= coverage.

    Coupon collector bound: P(some server missed in k tries) <= n (1 - 1/n)^k, so
    k = ceil(ln(n / (1 - p)) / -ln(1 - 1/n)); at least MIN_ATTEMPTS, so a flaky path shows too.
    """
    if real_servers < 2:
        return MIN_ATTEMPTS
    n = real_servers
    k = math.ceil(math.log(n / (1 - coverage)) / -math.log(1 - 1 / n))
    return max(MIN_ATTEMPTS, k)


@dataclass(frozen=True, slots=True)
class Vantage:
    """Where probes start: a Kubernetes node, or a host outside the cluster (node is None)."""

    name: str
    node: str | None
    spec: str

    @property
    def external(self) -> bool:
        return self.node is None


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One address:port to connect to, from one vantage point, so many times, and why."""

    round: ProbeRound
    vantage: str
    address: HostPort
    attempts: int
    service: ServicePortKey  # the Service port this target proves or explains
    kind: TargetKind
    via: HostPort | None = None  # for a real server: the VIP it stands behind
    backend_node: str | None = None  # for a real server: the node running it, per the API
    origin: RealServerOrigin | None = None


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """The probe's bounds: per-attempt timeout, delay between attempts, a time cap per script."""

    timeout_s: int = 2
    delay_s: float = 0.05
    budget_s: int = 120
    parallel: int = 4


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """Everything probed in a run: vantage points and targets, with the bounds used."""

    vantages: tuple[Vantage, ...]
    targets: tuple[ProbeTarget, ...]
    settings: ProbeSettings = field(default_factory=ProbeSettings)
    elapsed_s: float | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One connect from a vantage point: outcome, milliseconds to it (None: not measurable)."""

    address: HostPort
    seq: int
    outcome: ConnectOutcome
    ms: int | None
    detail: str = ""
    raw: str = field(default="", compare=False)

    def __str__(self) -> str:
        ms = "?" if self.ms is None else str(self.ms)
        detail = f" ({self.detail})" if self.detail else ""
        return f"#{self.seq} {self.outcome.value} {ms} ms{detail}"


@dataclass(frozen=True, slots=True)
class ProbeOutput:
    """One probe script's output from one vantage point and round, parsed."""

    tool: str | None
    attempts: tuple[Attempt, ...]
    not_attempted: Mapping[HostPort, int] = field(default_factory=dict)  # cut by the time cap
    error: str | None = None  # the vantage point could not probe at all
    # Ended before DONE (the round killed, the connection lost): the attempts read are kept, the
    # targets' other attempts were never made.
    cut: bool = False
