"""The datapath seam: what depends on how kube-proxy programs a node (its `mode`), in one place.

kube-proxy turns the same Services and EndpointSlices into a different kernel state per mode:
IPVS virtual servers and kube-ipvs0 addresses, or (issue 19) nftables rules. What a mode
provides is a Datapath: the node inputs it reads, the expected state it computes per node
from the cluster and that node's facts (kept by the run's Facts, one per snapshot), and what a
node's kernel state says a VIP is sent to, for the handshake probe. Service-port subjects, the
gate, reports, diff and the probe's rounds do not depend on the mode; the checks of a mode
apply only where kube-proxy runs it (each check's declared `modes`, vipcheck.checks.base.Check).
docs/architecture.md ("Datapaths") says how a second one plugs in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from vipcheck.datapath.ipvs import IPVS
from vipcheck.datapath.nftables import NFTABLES
from vipcheck.expected import ExpectedVirtualService
from vipcheck.facts import ClusterFacts, Facts, Input, NodeFacts
from vipcheck.model.cluster import ProxyMode, ServicePortKey
from vipcheck.model.node import HostPort


class NodeExpectation(Protocol):
    """One snapshot's expected state, node by node, built on first use and kept by its Facts."""

    def for_port(self, node: NodeFacts, port: ServicePortKey) -> tuple[ExpectedVirtualService, ...]:
        """What a correct kube-proxy keeps on the node for one Service port."""
        ...

    def reached_at(self, node: str) -> tuple[ExpectedVirtualService, ...]:
        """What the node serves at the addresses its Node object lists (where vantage points
        reach it): the probe's targets."""
        ...


class Datapath(Protocol):
    """What one kube-proxy mode provides; everything else is the same for every mode."""

    @property
    def mode(self) -> ProxyMode:
        """The KubeProxyConfiguration mode it implements."""
        ...

    @property
    def node_inputs(self) -> tuple[Input, ...]:
        """The node files its facts read (each in vipcheck.snapshot.NODE_FILES, so gathered)."""
        ...

    def expected(self, facts: Facts) -> NodeExpectation:
        """The snapshot's expected state, the one its checks and the probe read."""
        ...

    def sends_to(self, node: NodeFacts, vip: HostPort) -> frozenset[HostPort]:
        """Where the node's kernel state sends new TCP connections to the VIP (real servers of
        weight > 0 for IPVS); none when that state was not read."""
        ...

    def reaches(self, facts: Facts, node: NodeFacts, vip: HostPort) -> frozenset[HostPort]:
        """sends_to for a judgement that must not take "not read" for "sends nowhere" (`vipcheck
        diff` across a mode switch): what stops the node's state from telling is raised
        (MissingInput, Unobserved, ParseError; CannotTrace in nftables mode), and the work is
        shared between the snapshot's nodes through its facts, as the checks share it."""
        ...


DATAPATHS: Mapping[ProxyMode, Datapath] = {IPVS.mode: IPVS, NFTABLES.mode: NFTABLES}
"""Each implemented mode's datapath: IPVS, and nftables (issue 19)."""


def datapath_for(cluster: ClusterFacts) -> Datapath:
    """The datapath of kube-proxy's mode (the ConfigMap's `mode`). Without the ConfigMap, or for
    a mode with no datapath here (iptables), IPVS's: its expected state is kube-proxy's Service
    semantics, which the probe plans from whatever the mode, and its checks skip themselves
    where another mode runs (their declared `modes`)."""
    config = cluster.kube_proxy_or_none
    return IPVS if config is None else DATAPATHS.get(config.mode, IPVS)
