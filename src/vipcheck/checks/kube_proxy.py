"""What the IPVS checks share about kube-proxy: whether IPVS applies, how to make it resync."""

from __future__ import annotations

from vipcheck.checks.base import NotApplicable
from vipcheck.facts import ClusterFacts
from vipcheck.model.cluster import ProxyMode
from vipcheck.model.node import Protocol


def require_ipvs_mode(cluster: ClusterFacts) -> None:
    """Skip an IPVS check where kube-proxy runs another mode; without the ConfigMap, run it."""
    config = cluster.kube_proxy_or_none
    if config is not None and config.mode is not ProxyMode.IPVS:
        raise NotApplicable(f"kube-proxy mode is {config.mode}: IPVS checks do not apply")


def restart_kube_proxy(node: str) -> str:
    """The command that restarts kube-proxy on one node, so it resyncs the whole IPVS state."""
    return (
        "kubectl -n kube-system delete pod -l k8s-app=kube-proxy "
        f"--field-selector spec.nodeName={node}"
    )


def ipvsadm_service_option(protocol: Protocol) -> str:
    """ipvsadm's option naming a virtual service of this protocol (-t, -u, --sctp-service)."""
    return {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}[protocol]
