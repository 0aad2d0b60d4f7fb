"""Read what the cluster says: one paginated LIST per kind, kube-proxy's ConfigMap and DaemonSet.

The only module that imports kubernetes. Configuration is found as kubectl finds it: --kubeconfig,
else $KUBECONFIG (a path list, merged), else ~/.kube/config, else the in-cluster service account
when $KUBERNETES_SERVICE_HOST is set. Responses are kept as the API sent them (no client models),
pages merged into one list of the API's own kind, each item given its apiVersion and kind as
`kubectl get -o json` does. Only GETs are sent; the kubeconfig is never written back (no token
refresh persisted). A kubeconfig's credential plugins (exec, auth-provider cmd-path) run as they
do for kubectl; a client key or CA given as data is decoded to a temp file for TLS (Python's ssl
loads keys from files only) and removed once the cluster is read.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from vipcheck.vocabulary import Progress

Lister = Callable[..., Any]

PAGE_SIZE = 500
REQUEST_TIMEOUT_S = (10, 60)  # connect, read
DEFAULT_KUBECONFIG = "~/.kube/config"
KUBE_PROXY = ("kube-system", "kube-proxy")


@dataclass(frozen=True, slots=True)
class _Kubernetes:
    """The parts of the kubernetes client (and urllib3, its HTTP library) this module uses."""

    client: ModuleType
    config: ModuleType
    kube_config: ModuleType
    api_exception: type[Any]  # its status, reason and body are read
    config_exception: type[Exception]
    http_error: type[Any]  # urllib3's; its reason is read


@functools.cache
def _kubernetes() -> _Kubernetes:
    """The kubernetes client, imported when a cluster is first read, not with this module.

    Importing it (with urllib3, ssl and http) takes 0.15-0.2 s, which a replay would pay for
    nothing, and so would every pytest session in an environment where vipcheck is installed
    (the plugin loads observing, which loads gathering). A third-party cost kept in the one
    module that imports kubernetes, not a way around layering: tests/unit/test_layers.py
    checks that the plugin loads no kubernetes.
    """
    import kubernetes.client  # noqa: PLC0415
    import kubernetes.config  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
    from kubernetes.config import kube_config  # noqa: PLC0415
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415
    from urllib3.exceptions import HTTPError  # noqa: PLC0415

    return _Kubernetes(
        kubernetes.client, kubernetes.config, kube_config, ApiException, ConfigException, HTTPError
    )


class ClusterConfigError(Exception):
    """No usable kubeconfig or context: the user fixes a file or an option."""


class ClusterError(Exception):
    """The API could not be read (refused, unauthorized, forbidden), with server and status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def gather_cluster(
    kubeconfig: str | None,
    context: str | None,
    progress: Progress,
    nodes_listed: Callable[[str], None] | None = None,
    /,
) -> dict[str, str]:
    """cluster/<file> -> JSON text, as `kubectl get ... -o json` would have written it.

    Nodes are listed first and handed to nodes_listed at once, so the nodes can be gathered
    while the Services and EndpointSlices (the bulk of a big cluster's listing) still come.
    The client's decoded credentials are removed as it returns or fails.
    """
    try:
        return _read_cluster(kubeconfig, context, progress, nodes_listed)
    finally:
        _remove_decoded_credentials()


def _read_cluster(
    kubeconfig: str | None,
    context: str | None,
    progress: Progress,
    nodes_listed: Callable[[str], None] | None,
) -> dict[str, str]:
    """gather_cluster's reading, with the client it configures."""
    api_client, source = api_client_for(kubeconfig, context)
    server = api_client.configuration.host
    progress(f"cluster: reading {server} ({source})")
    client = _kubernetes().client
    files: dict[str, str] = {}
    with api_client:
        core = client.CoreV1Api(api_client)
        # Newer clients (37) import each API class on first use, 0.2-0.8 s each with its models:
        # only CoreV1's is paid before the Nodes are listed and the nodes' gathering starts.
        listers: Mapping[str, Callable[[], Lister]] = {
            "nodes.json": lambda: core.list_node,
            "services.json": lambda: core.list_service_for_all_namespaces,
            "endpointslices.json": lambda: (
                client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces
            ),
        }
        for name, lister in listers.items():
            document = list_all(lister(), server, name)
            files[name] = _dump(document)
            progress(f"cluster: {name}: {len(document['items'])} items")
            if name == "nodes.json" and nodes_listed is not None:
                nodes_listed(files[name])
        config_map = _read_kube_proxy(core.read_namespaced_config_map, server, "ConfigMap")
        if config_map is None:
            namespace, name = KUBE_PROXY
            progress(
                f"cluster: no ConfigMap {namespace}/{name} (404): "
                "kube-proxy configuration not gathered"
            )
        else:
            files["kube-proxy.json"] = _dump(config_map)
            progress("cluster: kube-proxy.json: ConfigMap kube-system/kube-proxy")
        # Its image tag is the kube-proxy version, which some expected state depends on.
        daemon_set = _read_kube_proxy(
            client.AppsV1Api(api_client).read_namespaced_daemon_set, server, "DaemonSet"
        )
        if daemon_set is None:
            progress(
                "cluster: no DaemonSet kube-system/kube-proxy (404): the kube-proxy version "
                "comes from the Nodes' kubeProxyVersion, if set"
            )
        else:
            files["kube-proxy-daemonset.json"] = _dump(daemon_set)
            progress("cluster: kube-proxy-daemonset.json: DaemonSet kube-system/kube-proxy")
    return files


def api_client_for(kubeconfig: str | None, context: str | None) -> tuple[Any, str]:
    """A client configured as kubectl would be, and a description of where that came from."""
    k8s = _kubernetes()
    configuration = k8s.client.Configuration()
    paths = _kubeconfig_paths(kubeconfig)
    if paths is None:
        try:
            k8s.config.load_incluster_config(client_configuration=configuration)
        except k8s.config_exception as error:
            raise ClusterConfigError(f"in-cluster configuration: {error}") from None
        return k8s.client.ApiClient(configuration), "in-cluster service account"
    label = os.pathsep.join(paths)
    contexts = _contexts(paths, label)
    if context is not None and context not in contexts:
        raise ClusterConfigError(
            f"kubeconfig {label}: no context {context!r}; contexts: {', '.join(contexts) or 'none'}"
        )
    try:
        with _plugin_failures() as failures:
            k8s.config.load_kube_config(
                config_file=label,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (k8s.config_exception, KeyError, TypeError, ValueError, OSError) as error:
        # OSError: an auth-provider's cmd-path that cannot run (FileNotFoundError).
        raise _config_error(label, context, contexts, str(error)) from None
    if failures:
        why = failures[0].removeprefix("exec: ")
        raise _config_error(label, context, contexts, f"exec credential plugin: {why}")
    return k8s.client.ApiClient(configuration), f"kubeconfig {label}" + (
        f", context {context}" if context else ""
    )


def _config_error(
    label: str, context: str | None, contexts: list[str], why: str
) -> ClusterConfigError:
    where = f"context {context!r}" if context else "its current-context"
    return ClusterConfigError(
        f"kubeconfig {label}, {where}: {_first_line(why)}; "
        f"contexts: {', '.join(contexts) or 'none'}"
    )


class _PluginFailures(logging.Handler):
    """The errors kube_config logs and carries on from: an exec credential plugin that cannot
    run, fails or answers without credentials. kubectl stops there; the client went on without
    credentials, so the user met a 401 and not the cause."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.pathname == _kubernetes().kube_config.__file__:
            self.messages.append(record.getMessage())


@contextmanager
def _plugin_failures() -> Iterator[list[str]]:
    """The messages of the exec plugin failures kube_config logs within the block."""
    handler = _PluginFailures()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


def _remove_decoded_credentials() -> None:
    """Delete the temp files the client decoded a kubeconfig's key, certificate and CA data to.

    The client removes them in an atexit handler, which the vipcheck command's fast exit
    (os._exit) skips: every run left the private key in $TMPDIR. They are needed only while
    the cluster is read. kube_config has `_cleanup_temp_files` in 29.0.0 (the lowest release
    vipcheck takes), 37.0.3 and 12.0.1 (checked); a release without it is left to its own.
    """
    cleanup = getattr(_kubernetes().kube_config, "_cleanup_temp_files", None)
    if cleanup is not None:
        cleanup()


def _kubeconfig_paths(kubeconfig: str | None) -> list[str] | None:
    """The kubeconfig files to merge, kubectl's way; None means use the in-cluster account."""
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if path.is_dir():
            raise ClusterConfigError(f"kubeconfig {kubeconfig}: is a directory, not a file")
        if not path.is_file():
            raise ClusterConfigError(f"kubeconfig {kubeconfig}: no such file")
        return [str(path)]
    env = os.environ.get("KUBECONFIG", "")
    if env.strip(os.pathsep):
        listed = [str(Path(p).expanduser()) for p in env.split(os.pathsep) if p]
        existing = [p for p in listed if Path(p).is_file()]
        if not existing:
            raise ClusterConfigError(f"KUBECONFIG={env}: none of its files exists")
        return existing
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    if default.is_file():
        return [str(default)]
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    raise ClusterConfigError(
        f"no kubeconfig: give --kubeconfig, set KUBECONFIG, or create {DEFAULT_KUBECONFIG}"
    )


def _contexts(paths: list[str], label: str) -> list[str]:
    """Context names across the merged files, checking each file reads as a kubeconfig."""
    names: list[str] = []
    for path in paths:
        try:
            document = yaml.safe_load(Path(path).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ClusterConfigError(f"kubeconfig {path}: {_first_line(str(error))}") from None
        if not isinstance(document, dict):
            raise ClusterConfigError(f"kubeconfig {path}: not a kubeconfig (expected a mapping)")
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.append(entry["name"])
    if not names:
        raise ClusterConfigError(f"kubeconfig {label}: no contexts")
    return names


def list_all(lister: Lister, server: str, name: str) -> dict[str, Any]:
    """Every page of one LIST, merged into the first page's document without its paging fields."""
    document = _get_json(server, name, lister, limit=PAGE_SIZE)
    items: list[Any] = document.get("items") or []
    token = (document.get("metadata") or {}).get("continue")
    while token:
        page = _get_json(server, name, lister, limit=PAGE_SIZE, _continue=token)
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
    list_metadata = document.setdefault("metadata", {})
    list_metadata.pop("continue", None)
    list_metadata.pop("remainingItemCount", None)
    item_kind = str(document.get("kind", "")).removesuffix("List")
    for item in items:
        item.setdefault("apiVersion", document.get("apiVersion"))
        item.setdefault("kind", item_kind)
    document["items"] = items
    return document


def _read_kube_proxy(read: Lister, server: str, kind: str) -> dict[str, Any] | None:
    """kube-system/kube-proxy of this kind, or None when the cluster has none (404 is an answer)."""
    namespace, name = KUBE_PROXY
    try:
        return _get_json(server, f"{kind} {namespace}/{name}", read, name=name, namespace=namespace)
    except ClusterError as error:
        if error.status == 404:
            return None
        raise


def _get_json(server: str, what: str, call: Lister, **arguments: Any) -> dict[str, Any]:
    """One GET's raw JSON body, or a one-line ClusterError naming the server, object and why."""
    try:
        response = call(**arguments, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
    except _kubernetes().api_exception as error:
        if not error.status:
            raise ClusterError(
                f"{server}: cannot connect for {what}: {_first_line(str(error.reason))}"
            ) from None
        raise ClusterError(
            f"{server}: {what}: {error.status} {error.reason}: {_status_message(error.body)}",
            error.status,
        ) from None
    except _kubernetes().http_error as error:
        reason = getattr(error, "reason", None) or error
        raise ClusterError(f"{server}: cannot connect for {what}: {reason}") from None
    try:
        document = json.loads(response.data)
    except RecursionError:
        raise ClusterError(
            f"{server}: {what}: the answer is JSON nested too deeply to read"
        ) from None
    except ValueError as error:
        raise ClusterError(f"{server}: {what}: the answer is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ClusterError(f"{server}: {what}: the answer is not a JSON object")
    return document


def _status_message(body: str | None) -> str:
    """The message of a Kubernetes Status body, or the body's first line if it is not one."""
    try:
        status = json.loads(body or "")
    except (ValueError, RecursionError):
        return _first_line(body or "no body")
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return _first_line(body or "no body")


def _dump(document: Mapping[str, Any]) -> str:
    """kubectl's layout: four-space indent, a final newline."""
    return json.dumps(document, indent=4) + "\n"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message"
