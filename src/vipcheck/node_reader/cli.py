"""`vipcheck-node`: what the node script reads, read on the node itself, mostly over netlink.

Run as root in the node's host network namespace, it prints the node script's framed stream
(vipcheck.gather.node_script), so gathering, the parsers and every check take it unchanged:

- ipvsadm-Ln.txt, ipvsadm-timeout.txt: IPVS generic netlink (GET_SERVICE, GET_DEST, GET_INFO,
  GET_CONFIG), rendered as `ipvsadm -Ln --exact` and `ipvsadm -L --timeout` print them;
- ip-addr.json, ip-link.json: rtnetlink dumps, rendered as `ip -j addr` / `ip -j -d link`;
- ip_vs_conn.txt: /proc/net/ip_vs_conn, streamed; sysctl.txt: /proc/sys, as `sysctl -a`
  (where there is no /proc/sys to walk, by the script: an empty file would say no key is set);
  uname.txt: the kernel release;
- everything else (nftables, ipset, iptables) by the node script's own sh, for the same files
  with the same guards and `missing` lines: the same commands, never one that loads a module.
  So do the IPVS files where the kernel has no IPVS family: the script's test of
  /proc/net/ip_vs then says `ip_vs module not loaded` in its own words.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vipcheck.gather.node_script import END, build_node_script
from vipcheck.node_reader import ipvs_netlink
from vipcheck.node_reader.frames import FrameWriter
from vipcheck.node_reader.ipvs_text import render_list, render_timeouts
from vipcheck.node_reader.links import ip_addr_json, ip_link_json
from vipcheck.node_reader.messages import ReadError
from vipcheck.node_reader.sysctls import PROC_SYS, sysctl_lines
from vipcheck.snapshot import NODE_FILES
from vipcheck.untrusted import printable

IPVS_FILES = ("ipvsadm-Ln.txt", "proc-ip_vs.txt", "ipvsadm-timeout.txt")
CONNECTIONS = "ip_vs_conn.txt"
PROC_IP_VS_CONN = "/proc/net/ip_vs_conn"
# The files this program reads itself, and the node script's stand-ins for them (each produced
# by the script only where the one read here cannot be: no `ip -j`, no ip, no sysctl).
READ_HERE = (*IPVS_FILES, CONNECTIONS, "sysctl.txt", "ip-addr.json", "ip-link.json", "uname.txt")
STAND_INS = frozenset({"proc-sys.txt", "ip-addr.txt", "ip-link.txt", "sys-class-net.txt"})
_CHUNK = 1 << 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vipcheck-node",
        description="Print this node's IPVS, interfaces, sysctls and nftables state in the "
        "vipcheck node script's framed format (read-only; run as root in the host network "
        "namespace).",
    )
    parser.parse_args(argv)
    logging.getLogger("pyroute2").addHandler(logging.NullHandler())  # its errors are ours
    try:
        return read_node(sys.stdout.buffer)
    except BrokenPipeError:
        return 1  # the reader of our output went away: nothing left to say to it
    except (OSError, NetlinkError) as error:
        print(f"vipcheck-node: {printable(str(error), one_line=True)}", file=sys.stderr)
        return 1
    except Exception as error:  # a reply pyroute2 or this reader did not expect: one line
        shown = printable(f"{type(error).__name__}: {error}", one_line=True)
        print(f"vipcheck-node: unexpected {shown}", file=sys.stderr)
        return 1


def read_node(out: BinaryIO) -> int:
    """Every file, in NODE_FILES's order where read here, then the script's; 0 when done."""
    frames = FrameWriter(out)
    to_script = [name for name in NODE_FILES if name not in READ_HERE and name not in STAND_INS]
    to_script += _read_ipvs(frames)
    if Path(PROC_IP_VS_CONN).exists():
        frames.file(CONNECTIONS, lambda: _stream(PROC_IP_VS_CONN))
    else:
        to_script.append(CONNECTIONS)  # the script's `missing` line, in its own words
    if Path(PROC_SYS).is_dir():
        frames.file("sysctl.txt", sysctl_lines)
    else:
        to_script.append("sysctl.txt")  # sysctl's own words for what it cannot read either
    _read_links(frames)
    frames.file("uname.txt", lambda: [os.uname().release + "\n"])
    frames.flush()
    return _run_script(out, frames, [name for name in NODE_FILES if name in to_script])


def _read_ipvs(frames: FrameWriter) -> list[str]:
    """The IPVS files read over netlink; those left to the node script (all of them without
    the IPVS family, proc-ip_vs.txt where the listing failed)."""
    try:
        ipvs = ipvs_netlink.open_ipvs()
    except ReadError as error:
        failure = error
        for name in ("ipvsadm-Ln.txt", "ipvsadm-timeout.txt"):
            frames.file(name, lambda: _raise(failure))
        return ["proc-ip_vs.txt"]
    if ipvs is None:
        return list(IPVS_FILES)
    with ipvs:
        listed = frames.file("ipvsadm-Ln.txt", lambda: _ipvs_list(ipvs))
        frames.file("ipvsadm-timeout.txt", lambda: [_ipvs_timeouts(ipvs)])
    return [] if listed else ["proc-ip_vs.txt"]


def _ipvs_list(ipvs: Any) -> Iterator[str]:
    info = ipvs_netlink.info(ipvs)
    services = ipvs_netlink.services(ipvs)
    try:
        yield from render_list(info.version, info.table_size, services)
    except ValueError as error:
        raise ReadError(f"IPVS table: {error}") from None


def _ipvs_timeouts(ipvs: Any) -> str:
    values = ipvs_netlink.timeouts(ipvs)
    return render_timeouts(values.tcp, values.tcp_fin, values.udp)


def _read_links(frames: FrameWriter) -> None:
    """ip-addr.json and ip-link.json from one link dump and one address dump."""
    try:
        with IPRoute() as ipr:
            links = list(ipr.link("dump"))
            addresses = list(ipr.addr("dump"))
    except NetlinkError as error:
        failure = ReadError(f"netlink RTM_GETLINK/RTM_GETADDR dump: {os.strerror(error.code)}")
        for name in ("ip-addr.json", "ip-link.json"):
            frames.file(name, lambda: _raise(failure))
        return
    frames.file("ip-addr.json", lambda: [_json(ip_addr_json(links, addresses))])
    frames.file("ip-link.json", lambda: [_json(ip_link_json(links))])


def _json(document: object) -> str:
    """As `ip -j` prints: compact, one line."""
    return json.dumps(document, separators=(",", ":")) + "\n"


def _stream(path: str) -> Iterator[bytes]:
    """A /proc file in chunks, never whole in memory (a busy director lists a million rows)."""
    try:
        with Path(path).open("rb", buffering=0) as file:
            while chunk := file.read(_CHUNK):
                yield chunk
    except OSError as error:
        raise ReadError(f"{path}: {error.strerror}") from None


def _raise(error: ReadError) -> Iterator[str]:
    raise error


def _run_script(out: BinaryIO, frames: FrameWriter, names: list[str]) -> int:
    """The node script for these files, its output (end marker included) straight to ours."""
    script = build_node_script({name: NODE_FILES[name] for name in names})
    shell = shutil.which("sh")
    if shell is None:
        for name in names:
            frames.missing(name, f"no sh here to run `{NODE_FILES[name]}` as the node script does")
        out.write(f"{END}\n".encode())
        out.flush()
        return 0
    subprocess.run([shell, "-c", script], stdout=out.fileno(), check=False)
    return 0
