"""The probe script's output and the probe plan, from their snapshot files to the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vipcheck.model.cluster import ServicePortKey
from vipcheck.model.handshakes import (
    Attempt,
    ConnectOutcome,
    ProbeOutput,
    ProbePlan,
    ProbeRound,
    ProbeSettings,
    ProbeTarget,
    RealServerOrigin,
    TargetKind,
    Vantage,
)
from vipcheck.model.node import HostPort, L4Protocol
from vipcheck.parse import ParseError
from vipcheck.untrusted import node_name_problem, parse_address, printable


def parse_probe_output(text: str, source: str) -> ProbeOutput:
    """`TOOL`, `ATTEMPT`, `BUDGET` and `DONE` lines; an outcome it does not know is an ERROR.

    An output cut before DONE keeps the lines read whole: a last line without its newline was
    being printed when the output was cut, so it is dropped, not read as an ERROR outcome.
    """
    tool: str | None = None
    attempts: list[Attempt] = []
    not_attempted: dict[HostPort, int] = {}
    done = False
    lines = text.splitlines()
    if lines and not text.endswith("\n") and lines[-1].strip() != "DONE":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        if words[0] == "TOOL" and len(words) == 2:
            tool = None if words[1] == "none" else words[1]
        elif words[0] == "ATTEMPT":
            attempts.append(_attempt(words, line, source, number))
        elif words[0] == "BUDGET" and len(words) == 4:
            not_attempted[_host_port(words[1], words[2], source, number)] = _int(
                words[3], source, number
            )
        elif words[0] == "DONE":
            done = True
        else:
            raise ParseError(source, number, f"not a probe line: {line.strip()!r}")
    error = None
    if tool is None and "TOOL" in text:
        error = "the host has none of bash with timeout, python3, or nc with timeout"
    elif not done and not attempts and not not_attempted:
        error = "probe output ends before DONE, with no attempt made (cut off?)"
    return ProbeOutput(tool, tuple(attempts), not_attempted, error, cut=not done)


def _attempt(words: list[str], line: str, source: str, number: int) -> Attempt:
    if len(words) < 6:
        raise ParseError(source, number, f"expected `ATTEMPT addr port seq OUTCOME ms`: {line!r}")
    address = _host_port(words[1], words[2], source, number)
    seq = _int(words[3], source, number)
    try:
        outcome = ConnectOutcome(words[4])
    except ValueError:
        # The tool itself failed (a python traceback's last line, say): keep its words.
        return Attempt(address, seq, ConnectOutcome.ERROR, None, " ".join(words[4:]), line)
    ms = None if words[5] == "-" else _int(words[5], source, number)
    return Attempt(address, seq, outcome, ms, " ".join(words[6:]), line)


def _host_port(address: str, port: str, source: str, number: int) -> HostPort:
    number_ = _int(port, source, number)
    try:
        return HostPort(parse_address(address), number_)
    except ValueError as error:
        raise ParseError(source, number, f"not an address: {error}") from error


def _int(text: str, source: str, number: int) -> int:
    if not text.isdigit():
        raise ParseError(source, number, f"expected a number, got {text!r}")
    return int(text)


def parse_probe_plan(text: str, source: str) -> ProbePlan:
    """probes/plan.json: the vantage points, the targets per round, the bounds used.

    Its names become findings' nodes and its addresses probe targets, so they are held to what
    a run writes: nodes by their Kubernetes names, outside hosts by plain names, no zones.
    """
    try:
        data = json.loads(text)
        settings = ProbeSettings(**data.get("settings", {}))
        vantages = tuple(_vantage(v, source, index) for index, v in enumerate(data["vantages"]))
        targets = tuple(_target(t, source, index) for index, t in enumerate(data["targets"]))
        elapsed = data.get("elapsed_s")
    except ParseError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ParseError(source, None, f"not a probe plan: {error}") from error
    return ProbePlan(vantages, targets, settings, None if elapsed is None else float(elapsed))


def _vantage(data: dict[str, Any], source: str, index: int) -> Vantage:
    """A node's vantage point, named as the node, or an outside host's."""
    where = f"vantages[{index}]"
    node = data.get("node")
    if node is None:
        name = _name(data["name"], _outside_host_problem, source, f"{where}.name")
    else:
        name = _name(node, node_name_problem, source, f"{where}.node")
        if data["name"] != node:
            raise ParseError(source, None, f"{where}.name: not the name of its node {node}")
    return Vantage(name, node, data.get("spec", ""))


def _outside_host_problem(name: str) -> str | None:
    """Why `name` cannot be a host outside the cluster as a run names it (an ssh_config Host,
    a --hosts spec's host), or None: it is a directory under probes/ and a word of a command."""
    if name in ("", ".", "..") or name.startswith("-"):
        return "empty, '.', '..' or starting with '-'"
    if "/" in name or any(char.isspace() for char in name) or printable(name) != name:
        return "holds '/', white space or a control character"
    return None


def _name(value: object, problem: Callable[[str], str | None], source: str, where: str) -> str:
    """A name from the plan, refused with the problem `problem` finds in it."""
    if not isinstance(value, str):
        raise ParseError(source, None, f"{where}: expected a name, got {type(value).__name__}")
    why = problem(value)
    if why is not None:
        raise ParseError(source, None, f"{where}: '{printable(value, one_line=True)}': {why}")
    return value


def _target(data: dict[str, Any], source: str, index: int) -> ProbeTarget:
    """One target; its vantage point is a node's or an outside host's name (a node's passes the
    outside hosts' rule too)."""
    origin = data.get("origin")
    where = f"targets[{index}]"
    backend_node = data.get("backend_node")
    return ProbeTarget(
        round=ProbeRound(data["round"]),
        vantage=_name(data["vantage"], _outside_host_problem, source, f"{where}.vantage"),
        address=_split(data["address"], source, f"{where}.address"),
        attempts=int(data["attempts"]),
        service=parse_service_port_key(data["service"], source, f"{where}.service"),
        kind=TargetKind(data["kind"]),
        via=_split(data["via"], source, f"{where}.via") if data.get("via") else None,
        backend_node=(
            None
            if backend_node is None
            else _name(backend_node, node_name_problem, source, f"{where}.backend_node")
        ),
        origin=RealServerOrigin(origin) if origin else None,
    )


def parse_service_port_key(text: object, source: str, where: str) -> ServicePortKey:
    """`default/redis:6379/TCP`, as ServicePortKey prints it, back into the key."""
    rest, _, protocol = text.rpartition("/") if isinstance(text, str) else ("", "", "")
    service_key, _, port = rest.rpartition(":")
    namespace, _, name = service_key.partition("/")
    known = {p.value for p in L4Protocol}
    if not (namespace and name and "/" not in name and port.isdigit() and protocol in known):
        raise ParseError(
            source,
            None,
            f"{where}: not a Service port {text!r} (expected namespace/name:port/PROTOCOL)",
        )
    return ServicePortKey(service_key, int(port), L4Protocol(protocol))


def _split(text: str, source: str, where: str) -> HostPort:
    """`10.96.0.20:6379` or `[fd00::1]:80`, as HostPort prints it."""
    address, _, port = text.rpartition(":")
    try:
        return HostPort(parse_address(address.strip("[]")), int(port))
    except ValueError as error:
        raise ParseError(source, None, f"{where}: not an address:port: {error}") from None


def plan_as_json(plan: ProbePlan) -> str:
    """The inverse of parse_probe_plan, for the snapshot."""
    data = {
        "settings": {
            "timeout_s": plan.settings.timeout_s,
            "delay_s": plan.settings.delay_s,
            "budget_s": plan.settings.budget_s,
            "parallel": plan.settings.parallel,
        },
        "elapsed_s": plan.elapsed_s,
        "vantages": [{"name": v.name, "node": v.node, "spec": v.spec} for v in plan.vantages],
        "targets": [
            {
                "round": t.round.value,
                "vantage": t.vantage,
                "address": str(t.address),
                "attempts": t.attempts,
                "service": str(t.service),
                "kind": t.kind.value,
                "via": str(t.via) if t.via else None,
                "backend_node": t.backend_node,
                "origin": t.origin.value if t.origin else None,
            }
            for t in plan.targets
        ],
    }
    return json.dumps(data, indent=2) + "\n"
