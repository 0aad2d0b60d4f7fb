"""What a node's datapath holds (IPVS, timeouts, conns, sysctls, interfaces), in kernel names."""

from __future__ import annotations

import enum
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from types import MappingProxyType
from typing import NamedTuple

IPAddress = IPv4Address | IPv6Address
# The dummy interface kube-proxy's IPVS mode binds every Service VIP to: its presence alone shows
# IPVS mode (Calico's Felix reads it so too), as kube-proxy in another mode deletes it.
KUBE_IPVS0 = "kube-ipvs0"
IPInterface = IPv4Interface | IPv6Interface
VirtualServiceKey = tuple[str, IPAddress, int] | tuple[str, int] | tuple[str, int, str]


class L4Protocol(enum.Enum):
    """IPVS virtual-service protocols, valued as ipvsadm prints them."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class FwdMethod(enum.Enum):
    """How IPVS reaches a real server (ipvsadm's Forward column); kube-proxy only programs Masq."""

    MASQ = "Masq"
    LOCAL = "Local"
    TUNNEL = "Tunnel"
    ROUTE = "Route"


class ConnState(enum.Enum):
    """Connection states as the kernel's ip_vs_proto_*.c name them, so checks compare members."""

    # TCP (and NONE/ESTABLISHED shared with SCTP)
    NONE = "NONE"
    ESTABLISHED = "ESTABLISHED"
    SYN_SENT = "SYN_SENT"
    SYN_RECV = "SYN_RECV"
    FIN_WAIT = "FIN_WAIT"
    TIME_WAIT = "TIME_WAIT"
    CLOSE = "CLOSE"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"
    LISTEN = "LISTEN"
    SYNACK = "SYNACK"
    # UDP entries, and persistence templates (ip_vs_ctpl_state_name_table)
    UDP = "UDP"
    ASSURED = "ASSURED"
    # SCTP (sctp_state_name_table, kernel >= 3.x)
    INIT1 = "INIT1"
    INIT = "INIT"
    COOKIE_SENT = "C-SENT"
    COOKIE_REPLIED = "C-REPLIED"
    COOKIE_WAIT = "C-WAIT"
    COOKIE = "COOKIE"
    COOKIE_ECHOED = "C-ECHOED"
    SHUTDOWN_SENT = "S-SENT"
    SHUTDOWN_RECEIVED = "S-RECEIVED"
    SHUTDOWN_ACK_SENT = "S-ACK-SENT"
    REJECTED = "REJECTED"
    CLOSED = "CLOSED"


class OperState(enum.Enum):
    """RFC 2863 operational states (IF_OPER_*), as `ip` prints them."""

    UNKNOWN = "UNKNOWN"
    NOTPRESENT = "NOTPRESENT"
    DOWN = "DOWN"
    LOWERLAYERDOWN = "LOWERLAYERDOWN"
    TESTING = "TESTING"
    DORMANT = "DORMANT"
    UP = "UP"


def format_host_port(address: IPAddress, port: int) -> str:
    """Renders an endpoint the way ipvsadm does, so messages can be grepped against its output."""
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class HostPort(NamedTuple):
    """One end of a connection: a tuple, so `(addr, port)` comparisons keep working."""

    address: IPAddress
    port: int

    def __str__(self) -> str:
        return format_host_port(self.address, self.port)


@dataclass(frozen=True, slots=True)
class RealServer:
    """An IPVS destination; columns a listing lacks (`--stats`) are None, never guessed."""

    address: IPAddress
    port: int
    fwd_method: FwdMethod | None
    weight: int | None
    active_conns: int | None
    inact_conns: int | None
    raw: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[IPAddress, int]:
        """Identity within its virtual service, as the kernel keys destinations."""
        return (self.address, self.port)

    @property
    def name(self) -> str:
        """`10.244.3.10:6379` or `[fd00::1]:80`, as ipvsadm prints it."""
        return format_host_port(self.address, self.port)

    def __str__(self) -> str:
        return self.name


_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass(frozen=True, slots=True)
class VirtualService:
    """An IPVS virtual service: protocol+address+port, or a firewall mark, per address family."""

    protocol: L4Protocol | None
    address: IPAddress | None
    port: int | None
    fwmark: int | None
    af: socket.AddressFamily
    scheduler: str | None
    persistent_timeout: int | None = None
    netmask: str | None = None
    pe_name: str | None = None
    flags: tuple[str, ...] = ()
    real_servers: tuple[RealServer, ...] = ()
    raw: str = field(default="", compare=False)
    # Computed once: a table of a 100-node cluster is indexed and checked by them millions of times.
    _key: VirtualServiceKey = field(init=False, repr=False, compare=False)
    _real_server_keys: frozenset[tuple[IPAddress, int]] = field(
        init=False, repr=False, compare=False
    )
    _weighted: frozenset[HostPort] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_address = (self.protocol, self.address, self.port)
        if self.fwmark is None and None in by_address:
            raise ValueError(f"{self.raw!r}: a service needs protocol, address and port, or fwmark")
        if self.fwmark is not None and by_address != (None, None, None):
            raise ValueError(f"{self.raw!r}: a fwmark service has no protocol, address or port")
        if self.address is not None and _FAMILY[self.address.version] != self.af:
            raise ValueError(f"{self.name}: address family {self.af.name} does not match")
        seen: set[tuple[IPAddress, int]] = set()
        for rs in self.real_servers:
            if rs.key in seen:
                raise ValueError(f"{self.name}: real server {rs.name} is listed twice")
            seen.add(rs.key)
        object.__setattr__(self, "_key", self._identity())
        object.__setattr__(self, "_real_server_keys", frozenset(seen))

    @property
    def key(self) -> VirtualServiceKey:
        """Identity in the table: ("TCP", addr, port), ("FWM", mark) or ("FWM", mark, "IPv6")."""
        return self._key

    @property
    def real_server_keys(self) -> frozenset[tuple[IPAddress, int]]:
        """The real servers' keys (address, port)."""
        return self._real_server_keys

    @property
    def weighted_real_servers(self) -> frozenset[HostPort]:
        """The real servers IPVS sends to (weight > 0), computed on first use: a service that
        many nodes list is one object (SharedServices), so once for all of them."""
        if self._weighted is None:
            weighted = frozenset(HostPort(*rs.key) for rs in self.real_servers if rs.weight != 0)
            object.__setattr__(self, "_weighted", weighted)
            return weighted
        return self._weighted

    def _identity(self) -> VirtualServiceKey:
        if self.fwmark is not None:
            if self.af == socket.AF_INET6:
                return ("FWM", self.fwmark, "IPv6")
            return ("FWM", self.fwmark)
        protocol, address, port = self._by_address()
        return (protocol.value, address, port)

    @property
    def name(self) -> str:
        """`TCP 10.96.0.20:6379`, `TCP [fd00::1]:80`, `FWM 42` or `FWM 42 IPv6`."""
        if self.fwmark is not None:
            return " ".join(str(part) for part in self.key)
        protocol, address, port = self._by_address()
        return f"{protocol.value} {format_host_port(address, port)}"

    def _by_address(self) -> tuple[L4Protocol, IPAddress, int]:
        """The identity of a service without fwmark, which __post_init__ guarantees complete."""
        assert self.protocol is not None
        assert self.address is not None
        assert self.port is not None
        return (self.protocol, self.address, self.port)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class IpvsTable:
    """One node's IPVS table; the version line is absent from single-service listings.

    partial says why a paste shows only part of the table (a grep, `-t VIP:PORT`, a gap), so a
    service not shown is not known to be missing; real_servers_complete whether each service
    shown has all its real servers (a single-service listing does, a grep may cut them).
    """

    version: str | None
    conn_table_size: int | None
    services: tuple[VirtualService, ...]
    partial: str | None = None
    real_servers_complete: bool = True
    _by_key: Mapping[VirtualServiceKey, VirtualService] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_key = {service.key: service for service in self.services}
        if len(by_key) != len(self.services):
            seen: set[VirtualServiceKey] = set()
            for service in self.services:
                if service.key in seen:
                    raise ValueError(f"{service.name} is listed twice")
                seen.add(service.key)
        object.__setattr__(self, "_by_key", MappingProxyType(by_key))

    def get(self, key: VirtualServiceKey) -> VirtualService | None:
        """The service with this key, or None when the node does not program it."""
        return self._by_key.get(key)

    def __getitem__(self, key: VirtualServiceKey) -> VirtualService:
        return self._by_key[key]


@dataclass(frozen=True, slots=True)
class IpvsTimeouts:
    """`ipvsadm -L --timeout`, in seconds; tcp_fin is the FIN_WAIT timer only."""

    tcp: int
    tcp_fin: int
    udp: int


@dataclass(frozen=True, slots=True)
class Connection:
    """An IPVS connection entry; the state stays a string so states we do not know survive."""

    protocol: str
    client: HostPort
    virtual: HostPort
    destination: HostPort
    state_name: str
    expires_s: int
    pe_name: str | None = None
    pe_data: str | None = None
    raw: str = field(default="", compare=False)

    @property
    def state(self) -> ConnState | None:
        """The state as a member, or None for names outside the kernel tables (`ERR!`, old SCTP)."""
        try:
            return ConnState(self.state_name)
        except ValueError:
            return None

    @property
    def key(self) -> tuple[str, HostPort, HostPort, HostPort]:
        """Identity as the kernel hashes entries: protocol and the three endpoints."""
        return (self.protocol, self.client, self.virtual, self.destination)


class InvalidValue(ValueError):
    """A value a check needs is malformed in its input: the case errors, naming the file."""


@dataclass(frozen=True, slots=True)
class Sysctls:
    """`sysctl -a` as key -> value text; values keep their inner tabs (`32768\t60999`)."""

    values: Mapping[str, str]
    source: str = field(default="sysctl -a", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def get(self, key: str) -> str | None:
        """The value, or None when the key is absent (module not loaded, interface gone)."""
        return self.values.get(key)

    def int_value(self, key: str) -> int | None:
        """The value as an int, or None when absent; a non-integer is an error, not absence."""
        value = self.values.get(key)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise InvalidValue(f"{self.source}: {key} = {value!r} is not an integer") from None

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface; kind is linkinfo.info_kind, None for physical devices or no details.

    operstate is None where the source does not print it (busybox `ip`); addresses are None
    where they are unknown (no address listing, or /sys/class/net alone, which has no IPv4).
    """

    name: str
    index: int
    kind: str | None
    flags: tuple[str, ...]
    operstate: OperState | None
    addresses: tuple[IPInterface, ...] | None

    @property
    def key(self) -> str:
        """Identity on the node: the name, as sysctl keys (conf.<name>.rp_filter) use it."""
        return self.name


@dataclass(frozen=True, slots=True)
class Interfaces:
    """A node's interfaces by name, with which outputs were read so checks can skip on unknowns."""

    interfaces: tuple[Interface, ...]
    link_source: str | None
    addr_source: str | None
    _by_name: Mapping[str, Interface] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Interface] = {}
        for interface in self.interfaces:
            if interface.name in by_name:
                raise ValueError(f"interface {interface.name} is listed twice")
            by_name[interface.name] = interface
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))

    def get(self, name: str) -> Interface | None:
        """The interface, or None when the node has no such interface."""
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> Interface:
        return self._by_name[name]

    def __iter__(self) -> Iterator[Interface]:
        return iter(self.interfaces)

    def __len__(self) -> int:
        return len(self.interfaces)
