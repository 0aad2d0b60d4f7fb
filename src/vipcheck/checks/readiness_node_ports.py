"""NodePorts clients reach today on addresses kube-proxy's nftables mode will not answer on.

IPVS mode programs a NodePort virtual server on every local address but kube-ipvs0's (with
nodePortAddresses empty, its default); nftables mode answers only on the addresses its
nodePortAddresses selects, which it defaults to `primary`, the Node's primary IP per family
(kubernetes/kubernetes@0014930a2487 cmd/kube-proxy/app/server_linux.go platformApplyDefaults),
and never on 127.0.0.1 (kubernetes/website@3842a2847339 virtual-ips.md, "Migrating from
`iptables` mode to `nftables`"). What the switch drops is a NodePort virtual server on such an
address; what makes it matter is a client using it: the IPVS connection counters and table show
one (read only where such a virtual server exists), and so does the handshake probe when this run
probed before the item (it is never started from here: `-m "not probe"` opens no connection).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address

from vipcheck.checks.base import Check, FindingKind, NodeSubject, NotApplicable, Severity, Violation
from vipcheck.checks.kube_proxy import IPVS_MODE
from vipcheck.checks.scopes import NODES
from vipcheck.datapath.nftables import nodeport_ips
from vipcheck.facts import (
    IP_ADDR,
    IP_LINK,
    IPVS_CONNECTIONS,
    IPVS_TABLE,
    KUBE_PROXY,
    NODE_OBJECTS,
    SERVICES,
    Facts,
    MissingInput,
    NodeFacts,
)
from vipcheck.model.cluster import (
    IPAddress,
    KubeProxyConfig,
    NodePortKeyword,
    ServicePortKey,
    ServiceType,
)
from vipcheck.model.handshakes import ConnectOutcome, ProbeRound, TargetKind
from vipcheck.model.nftables import NftFamily
from vipcheck.model.node import KUBE_IPVS0, Connection, HostPort, L4Protocol, VirtualService
from vipcheck.settings import Settings

# The states a connection to a NodePort shows in the IPVS table (UDP entries are named UDP). A
# table is read for them only on a node with a dropped NodePort whose counters show connections.
_STATES = ("ESTABLISHED", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK", "UDP")
_WITH_NODE_PORTS = (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
# How many rows of the connection table a finding quotes.
_QUOTED = 3


@dataclass(frozen=True, slots=True)
class _Dropped:
    """A NodePort virtual server on an address nftables mode will not answer on, and why."""

    service: VirtualService
    address: HostPort
    ports: tuple[str, ...]  # the Service ports with this nodePort
    why: str


def check_node_port_addresses(
    subject: NodeSubject, facts: Facts, settings: Settings
) -> list[Violation]:
    """A violation per NodePort address the switch drops that a client reached."""
    node = facts.nodes[subject.node]
    config = facts.cluster.kube_proxy_or_none or KubeProxyConfig()
    dropped = _dropped(node, facts, config)
    if not dropped:
        return []
    probed = _probe_connects(facts, {each.address for each in dropped})
    busy = [each for each in dropped if _counted(each.service) != 0]
    rows, unread = _rows_to(node, [each.address for each in busy])
    violations = []
    for each in dropped:
        seen = _Seen(
            _counted(each.service), rows.get(each.address, []), probed.get(each.address, [])
        )
        if seen.counted or seen.rows or seen.connected:
            violations.append(_violation(node.name, config, each, seen))
    if unread is not None and not violations and any(_counted(e.service) is None for e in busy):
        raise unread  # counters unknown and no table: not judged
    return violations


def _dropped(node: NodeFacts, facts: Facts, config: KubeProxyConfig) -> list[_Dropped]:
    """The node's NodePort virtual servers on loopback or on a local address that nftables
    mode's nodePortAddresses (primary by default) leaves out."""
    interfaces = node.interfaces
    if interfaces.addr_source is None:
        raise MissingInput(node.name, IP_ADDR.files, "no address listing to tell local addresses")
    local = {
        address.ip
        for interface in interfaces
        if interface.name != KUBE_IPVS0
        for address in interface.addresses or ()
    }
    selected = _selected(node.name, facts, config, local)
    node_ports = _node_ports(facts)
    found = []
    for service in node.ipvs.services:
        if service.fwmark is not None or service.address not in local:
            continue
        assert service.protocol is not None
        assert service.port is not None
        ports = node_ports.get((service.protocol, service.port))
        why = _why_dropped(service.address, selected)
        if ports and why:
            address = HostPort(service.address, service.port)
            found.append(_Dropped(service, address, ports, why))
    return found


def _selected(
    name: str, facts: Facts, config: KubeProxyConfig, local: Iterable[IPAddress]
) -> Mapping[int, frozenset[IPAddress] | None]:
    """The addresses nftables mode would answer NodePorts on, per IP version (None: every
    local one but loopback), from this config with its mode switched."""
    node_object = facts.cluster.node(name)
    uses_primary = not config.node_port_addresses or (
        NodePortKeyword.PRIMARY in config.node_port_addresses
    )
    if node_object is None and uses_primary:
        raise NotApplicable(
            f"{name} is not in nodes.json: its primary IPs, the only ones nftables mode "
            "answers NodePorts on by default, are unknown"
        )
    primary = () if node_object is None else node_object.primary_ips
    chosen = nodeport_ips(config, primary, local)
    return {4: _parsed(chosen[NftFamily.IP]), 6: _parsed(chosen[NftFamily.IP6])}


def _parsed(chosen: frozenset[str] | None) -> frozenset[IPAddress] | None:
    return None if chosen is None else frozenset(ip_address(each) for each in chosen)


def _why_dropped(
    address: IPAddress, selected: Mapping[int, frozenset[IPAddress] | None]
) -> str | None:
    """Why nftables mode will not answer NodePorts on a local address, or None when it will."""
    if address.is_loopback:
        return "loopback: nftables mode never answers NodePorts there"
    chosen = selected[address.version]
    if chosen is None or address in chosen:
        return None
    answered = ", ".join(sorted(map(str, chosen))) or "none of this family"
    return f"not among the addresses nftables mode's nodePortAddresses selects ({answered})"


def _node_ports(facts: Facts) -> Mapping[tuple[L4Protocol, int], tuple[str, ...]]:
    """The Service ports behind each (protocol, nodePort), indexed once per snapshot."""

    def index() -> dict[tuple[L4Protocol, int], tuple[str, ...]]:
        found: dict[tuple[L4Protocol, int], list[str]] = {}
        for service in facts.cluster.services:
            if service.exclusion is not None or service.type not in _WITH_NODE_PORTS:
                continue
            for port in service.ports:
                if port.node_port is not None:
                    subject = ServicePortKey(service.key, port.port, port.protocol)
                    found.setdefault((port.protocol, port.node_port), []).append(str(subject))
        return {key: tuple(ports) for key, ports in found.items()}

    return facts.cluster.derive("readiness node ports", index)


def _counted(service: VirtualService) -> int | None:
    """The connections IPVS counts on the VS (ActiveConn + InActConn), None when not shown."""
    total = 0
    for server in service.real_servers:
        if server.active_conns is None or server.inact_conns is None:
            return None
        total += server.active_conns + server.inact_conns
    return total


def _rows_to(
    node: NodeFacts, addresses: list[HostPort]
) -> tuple[dict[HostPort, list[Connection]], MissingInput | None]:
    """The connection table's rows to these virtual addresses, and why it could not be read."""
    if not addresses:
        return {}, None
    wanted = set(addresses)
    rows: dict[HostPort, list[Connection]] = {}
    try:
        for state in _STATES:
            for row in node.connections_in(state):
                if row.state_name == state and row.virtual in wanted:
                    rows.setdefault(row.virtual, []).append(row)
    except MissingInput as missing:
        return rows, missing
    return rows, None


def _probe_connects(facts: Facts, addresses: set[HostPort]) -> dict[HostPort, list[str]]:
    """Vantage points whose handshake probe connected to these NodePort addresses, when this
    run already probed (or replays probes already read); never starts the probes."""
    probes = facts.probes
    if not probes.loaded:
        return {}
    found: dict[HostPort, list[str]] = {}
    for target in probes.plan.targets:
        if target.round is not ProbeRound.VIP or target.kind is not TargetKind.NODE_PORT:
            continue
        if target.address not in addresses:
            continue
        output = probes.output(target.vantage, ProbeRound.VIP)
        attempts = () if output is None else output.attempts
        if any(
            a.address == target.address and a.outcome is ConnectOutcome.CONNECTED for a in attempts
        ):
            found.setdefault(target.address, []).append(target.vantage)
    return found


@dataclass(frozen=True, slots=True)
class _Seen:
    """What shows a client on a dropped NodePort: IPVS's counters, table rows, the probe."""

    counted: int | None
    rows: list[Connection]
    connected: list[str]  # vantage points whose probe connected


def _violation(name: str, config: KubeProxyConfig, dropped: _Dropped, seen: _Seen) -> Violation:
    address = dropped.address
    shown = []
    if seen.counted:
        shown.append(f"{seen.counted} connection(s) counted on it by IPVS")
    if seen.rows:
        clients = sorted({str(row.client.address) for row in seen.rows})
        shown.append(
            f"{len(seen.rows)} in the connection table, from {', '.join(clients[:_QUOTED])}"
        )
    if seen.connected:
        shown.append(f"the handshake probe connected from {', '.join(sorted(seen.connected))}")
    keep = (
        "clients on the node must use the Service's ClusterIP instead"
        if address.address.is_loopback
        else f"or add {address.address} to nodePortAddresses in the kube-proxy ConfigMap "
        f"(as {address.address}/{address.address.max_prefixlen}, beside "
        f"{_listed(config)}) so nftables mode keeps answering there"
    )
    return Violation(
        kind=FindingKind.NODE_PORT_ADDRESS_DROPPED,
        subject=str(address),
        node=name,
        observed=f"NodePort {address} of {', '.join(dropped.ports)} is reached today "
        f"({'; '.join(shown)}); {address.address} is {dropped.why}",
        expected="NodePorts reached only on addresses nftables mode answers on",
        fix=f"before switching {name}, point those clients at the node's primary IP, {keep}",
        evidence=(dropped.service.raw, *(row.raw for row in seen.rows[:_QUOTED])),
    )


def _listed(config: KubeProxyConfig) -> str:
    """nodePortAddresses as the ConfigMap would list it for nftables mode."""
    entries = config.node_port_addresses or (NodePortKeyword.PRIMARY,)
    return ", ".join(str(entry) for entry in entries)


NODE_PORT_ADDRESSES = Check(
    id="migration-nodeport-addresses",
    title="No client reaches a NodePort on an address nftables mode will not answer on",
    why=(
        "IPVS mode answers NodePorts on every local address; nftables mode defaults "
        "nodePortAddresses to `primary`, the Node's primary IPs "
        "(kubernetes/kubernetes@0014930a2487 cmd/kube-proxy/app/server_linux.go "
        "platformApplyDefaults), and never answers on 127.0.0.1 (kubernetes/website@3842a2847339 "
        "virtual-ips.md, migrating to nftables). Clients seen in the IPVS connection counters and "
        "table (or by this run's handshake probe) on another address lose the NodePort with the "
        "switch. Blocks the gate at --vipcheck-fail-on warning (warning)."
    ),
    fix="Point the clients at the node's primary IP, or list the address in nodePortAddresses "
    "before the switch.",
    severity=Severity.WARNING,
    scope=NODES,
    inputs=(KUBE_PROXY, SERVICES, NODE_OBJECTS, IPVS_TABLE, IP_ADDR, IP_LINK, IPVS_CONNECTIONS),
    run=check_node_port_addresses,
    modes=IPVS_MODE,
)
