"""The check catalogue: the one place every check is listed, in the order the docs show them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from vipcheck.checks.base import Check
from vipcheck.checks.connections import NO_STUCK_SYN_RECV
from vipcheck.checks.conntrack import CONNTRACK_SYSCTLS
from vipcheck.checks.handshake import VIP_HANDSHAKE
from vipcheck.checks.kube_ipvs0 import KUBE_IPVS0_HOLDS_SERVICE_IPS, KUBE_IPVS0_NO_STALE_ADDRESSES
from vipcheck.checks.kube_proxy_mode import KUBE_PROXY_MODE
from vipcheck.checks.leftovers import (
    IPTABLES_LEFTOVER_CHAINS,
    IPVS_LEFTOVER_IPSETS,
    IPVS_LEFTOVER_KUBE_IPVS0,
    IPVS_LEFTOVER_SYSCTLS,
    IPVS_LEFTOVER_VIRTUAL_SERVERS,
)
from vipcheck.checks.nft_trace import NFT_TRACE_REACHES_ENDPOINTS
from vipcheck.checks.nftables import (
    CHAINS_REACH_ENDPOINTS,
    CLUSTER_IPS_SET,
    LB_SOURCE_RANGES,
    NO_STALE_CHAINS,
    NODEPORT_IPS_SET,
    SERVICE_MAPS,
    SESSION_AFFINITY,
)
from vipcheck.checks.observed import NODE_OBSERVED
from vipcheck.checks.presence import IPVS_PRESENT
from vipcheck.checks.readiness import (
    CALICO_KUBE_IPVS0,
    FOREIGN_VIRTUAL_SERVERS,
    IPVS_ONLY_SETTINGS,
    KERNEL_VERSION,
    NFT_VERSION_CHECK,
)
from vipcheck.checks.readiness_node_ports import NODE_PORT_ADDRESSES
from vipcheck.checks.real_servers import REAL_SERVERS_MATCH_ENDPOINTS
from vipcheck.checks.rp_filter import RP_FILTER_NOT_STRICT
from vipcheck.checks.sysctls import (
    CONN_REUSE_MODE_CHECK,
    CONNTRACK_HEADROOM,
    EXPIRE_NODEST_CONN,
    IP_FORWARD_ENABLED,
    TCP_TW_RECYCLE_OFF,
)
from vipcheck.checks.timeouts import TCPFIN_TIMEOUT, TIMEOUTS_MATCH_KUBE_PROXY_CONFIG
from vipcheck.checks.virtual_servers import NO_ORPHAN_VIRTUAL_SERVERS, VIRTUAL_SERVERS_COMPLETE

# Readiness of an IPVS cluster for nftables mode (issue 20): their suite tests carry the
# `migration` marker, and a run judges them only when -m names it (vipcheck.plugin).
MIGRATION_CHECKS: tuple[Check[Any], ...] = (
    KERNEL_VERSION,
    NFT_VERSION_CHECK,
    FOREIGN_VIRTUAL_SERVERS,
    NODE_PORT_ADDRESSES,
    IPVS_ONLY_SETTINGS,
    CALICO_KUBE_IPVS0,
)

CATALOGUE: tuple[Check[Any], ...] = (
    NODE_OBSERVED,
    KUBE_PROXY_MODE,
    IPVS_PRESENT,
    REAL_SERVERS_MATCH_ENDPOINTS,
    VIRTUAL_SERVERS_COMPLETE,
    NO_ORPHAN_VIRTUAL_SERVERS,
    KUBE_IPVS0_HOLDS_SERVICE_IPS,
    KUBE_IPVS0_NO_STALE_ADDRESSES,
    *MIGRATION_CHECKS,
    SERVICE_MAPS,
    CHAINS_REACH_ENDPOINTS,
    SESSION_AFFINITY,
    LB_SOURCE_RANGES,
    NFT_TRACE_REACHES_ENDPOINTS,
    NO_STALE_CHAINS,
    CLUSTER_IPS_SET,
    NODEPORT_IPS_SET,
    IPVS_LEFTOVER_VIRTUAL_SERVERS,
    IPVS_LEFTOVER_KUBE_IPVS0,
    # The chains before the ipsets: the fix script runs their commands in this order, and a
    # set an iptables rule still names cannot be destroyed.
    IPTABLES_LEFTOVER_CHAINS,
    IPVS_LEFTOVER_IPSETS,
    IPVS_LEFTOVER_SYSCTLS,
    TCPFIN_TIMEOUT,
    TIMEOUTS_MATCH_KUBE_PROXY_CONFIG,
    NO_STUCK_SYN_RECV,
    RP_FILTER_NOT_STRICT,
    TCP_TW_RECYCLE_OFF,
    CONN_REUSE_MODE_CHECK,
    EXPIRE_NODEST_CONN,
    IP_FORWARD_ENABLED,
    CONNTRACK_SYSCTLS,
    CONNTRACK_HEADROOM,
    VIP_HANDSHAKE,
)

# Every sysctl key the catalogue reads: what a node without `sysctl` is asked for (proc-sys.txt).
SYSCTL_KEYS: tuple[str, ...] = tuple(sorted({key for check in CATALOGUE for key in check.sysctls}))

CHECKS_BY_ID: Mapping[str, Check[Any]] = MappingProxyType({check.id: check for check in CATALOGUE})
if len(CHECKS_BY_ID) != len(CATALOGUE):
    raise RuntimeError("two checks share an id")


def check_by_id(check_id: str) -> Check[Any]:
    """The check with this id; an unknown id names the known ones, for a usable error."""
    try:
        return CHECKS_BY_ID[check_id]
    except KeyError:
        raise KeyError(f"no check {check_id!r}; known: {', '.join(CHECKS_BY_ID)}") from None
