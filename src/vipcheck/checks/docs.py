"""Generate docs/checks.md, and docs/snapshot.md's sysctl keys, from the catalogue.

So the pages can never drift from the code: each check's section, and which keys a node without
`sysctl` is asked for (the checks' `sysctls`), are written from the checks themselves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vipcheck.checks import CATALOGUE, SYSCTL_KEYS
from vipcheck.checks.base import Check
from vipcheck.expected import VERSION_RULES
from vipcheck.facts import Input
from vipcheck.snapshot import CLUSTER_FILES, NODE_FILES, PROBE_DIR, PROBE_FILES, proc_sys_command

DEFAULT_OUTPUT = Path("docs") / "checks.md"
SNAPSHOT_PAGE = Path("docs") / "snapshot.md"
# docs/snapshot.md's generated part lies between these lines, which stay in the page.
PROC_SYS_BEGIN = "<!-- generated from the checks' `sysctls` by `python -m vipcheck.checks.docs` -->"
PROC_SYS_END = "<!-- end of the generated part -->"
HEADER = """\
# Check catalogue

Generated from `vipcheck.checks.CATALOGUE` by `python -m vipcheck.checks.docs`; do not edit by hand.

Each check names the snapshot files it reads, including those it reads to list its subjects (see
[snapshot.md](snapshot.md) for the layout). A check whose input is missing is skipped with the file
and the command that produces it; alternatives for one fact are read in the order listed, the first
present wins (`ipvsadm-Ln.txt` or `proc-ip_vs.txt`).
"""


VERSIONS_HEADER = """
## Where the expected state depends on the kube-proxy version

The IPVS checks (`ipvs-real-servers-match-endpoints`, `ipvs-virtual-servers-complete`, the
kube-ipvs0 checks, and the handshake probe's plan) compare a node with what its kube-proxy programs,
and a few of kube-proxy's rules changed between releases. vipcheck reads the release from the image
tag of the kube-proxy DaemonSet (`cluster/kube-proxy-daemonset.json`,
`registry.k8s.io/kube-proxy:v1.30.4` is 1.30), else from the node's
`status.nodeInfo.kubeProxyVersion` in `cluster/nodes.json` (deprecated; newer kubelets leave it
unset), and assumes the default feature gates of that release. Without either (no DaemonSet, a tag
like `latest`, the field unset) it assumes the newest rules, as listed. A failure that comes from
one of these rules names it and the release it assumed. Generated from
`vipcheck.expected.VERSION_RULES`.
"""

VERSION_INDEPENDENT = """
Rules vipcheck applies whatever the release (read in kube-proxy's
`pkg/proxy/ipvs/proxier.go` `syncProxyRules`/`syncEndpoint` and
`pkg/proxy/util/nodeport_addresses.go` `NewNodePortAddresses`/`GetNodeIPs`):

- an externalIP or load-balancer IP that is one of the node's own addresses (on any interface
  but kube-ipvs0) gets its VS but is not bound to kube-ipvs0 (`shouldBind`);
- `nodePortAddresses` is applied per IP family: a family it names no CIDR of matches every
  address of that family (so IPv4-only CIDRs leave a dual-stack Service's IPv6 NodePorts on
  every IPv6 node address); `primary` means the Node's primary IP of each family;
- in a family `nodePortAddresses` names CIDRs of, NodePorts are served on every local address
  inside them, kube-ipvs0's included: a load-balancer IP in the node subnet, or every ClusterIP
  when a CIDR spans the Service range, gets a VS per nodePort, judged like the node's own
  (`GetNodeIPs` reads every interface; only a family matched whole leaves kube-ipvs0 out);
- an internalTrafficPolicy Local ClusterIP VS falls back (as in the first row) only if the
  Service port is also reachable from outside (a nodePort, an externalIP or a load-balancer IP
  of that family); otherwise it has no real server on a node without a local endpoint.
"""


def render_catalogue() -> str:
    """The whole page: one section per check, in catalogue order, then the version rules."""
    return (
        HEADER
        + "".join(_section(check) for check in CATALOGUE)
        + VERSIONS_HEADER
        + "".join(
            f"\n- **{rule.place}**\n  - by release: {rule.since}\n  - earlier: {rule.before}\n"
            f"  - version unknown: {rule.unknown}\n  - source: {rule.source}\n"
            for rule in VERSION_RULES
        )
        + VERSION_INDEPENDENT
    )


def render_proc_sys() -> str:
    """docs/snapshot.md's part naming the keys proc-sys.txt holds, markers included."""
    keys = ", ".join(f"`{key}`" for key in SYSCTL_KEYS)
    return (
        f"{PROC_SYS_BEGIN}\n"
        f"`proc-sys.txt` holds the sysctl keys the checks read, as each check declares them (`*` "
        f"is a glob within one name): {keys}. By hand (grep exits 2 on a key the kernel lacks, "
        f"such as `net.ipv4.tcp_tw_recycle` from Linux 4.12: keep the file):\n\n"
        f"```sh\nssh node-2 '{proc_sys_command(SYSCTL_KEYS)}' > snap/nodes/node-2/proc-sys.txt\n"
        f"```\n{PROC_SYS_END}"
    )


def render_snapshot_page(page: str) -> str:
    """docs/snapshot.md with its generated part made current; ValueError without its markers."""
    before, begin, rest = page.partition(PROC_SYS_BEGIN)
    _, end, after = rest.partition(PROC_SYS_END)
    if not (begin and end):
        raise ValueError(f"no lines {PROC_SYS_BEGIN!r} ... {PROC_SYS_END!r} to write between")
    return before + render_proc_sys() + after


def _section(check: Check[Any]) -> str:
    """One check's id, title, severity, scope, inputs with their commands, why and fix."""
    inputs = "\n".join(f"  - {_alternatives(each, check)}" for each in check.inputs)
    return (
        f"\n## `{check.id}`\n\n"
        f"{check.title}.\n\n"
        f"- **Severity**: {check.severity}\n"
        f"- **Scope**: one test item per {check.scope}\n"
        f"- **Modes**: {_modes(check)}\n"
        f"- **Inputs**:\n{inputs}\n"
        f"- **Why**: {check.why}\n"
        f"- **Fix**: {check.fix}\n"
    )


def _modes(check: Check[Any]) -> str:
    """The kube-proxy modes whose nodes the check judges (it skips elsewhere)."""
    if check.modes is None:
        return "every mode"
    return ", ".join(f"`{mode}`" for mode in sorted(check.modes))


def _alternatives(each: Input, check: Check[Any]) -> str:
    """One input: its file, or its alternative files joined by `or`."""
    return " or ".join(_input(name, check) for name in each.files)


def _input(name: str, check: Check[Any]) -> str:
    """A snapshot file with where it lives and the command that produces it (for proc-sys.txt,
    the command reading the check's own keys)."""
    if name == "proc-sys.txt" and check.sysctls:
        return f"`nodes/<node>/{name}` (`{proc_sys_command(check.sysctls)}` on the node)"
    if name in CLUSTER_FILES:
        return f"`cluster/{name}` (`{CLUSTER_FILES[name]}`)"
    probe_file = name.removeprefix(f"{PROBE_DIR}/")
    if probe_file in PROBE_FILES:
        return f"`{name}` ({PROBE_FILES[probe_file]}, [probe.md](probe.md))"
    return f"`nodes/<node>/{name}` (`{NODE_FILES[name]}` on the node)"


def main(argv: list[str] | None = None) -> int:
    """Write the pages, or with --check fail when a committed one is stale."""
    parser = argparse.ArgumentParser(prog="python -m vipcheck.checks.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    parser.add_argument(
        "--snapshot-page", type=Path, default=SNAPSHOT_PAGE, help="default: %(default)s"
    )
    options = parser.parse_args(argv)
    try:
        snapshot_page = render_snapshot_page(options.snapshot_page.read_text())
    except (OSError, ValueError) as error:
        why = error.strerror if isinstance(error, OSError) else error
        print(f"{options.snapshot_page}: {why}", file=sys.stderr)
        return 2
    pages = {options.output: render_catalogue(), options.snapshot_page: snapshot_page}
    if options.check:
        stale = [path for path, page in pages.items() if _current(path) != page]
        for path in stale:
            print(
                f"{path} is stale: run `python -m vipcheck.checks.docs` and commit it",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path, page in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page)
    return 0


def _current(path: Path) -> str:
    return path.read_text() if path.exists() else ""


if __name__ == "__main__":
    sys.exit(main())
