"""vipcheck: conformance suite for the Service datapath of kube-proxy IPVS nodes."""

from __future__ import annotations

__version__ = "0.1.0"
