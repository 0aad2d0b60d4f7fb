"""A packet trace through a node's own kube-proxy nftables table: what its rules DO to a packet.

The map and chain checks compare the table with what kube-proxy should have written; this judges
its effect however it is spelled: a new connection is run through the base chains the kernel
would run it through, and every DNAT target, DROP, REJECT and masquerade it can meet is
collected, with the rules it matched as evidence.

Modelled on kube-proxy's own test tracer (`nftablesTracer`, `tracePacket`, `runPacketFlowTests`
in pkg/proxy/nftables/helpers_test.go, kubernetes/kubernetes@803d40a57714): it interprets exactly
the rule shapes kube-proxy writes, follows EVERY `numgen` branch, and treats a rule it cannot
interpret as an error ("cannot trace: ..."), never as a rule that does not match. It differs
where the kernel does, because a node's table is not a test's:

- base chains are found by hook, type and priority (NftChain.hook/priority), never by name:
  releases renamed them (filter-prerouting and filter-output-post-dnat before
  kubernetes/kubernetes@81810de635aa, filter-prerouting-pre-dnat and filter-output-pre-dnat
  after), and a chain's priority decides whether it sees the address before or after DNAT;
- the rules are nft's listing (`meta mark set meta mark | 0x00004000`), not kube-proxy's input
  (`mark set mark or 0x4000`); both spellings are read;
- after prerouting the packet goes to `input` when its (rewritten) destination is a local
  address, else to `forward` and `postrouting` (upstream runs forward then input); traffic from
  the node itself runs `output`, `postrouting`, then `input` when the destination is local;
- the mark is tracked as a number and nat-postrouting is run, so masquerade is what the
  `masquerading` chain does: the mark in the endpoint-chain layout, and the
  `hairpin-connections` set (`ct status dnat ip saddr . ip daddr . meta l4proto . th dport
  @hairpin-connections masquerade`) in the layout without endpoint chains, whose service chains
  DNAT with `dnat ip to numgen random mod N map { 0 : IP . port, ... }`;
- each numgen branch carries on as its own packet through the later chains, so a branch that
  is DNATed and then dropped says so.

Only new connections are traced (`ct state new` matches; affinity sets match the sources they
hold when listed).

A replay traces every Service port's VIPs on every node: 100 nodes x 5,000 Services is over a
million traces of tables that differ little between nodes. A TraceMemo shared by the nodes'
tracers keeps each trace with what it read beyond its packet's protocol and port and the rules'
own text: the chain objects it ran, each set lookup, local-address test and match on the
source (or on a local destination) with its result. A packet with the same protocol, port and
destination (any local destination counts as one) on another node reuses the trace when every
chain it ran is the same object there (the parser gives equal chains and sets of different
nodes one object) and every reading gives the same result there (re-read only where the set,
the local addresses, the source or the destination differ): exactly the trace a full run would
give, at the cost of the re-reads. The memo holds no tracer and no table, so a node's table can
go once its tracer is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import ip_address
from operator import is_
from typing import Any, NamedTuple, TypeVar

from vipcheck.datapath.nft_rules import (
    IS_LOCAL,
    Dispatch,
    Dnat,
    End,
    EveryBranch,
    Jump,
    MarkSet,
    Masquerade,
    Reads,
    SetIndex,
    Terminal,
    Test,
    Unreadable,
    Untraceable,
    VerdictStatement,
    compiled,
)
from vipcheck.datapath.nft_rules import terminal as verdict_of
from vipcheck.model.cluster import IPAddress
from vipcheck.model.nftables import NftChain, NftRule, NftSet, NftTable
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.untrusted import printable

MAX_JUMP_DEPTH = 16
"""nftables refuses a ruleset that jumps deeper (NFT_JUMP_STACK_SIZE); deeper here is a loop."""

T = TypeVar("T")

OUTSIDE_CLIENT = ip_address("203.0.113.2")
"""A source outside any cluster (TEST-NET-3, RFC 5737), as upstream's testExternalClient."""


class Origin(StrEnum):
    """Where a packet comes from, which decides the hooks it crosses."""

    POD = "pod"  # a pod on this node: arrives on a pod interface (prerouting)
    OUTSIDE = "outside"  # outside the node (prerouting)
    NODE = "node"  # the node itself (output)


class Verdict(StrEnum):
    """A packet's end where it is not delivered."""

    DROP = "DROP"
    REJECT = "REJECT"


@dataclass(frozen=True, slots=True)
class Packet:
    """The first packet of a new connection."""

    source: IPAddress
    destination: IPAddress
    protocol: L4Protocol
    port: int
    origin: Origin

    def __str__(self) -> str:
        to = HostPort(self.destination, self.port)
        return f"{self.protocol.value} {self.source} -> {to} from {self.origin}"


@dataclass(frozen=True, slots=True)
class Step:
    """One rule the packet matched: the chain, the rule and its line, for evidence."""

    chain: str
    rule: NftRule

    def __str__(self) -> str:
        return printable(f"{self.chain} line {self.rule.line}: {self.rule}")


@dataclass(frozen=True, slots=True)
class Branch:
    """One way the packet can go (one numgen choice at each pick): where it ends and why."""

    dnat: HostPort | None
    verdict: Verdict | None  # None: delivered
    masquerade: bool
    path: tuple[Step, ...]

    @property
    def outputs(self) -> tuple[str, ...]:
        """This branch in upstream's words: its DNAT target, then DROP or REJECT if it met one."""
        found = () if self.dnat is None else (str(self.dnat),)
        return found if self.verdict is None else (*found, self.verdict.value)

    def evidence(self) -> str:
        """The rule path, one step after the other."""
        return " -> ".join(str(step) for step in self.path) or "no rule matched"


@dataclass(frozen=True, slots=True)
class Trace:
    """Every way a packet can go through a table."""

    packet: Packet
    branches: tuple[Branch, ...]

    @property
    def targets(self) -> frozenset[HostPort]:
        """Where the packet is delivered after DNAT (branches neither dropped nor rejected)."""
        return frozenset(b.dnat for b in self.branches if b.dnat is not None and b.verdict is None)

    @property
    def verdicts(self) -> frozenset[Verdict]:
        return frozenset(b.verdict for b in self.branches if b.verdict is not None)

    @property
    def output(self) -> str:
        """upstream's tracePacket output: DNAT targets and DROP/REJECT, comma-separated."""
        seen: dict[str, None] = {}
        for branch in self.branches:
            seen.update(dict.fromkeys(branch.outputs))
        return ", ".join(seen)

    @property
    def masquerade(self) -> bool:
        """Whether a branch is masqueraded (upstream's `masq`)."""
        return any(b.masquerade for b in self.branches)

    def evidence(self) -> str:
        """Each branch's outcome with its rule path."""
        return "; ".join(
            f"[{', '.join(b.outputs) or 'delivered'}] {b.evidence()}" for b in self.branches
        )


class CannotTrace(Exception):
    """A rule the tracer cannot interpret, named with its chain and line: never skipped."""

    def __init__(self, why: str, chain: str, rule: NftRule | None) -> None:
        where = f"{chain} line {rule.line}" if rule is not None else chain
        what = f"{rule}" if rule is not None else why
        detail = "" if rule is None else f" ({why})"
        super().__init__(printable(f"cannot trace: {what} at {where}{detail}"))

    def __reduce__(self) -> tuple[Any, ...]:
        # The message is all that is kept: made again as it reads, in another process.
        return (_cannot_trace, (str(self),))


def _cannot_trace(message: str) -> CannotTrace:
    """A CannotTrace carrying a message made in another process (CannotTrace.__reduce__)."""
    error = CannotTrace.__new__(CannotTrace)
    Exception.__init__(error, message)
    return error


class _State(NamedTuple):
    """The packet as the rules see it at one point of one branch (a tuple: a replay makes
    millions)."""

    source: IPAddress
    destination: IPAddress
    protocol: str  # nft's spelling: tcp, udp, sctp
    port: int
    mark: int = 0
    dnat: HostPort | None = None
    masquerade: bool = False
    path: tuple[Step, ...] = ()

    def moved(
        self, *, source: IPAddress | None = None, destination: IPAddress | None = None
    ) -> _State:
        """The state with its source or destination changed."""
        return _State(
            self.source if source is None else source,
            self.destination if destination is None else destination,
            self.protocol,
            self.port,
            self.mark,
            self.dnat,
            self.masquerade,
            self.path,
        )


_Outcomes = list[tuple[End, _State]]


@dataclass(frozen=True, slots=True)
class _Reading:
    """One test a trace made that its memo key does not fix (Reads), with its result there."""

    state: _State  # the packet as it was when read, without its path
    result: object
    test: Test | Dispatch  # holds no tracer: entries outlive tables

    @property
    def reads(self) -> Reads:
        return self.test.reads  # type: ignore[return-value]  # only tests that read are kept


@dataclass
class _Run:
    """What one full trace read, gathered as it runs: the chain objects, by name, and readings."""

    chains: dict[str, NftChain] = field(default_factory=dict)
    readings: list[_Reading] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Memoized:
    """A trace made on one node's table, and what it read: reusable on another node's table
    where it runs the same chain objects (the parser gives equal chains and sets one object)
    and the readings the differences touch read the same."""

    packet: Packet
    branches: tuple[Branch, ...]
    hooks: tuple[tuple[str, ...], ...]  # the base chains' names on each hook
    chain_names: tuple[str, ...]
    chains: tuple[NftChain, ...]
    sets: tuple[tuple[str, NftSet | None, tuple[_Reading, ...]], ...]
    local: frozenset[IPAddress]
    local_readings: tuple[_Reading, ...]
    source_readings: tuple[_Reading, ...]
    destination_readings: tuple[_Reading, ...]  # before any DNAT: the packet's destination

    @classmethod
    def of(cls, tracer: Tracer, packet: Packet, trace: Trace, run: _Run) -> _Memoized:
        by_set: dict[str, list[_Reading]] = {}
        for reading in run.readings:
            if reading.reads.set_name is not None:
                by_set.setdefault(reading.reads.set_name, []).append(reading)
        sets = tracer.table.sets
        readings = run.readings
        return cls(
            packet,
            trace.branches,
            tracer.hooks,
            tuple(run.chains),
            tuple(run.chains.values()),
            tuple((name, sets.get(name), tuple(found)) for name, found in by_set.items()),
            tracer.local,
            tuple(r for r in readings if r.reads.local),
            tuple(r for r in readings if r.reads.source),
            tuple(r for r in readings if r.reads.destination and r.state.dnat is None),
        )

    def holds(self, tracer: Tracer, packet: Packet) -> bool:
        """Whether this trace is the one the tracer would give the packet."""
        if tracer.hooks is not self.hooks:
            return False
        if not all(map(is_, map(tracer.table.chains.get, self.chain_names), self.chains)):
            return False
        sets = tracer.table.sets
        rereads = [
            r for name, kept, found in self.sets if sets.get(name) is not kept for r in found
        ]
        if tracer.local is not self.local:
            rereads += self.local_readings
        source = packet.source if packet.source != self.packet.source else None
        destination = None
        if packet.destination != self.packet.destination:
            destination = packet.destination
        if source is not None:
            rereads += self.source_readings
        if destination is not None:
            rereads += self.destination_readings
        for reading in rereads:
            state = reading.state
            if source is not None:
                state = state.moved(source=source)
            if destination is not None and state.dnat is None:
                state = state.moved(destination=destination)
            try:
                if reading.test(tracer, state) != reading.result:
                    return False
            except Untraceable:
                return False
        return True


HOOKS = ("prerouting", "input", "forward", "output", "postrouting")


class TraceMemo:
    """Traces shared by the tracers of one snapshot's nodes (see the module docstring). It
    holds no table: a node's table can go once its tracer is done."""

    ENTRIES_PER_KEY = 8

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], list[_Memoized]] = {}
        self._shared: dict[object, Any] = {}
        self._indexes: dict[int, tuple[NftSet, SetIndex]] = {}  # by id, the set kept alive

    def index(self, nft_set: NftSet) -> SetIndex:
        """The set's index, made once for every table holding this set object."""
        kept = self._indexes.get(id(nft_set))
        if kept is None or kept[0] is not nft_set:
            kept = self._indexes[id(nft_set)] = (nft_set, SetIndex(nft_set.elements))
        return kept[1]

    def shared(self, value: T) -> T:
        """The equal value an earlier tracer gave (its local addresses, its hooks' chain names),
        so entries compare them by identity."""
        return self._shared.setdefault(value, value)  # type: ignore[no-any-return]

    @staticmethod
    def key(tracer: Tracer, packet: Packet) -> tuple[object, ...]:
        """What a trace is kept under: a local destination counts as any other local one."""
        where = "local" if packet.destination in tracer.local else packet.destination
        return (packet.origin, packet.protocol, packet.port, packet.source.version, where)

    def find(self, tracer: Tracer, packet: Packet) -> Trace | None:
        for entry in self._entries.get(self.key(tracer, packet), ()):
            if entry.holds(tracer, packet):
                return Trace(packet, entry.branches)
        return None

    def keep(self, tracer: Tracer, packet: Packet, trace: Trace, run: _Run) -> None:
        entries = self._entries.setdefault(self.key(tracer, packet), [])
        entries.insert(0, _Memoized.of(tracer, packet, trace, run))
        del entries[self.ENTRIES_PER_KEY :]


class Tracer:
    """One table, ready to trace many packets: its base chains by hook and its sets indexed,
    each once (a node's table holds thousands of elements, and every Service port is traced).
    With a TraceMemo shared by the snapshot's tracers, a trace another node already made is
    reused where it reads the same here."""

    def __init__(
        self,
        table: NftTable,
        local_addresses: Iterable[IPAddress],
        memo: TraceMemo | None = None,
    ) -> None:
        self.table = table
        local = frozenset(local_addresses) | {ip_address("127.0.0.1"), ip_address("::1")}
        self._hooks = {hook: base_chains(table, hook) for hook in HOOKS}
        hooks = tuple(tuple(chain.name for chain in self._hooks[hook]) for hook in HOOKS)
        self.local, self.hooks = (
            (local, hooks) if memo is None else (memo.shared(local), memo.shared(hooks))
        )
        self._indexes: dict[str, SetIndex] = {}
        self.memo = memo
        self.run: _Run | None = None  # what the trace under way reads, when memoized

    def trace(self, packet: Packet) -> Trace:
        """Every way the packet goes through the table's base chains (CannotTrace on a rule it
        cannot interpret)."""
        if self.memo is None:
            return self._trace(packet)
        found = self.memo.find(self, packet)
        if found is not None:
            return found
        self.run = _Run()
        try:
            traced = self._trace(packet)
            self.memo.keep(self, packet, traced, self.run)
            return traced
        finally:
            self.run = None

    def _trace(self, packet: Packet) -> Trace:
        start = _State(
            packet.source, packet.destination, packet.protocol.value.lower(), packet.port
        )
        branches: list[Branch] = []
        for end, state in _through_hooks(self, packet.origin, start):
            verdict = {End.DROP: Verdict.DROP, End.REJECT: Verdict.REJECT}.get(end)
            branches.append(Branch(state.dnat, verdict, state.masquerade, state.path))
        return Trace(packet, tuple(branches))

    def sends_to(self, vip: HostPort, source: IPAddress = OUTSIDE_CLIENT) -> frozenset[HostPort]:
        """Where new TCP connections from outside the node to the VIP go: the DNAT targets of
        the branches neither dropped nor rejected (none for a VIP the table does not serve)."""
        packet = Packet(source, vip.address, L4Protocol.TCP, vip.port, Origin.OUTSIDE)
        return self.trace(packet).targets

    def test(self, test: Test | Dispatch, state: _State) -> Any:
        """test(self, state), kept with what it read when the trace is memoized."""
        result = test(self, state)
        if self.run is not None and test.reads is not None:
            self.run.readings.append(_Reading(state._replace(path=()), result, test))
        return result

    def is_map(self, name: str) -> bool:
        found = self.table.sets.get(name)
        return found is not None and found.is_map

    def base_chains(self, hook: str) -> tuple[NftChain, ...]:
        return self._hooks[hook]

    def index(self, name: str) -> SetIndex | None:
        found = self._indexes.get(name)
        if found is None and name in self.table.sets:
            nft_set = self.table.sets[name]
            found = SetIndex(nft_set.elements) if self.memo is None else self.memo.index(nft_set)
            self._indexes[name] = found
        return found


def trace(table: NftTable, packet: Packet, local_addresses: Iterable[IPAddress]) -> Trace:
    """Every way the packet goes through the table (Tracer.trace, for one packet).
    local_addresses: the node's own addresses (`fib daddr type local`); loopback is local."""
    return Tracer(table, local_addresses).trace(packet)


def sends_to(
    table: NftTable,
    vip: HostPort,
    local_addresses: Iterable[IPAddress] = (),
    source: IPAddress = OUTSIDE_CLIENT,
) -> frozenset[HostPort]:
    """Where the table sends new TCP connections from outside the node to the VIP (Tracer.sends_to,
    for one VIP; keep a Tracer for many)."""
    return Tracer(table, local_addresses).sends_to(vip, source)


def base_chains(table: NftTable, hook: str) -> tuple[NftChain, ...]:
    """The table's base chains on one hook, in the order the kernel runs them (priority)."""
    found = [c for c in table.chains.values() if c.hook == hook]
    return tuple(sorted(found, key=lambda c: (c.priority or 0, c.name)))


def _through_hooks(context: Tracer, origin: Origin, start: _State) -> _Outcomes:
    first = "output" if origin is Origin.NODE else "prerouting"
    finished: _Outcomes = []
    for end, state in _run_hook(context, first, start):
        if end in (End.DROP, End.REJECT):
            finished.append((end, state))
            continue
        local = context.test(IS_LOCAL, state)
        if origin is Origin.NODE:
            after = ("postrouting", "input") if local else ("postrouting",)
        else:
            after = ("input",) if local else ("forward", "postrouting")
        finished += _run_hooks(context, after, state)
    return finished


def _run_hooks(context: Tracer, hooks: tuple[str, ...], state: _State) -> _Outcomes:
    states: _Outcomes = [(End.ACCEPT, state)]
    for hook in hooks:
        following: _Outcomes = []
        for end, current in states:
            if end in (End.DROP, End.REJECT):
                following.append((end, current))
            else:
                following += _run_hook(context, hook, current)
        states = following
    return states


def _run_hook(context: Tracer, hook: str, state: _State) -> _Outcomes:
    """The hook's base chains in priority order, each branch going on where it is accepted."""
    states: _Outcomes = [(End.ACCEPT, state)]
    for chain in context.base_chains(hook):
        following: _Outcomes = []
        for end, current in states:
            if end in (End.DROP, End.REJECT):
                following.append((end, current))
                continue
            for chain_end, after in _run_chain(context, chain.name, current, depth=0):
                done = chain_end if chain_end in (End.DROP, End.REJECT) else End.ACCEPT
                following.append((done, after))
        states = following
    return states


def _run_chain(context: Tracer, name: str, state: _State, depth: int) -> _Outcomes:
    """Every outcome of running one chain: CONTINUE ones return to the caller."""
    chain = context.table.chains.get(name)
    if chain is None:
        raise CannotTrace(f"no chain {name!r} in the table", name, None)
    if context.run is not None:
        context.run.chains[name] = chain
    if depth > MAX_JUMP_DEPTH:
        raise CannotTrace(f"jumps deeper than {MAX_JUMP_DEPTH}", name, None)
    running: list[_State] = [state]
    finished: _Outcomes = []
    for rule in chain.rules:
        following: list[_State] = []
        for current in running:
            for end, after, goes_on in _run_rule(context, chain.name, rule, current, depth):
                if goes_on:
                    following.append(after)
                else:
                    finished.append((end, after))
        running = following
        if not running:
            break
    return finished + [(End.CONTINUE, s) for s in running]


# One outcome of a rule: (how it ended, the state, whether the chain goes on to its next rule).
_RuleOutcomes = list[tuple[End, _State, bool]]


def _run_rule(
    context: Tracer, chain: str, rule: NftRule, state: _State, depth: int
) -> _RuleOutcomes:
    """The rule's outcomes: a test that fails lets the chain go on, unchanged."""
    at = Step(chain, rule)
    parts = compiled(rule.text)
    try:
        for step in parts.steps:
            if isinstance(step, MarkSet):
                state = state._replace(mark=step.apply(state.mark), path=(*state.path, at))
            elif not context.test(step, state):
                return [(End.CONTINUE, state, True)]
        if parts.terminal is None:
            return [(End.CONTINUE, state, True)]
        return _terminal(context, at, parts.terminal, state, depth)
    except Untraceable as error:
        raise CannotTrace(str(error), chain, rule) from None


def _terminal(
    context: Tracer, at: Step, terminal: Terminal, state: _State, depth: int
) -> _RuleOutcomes:
    """The statement that ends the rule at `at`, run."""
    stepped = state._replace(path=(*state.path, at))
    outcomes: _RuleOutcomes
    match terminal:
        case VerdictStatement(end):
            outcomes = [(end, stepped, False)]
        case Jump(goto, target):
            outcomes = [
                # jump: on to our next rule; goto: back to our caller
                (end, after, end is End.CONTINUE and not goto)
                for end, after in _run_chain(context, target, stepped, depth + 1)
            ]
        case Dispatch():
            element = context.test(terminal, state)
            if element is None or element.value is None:
                outcomes = [(End.CONTINUE, state, True)]
            else:
                outcomes = _terminal(context, at, verdict_of(element.value), state, depth)
        case EveryBranch(branches):
            outcomes = [
                outcome
                for branch in branches
                for outcome in _terminal(context, at, branch, state, depth)
            ]
        case Dnat(targets):
            outcomes = [
                (End.ACCEPT, stepped._replace(destination=t.address, port=t.port, dnat=t), False)
                for t in targets
            ]
        case Masquerade():
            outcomes = [(End.ACCEPT, stepped._replace(masquerade=True), False)]
        case Unreadable(why):
            raise Untraceable(why)
    return outcomes
