"""How vipcheck reaches nodes: which host spec is which Kubernetes node, and one bounded run.

The only module that imports testinfra. Host specs are testinfra's (`ssh://user@host:port`,
`paramiko://host`, `local://`, `docker://name`, with `?sudo=true` and friends); a bare host means
`ssh://host` unless `--connection` says otherwise (testinfra would pick paramiko, which vipcheck
does not depend on). safe-ssh is refused: it keeps output in temporary files on the node.

Timeouts: testinfra runs ssh, local, docker and the other command-line backends through one
method, `run_local`, a `subprocess.Popen(...).communicate()` without a timeout. `run_on` gives
the backend its own `run_local` that starts the command in a new session and, past the deadline,
kills the whole process group (ssh and anything it spawned), so nothing outlives the call. The
ssh backend also gets `ConnectTimeout` and no ControlPersist master, which would otherwise stay
behind for a minute. Backends that talk over a library (paramiko) run in a worker thread; past the
deadline their connection is closed, which ends the blocked read. On the node, a killed ssh
session closes the script's stdout, so the script ends at its next write.
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import testinfra.backend
from testinfra.backend.base import BaseBackend

from vipcheck.options import GatherOptions

# Backends that spawn a local command through run_local, so the timeout can kill its process group.
_COMMAND_BACKENDS = frozenset(
    {"ssh", "local", "docker", "podman", "kubectl", "openshift", "lxc", "chroot"}
)
# safe-ssh captures output in mktemp files on the node; gathering never writes there.
_WRITING_BACKENDS = frozenset({"safe-ssh"})
_SSH_CONNECT_TIMEOUT_S = 10
# What `docker exec` itself prints when it could not run the script (exit 1, 126 or 127; on stdout
# or stderr by version): a missing or stopped container, no /bin/sh, an unreachable daemon.
_CONTAINER_BACKENDS = frozenset({"docker", "podman"})
_EXEC_FAILURES = (
    "Error response from daemon",
    "Error: No such container",
    "Error: no container with name",
    "OCI runtime exec failed",
    "Cannot connect to the Docker daemon",
    "error during connect",
)
_HOST_KEYWORD = re.compile(r"^\s*host(?:\s*=\s*|\s+)(?P<patterns>.+?)\s*$", re.IGNORECASE)


class TransportError(Exception):
    """A node that could not be reached or did not answer in time, named with its host spec;
    partial: what the command printed before it was killed at its deadline, if anything."""

    def __init__(self, message: str, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class TargetError(Exception):
    """An inventory the user must fix (an unreadable ssh_config, two specs for one node)."""


@dataclass(frozen=True, slots=True)
class NodeTarget:
    """How to reach one Kubernetes node: a testinfra host spec and the options it runs with."""

    node: str
    spec: str
    ssh_config: str | None = None
    ssh_identity_file: str | None = None
    sudo: bool = False
    connection: str | None = None

    def describe(self) -> str:
        """`node-2 (ssh://node-2)`: the node for the reader, the spec for the one fixing it."""
        return f"{self.node} ({self.spec})"


@dataclass(frozen=True, slots=True)
class Resolution:
    """Targets for the nodes that can be reached, and what could not be paired, with reasons."""

    targets: tuple[NodeTarget, ...]
    not_given: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    reasons: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a script printed and its exit status, decoded without asking the node its locale."""

    rc: int
    stdout: str
    stderr: str


class NodeRunner(Protocol):
    """The one seam to the nodes, so gathering and probing run against fakes in tests."""

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        """Run a POSIX sh script on the node in one round trip, or raise TransportError."""
        ...


@dataclass(frozen=True, slots=True)
class HostSpecRunner:
    """The NodeRunner that reaches nodes through testinfra's backends, bounded by `run_on`."""

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        """Run a POSIX sh script on the node in one round trip, or raise TransportError."""
        return run_on(target, script, timeout_s)


HOST_SPEC_RUNNER: NodeRunner = HostSpecRunner()


def resolve_targets(
    options: GatherOptions,
    node_names: Sequence[str],
    node_addresses: Mapping[str, Sequence[str]],
) -> Resolution:
    """Which host spec reaches which API node, as the user said (--hosts, --ssh-config,
    --vipcheck-node, --kind, --via-agents): the one pairing, for gathering, probing and the fix
    script. With --via-agents every node is reached through its agent pod (`agent://NS/NODE`),
    which the agents' runner finds when it reads the node (vipcheck.gather.agent_exec)."""
    if options.via_agents is not None:
        specs = (f"agent://{options.via_agents}/{node}" for node in node_names)
        return Resolution(tuple(NodeTarget(n, s) for n, s in zip(node_names, specs, strict=True)))
    resolution = _pair(options, node_names, node_addresses)
    if options.kind is not None and resolution.not_given:
        reason = f"not given: no Docker container of kind cluster {options.kind} is named so"
        reasons = {**resolution.reasons, **dict.fromkeys(resolution.not_given, reason)}
        resolution = replace(resolution, reasons=reasons)
    return resolution


def _pair(
    options: GatherOptions,
    node_names: Sequence[str],
    node_addresses: Mapping[str, Sequence[str]],
) -> Resolution:
    """Pair host specs with API nodes: by node map, then host == node name, then by address."""
    ssh_config = options.ssh_config

    def target(node: str, spec: str) -> NodeTarget:
        return NodeTarget(
            node, spec, ssh_config, options.ssh_identity_file, options.sudo, options.connection
        )

    if not options.hosts:
        if ssh_config is None:
            reason = "not given: no --hosts spec or ssh_config Host for it"
            return Resolution((), tuple(node_names), (), dict.fromkeys(node_names, reason))
        patterns = ssh_config_hosts(ssh_config)
        given = [n for n in node_names if _matches_ssh_host(n, patterns)]
        missing = [n for n in node_names if n not in given]
        reason = f"not given: ssh_config {ssh_config} has no Host entry matching it"
        return Resolution(
            tuple(target(n, f"ssh://{n}") for n in given),
            tuple(missing),
            (),
            dict.fromkeys(missing, reason),
        )
    targets: list[NodeTarget] = []
    spec_of: dict[str, str] = {}
    unknown: list[str] = []
    for spec in options.hosts:
        host = spec_host(spec, options.connection)
        node = _node_for(spec, host, node_names, node_addresses, options.node_map)
        if node is None:
            unknown.append(spec)
            continue
        if node in spec_of:
            raise TargetError(
                f"--hosts {spec_of[node]} and {spec} are both node {node}: give one spec per node"
            )
        spec_of[node] = spec
        targets.append(target(node, spec))
    missing = [n for n in node_names if n not in spec_of]
    reason = "not given: no --hosts spec names it, its InternalIP or hostname (or --vipcheck-node)"
    reasons = dict.fromkeys(missing, reason)
    return Resolution(tuple(targets), tuple(missing), tuple(unknown), reasons)


def spec_host(spec: str, connection: str | None = None) -> str:
    """The host a spec names, without user, port or query; `local://` is this machine's name."""
    host, options = testinfra.backend.parse_hostspec(spec)
    if options.get("connection", connection) == "local":
        return socket.gethostname()
    name: str = BaseBackend.parse_hostspec(host).name
    return name


def _node_for(
    spec: str,
    host: str,
    node_names: Sequence[str],
    node_addresses: Mapping[str, Sequence[str]],
    node_map: Mapping[str, str],
) -> str | None:
    """The node a spec is: mapped explicitly, named alike, or owning the address; None if none."""
    if spec in node_map:
        return node_map[spec]
    if host in node_map:
        return node_map[host]
    if not node_names:
        return host
    if host in node_names:
        return host
    owners = [n for n in node_names if host in node_addresses.get(n, ())]
    return owners[0] if len(owners) == 1 else None


def ssh_config_hosts(path: str) -> tuple[tuple[str, ...], ...]:
    """The pattern lists of every `Host` line in an ssh_config (Match blocks are not evaluated)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise TargetError(f"ssh_config {path}: cannot read: {error}") from None
    entries = []
    for line in text.splitlines():
        match = _HOST_KEYWORD.match(line.split("#", 1)[0])
        if match:
            entries.append(tuple(match["patterns"].replace('"', "").split()))
    return tuple(entries)


def _matches_ssh_host(name: str, entries: Sequence[Sequence[str]]) -> bool:
    """ssh's rule: a Host line applies if a pattern matches and no negated (`!`) pattern does."""
    for patterns in entries:
        negated = [p[1:] for p in patterns if p.startswith("!")]
        positive = [p for p in patterns if not p.startswith("!")]
        if any(fnmatch.fnmatchcase(name, p) for p in negated):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in positive):
            return True
    return False


def run_on(target: NodeTarget, script: str, timeout_s: float) -> RunResult:
    """Run a POSIX sh script on the node in one round trip, or raise TransportError."""
    return run_command_on(target, ("sh -c %s", script), timeout_s)


def run_command_on(target: NodeTarget, command: Sequence[str], timeout_s: float) -> RunResult:
    """Run a command on the node in one round trip, or raise TransportError: testinfra's
    template and its arguments, each quoted for the shell that runs it (`("sh -c %s", script)`)."""
    backend = _backend(target, timeout_s)
    name = backend.get_connection_type()
    try:
        if name in _COMMAND_BACKENDS:
            backend.run_local = _bounded_run_local(backend, target, timeout_s)
            result = backend.run(*command)
        else:
            result = _run_in_thread(backend, target, command, timeout_s)
    except RuntimeError as error:  # testinfra's ssh backend: exit 255, the CommandResult as arg
        raise TransportError(f"{target.describe()}: {_ssh_failure(error)}") from None
    except OSError as error:
        raise TransportError(f"{target.describe()}: {error}") from None
    rc: int = result.rc
    stdout, stderr = _decode(result.stdout_bytes), _decode(result.stderr_bytes)
    if name in _CONTAINER_BACKENDS and rc != 0:
        _raise_exec_failure(target, name, rc, stdout, stderr)
    return RunResult(rc, stdout, stderr)


def _raise_exec_failure(
    target: NodeTarget, backend: str, rc: int, stdout: str, stderr: str
) -> None:
    """A container that could not run the script errors its node with the CLI's reason."""
    for line in (*stderr.splitlines(), *stdout.splitlines()):
        if any(mark in line for mark in (*_EXEC_FAILURES, f"{backend}: not found")):
            reason = line.strip()
            if "/bin/sh" in reason and "no such file" in reason:
                reason = f"the container has no /bin/sh: {reason}"
            message = f"{backend} exec failed (exit {rc}): {reason}"
            raise TransportError(f"{target.describe()}: {message}")


def connection_of(target: NodeTarget) -> str:
    """The testinfra backend that reaches the target: its spec's, else --connection's, else ssh."""
    _, spec_options = testinfra.backend.parse_hostspec(target.spec)
    connection: str = spec_options.get("connection", target.connection or "ssh")
    return connection


def _backend(target: NodeTarget, timeout_s: float) -> Any:
    """testinfra's backend for the spec, with vipcheck's options under the spec's own."""
    options: dict[str, Any] = {"sudo": target.sudo}
    if target.ssh_config:
        options["ssh_config"] = target.ssh_config
    if target.ssh_identity_file:
        options["ssh_identity_file"] = target.ssh_identity_file
    connection = connection_of(target)
    options["connection"] = connection
    if connection in _WRITING_BACKENDS:
        raise TransportError(
            f"{target.describe()}: {connection} writes temporary files on the node and vipcheck "
            "only reads: use ssh://"
        )
    if connection in ("ssh", "paramiko"):
        options["timeout"] = max(1, min(_SSH_CONNECT_TIMEOUT_S, int(timeout_s)))
    if connection == "ssh":
        options["controlpersist"] = 0
    try:
        return testinfra.backend.get_backend(target.spec, **options)
    except RuntimeError as error:  # unknown connection type, or paramiko not installed
        raise TransportError(f"{target.describe()}: {error}") from None


def _bounded_run_local(backend: Any, target: NodeTarget, timeout_s: float) -> Callable[..., Any]:
    """testinfra's run_local, but killing the command's process group past the deadline."""

    def run_local(command: str, *args: str) -> Any:
        cmd = backend.encode(backend.quote(command, *args))
        # testinfra quoted every argument into one shell command line, as for its own run_local.
        with subprocess.Popen(  # noqa: S602
            cmd,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                printed, _ = process.communicate()  # everything read, before the kill too
                raise TransportError(
                    f"{target.describe()}: no answer within {timeout_s:g} s",
                    partial=printed.decode(errors="replace"),
                ) from None
        return backend.result(process.returncode, cmd, stdout, stderr)

    return run_local


def _run_in_thread(
    backend: Any, target: NodeTarget, command: Sequence[str], timeout_s: float
) -> Any:
    """Run through a library backend; past the deadline, close its connection to end the read."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vipcheck-{target.node}")
    future = pool.submit(backend.run, *command)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        client = getattr(backend, "client", None)
        if client is not None:
            client.close()
        raise TransportError(f"{target.describe()}: no answer within {timeout_s:g} s") from None
    except Exception as error:  # library backends raise their own types (paramiko's SSHException)
        raise TransportError(f"{target.describe()}: {_first_line(str(error))}") from None
    finally:
        pool.shutdown(wait=False)


def _ssh_failure(error: RuntimeError) -> str:
    """ssh's own complaint (refused, host key, auth) from the result testinfra raised with."""
    result = error.args[0] if error.args else None
    stderr = getattr(result, "stderr_bytes", b"")
    lines = [line for line in _decode(stderr).splitlines() if line.strip()]
    message = lines[-1].strip() if lines else str(error)
    return f"ssh failed (exit 255): {message}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed without a message"


def _decode(data: bytes) -> str:
    """UTF-8 with replacement: testinfra would run Python on the node to learn its encoding."""
    return data.decode("utf-8", errors="replace")
