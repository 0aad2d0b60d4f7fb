"""kind clusters: `--kind NAME` is the context `kind-NAME` and the containers kind labelled NAME.

Found with the docker CLI alone (no kind binary), which honours DOCKER_HOST and DOCKER_CONTEXT
itself; each container is the node of its own name, reached with testinfra's `docker://`. Next to
the transport and below gathering: it imports neither facts nor checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from vipcheck.transport import TargetError
from vipcheck.untrusted import node_name_problem, printable

KIND_LABEL = "io.x-k8s.kind.cluster"
# kind's own rule for cluster names (they become container names and a DNS label).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DOCKER_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class KindCluster:
    """A kind cluster as vipcheck reaches it: its kubeconfig context and its node containers."""

    name: str
    nodes: tuple[str, ...]

    @property
    def context(self) -> str:
        return kind_context(self.name)

    @property
    def specs(self) -> tuple[str, ...]:
        """One testinfra host spec per node container, named as the node."""
        return tuple(f"docker://{node}" for node in self.nodes)


def kind_context(name: str) -> str:
    """The kubeconfig context kind writes for a cluster: `kind-NAME`."""
    return f"kind-{name}"


def valid_kind_name(name: str) -> str | None:
    """Why NAME cannot be a kind cluster's name, or None when it can."""
    if _NAME.match(name):
        return None
    return f"{name!r} is not a kind cluster name (lowercase letters, digits, '-' and '.')"


def docker_endpoint(env: Mapping[str, str] | None = None) -> str:
    """Which Docker daemon the CLI talks to, as the user set it, for messages."""
    env = os.environ if env is None else env
    if env.get("DOCKER_HOST"):
        return f"DOCKER_HOST={env['DOCKER_HOST']}"
    if env.get("DOCKER_CONTEXT"):
        return f"DOCKER_CONTEXT={env['DOCKER_CONTEXT']}"
    return "the docker CLI's current context"


def find_kind_cluster(
    name: str, *, docker: str = "docker", timeout_s: float = DOCKER_TIMEOUT_S
) -> KindCluster:
    """The cluster's node containers (running or not), or TargetError saying what to fix."""
    where = f"--kind {name}"
    cli = shutil.which(docker)
    if cli is None:
        raise TargetError(
            f"{where}: no docker CLI on PATH (install one: Debian's docker-cli or docker.io)"
        )
    command = [cli, "ps", "--all", "--filter", f"label={KIND_LABEL}={name}"]
    command += ["--format", "{{.Names}}"]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TargetError(
            f"{where}: the Docker daemon ({docker_endpoint()}) did not answer within "
            f"{timeout_s:g} s"
        ) from None
    except OSError as error:
        raise TargetError(f"{where}: cannot run {cli}: {error}") from None
    if done.returncode != 0:
        why = _first_line(done.stderr.decode("utf-8", "replace"))
        raise TargetError(f"{where}: Docker daemon unreachable ({docker_endpoint()}): {why}")
    nodes = sorted(
        line.strip() for line in done.stdout.decode("utf-8", "replace").splitlines() if line.strip()
    )
    if not nodes:
        raise TargetError(
            f"{where}: no Docker containers labelled {KIND_LABEL}={name} at "
            f"{docker_endpoint()} (`kind get clusters` lists the clusters there)"
        )
    for node in nodes:
        _check_node_name(node, where)
    return KindCluster(name, tuple(nodes))


def _check_node_name(container: str, where: str) -> None:
    """kind names each node container as its node; a container that no node could be named as
    (`-oProxyCommand=...`) only a stranger to kind labelled so, and it goes into no command."""
    problem = node_name_problem(container)
    if problem is not None:
        raise TargetError(
            f"{where}: Docker lists a container '{printable(container, one_line=True)}' with "
            f"the label {KIND_LABEL}, which no kind node is named as: {problem}"
        )


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed without a message"
