"""`--via-agents`: the NodeRunner that reads each node by one exec of `vipcheck-node` in its agent.

Nodes are reached through the Kubernetes API only, as `kubectl exec` reaches a pod: the official
client's WebSocket exec (`kubernetes.stream.stream`, channel protocol v4: stdout, stderr and the
status channel; no stdin, no tty). The agent pods are listed once, by label, in the agents'
namespace (vipcheck.gather.agents pairs them with nodes); each node is then one exec, bounded by
the node timeout as every transport is: the read loop stops at the deadline, and a connection that
hangs before the first frame is abandoned there (its thread ends with the socket). The script a
NodeRunner is given is not sent: the agent runs its own reader, which takes no argument.

The client decodes a kubeconfig's key, certificate and CA data to temp files that the cluster
reading removes when it is done, while execs may still be connecting: the runner copies them into
a directory of its own (mode 0700), removed when it closes.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream
from websocket import WebSocketException

from vipcheck.gather.agents import CONTAINER, READER, SELECTOR, AgentPods, NotReady, agent_pods
from vipcheck.gather.cluster import ClusterError, api_client_for, list_all
from vipcheck.options import GatherOptions
from vipcheck.transport import NodeTarget, RunResult, TransportError
from vipcheck.untrusted import printable
from vipcheck.vocabulary import Progress

STDOUT, STDERR, STATUS = 1, 2, 3  # the channel protocol's channels
_HANDSHAKE = re.compile(r"Handshake status (?P<code>\d{3})(?P<phrase>[ A-Za-z]*)")


class AgentRunner:
    """Reads nodes through their agent pods; the pods are listed on the first read."""

    def __init__(self, configuration: Any, namespace: str, progress: Progress) -> None:
        self._configuration = configuration
        self._namespace = namespace
        self._progress = progress
        self._lock = threading.Lock()
        self._pods: AgentPods | str | None = None  # or why they could not be listed

    def run(self, target: NodeTarget, script: str, timeout_s: float) -> RunResult:
        """One exec of the node reader in the node's agent pod, or TransportError; `script`
        is not sent: the agent runs its own reader."""
        del script  # the agent runs its own reader
        try:
            pod = self._agents().pod_for(target.node)
        except NotReady as error:
            raise TransportError(f"{target.describe()}: {error}") from None
        return self._exec(target, pod, timeout_s)

    def _agents(self) -> AgentPods:
        """The agent pods, listed once for every node; a failed listing fails every node."""
        with self._lock:
            if self._pods is None:
                self._pods = self._list()
            if isinstance(self._pods, str):
                raise NotReady(self._pods)
            return self._pods

    def _list(self) -> AgentPods | str:
        where = f"pods in namespace {self._namespace} labelled {SELECTOR}"
        with kubernetes.client.ApiClient(self._configuration) as api:
            lister = kubernetes.client.CoreV1Api(api).list_namespaced_pod

            def list_pods(**arguments: Any) -> Any:
                return lister(self._namespace, label_selector=SELECTOR, **arguments)

            try:
                document = list_all(list_pods, self._configuration.host, f"list {where}")
            except ClusterError as error:
                hint = (
                    f" (vipcheck's identity needs list pods in namespace {self._namespace}: "
                    "`vipcheck manifests` grants it)"
                    if error.status == 403
                    else ""
                )
                said = printable(str(error), one_line=True)
                self._progress(f"agents: not listed: {said}{hint}")
                return f"agent pods not listed: {said}{hint}"
        pods = agent_pods(self._namespace, document)
        self._progress(f"agents: {len(document['items'])} {where}")
        return pods

    def _exec(self, target: NodeTarget, pod: str, timeout_s: float) -> RunResult:
        """The exec in a worker thread, so a connection that hangs is bounded too."""
        deadline = time.monotonic() + timeout_s
        late = f"{target.describe()}: no answer within {timeout_s:g} s"
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vipcheck-exec-{target.node}")
        future = pool.submit(self._stream, target, pod, deadline, late)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise TransportError(late) from None
        finally:
            pool.shutdown(wait=False)

    def _stream(self, target: NodeTarget, pod: str, deadline: float, late: str) -> RunResult:
        # One client per exec: stream() swaps the client's call_api while it connects.
        with kubernetes.client.ApiClient(self._configuration) as api:
            try:
                session = stream(
                    kubernetes.client.CoreV1Api(api).connect_get_namespaced_pod_exec,
                    pod,
                    self._namespace,
                    command=[READER],
                    container=CONTAINER,
                    stdin=False,
                    stdout=True,
                    stderr=True,
                    tty=False,
                    binary=True,
                    _preload_content=False,
                )
            except ApiException as error:
                why = self._refused(pod, str(error.reason))
                raise TransportError(f"{target.describe()}: {why}") from None
            try:
                return _read(session, deadline, late, target.describe())
            except (WebSocketException, OSError) as error:
                lost = printable(str(error), one_line=True) or type(error).__name__
                raise TransportError(f"{target.describe()}: exec connection lost: {lost}") from None
            finally:
                session.close(timeout=0)

    def _refused(self, pod: str, reason: str) -> str:
        """Why the API refused the exec (the WebSocket upgrade's status), in one line."""
        where = f"pod {self._namespace}/{printable(pod, one_line=True)}"
        match = _HANDSHAKE.search(reason)
        if match is None:
            shown = printable(_first_line(reason), one_line=True)
            return f"exec into {where}: cannot connect: {shown}"
        status = f"{match['code']} {match['phrase'].strip()}".strip()
        if match["code"] == "403":
            return (
                f"exec into {where} refused ({status}): vipcheck's identity may not create "
                f"pods/exec in namespace {self._namespace} (`vipcheck manifests` grants get "
                "and create on pods/exec there)"
            )
        if match["code"] == "404":
            return f"exec into {where} refused ({status}): the pod is gone since it was listed"
        return f"exec into {where} refused ({status})"


def _read(session: Any, deadline: float, late: str, where: str) -> RunResult:
    """Drain stdout and stderr until the server closes; the exit status from the status channel."""
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    while session.is_open():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransportError(late)
        session.sock.settimeout(remaining)  # a frame cut midway waits no longer than the rest
        session.update(timeout=remaining)
        stdout.append(session.read_channel(STDOUT))
        stderr.append(session.read_channel(STDERR))
    stdout.append(session.read_channel(STDOUT))
    stderr.append(session.read_channel(STDERR))
    rc = _exit_status(session.read_channel(STATUS), where)
    return RunResult(rc, _decode(stdout), _decode(stderr))


def _exit_status(status: bytes, where: str) -> int:
    """0, the command's exit code, or TransportError when the API says the exec itself failed."""
    try:
        document = json.loads(status) if status else None
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise TransportError(f"{where}: the exec ended without an exit status (connection lost?)")
    if document.get("status") == "Success":
        return 0
    details = document.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if document.get("reason") == "NonZeroExitCode" and isinstance(causes, list):
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                code = str(cause.get("message", ""))
                if code.isdigit():
                    return int(code)
    said = document.get("message") or document.get("reason") or "no message"
    said = printable(str(said), one_line=True)
    raise TransportError(f"{where}: the exec of {READER} failed: {said}")


def _decode(chunks: list[bytes]) -> str:
    """UTF-8 with replacement, as every transport decodes a node's output."""
    return b"".join(chunks).decode("utf-8", errors="replace")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed without a message"


@contextmanager
def agent_runner(options: GatherOptions, progress: Progress) -> Iterator[AgentRunner]:
    """The runner for --via-agents, with a copy of the client's credential files while it lives."""
    assert options.via_agents is not None
    client, source = api_client_for(options.kubeconfig, options.context)
    configuration = client.configuration
    client.close()
    private = Path(tempfile.mkdtemp(prefix="vipcheck-agents-"))
    try:
        for name in ("ssl_ca_cert", "cert_file", "key_file"):
            path = getattr(configuration, name)
            if path:
                copy = private / name
                shutil.copyfile(path, copy)
                copy.chmod(0o600)
                setattr(configuration, name, str(copy))
        namespace = options.via_agents
        progress(f"agents: nodes read through pods/exec in namespace {namespace} ({source})")
        yield AgentRunner(configuration, namespace, progress)
    finally:
        shutil.rmtree(private, ignore_errors=True)
