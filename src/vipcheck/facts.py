"""Parsed views of a snapshot, built on first use, so a check reads the model, never raw text.

A fact whose file is missing raises MissingInput (the check is skipped, naming the file and the
command that produces it); a node that could not be observed raises Unobserved (the check errors);
a file that cannot be parsed raises ParseError (the check errors, naming file and line).
Each fact names the snapshot files it reads as an Input, which checks declare; an optional
InputObserver is told every file a fact reads, so tests can hold those declarations true.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Generic, TypeVar, overload

from vipcheck.model.cluster import (
    Cluster,
    EndpointSlice,
    KubeProxyConfig,
    KubeProxyImage,
    Node,
    ProxyMode,
    Service,
)
from vipcheck.model.handshakes import ProbeOutput, ProbePlan, ProbeRound
from vipcheck.model.modes import ObservedMode
from vipcheck.model.nftables import KUBE_PROXY_TABLE, NftFamily, NftTable
from vipcheck.model.node import (
    KUBE_IPVS0,
    Connection,
    ConnState,
    Interfaces,
    IpvsTable,
    IpvsTimeouts,
    Sysctls,
)
from vipcheck.model.xtables import IptablesDump, IptablesFamily
from vipcheck.parse import ParseError
from vipcheck.parse.handshakes import parse_probe_output, parse_probe_plan
from vipcheck.parse.iproute import parse_interfaces
from vipcheck.parse.ipvsadm import (
    SharedServices,
    parse_ipvsadm_connections,
    parse_ipvsadm_list,
    parse_ipvsadm_timeout,
)
from vipcheck.parse.kube import (
    parse_endpoint_slices,
    parse_kube_proxy_config,
    parse_kube_proxy_daemonset,
    parse_nodes,
    parse_services,
)
from vipcheck.parse.nft import parse_nft_json, parse_nft_tables, parse_nft_text
from vipcheck.parse.procfs import parse_proc_ip_vs, parse_proc_ip_vs_conn
from vipcheck.parse.sysctl import keys_named, parse_proc_sys, parse_sysctl
from vipcheck.parse.tool_outputs import parse_ipset_names, parse_nft_version
from vipcheck.parse.xtables import parse_iptables_save
from vipcheck.snapshot import (
    CLUSTER_FILES,
    IP_SET_NOT_LOADED,
    NF_TABLES_NOT_LOADED,
    NF_TABLES_UNKNOWN,
    NFT_NOT_INSTALLED,
    NODE_FILES,
    PROBE_DIR,
    PROBE_FILES,
    PROBE_PLAN,
    KeptLines,
    NodeSnapshot,
    Snapshot,
    SnapshotLineError,
    lines_with,
)

T = TypeVar("T")
SYN_RECV = ConnState.SYN_RECV.value

InputObserver = Callable[[str], None]
"""Told the path of each snapshot file a fact reads (`cluster/`, `nodes/<node>/`, `probes/`)."""


def _unobserved_reads(path: str) -> None:
    """The default observer: nobody is watching which files are read."""


@dataclass(frozen=True, slots=True)
class Input:
    """The snapshot file one fact is read from, or alternatives of which the first present wins."""

    files: tuple[str, ...]


SERVICES = Input(("services.json",))
ENDPOINT_SLICES = Input(("endpointslices.json",))
NODE_OBJECTS = Input(("nodes.json",))
KUBE_PROXY = Input(("kube-proxy.json",))
KUBE_PROXY_DAEMONSET = Input(("kube-proxy-daemonset.json",))
IPVS_TABLE = Input(("ipvsadm-Ln.txt", "proc-ip_vs.txt"))
IPVS_TIMEOUTS = Input(("ipvsadm-timeout.txt",))
IPVS_CONNECTIONS = Input(("ip_vs_conn.txt", "ipvsadm-Lnc.txt"))
SYSCTLS = Input(("sysctl.txt", "proc-sys.txt"))
IP_ADDR = Input(("ip-addr.json", "ip-addr.txt"))
IP_LINK = Input(("ip-link.json", "ip-link.txt", "sys-class-net.txt"))
KERNEL_RELEASE = Input(("uname.txt",))
NFT_TABLES = Input(("nft-tables.txt",))
NFT_IP = Input(("nft-ip-kube-proxy.json", "nft-ip-kube-proxy.txt"))
NFT_IP6 = Input(("nft-ip6-kube-proxy.json", "nft-ip6-kube-proxy.txt"))
NFT_TABLE = {NftFamily.IP: NFT_IP, NftFamily.IP6: NFT_IP6}
# The IPVS -> nftables migration's inputs (issue 20).
NFT_VERSION = Input(("nft-version.txt",))
IPSETS = Input(("ipset-list-names.txt",))
IPTABLES_CHAINS = Input(("iptables-chains.txt",))
IP6TABLES_CHAINS = Input(("ip6tables-chains.txt",))
IPTABLES_CHAINS_OF = {IptablesFamily.IPV4: IPTABLES_CHAINS, IptablesFamily.IPV6: IP6TABLES_CHAINS}
# Why a table's JSON is missing where its text stands in: not a failure.
_NFT_WITHOUT_JSON = "nft without JSON support"
PROBE_PLAN_INPUT = Input((f"{PROBE_DIR}/{PROBE_PLAN}",))
PROBE_VIP_OUTPUT = Input((f"{PROBE_DIR}/<vantage>/vip.error.txt", f"{PROBE_DIR}/<vantage>/vip.txt"))
PROBE_REAL_SERVER_OUTPUT = Input(
    (f"{PROBE_DIR}/<vantage>/real-server.error.txt", f"{PROBE_DIR}/<vantage>/real-server.txt")
)
# The SYN_RECV evidence: the table re-read after probing, else the one gathered before.
CONNECTIONS_AFTER_PROBES = Input(
    (f"{PROBE_DIR}/after/<node>/ip_vs_conn.txt", *IPVS_CONNECTIONS.files)
)


class MissingInput(Exception):
    """A check's input is not in the snapshot: the check does not apply (SKIP), and says why."""

    def __init__(self, where: str, files: tuple[str, ...], known_reason: str | None = None) -> None:
        self.where = where
        self.files = files
        self.known_reason = known_reason
        commands = " or ".join(f"{name} (`{_command(name)}`)" for name in files)
        reason = f": {known_reason}" if known_reason else ""
        super().__init__(f"{where}: no {commands} in the snapshot{reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Made again from what it was made of, in the process a node's verdict goes to.
        return (type(self), (self.where, self.files, self.known_reason))


class NotProbed(MissingInput):
    """The handshake probes were not run, and why (turned off, replay without them)."""

    def __init__(self, reason: str) -> None:
        self.where = "probes"
        self.files = (f"{PROBE_DIR}/{PROBE_PLAN}",)
        self.known_reason = reason
        Exception.__init__(self, f"no handshake probes: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.known_reason,))


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


@dataclass(frozen=True, slots=True)
class _Failed:
    """A derived value whose computation raised: the error, to raise again."""

    error: Exception


_NOT_YET = object()  # a Derived value not computed yet


class Derived:
    """Values computed once; a failure is kept too (re-raised without its old traceback), so an
    unreadable input costs one parse, not one per item. Each one belongs to one snapshot's facts
    (the cluster's, a node's, the probes', or the whole Facts'), never to the process."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        value = self._values.get(key, _NOT_YET)
        if value is _NOT_YET:
            try:
                value = self._values[key] = compute()
            except Exception as error:
                value = self._values[key] = _Failed(error.with_traceback(None))
        if isinstance(value, _Failed):
            raise again(value.error)
        return value  # type: ignore[no-any-return]


def again(error: Exception) -> Exception:
    """A kept error to raise once more: a copy, so the traceback it gathers on its way (frames,
    and what they hold: a node's parsed tables) goes with the copy, not into the cache."""
    try:
        return copy.copy(error)
    except Exception:  # an error that cannot be made again from its arguments
        return error.with_traceback(None)


class NodeVerdicts:
    """Each check's verdict on each node, computed once (a failure kept, as in Derived), by node:
    what a node's tables gave, kept after they are let go (vipcheck.judging). A node's entries can
    be taken out and put in, so a worker process judges the node and the run keeps its verdicts."""

    def __init__(self) -> None:
        self._by_node: dict[str, Derived] = {}

    def get(self, node: str, key: Hashable, compute: Callable[[], T]) -> T:
        found = self._by_node.get(node)  # asked once per item and node: no Derived made each time
        if found is None:
            found = self._by_node[node] = Derived()
        return found.get(key, compute)

    def take(self, node: str) -> dict[Hashable, Any]:
        """The node's entries (values, or failures to raise again), no longer kept here."""
        found = self._by_node.pop(node, None)
        return {} if found is None else found._values

    def entries(self, node: str) -> dict[Hashable, Any]:
        """The node's entries, still kept here."""
        found = self._by_node.get(node)
        return {} if found is None else dict(found._values)

    def put(self, node: str, entries: Mapping[Hashable, Any]) -> None:
        """Entries another process took (take) for this node."""
        self._by_node.setdefault(node, Derived())._values.update(entries)


class _fact(Generic[T]):
    """A NodeFacts property computed once through its derive(), so a file that does not parse
    is read and parsed once, not once per check that reads it (a 100 MB one was read ten times
    at 5 x 300): the failure is kept too, as for every derived value."""

    def __init__(self, compute: Callable[[NodeFacts], T]) -> None:
        self._compute = compute
        self._name = compute.__name__

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> _fact[T]: ...
    @overload
    def __get__(self, instance: NodeFacts, owner: type[Any]) -> T: ...
    def __get__(self, instance: NodeFacts | None, owner: type[Any]) -> T | _fact[T]:
        if instance is None:
            return self
        return instance.derive(self._name, lambda: self._compute(instance))


class ClusterFacts:
    """What the API says, parsed from cluster/*.json, each object kind on its own."""

    def __init__(
        self,
        files: Mapping[str, str],
        error: str | None = None,
        observer: InputObserver = _unobserved_reads,
    ) -> None:
        self._files = files
        self._error = error
        self._observer = observer
        self._derived = Derived()

    def derive(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value computed once from the cluster's facts, e.g. an index each node's check reads."""
        return self._derived.get(key, compute)

    def _parse(self, which: Input, parser: Callable[[str, str], T]) -> T:
        [name] = which.files
        if name not in self._files:
            if self._error:
                raise Unobserved(f"the cluster could not be read: {self._error}")
            raise MissingInput("cluster", (name,))
        path = f"cluster/{name}"
        self._observer(path)
        return parser(self._files[name], path)

    def _gathered(self, which: Input) -> bool:
        """Whether an optional file was gathered; when the API failed, reading it says so."""
        return which.files[0] in self._files or self._error is not None

    @cached_property
    def services(self) -> tuple[Service, ...]:
        return self._parse(SERVICES, parse_services)

    @cached_property
    def endpoint_slices(self) -> tuple[EndpointSlice, ...]:
        return self._parse(ENDPOINT_SLICES, parse_endpoint_slices)

    @cached_property
    def nodes(self) -> tuple[Node, ...]:
        """The Node objects; none when nodes.json was not gathered, as they only refine checks."""
        return self._parse(NODE_OBJECTS, parse_nodes) if self._gathered(NODE_OBJECTS) else ()

    @cached_property
    def kube_proxy(self) -> KubeProxyConfig:
        return self._parse(KUBE_PROXY, parse_kube_proxy_config)

    @property
    def kube_proxy_or_none(self) -> KubeProxyConfig | None:
        return self.kube_proxy if KUBE_PROXY.files[0] in self._files else None

    @cached_property
    def kube_proxy_image(self) -> KubeProxyImage | None:
        """kube-proxy's image (its tag names the release); None when the DaemonSet was not
        gathered, as it only refines checks."""
        if not self._gathered(KUBE_PROXY_DAEMONSET):
            return None
        return self._parse(KUBE_PROXY_DAEMONSET, parse_kube_proxy_daemonset)

    @cached_property
    def cluster(self) -> Cluster:
        """Everything at once, for the expected-state computation, which needs it all."""
        return Cluster(
            self.services,
            self.endpoint_slices,
            self.nodes,
            self.kube_proxy_or_none,
            self.kube_proxy_image,
        )

    def node(self, name: str) -> Node | None:
        """The Node object of that name, if nodes.json lists it."""
        return next((node for node in self.nodes if node.name == name), None)


class NodeFacts:
    """What one node really does, parsed from nodes/<node>/*."""

    def __init__(
        self,
        snapshot: NodeSnapshot,
        observer: InputObserver = _unobserved_reads,
        shared: SharedServices | None = None,
        sysctl_keys: re.Pattern[str] | None = None,
    ) -> None:
        """shared: the IPVS services the snapshot's other nodes' tables hold, to share;
        sysctl_keys: the sysctl keys to keep (None: all), as Facts.from_snapshot's."""
        self.name = snapshot.name
        self._snapshot = snapshot
        self._observer = observer
        self._shared = shared
        self._sysctl_keys = sysctl_keys
        self._derived = Derived()

    def derive(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value computed once from this node's facts, e.g. a parsed file's rows in one state,
        or this node's part of what the snapshot's expected state holds (what it shares across
        nodes is the whole Facts', Facts.derive): let go with them (forget)."""
        return self._derived.get(key, compute)

    def forget(self) -> None:
        """Let go of everything parsed from this node's files (read again if asked again): its
        verdicts are kept by the Facts (node_verdict), and one node's tables can be 100 MB."""
        self._derived = Derived()

    def _first(self, which: Input) -> _Source:
        name, path = self._first_name(which)
        return _Source(path, self._snapshot.files[name])

    def _first_name(self, which: Input) -> tuple[str, str]:
        """The name and snapshot path of the first file of which present, not yet read."""
        if self._snapshot.error:
            raise Unobserved(self.unobserved_reason)
        for name in which.files:
            if name in self._snapshot.files:
                path = f"nodes/{self.name}/{name}"
                self._observer(path)
                return name, path
        reasons = [self._snapshot.missing.get(name) for name in which.files]
        known = "; ".join(r for r in reasons if r) or None
        raise MissingInput(self.name, which.files, known)

    def _first_or(self, which: Input, missing: MissingInput) -> _Source:
        """The first file of which, or the given MissingInput when it has none."""
        try:
            return self._first(which)
        except MissingInput:
            raise missing from None

    @property
    def observed(self) -> bool:
        return self._snapshot.error is None

    @property
    def unobserved_reason(self) -> str | None:
        """Why this node could not be observed, or None when it was."""
        error = self._snapshot.error
        return None if error is None else f"{self.name} could not be observed: {error}"

    @property
    def ipvs_absent(self) -> str | None:
        """Why the node has no IPVS at all (ip_vs not loaded), as gathering recorded it; or None."""
        reason = self._snapshot.missing.get("proc-ip_vs.txt")
        return reason if reason and "ip_vs module not loaded" in reason else None

    @_fact
    def ipvs(self) -> IpvsTable:
        source = self._first(IPVS_TABLE)
        if source.path.endswith("proc-ip_vs.txt"):
            return parse_proc_ip_vs(source.text, source.path)
        return parse_ipvsadm_list(source.text, source.path, self._shared)

    @cached_property
    def timeouts(self) -> IpvsTimeouts:
        source = self._first(IPVS_TIMEOUTS)
        return parse_ipvsadm_timeout(source.text, source.path)

    @property
    def syn_recv_connections(self) -> tuple[Connection, ...]:
        """The table's TCP entries in SYN_RECV, all that the handshake checks read of it (its
        first MAX_KEPT_ROWS SYN_RECV rows only when syn_recv_cut says so)."""
        return self.derive("tcp syn_recv", lambda: tcp_syn_recv(self.connections_in(SYN_RECV)))

    @property
    def syn_recv_cut(self) -> str | None:
        """Why syn_recv_connections are the table's first SYN_RECV rows only, or None."""
        return self.connections_cut(SYN_RECV)

    def connections_in(self, state: str) -> tuple[Connection, ...]:
        """The table's entries in one state (e.g. SYN_RECV, FIN_WAIT), parsed once per state.

        A busy director lists a million entries; parsing each into a Connection took 20 s and
        600 MiB, so only the rows naming the state are parsed (the others are blanked, which
        keeps line numbers, and are not validated); a snapshot's table is streamed, never read
        whole (vipcheck.snapshot.lines_with). An empty file is still refused as empty. At most
        the first MAX_KEPT_ROWS rows in the state are kept (connections_cut says when).
        """
        return self._rows_in(state).rows

    def connections_cut(self, state: str) -> str | None:
        """Why connections_in(state) holds only the table's first rows in that state (it had
        more than vipcheck keeps: a flood, or a forged table), naming file and count; or None.
        A check judging them must not pass on them alone."""
        return self._rows_in(state).cut

    def _rows_in(self, state: str) -> _Rows:
        return self.derive(("connections in", state), lambda: self._parse_connections_in(state))

    def _parse_connections_in(self, state: str) -> _Rows:
        name, path = self._first_name(IPVS_CONNECTIONS)
        kept = _lines_in(self._snapshot.files, name, path, state)
        if kept.nonblank and not kept.text.strip():
            return _Rows(())
        if path.endswith("ip_vs_conn.txt"):
            rows = parse_proc_ip_vs_conn(kept.text, path)
        else:
            rows = parse_ipvsadm_connections(kept.text, path)
        return _Rows(rows, _cut(kept, path, state))

    @_fact
    def sysctls(self) -> Sysctls:
        source = self._first(SYSCTLS)
        if source.path.endswith("proc-sys.txt"):
            return parse_proc_sys(source.text, source.path, self._sysctl_keys)
        note = self._snapshot.notes.get(source.path.rpartition("/")[2])
        path = f"{source.path} ({note})" if note else source.path
        return replace(parse_sysctl(source.text, source.path, self._sysctl_keys), source=path)

    @_fact
    def interfaces(self) -> Interfaces:
        """Addresses and links from `ip -j`, `ip` text, or /sys/class/net alone (no addresses)."""
        try:
            addr: _Source | None = self._first(IP_ADDR)
        except MissingInput as no_addr:
            addr, link = None, self._first_or(IP_LINK, no_addr)
            if not link.path.endswith("sys-class-net.txt"):
                raise
        else:
            link = self._first(IP_LINK)
        return parse_interfaces(
            (addr.text, addr.path) if addr is not None else None, (link.text, link.path)
        )

    @cached_property
    def kernel_release(self) -> str:
        return self._first(KERNEL_RELEASE).text.strip()

    @_fact
    def nft_tables(self) -> frozenset[tuple[str, str]]:
        """Every nftables table on the node as (family, name), from `nft list tables`.

        nft failing or crashing there is a ParseError ("cannot read: <its error>"): a node
        whose tables could not be listed is never taken for one without them.
        """
        [name] = NFT_TABLES.files
        if self.observed and name not in self._snapshot.files:
            reason = self._snapshot.missing.get(name)
            if reason == NF_TABLES_NOT_LOADED:
                return frozenset()  # no kube-proxy table can be there (snapshot.py says why)
            if reason and reason not in (NFT_NOT_INSTALLED, NF_TABLES_UNKNOWN):
                raise ParseError(f"nodes/{self.name}/{name}", None, f"cannot read: {reason}")
        source = self._first(NFT_TABLES)
        return parse_nft_tables(source.text, source.path)

    def nftables(self, family: NftFamily) -> NftTable | None:
        """The node's kube-proxy table of that family; None where nft listed no such table.

        Read from the table's own file where there is one (a paste may hold only that), else
        nft-tables.txt says whether the table exists. MissingInput where nft was not gathered
        or is not installed; a ParseError ("cannot read: ...") where nft failed on the table.
        """
        return self.derive(("nftables", family), lambda: self._nftables(family))

    def _nftables(self, family: NftFamily) -> NftTable | None:
        which = NFT_TABLE[family]
        if not self.observed or any(name in self._snapshot.files for name in which.files):
            source = self._first(which)
            parse = parse_nft_json if source.path.endswith(".json") else parse_nft_text
            table = parse(source.text, source.path)
            if table.family is not family:
                raise ParseError(
                    source.path, None, f"holds table {table.family} {table.name}, not {family}'s"
                )
            return table
        if (family.value, KUBE_PROXY_TABLE) not in self.nft_tables:
            return None
        for name in which.files:
            reason = self._snapshot.missing.get(name)
            if reason and not reason.startswith(_NFT_WITHOUT_JSON):
                raise ParseError(f"nodes/{self.name}/{name}", None, f"cannot read: {reason}")
        raise MissingInput(self.name, which.files, "nft-tables.txt lists the table")

    @_fact
    def nft_version(self) -> tuple[int, ...]:
        """nft's version, (1, 0, 6): MissingInput where nft is not installed or was not asked."""
        source = self._first(NFT_VERSION)
        return parse_nft_version(source.text, source.path)

    @_fact
    def ipset_names(self) -> frozenset[str]:
        """Every ipset's name on the node (both families: KUBE-* and KUBE-6-*). None where the
        ip_set module is not loaded, as no set can exist then (gathering does not run ipset
        there: it would load it); MissingInput where ipset is not installed."""
        [name] = IPSETS.files
        missing = self._snapshot.missing.get(name)
        if self.observed and name not in self._snapshot.files and missing == IP_SET_NOT_LOADED:
            return frozenset()
        source = self._first(IPSETS)
        return parse_ipset_names(source.text, source.path)

    def iptables(self, family: IptablesFamily) -> IptablesDump:
        """One family's iptables chains, per backend, and the backends not read (with why)."""
        return self.derive(("iptables", family), lambda: self._iptables(family))

    def _iptables(self, family: IptablesFamily) -> IptablesDump:
        source = self._first(IPTABLES_CHAINS_OF[family])
        return parse_iptables_save(source.text, source.path)

    def iptables_chains(self, family: IptablesFamily) -> dict[str, frozenset[str]]:
        """Each table's chain names (nat, filter, mangle, ...), every backend together."""
        return self.iptables(family).chains()

    @property
    def observed_mode(self) -> ObservedMode:
        """Which kube-proxy modes the node's kernel state shows: a kube-proxy nftables table,
        IPVS virtual servers or kube-ipvs0, both (a switch half done: kube-proxy's cleanup of
        IPVS flushes every virtual server and deletes kube-ipvs0, cmd/kube-proxy/app/
        server_linux.go platformCleanup), or neither. A mode whose inputs were not gathered is
        unknown, never absent; a node where nft failed raises its ParseError."""
        return self.derive("observed mode", self._observed_mode)

    def _observed_mode(self) -> ObservedMode:
        seen: dict[ProxyMode, str] = {}
        unknown: dict[ProxyMode, str] = {}
        try:
            tables = [self.nftables(family) for family in NftFamily]
        except MissingInput as missing:
            unknown[ProxyMode.NFTABLES] = str(missing)
        else:
            listed = [f"table {t.family} {t.name}" for t in tables if t is not None]
            if listed:
                seen[ProxyMode.NFTABLES] = ", ".join(listed)
        ipvs = self._ipvs_evidence()
        if isinstance(ipvs, MissingInput):
            unknown[ProxyMode.IPVS] = str(ipvs)
        elif ipvs:
            seen[ProxyMode.IPVS] = ipvs
        return ObservedMode(seen, unknown)

    def _ipvs_evidence(self) -> str | MissingInput:
        """What shows IPVS mode (`62 virtual servers, kube-ipvs0`), empty for nothing; the
        MissingInput when neither the IPVS table nor the interfaces were read."""
        shown: list[str] = []
        unread: list[MissingInput] = []
        try:
            count = len(self.ipvs.services)
        except MissingInput as missing:
            if self.ipvs_absent is None:
                unread.append(missing.with_traceback(None))  # its frames would hold this one
        else:
            if count:
                shown.append(f"{count} virtual server{'s' if count != 1 else ''}")
        try:
            if self.interfaces.get(KUBE_IPVS0) is not None:
                shown.append(KUBE_IPVS0)
        except MissingInput as missing:
            unread.append(missing.with_traceback(None))
        if not shown and len(unread) == 2:
            return unread[0]
        return ", ".join(shown)


ProbeLoader = Callable[[], Mapping[str, str]]


def _not_probed() -> Mapping[str, str]:
    raise NotProbed("this run did not probe")


class ProbeFacts:
    """What the handshake probes saw, from probes/* files loaded on first use.

    Live runs load by probing, so no connection is opened until a probe item runs; replay loads
    the snapshot's files; a loader that cannot give them raises MissingInput (items skip).
    """

    def __init__(
        self, load: ProbeLoader = _not_probed, observer: InputObserver = _unobserved_reads
    ) -> None:
        self._load = load
        self._observer = observer
        self._derived = Derived()

    @cached_property
    def _files(self) -> Mapping[str, str]:
        return self._load()

    @property
    def loaded(self) -> bool:
        """Whether the probe files are in already (the probes ran, or a replay's were read), so
        evidence that uses them only when there are some reads them without opening a
        connection: a live run probes on first read, which `-m "not probe"` must not cause."""
        return "_files" in self.__dict__

    def _read(self, name: str) -> str | None:
        """A probe file's text, or None when it was not written."""
        text = self._files.get(name)
        if text is not None:
            self._observer(f"{PROBE_DIR}/{name}")
        return text

    @cached_property
    def plan(self) -> ProbePlan:
        text = self._read(PROBE_PLAN)
        if text is None:
            raise MissingInput("probes", PROBE_PLAN_INPUT.files)
        return parse_probe_plan(text, f"{PROBE_DIR}/{PROBE_PLAN}")

    def output(self, vantage: str, round_: ProbeRound) -> ProbeOutput | None:
        """One vantage point's parsed output for a round; None when it did not probe then."""
        error = self._read(f"{vantage}/{round_.value}.error.txt")
        if error is not None:
            return ProbeOutput(None, (), {}, error.strip())
        name = f"{vantage}/{round_.value}.txt"
        text = self._read(name)
        return None if text is None else parse_probe_output(text, f"{PROBE_DIR}/{name}")

    def connections_after(self, node: str) -> tuple[Connection, ...] | None:
        """The TCP SYN_RECV entries of a node's IPVS connection table re-read after the probes, if
        it was (all that is read of it; streamed as syn_recv_connections is, once per node).
        Only evidence reads them (counts per VIP beside a failed handshake), so a table cut at
        MAX_KEPT_ROWS gives the counts of its first rows, and no verdict rests on them."""
        return self._derived.get(("after", node), lambda: self._syn_recv_after(node))

    def _syn_recv_after(self, node: str) -> tuple[Connection, ...] | None:
        name = f"after/{node}/ip_vs_conn.txt"
        if name not in self._files:
            return None
        path = f"{PROBE_DIR}/{name}"
        self._observer(path)
        kept = _lines_in(self._files, name, path, SYN_RECV)
        if kept.nonblank and not kept.text.strip():
            return ()
        return tcp_syn_recv(parse_proc_ip_vs_conn(kept.text, path))


def tcp_syn_recv(rows: tuple[Connection, ...]) -> tuple[Connection, ...]:
    """The TCP connections in SYN_RECV among rows (those naming SYN_RECV, see connections_in):
    the one filter behind every SYN_RECV count, before the probes and after."""
    return tuple(row for row in rows if row.protocol == "TCP" and row.state is ConnState.SYN_RECV)


@dataclass(frozen=True, slots=True)
class _Rows:
    """A connection table's rows in one state, and why they are its first ones only (or None)."""

    rows: tuple[Connection, ...]
    cut: str | None = None


def _lines_in(files: Mapping[str, str], name: str, path: str, state: str) -> KeptLines:
    """A connection table's lines naming state, in place (lines_with); a line too long for a
    table is a ParseError naming it."""
    try:
        return lines_with(files, name, state)
    except SnapshotLineError as error:
        raise ParseError(path, error.line, error.reason) from None


def _cut(kept: KeptLines, path: str, state: str) -> str | None:
    """What a cut table held past what was kept, in words for a check's evidence or error."""
    if not kept.cut:
        return None
    return (
        f"{path}: {kept.kept + kept.cut:,} lines name {state}, more than vipcheck keeps of "
        f"one state: only the first {kept.kept:,} were kept"
    )


@dataclass(frozen=True)
class Facts:
    """A whole snapshot's facts: the cluster's, every node's, and the handshake probes'."""

    cluster: ClusterFacts
    nodes: Mapping[str, NodeFacts]
    probes: ProbeFacts = field(default_factory=ProbeFacts)
    meta: Mapping[str, Any] = field(default_factory=dict)  # the snapshot's meta.json, as loaded
    # What is derived from the cluster's and the nodes' facts together (each node's expected
    # state, the judges' memos): this snapshot's, shared by observed_only's copies.
    derived: Derived = field(default_factory=Derived, repr=False, compare=False)
    # Each check's verdict on each node (node_verdict), kept once the node's tables are let go.
    verdicts: NodeVerdicts = field(default_factory=NodeVerdicts, repr=False, compare=False)
    # The one node the checks spanning nodes judge (judging_only), None for every node.
    judging: str | None = None

    def derive(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value computed once from this snapshot's facts; a second snapshot's Facts has its
        own (vipcheck diff judges two in one process)."""
        return self.derived.get(key, compute)

    def node_verdict(self, node: str, key: Hashable, compute: Callable[[], T]) -> T:
        """A check's verdict on one node (on all its Service ports at once), computed once from
        that node's facts and the cluster's, and kept after the node's facts are let go."""
        return self.verdicts.get(node, key, compute)

    def judging_only(self, node: str) -> Facts:
        """The same facts, with the checks spanning nodes judging only this one: the per-node
        pass (vipcheck.judging) runs them so to fill node_verdict, node by node."""
        return replace(self, judging=node)

    def nodes_judged(self) -> Iterator[tuple[str, NodeFacts]]:
        """The nodes a check spanning nodes judges: every node, or the one judging_only named."""
        if self.judging is None:
            yield from self.nodes.items()
        elif self.judging in self.nodes:
            yield self.judging, self.nodes[self.judging]

    def unobserved_nodes(self) -> Mapping[str, str]:
        """Each node that could not be observed, with why (asked once per item: kept)."""
        return self._unobserved

    @cached_property
    def _unobserved(self) -> Mapping[str, str]:
        reasons = {name: node.unobserved_reason for name, node in self.nodes.items()}
        return {name: reason for name, reason in reasons.items() if reason}

    def observed_only(self) -> Facts:
        """The same facts without the nodes that could not be observed."""
        nodes = {name: node for name, node in self.nodes.items() if node.observed}
        return replace(self, nodes=nodes)

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Snapshot,
        probes: ProbeLoader | None = None,
        observer: InputObserver = _unobserved_reads,
        sysctl_keys: Sequence[str] | None = None,
        cluster: ClusterFacts | None = None,
    ) -> Facts:
        """Facts of a snapshot; probes from the loader, else the snapshot's probes/ files.
        sysctl_keys: the only sysctl keys kept (`*` a glob within one name; the catalogue's
        SYSCTL_KEYS, handed down by the run), None for all of them. cluster: the snapshot's
        cluster facts, already made (and parsed) while its nodes arrived (ArrivingFacts)."""
        recorded = snapshot.probes
        if probes is None and recorded is not None:
            probes = lambda: recorded  # noqa: E731
        shared = SharedServices()
        keep = None if sysctl_keys is None else keys_named(sysctl_keys)
        return cls(
            cluster or ClusterFacts(snapshot.cluster, snapshot.cluster_error, observer),
            {
                name: NodeFacts(node, observer, shared, keep)
                for name, node in snapshot.nodes.items()
            },
            ProbeFacts(probes or _not_probed, observer),
            snapshot.meta,
        )


class ArrivingFacts:
    """A live run's facts while its nodes are still arriving (vipcheck.arrival judges each as it
    comes): the cluster's from the start, a node's from when it is added.

    Only observed nodes are added, so these facts have no unobserved node to remember
    (Facts.unobserved_nodes keeps what it first found). `facts` holds the very mapping nodes
    are added to: what its expected state keeps of each node goes with that node's facts.
    """

    def __init__(self, cluster: Mapping[str, str], sysctl_keys: Sequence[str]) -> None:
        self._nodes: dict[str, NodeFacts] = {}
        self._shared = SharedServices()
        self._sysctl_keys = keys_named(sysctl_keys)
        self.facts = Facts(ClusterFacts(cluster), self._nodes)

    def add(self, node: NodeSnapshot) -> NodeFacts:
        """The node's facts, now among these; ValueError for one not observed or already in."""
        if node.error is not None or node.name in self._nodes:
            raise ValueError(f"{node.name}: not observed, or added already")
        facts = NodeFacts(node, shared=self._shared, sysctl_keys=self._sysctl_keys)
        self._nodes[node.name] = facts
        return facts
