"""Which kube-proxy mode a node runs, as its kernel state shows it (issue 19).

The kube-proxy config's `mode` says what every node should run; a node switched half way (IPVS
left behind after a move to nftables, or kube-proxy not yet restarted) shows another, or both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vipcheck.model.cluster import ProxyMode


@dataclass(frozen=True, slots=True)
class ObservedMode:
    """The kube-proxy modes a node's kernel state shows, each with what shows it.

    seen: mode -> evidence (`62 virtual servers, kube-ipvs0`, `table ip kube-proxy`); none seen
    is a node where kube-proxy programs nothing this can see. unknown: mode -> why it could not
    be looked for (its files not in the snapshot), so a mode is never called absent unread.
    """

    seen: Mapping[ProxyMode, str]
    unknown: Mapping[ProxyMode, str] = field(default_factory=dict)

    @property
    def modes(self) -> frozenset[ProxyMode]:
        return frozenset(self.seen)
