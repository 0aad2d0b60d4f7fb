"""sysctl parser: `sysctl -a` lines, stderr noise, refusals, and the recorded rp_filter values."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipcheck.parse import ParseError
from vipcheck.parse.sysctl import keys_named, parse_proc_sys, parse_sysctl

RECORDED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded"
NODE_DIRS = sorted(RECORDED.glob("*/nodes/*"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "net.ipv4.conf.all.rp_filter = 1\nnet.ipv4.vs.conntrack = 1\n",
            {"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.vs.conntrack": "1"},
            id="key-equals-value",
        ),
        pytest.param(
            "net.ipv4.ip_local_port_range = 32768\t60999\nnet.ipv4.vs.sync_threshold = 3\t50\n",
            {"net.ipv4.ip_local_port_range": "32768\t60999", "net.ipv4.vs.sync_threshold": "3\t50"},
            id="tabs-inside-values",
        ),
        pytest.param(
            "net.ipv4.ip_local_reserved_ports = \nkernel.domainname = (none)\n",
            {"net.ipv4.ip_local_reserved_ports": "", "kernel.domainname": "(none)"},
            id="empty-and-odd-values",
        ),
        pytest.param(
            "net.ipv4.conf.tunl0.rp_filter=0\nnet.ipv4.conf.eth0/100.rp_filter=2\n\n",
            {"net.ipv4.conf.tunl0.rp_filter": "0", "net.ipv4.conf.eth0/100.rp_filter": "2"},
            id="no-blanks-vlan-slash",
        ),
        pytest.param(
            "sysctl: permission denied on key 'fs.protected_hardlinks'\n"
            "sysctl: permission denied on key 'kernel.cad_pid', ignoring\n"
            'sysctl: reading key "net.ipv6.conf.all.stable_secret"\n'
            "net.ipv4.vs.expire_nodest_conn = 1\n",
            {"net.ipv4.vs.expire_nodest_conn": "1"},
            id="stderr-noise",
        ),
    ],
)
def test_parse_sysctl(text: str, expected: dict[str, str]) -> None:
    sysctls = parse_sysctl(text, "sysctl.txt")
    assert dict(sysctls.values) == expected


def test_values_and_integers() -> None:
    sysctls = parse_sysctl(
        "net.ipv4.conf.all.rp_filter = 2\nnet.ipv4.ip_local_port_range = 32768\t60999\n", "s"
    )
    assert sysctls.int_value("net.ipv4.conf.all.rp_filter") == 2
    assert sysctls.int_value("net.ipv4.conf.tunl0.rp_filter") is None
    assert sysctls.get("net.ipv4.conf.tunl0.rp_filter") is None
    assert "net.ipv4.conf.all.rp_filter" in sysctls
    with pytest.raises(ValueError, match="ip_local_port_range"):
        sysctls.int_value("net.ipv4.ip_local_port_range")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("net.ipv4.conf.all.rp_filter = 1\n$ sysctl -a\n", 2, "expected `key = value`"),
        ("net.ipv4.conf.all.rp_filter 1\n", 1, "expected `key = value`"),
        (" = 1\n", 1, "expected `key = value`"),
        ("sysctl: cannot stat /proc/sys/net/ipv4/vs: No such file or directory\n", 1, "expected"),
        ("a.b = 1\nc.d = 2\na.b = 1\n", 3, "a.b appears twice (first on line 1)"),
        ("\n", None, "empty"),
    ],
)
def test_parse_sysctl_refuses(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_sysctl(text, "node-2/sysctl.txt")
    assert raised.value.line == line
    assert message in raised.value.message


@pytest.mark.parametrize("node_dir", NODE_DIRS, ids=lambda path: path.name)
def test_recorded_sysctls_parse(node_dir: Path) -> None:
    text = (node_dir / "sysctl.txt").read_text()
    sysctls = parse_sysctl(text, "sysctl.txt")
    assert len(sysctls) == len(text.splitlines())
    assert sysctls.get("net.ipv4.ip_local_port_range") == "32768\t60999"
    assert sysctls.int_value("net.ipv4.vs.conntrack") == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # node-2 is the rp_filter incident: strict (1) on all and on tunl0.
        ("node-1", {"all": 2, "default": 0, "eth0": 2, "tunl0": 0, "kube-ipvs0": 0, "lo": 0}),
        ("node-2", {"all": 1, "default": 0, "eth0": 2, "tunl0": 1, "kube-ipvs0": 0, "lo": 0}),
        ("node-3", {"all": 2, "default": 0, "eth0": 2, "tunl0": 0, "kube-ipvs0": 0, "lo": 0}),
    ],
)
def test_seed_incidents_rp_filter(name: str, expected: dict[str, int]) -> None:
    path = RECORDED / "seed-incidents" / "nodes" / name / "sysctl.txt"
    sysctls = parse_sysctl(path.read_text(), path.name)
    observed = {iface: sysctls.int_value(f"net.ipv4.conf.{iface}.rp_filter") for iface in expected}
    assert observed == expected


OLD_NODE = RECORDED / "seed-incidents-old-node" / "nodes"


@pytest.mark.parametrize("name", ["node-1", "node-2", "node-3"])
def test_proc_sys_reads_as_sysctl_a(name: str) -> None:
    # Both recorded from the same lab node: `sysctl -a` (busybox's on node-2) and the
    # `grep -H .` lines of /proc/sys that stand in where sysctl is missing.
    folder = OLD_NODE / name
    proc = parse_proc_sys((folder / "proc-sys.txt").read_text(), "proc-sys.txt")
    sysctl = parse_sysctl((folder / "sysctl.txt").read_text(), "sysctl.txt")
    assert len(proc) >= 20
    for key, value in proc.values.items():
        if key != "net.netfilter.nf_conntrack_count":  # it moves between the two reads
            assert sysctl.get(key) == value, key
    assert proc.int_value("net.ipv4.conf.all.rp_filter") == (1 if name == "node-2" else 2)
    assert proc.get("net.ipv4.tcp_tw_recycle") is None  # removed in Linux 4.12


def test_proc_sys_swaps_dots_and_slashes_as_sysctl_does() -> None:
    text = (
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter:2\n"
        "/proc/sys/net/ipv4/ip_local_port_range:1\t2\n"
    )
    sysctls = parse_proc_sys(text, "proc-sys.txt")
    assert dict(sysctls.values) == {
        "net.ipv4.conf.eth0/100.rp_filter": "2",
        "net.ipv4.ip_local_port_range": "1\t2",
    }


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("net.ipv4.ip_forward = 1\n", 1, "expected `/proc/sys/PATH:VALUE`"),
        ("/proc/sys/a/b:1\n/proc/sys/a/b:1\n", 2, "a.b appears twice"),
        ("\n", None, "empty"),
    ],
)
def test_parse_proc_sys_refuses(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_proc_sys(text, "nodes/node-2/proc-sys.txt")
    assert (raised.value.source, raised.value.line) == ("nodes/node-2/proc-sys.txt", line)
    assert message in raised.value.message


def test_busybox_sysctl_errors_pasted_in_are_not_values() -> None:
    text = (
        "net.ipv4.ip_forward = 1\n"
        "sysctl: error reading key 'net.ipv6.conf.all.stable_secret': Input/output error\n"
    )
    assert dict(parse_sysctl(text, "sysctl.txt").values) == {"net.ipv4.ip_forward": "1"}


def test_only_the_named_keys_are_kept_and_every_line_is_still_read() -> None:
    """A run keeps only what the checks read (a node lists about 20,000 keys, most of them per
    interface); `*` stands for one name, and a line that is not a sysctl line is still refused."""
    keep = keys_named(("net.ipv4.conf.*.rp_filter", "net.ipv4.vs.conntrack"))
    text = (
        "net.ipv4.conf.all.rp_filter = 1\nnet.ipv4.conf.eth0.rp_filter = 2\n"
        "net.ipv4.conf.eth0.forwarding = 1\nnet.ipv4.conf.a.b.rp_filter = 0\n"
        "net.ipv4.vs.conntrack = 1\nnet.ipv4.vs.conntrack_x = 1\n"
    )
    sysctls = parse_sysctl(text, "sysctl.txt", keep)
    assert dict(sysctls.values) == {
        "net.ipv4.conf.all.rp_filter": "1",
        "net.ipv4.conf.eth0.rp_filter": "2",
        "net.ipv4.vs.conntrack": "1",
    }
    with pytest.raises(ParseError, match="expected `key = value`"):
        parse_sysctl(text + "$ sysctl -a\n", "sysctl.txt", keep)
    nothing_named = parse_sysctl("kernel.hostname = n\n", "sysctl.txt", keep)
    assert len(nothing_named) == 0  # read, and none of it asked for: not "empty"
    proc = parse_proc_sys("/proc/sys/net/ipv4/conf/eth0.100/rp_filter:1\n", "p.txt", keep)
    assert proc.get("net.ipv4.conf.eth0/100.rp_filter") == "1"
