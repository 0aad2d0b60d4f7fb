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
own text: the chains it ran (by value), each set lookup, local-address test and match on the
source (or on a local destination) with its result. A packet with the same protocol, port and
destination (any local destination counts as one) on another node reuses the trace when every
chain it ran is equal there and every reading gives the same result there (re-read only where
the set, the local addresses, the source or the destination differ): exactly the trace a full
run would give, at the cost of the re-reads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from ipaddress import ip_address, ip_network
from typing import Any, Literal

from vipcheck.model.cluster import IPAddress
from vipcheck.model.nftables import NftChain, NftElement, NftRule, NftTable
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.untrusted import printable

MAX_JUMP_DEPTH = 16
"""nftables refuses a ruleset that jumps deeper (NFT_JUMP_STACK_SIZE); deeper here is a loop."""

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


class _End(StrEnum):
    """How running a chain ended."""

    CONTINUE = "continue"  # fell off the end, or `return`: back to the caller
    ACCEPT = "accept"  # accept, or a NAT statement: this base chain is done
    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class _State:
    """The packet as the rules see it at one point of one branch."""

    source: IPAddress
    destination: IPAddress
    protocol: str  # nft's spelling: tcp, udp, sctp
    port: int
    mark: int = 0
    dnat: HostPort | None = None
    masquerade: bool = False
    path: tuple[Step, ...] = field(default=())

    def step(self, chain: str, rule: NftRule) -> _State:
        return self.moved(path=(*self.path, Step(chain, rule)))

    def moved(
        self,
        *,
        source: IPAddress | None = None,
        destination: IPAddress | None = None,
        path: tuple[Step, ...] | None = None,
    ) -> _State:
        """The state with these changed: dataclasses.replace, at a fraction of its cost (a
        replay makes millions)."""
        return _State(
            self.source if source is None else source,
            self.destination if destination is None else destination,
            self.protocol,
            self.port,
            self.mark,
            self.dnat,
            self.masquerade,
            self.path if path is None else path,
        )


_Outcomes = list[tuple[_End, _State]]


_Value = str | IPAddress | int


class _SetIndex:
    """A set's or map's elements by exact key, and those keyed by a prefix or range apart."""

    def __init__(self, elements: Iterable[NftElement]) -> None:
        self.exact: dict[tuple[_Value, ...], NftElement] = {}
        self.ranges: list[NftElement] = []
        for element in elements:
            key = tuple(_exact(component) for component in element.key)
            if any(part is None for part in key):
                self.ranges.append(element)
            else:
                self.exact.setdefault(tuple(p for p in key if p is not None), element)

    def get(self, values: tuple[_Value, ...]) -> NftElement | None:
        found = self.exact.get(values)
        return found if found is not None else _lookup(self.ranges, values)


@dataclass(frozen=True, slots=True)
class _Reading:
    """One thing a trace read that its memo key does not fix, with its result there."""

    state: _State  # the packet as it was when read
    result: object
    evaluate: Callable[[Tracer, _State], object]
    set_name: str | None = None
    reads_source: bool = False
    reads_destination: bool = False
    reads_local: bool = False


@dataclass
class _Run:
    """What one full trace read, gathered as it runs."""

    chains: dict[str, None] = field(default_factory=dict)
    readings: list[_Reading] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Memoized:
    """A trace made by one tracer (origin), and what it read: reusable by another tracer where
    the chains it ran are equal and the readings the differences touch read the same."""

    packet: Packet
    branches: tuple[Branch, ...]
    origin: int
    chains: frozenset[str]
    by_set: Mapping[str, tuple[_Reading, ...]]
    local_readings: tuple[_Reading, ...]
    source_readings: tuple[_Reading, ...]
    destination_readings: tuple[_Reading, ...]  # before any DNAT: the packet's destination

    @classmethod
    def of(cls, packet: Packet, trace: Trace, origin: int, run: _Run) -> _Memoized:
        by_set: dict[str, list[_Reading]] = {}
        for reading in run.readings:
            if reading.set_name is not None:
                by_set.setdefault(reading.set_name, []).append(reading)
        return cls(
            packet,
            trace.branches,
            origin,
            frozenset(run.chains),
            {name: tuple(found) for name, found in by_set.items()},
            tuple(r for r in run.readings if r.reads_local),
            tuple(r for r in run.readings if r.reads_source),
            tuple(r for r in run.readings if r.reads_destination and r.state.dnat is None),
        )

    def holds(self, tracer: Tracer, packet: Packet) -> bool:
        """Whether this trace is the one the tracer would give the packet."""
        origin = self.origin
        if not tracer.same_hooks(origin):
            return False
        if not all(tracer.same("chains", origin, name) for name in self.chains):
            return False
        rereads = [
            reading
            for name, readings in self.by_set.items()
            if not tracer.same("sets", origin, name)
            for reading in readings
        ]
        if tracer.local != tracer.memo_tracer(origin).local:
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
                if reading.evaluate(tracer, state) != reading.result:
                    return False
            except CannotTrace:
                return False
        return True


HOOKS = ("prerouting", "input", "forward", "output", "postrouting")


class TraceMemo:
    """Traces shared by the tracers of one snapshot's nodes (see the module docstring)."""

    ENTRIES_PER_KEY = 8

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], list[_Memoized]] = {}
        self.tracers: list[Tracer] = []

    def join(self, tracer: Tracer) -> int:
        self.tracers.append(tracer)
        return len(self.tracers) - 1

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
        entries.insert(0, _Memoized.of(packet, trace, tracer.token, run))
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
        self.local = frozenset(local_addresses) | {ip_address("127.0.0.1"), ip_address("::1")}
        self._hooks: dict[str, tuple[NftChain, ...]] = {}
        self._indexes: dict[str, _SetIndex] = {}
        self.memo = memo
        self.token = -1 if memo is None else memo.join(self)
        self.run: _Run | None = None  # what the trace under way reads, when memoized
        self._same: dict[tuple[str, int, str], bool] = {}

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
            verdict = {_End.DROP: Verdict.DROP, _End.REJECT: Verdict.REJECT}.get(end)
            branches.append(Branch(state.dnat, verdict, state.masquerade, state.path))
        return Trace(packet, tuple(branches))

    def sends_to(self, vip: HostPort, source: IPAddress = OUTSIDE_CLIENT) -> frozenset[HostPort]:
        """Where new TCP connections from outside the node to the VIP go: the DNAT targets of
        the branches neither dropped nor rejected (none for a VIP the table does not serve)."""
        packet = Packet(source, vip.address, L4Protocol.TCP, vip.port, Origin.OUTSIDE)
        return self.trace(packet).targets

    def read(self, state: _State, evaluate: Callable[[Tracer, _State], object], **what: Any) -> Any:
        """evaluate(self, state), kept with what it read when the trace is memoized."""
        result = evaluate(self, state)
        if self.run is not None:
            self.run.readings.append(_Reading(state, result, evaluate, **what))
        return result

    def memo_tracer(self, token: int) -> Tracer:
        """Another tracer of this one's memo."""
        assert self.memo is not None  # only memoized tracers compare themselves
        return self.memo.tracers[token]

    def same(self, kind: Literal["chains", "sets"], origin: int, name: str) -> bool:
        """Whether the named chain or set is equal (by value) here and in another tracer's
        table, each compared once per pair of tracers."""
        key = (kind, origin, name)
        found = self._same.get(key)
        if found is None:
            mine = getattr(self.table, kind).get(name)
            theirs = getattr(self.memo_tracer(origin).table, kind).get(name)
            found = self._same[key] = mine is theirs or mine == theirs
        return found

    def same_hooks(self, origin: int) -> bool:
        """Whether both tables have the same base chains on every hook (by name; each chain
        run is compared by value)."""
        found = self._same.get(("hooks", origin, ""))
        if found is None:
            other = self.memo_tracer(origin)
            found = all(
                [c.name for c in self.base_chains(h)] == [c.name for c in other.base_chains(h)]
                for h in HOOKS
            )
            self._same[("hooks", origin, "")] = found
        return found

    def base_chains(self, hook: str) -> tuple[NftChain, ...]:
        found = self._hooks.get(hook)
        if found is None:
            found = self._hooks[hook] = base_chains(self.table, hook)
        return found

    def index(self, name: str) -> _SetIndex | None:
        found = self._indexes.get(name)
        if found is None and name in self.table.sets:
            found = self._indexes[name] = _SetIndex(self.table.sets[name].elements)
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
        if end in (_End.DROP, _End.REJECT):
            finished.append((end, state))
            continue
        local = context.read(state, _is_local, reads_destination=True, reads_local=True)
        if origin is Origin.NODE:
            after = ("postrouting", "input") if local else ("postrouting",)
        else:
            after = ("input",) if local else ("forward", "postrouting")
        finished += _run_hooks(context, after, state)
    return finished


def _is_local(context: Tracer, state: _State) -> bool:
    return state.destination in context.local


def _run_hooks(context: Tracer, hooks: tuple[str, ...], state: _State) -> _Outcomes:
    states: _Outcomes = [(_End.ACCEPT, state)]
    for hook in hooks:
        following: _Outcomes = []
        for end, current in states:
            if end in (_End.DROP, _End.REJECT):
                following.append((end, current))
            else:
                following += _run_hook(context, hook, current)
        states = following
    return states


def _run_hook(context: Tracer, hook: str, state: _State) -> _Outcomes:
    """The hook's base chains in priority order, each branch going on where it is accepted."""
    states: _Outcomes = [(_End.ACCEPT, state)]
    for chain in context.base_chains(hook):
        following: _Outcomes = []
        for end, current in states:
            if end in (_End.DROP, _End.REJECT):
                following.append((end, current))
                continue
            for chain_end, after in _run_chain(context, chain.name, current, depth=0):
                done = chain_end if chain_end in (_End.DROP, _End.REJECT) else _End.ACCEPT
                following.append((done, after))
        states = following
    return states


def _run_chain(context: Tracer, name: str, state: _State, depth: int) -> _Outcomes:
    """Every outcome of running one chain: CONTINUE ones return to the caller."""
    chain = context.table.chains.get(name)
    if context.run is not None:
        context.run.chains[name] = None
    if chain is None:
        raise CannotTrace(f"no chain {name!r} in the table", name, None)
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
    return finished + [(_End.CONTINUE, s) for s in running]


# One outcome of a rule: (how it ended, the state, whether the chain goes on to its next rule).
_RuleOutcomes = list[tuple[_End, _State, bool]]

_COMMENT = re.compile(r' ?comment "(?:[^"\\]|\\.)*"$')


def _run_rule(
    context: Tracer, chain: str, rule: NftRule, state: _State, depth: int
) -> _RuleOutcomes:
    text = _COMMENT.sub("", rule.text).strip()
    return _Interpreter(context, chain, rule, depth).run(text, state)


@dataclass(frozen=True, slots=True)
class _Interpreter:
    """Runs one rule's text, expression after expression, for one packet state."""

    context: Tracer
    chain: str
    rule: NftRule
    depth: int

    def fail(self, why: str) -> CannotTrace:
        return CannotTrace(why, self.chain, self.rule)

    def run(self, text: str, state: _State) -> _RuleOutcomes:
        """The rule's outcomes: a match that fails lets the chain go on, unchanged."""
        rest = text
        while rest:
            rest = rest.lstrip()
            matched = self.match(rest, state)
            if matched is not None:
                ok, rest = matched
                if not ok:
                    return [(_End.CONTINUE, state, True)]
                continue
            changed = self.change(rest, state)
            if changed is not None:
                state, rest = changed
                continue
            return self.verdict(rest, state)
        return [(_End.CONTINUE, state, True)]

    # Matches: (whether the packet matches, the rest of the rule), None if not a match.

    def match(self, text: str, state: _State) -> tuple[bool, str] | None:
        for pattern, test in self._matchers():
            found = pattern.match(text)
            if found is not None:
                return test(found, state), text[found.end() :]
        return None

    def _matchers(
        self,
    ) -> tuple[tuple[re.Pattern[str], Callable[[re.Match[str], _State], bool]], ...]:
        return (
            (_CT_STATE, lambda m, s: _negated(m, "new" in _words(m["values"]))),
            (_CT_STATUS_DNAT, lambda m, s: _negated(m, s.dnat is not None)),
            (_TUPLE_LOOKUP, self._tuple_lookup),
            (_ADDRESS_LOOKUP, self._address_lookup),
            (_ADDRESS_SET, lambda m, s: self._address_match(m, s, "items")),
            (_ADDRESS, lambda m, s: self._address_match(m, s, "value")),
            (_FIB_LOCAL, self._fib_local),
            (_DPORT, lambda m, s: _negated(m, m["proto"] == s.protocol and _port_in(s, m))),
            (_L4PROTO, lambda m, s: _negated(m, s.protocol in _words(m["values"]))),
            (_MARK_TEST, lambda m, s: _mark_test(m, s.mark)),
        )

    def _tuple_lookup(self, found: re.Match[str], state: _State) -> bool:
        fields = found["fields"]

        def evaluate(context: Tracer, state: _State) -> bool:
            values = _tuple_values(fields, state)
            if values is None:
                raise self.fail(f"unknown key {fields!r}")
            element = self.lookup(found["set"], values, want_map=False, context=context)
            return _negated(found, element is not None)

        return bool(self.context.read(state, evaluate, set_name=found["set"], **_reads(fields)))

    def _address_lookup(self, found: re.Match[str], state: _State) -> bool:
        def evaluate(context: Tracer, state: _State) -> bool:
            values = (_address(found, state),)
            element = self.lookup(found["set"], values, want_map=False, context=context)
            return _negated(found, element is not None)

        reads = _reads(found["field"])
        return bool(self.context.read(state, evaluate, set_name=found["set"], **reads))

    def _address_match(self, found: re.Match[str], state: _State, group: str) -> bool:
        def evaluate(_: Tracer, state: _State) -> bool:
            return _negated(found, _in_any(_address(found, state), found[group]))

        return bool(self.context.read(state, evaluate, **_reads(found["field"])))

    def _fib_local(self, found: re.Match[str], state: _State) -> bool:
        def evaluate(context: Tracer, state: _State) -> bool:
            return _negated(found, _fib_address(found, state) in context.local)

        reads = _reads(found["which"])
        return bool(self.context.read(state, evaluate, reads_local=True, **reads))

    # Statements that change the packet or the branch and let the rule go on.

    def change(self, text: str, state: _State) -> tuple[_State, str] | None:
        found = _MARK_SET.match(text)
        if found is not None:
            value = int(found["value"], 0)
            operator = found["op"]
            if operator in ("|", "or"):
                mark = state.mark | value
            elif operator in ("^", "xor"):
                mark = state.mark ^ value
            else:
                mark = state.mark & value
            return replace(state, mark=mark).step(self.chain, self.rule), text[found.end() :]
        for ignored in (_COUNTER, _UPDATE):
            found = ignored.match(text)
            if found is not None:
                return state, text[found.end() :]
        return None

    # Verdicts and terminal statements: the end of the rule.

    def verdict(self, text: str, state: _State) -> _RuleOutcomes:
        """The statement that ends the rule, run; a shape kube-proxy does not write: CannotTrace."""
        for pattern, run in self._terminals():
            found = pattern.fullmatch(text)
            if found is not None:
                return run(found, state)
        raise self.fail(f"not a rule shape kube-proxy writes: {text!r}")

    def _terminals(
        self,
    ) -> tuple[tuple[re.Pattern[str], Callable[[re.Match[str], _State], _RuleOutcomes]], ...]:
        here = self.step
        return (
            (_VERDICT, lambda m, s: [(_VERDICTS[m["word"]], here(s), False)]),
            (_JUMP, lambda m, s: self.jump(m["kind"], m["chain"], here(s))),
            (_VMAP, self.dispatch),
            (_NUMGEN_VMAP, lambda m, s: self.every_branch(m["entries"], s)),
            (_DNAT_MAP, lambda m, s: [self.dnat(v, here(s)) for v in _map_values(m["entries"])]),
            (_DNAT, lambda m, s: [self.dnat(m["target"], here(s))]),
            (_MASQUERADE, lambda m, s: [(_End.ACCEPT, replace(here(s), masquerade=True), False)]),
        )

    def step(self, state: _State) -> _State:
        return state.step(self.chain, self.rule)

    def jump(self, kind: str, target: str, state: _State) -> _RuleOutcomes:
        outcomes: _RuleOutcomes = []
        for end, after in _run_chain(self.context, target, state, self.depth + 1):
            if end is not _End.CONTINUE:
                outcomes.append((end, after, False))
            elif kind == "jump":
                outcomes.append((end, after, True))
            else:
                outcomes.append((_End.CONTINUE, after, False))  # goto: back to our caller
        return outcomes

    def dispatch(self, found: re.Match[str], state: _State) -> _RuleOutcomes:
        """A verdict map lookup: the matching element's verdict runs; none: the rule is done."""
        fields = found["fields"]

        def evaluate(context: Tracer, state: _State) -> NftElement | None:
            values = _tuple_values(fields, state)
            if values is None:
                raise self.fail(f"unknown key {fields!r}")
            return self.lookup(found["map"], values, want_map=True, context=context)

        element = self.context.read(state, evaluate, set_name=found["map"], **_reads(fields))
        if element is None or element.value is None:
            return [(_End.CONTINUE, state, True)]
        return self.verdict(element.value, state)

    def every_branch(self, entries: str, state: _State) -> _RuleOutcomes:
        """`numgen random mod N vmap { 0 : goto A, ... }`: every endpoint, not one at random."""
        outcomes: _RuleOutcomes = []
        for value in _map_values(entries):
            outcomes += self.verdict(value, state)
        return outcomes

    def dnat(self, target: str, state: _State) -> tuple[_End, _State, bool]:
        """A DNAT: the packet's destination is rewritten, and NAT ends the chain."""
        to = _host_port(target)
        if to is None:
            raise self.fail(f"unreadable DNAT target {target!r}")
        moved = replace(state, destination=to.address, port=to.port, dnat=to)
        return (_End.ACCEPT, moved, False)

    def lookup(
        self, name: str, values: tuple[_Value, ...], *, want_map: bool, context: Tracer
    ) -> NftElement | None:
        """The element of the named set or map the values match, if any, in context's table."""
        index = context.index(name)
        if index is None:
            raise self.fail(f"no set or map {name!r} in the table")
        if want_map and not context.table.sets[name].is_map:
            raise self.fail(f"{name!r} is a set, not a map")
        return index.get(values)


# The rule shapes, as nft lists them and as kube-proxy writes them. Each `neg` group is `!= `.
_ADDR_FIELD = r"(?P<field>ip6? (?:saddr|daddr))"
_KEY_FIELD = r"(?:ip6? (?:saddr|daddr)|meta l4proto|th dport)"
_CT_STATE = re.compile(r"ct state (?P<neg>!= )?(?P<values>\{[^}]*\}|[a-z,]+)")
_CT_STATUS_DNAT = re.compile(r"ct status (?P<neg>!= )?dnat")
_TUPLE_LOOKUP = re.compile(
    rf"(?P<fields>{_KEY_FIELD}(?: \. {_KEY_FIELD})+) (?P<neg>!= )?@(?P<set>\S+)"
)
_ADDRESS_LOOKUP = re.compile(_ADDR_FIELD + r" (?P<neg>!= )?@(?P<set>\S+)")
_ADDRESS_SET = re.compile(_ADDR_FIELD + r" (?P<neg>!= )?\{ ?(?P<items>[^}]*?) ?\}")
_ADDRESS = re.compile(
    _ADDR_FIELD + r" (?P<neg>!= )?(?P<value>[0-9a-fA-F:][0-9a-fA-F.:/\-]*)(?= |$)"
)
_FIB_LOCAL = re.compile(r"fib (?P<which>saddr|daddr) type (?P<neg>!= )?local")
_DPORT = re.compile(r"(?P<proto>tcp|udp|sctp) dport (?P<neg>!= )?(?P<port>\d+(?:-\d+)?)")
_L4PROTO = re.compile(r"meta l4proto (?P<neg>!= )?(?P<values>\{[^}]*\}|tcp|udp|sctp)(?= |$)")
_MARK_TEST = re.compile(
    r"(?:meta )?mark (?:&|and) (?P<mask>0x[0-9a-f]+|\d+) (?P<op>==|!=) (?P<value>0x[0-9a-f]+|\d+)"
)
_MARK_SET = re.compile(
    r"(?:meta )?mark set (?:meta )?mark (?P<op>\||or|\^|xor|&|and) (?P<value>0x[0-9a-f]+|\d+)"
)
_COUNTER = re.compile(r"counter(?: packets \d+ bytes \d+)?(?= |$)")
_UPDATE = re.compile(r"update @\S+ \{ [^}]* \}")
_VERDICT = re.compile(r"(?P<word>accept|drop|return|reject)(?: with .*)?")
_JUMP = re.compile(r"(?P<kind>jump|goto) (?P<chain>\S+)")
_VMAP = re.compile(rf"(?P<fields>{_KEY_FIELD}(?: \. {_KEY_FIELD})*) vmap @(?P<map>\S+)")
_NUMGEN_VMAP = re.compile(r"numgen random mod \d+ vmap \{ ?(?P<entries>.*?) ?\}")
_DNAT_MAP = re.compile(r"dnat (?:ip6? )?to numgen random mod \d+ map \{ ?(?P<entries>.*?) ?\}")
_DNAT = re.compile(r"dnat (?:ip6? )?to (?P<target>\S+)")
_MASQUERADE = re.compile(r"masquerade(?: fully-random)?")
# `return` goes back to the caller; accept ends the base chain.
_VERDICTS = {"accept": _End.ACCEPT, "return": _End.CONTINUE, "drop": _End.DROP}
_VERDICTS["reject"] = _End.REJECT

# What a concatenated key's field reads from the packet.
_FIELDS: Mapping[str, Callable[[_State], str | IPAddress | int]] = {
    "ip daddr": lambda s: s.destination,
    "ip6 daddr": lambda s: s.destination,
    "ip saddr": lambda s: s.source,
    "ip6 saddr": lambda s: s.source,
    "meta l4proto": lambda s: s.protocol,
    "th dport": lambda s: s.port,
}


def _reads(fields: str) -> dict[str, bool]:
    """Which of the packet's addresses a match or key reads (`ip saddr . ip daddr . ...`)."""
    return {"reads_source": "saddr" in fields, "reads_destination": "daddr" in fields}


def _tuple_values(fields: str, state: _State) -> tuple[_Value, ...] | None:
    getters = _getters(fields)
    return None if getters is None else tuple(get(state) for get in getters)


@functools.cache
def _getters(fields: str) -> tuple[Callable[[_State], _Value], ...] | None:
    """What each field of a concatenated key reads, None if one is unknown (a rule's text is
    read once, not once per packet)."""
    names = [name.strip() for name in fields.split(" . ")]
    if any(name not in _FIELDS for name in names):
        return None
    return tuple(_FIELDS[name] for name in names)


def _lookup(elements: Iterable[NftElement], values: tuple[_Value, ...]) -> NftElement | None:
    for element in elements:
        if len(element.key) == len(values) and all(
            _component_matches(key, value) for key, value in zip(element.key, values, strict=True)
        ):
            return element
    return None


def _exact(component: str) -> _Value | None:
    """A key component as the packet's value it equals (address, port, protocol name), or None
    for a prefix or range, which only a scan can match."""
    if "/" in component or "-" in component:
        return None
    if component.isdigit():
        return int(component)
    try:
        return ip_address(component)
    except ValueError:
        return component


def _component_matches(key: str, value: str | IPAddress | int) -> bool:
    """One key component (`10.0.0.0/8`, `1.2.3.4-1.2.3.9`, `tcp`, `80`, `1-100`) against a value."""
    if isinstance(value, str):
        return key == value
    if isinstance(value, int):
        low, _, high = key.partition("-")
        try:
            return int(low) <= value <= int(high or low)
        except ValueError:
            return False
    return _in_any(value, key)


def _in_any(address: IPAddress, items: str) -> bool:
    """Whether the address is one of a comma-separated list of addresses, prefixes or ranges."""
    for item in (part.strip() for part in items.split(",")):
        try:
            if "/" in item:
                if address in ip_network(item, strict=False):
                    return True
            elif "-" in item:
                low, high = (ip_address(end) for end in item.split("-", 1))
                if low.version == address.version and low <= address <= high:  # type: ignore[operator]
                    return True
            elif ip_address(item) == address:
                return True
        except ValueError:
            continue
    return False


def _negated(found: re.Match[str], result: bool) -> bool:
    return not result if found["neg"] else result


def _words(values: str) -> set[str]:
    return {word.strip() for word in values.strip("{} ").split(",")}


def _address(found: re.Match[str], state: _State) -> IPAddress:
    return state.source if found["field"].endswith("saddr") else state.destination


def _fib_address(found: re.Match[str], state: _State) -> IPAddress:
    return state.source if found["which"] == "saddr" else state.destination


def _port_in(state: _State, found: re.Match[str]) -> bool:
    return _component_matches(found["port"], state.port)


def _mark_test(found: re.Match[str], mark: int) -> bool:
    masked = mark & int(found["mask"], 0)
    equal = masked == int(found["value"], 0)
    return equal if found["op"] == "==" else not equal


def _map_values(entries: str) -> Iterator[str]:
    """The values of an anonymous map `0 : goto a, 1 : goto b` (nft prints `, `; kube-proxy
    writes ` , `)."""
    for entry in entries.split(","):
        key, sep, value = entry.partition(" : ")
        if sep and key.strip().isdigit():
            yield value.strip()


def _host_port(target: str) -> HostPort | None:
    """`10.0.0.1:80`, `[fd00::1]:80` or a map value `10.0.0.1 . 80`."""
    try:
        if " . " in target:
            address, port = target.split(" . ")
            return HostPort(ip_address(address.strip()), int(port))
        if target.startswith("["):
            address, _, port = target[1:].partition("]:")
            return HostPort(ip_address(address), int(port))
        address, _, port = target.rpartition(":")
        return HostPort(ip_address(address), int(port))
    except ValueError:
        return None
