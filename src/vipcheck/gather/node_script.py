"""The one POSIX sh script a node runs: every NODE_FILES command, each output between markers.

No bash, no Python on the node, nothing written there. Each output is streamed as the command
prints it (the connection table can be large), framed so it comes back byte for byte:

    ===vipcheck:file=<name>
    <output, exactly>
    ===vipcheck:error=<first stderr line>      (only when the command failed)
    ===vipcheck:rc=<exit status>

The newline before `===vipcheck:error` / `===vipcheck:rc` belongs to the frame, not the output.
What the node cannot produce is one line, `===vipcheck:missing=<name>:<why>`. ipvsadm is not run
when /proc/net/ip_vs is absent: it would load the ip_vs module, and gathering only reads. The
script's last line is `===vipcheck:end`: an output without it was cut off, even exactly between
two frames, where every frame read is whole and nothing else would tell.

Old and small nodes get fallbacks, each run only where the preferred command cannot: `ip addr show`
and `ip -d link show` text where `ip -j` is unknown (iproute2 before 4.14, busybox; busybox's `ip`
has no `-d` either, so plain `ip link show`), /sys/class/net where there is no `ip`, /proc/sys
where there is no `sysctl` (the files of the sysctl keys the script is built for: the checks
declare them, and a live run hands the catalogue's down). `sysctl -a` that fails on one
unreadable key keeps what it printed, with a note naming its exit status and first error line.
/proc/net/ip_vs, the table of nodes without ipvsadm, is read 16 bytes at a time (`dd bs=16`):
see vipcheck_small_reads below.

nftables (issue 19): `nft list tables` first, then each family's kube-proxy table only where it
is listed, as JSON where nft has it, else as text; never `nft list ruleset`, which lists other
components' objects (an older nft crashed on a newer one's: kubernetes issue 136786). As
ipvsadm is not run without ip_vs, nft is not run where nf_tables is a module not loaded (nft
would load it): loaded, built in (modules.builtin) or a kernel without modules, it runs.
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from vipcheck.snapshot import (
    IP_SET_NOT_LOADED,
    IP_SET_UNKNOWN,
    IPTABLES_NOT_INSTALLED,
    NF_TABLES_NOT_LOADED,
    NF_TABLES_UNKNOWN,
    NFT_NOT_INSTALLED,
    NODE_FILES,
    PROC_SYS_COMMAND,
    proc_sys_command,
)

# Files whose output is kept when the command fails after printing it, with a note.
KEEPS_PARTIAL_OUTPUT = frozenset({"sysctl.txt"})

PREFIX = "===vipcheck:"
FILE = PREFIX + "file="
ERROR = PREFIX + "error="
RC = PREFIX + "rc="
MISSING = PREFIX + "missing="
END = PREFIX + "end"
_FRAME_END = "\n" + PREFIX

_PREAMBLE = """\
# vipcheck: read-only observation of this node, one output per frame (see vipcheck.gather).
exec 3>&1
LC_ALL=C
export LC_ALL
PATH="$PATH{path_suffix}"
export PATH
vipcheck_nl='
'
vipcheck_run() {
    printf '===vipcheck:file=%s\\n' "$1"
    vipcheck_file=$1
    vipcheck_ok=
    shift
    vipcheck_out=$( { "$@" 2>&1 1>&3 3>&-; printf '\\n%s' "$?"; } )
    vipcheck_rc=${vipcheck_out##*"$vipcheck_nl"}
    vipcheck_err=${vipcheck_out%"$vipcheck_nl"*}
    printf '\\n'
    if [ "$vipcheck_rc" != 0 ] && [ -n "$vipcheck_err" ]; then
        printf '===vipcheck:error=%s\\n' "${vipcheck_err%%"$vipcheck_nl"*}"
    fi
    printf '===vipcheck:rc=%s\\n' "$vipcheck_rc"
    # The file just produced whole, for a fallback that stands in only where it could not be.
    if [ "$vipcheck_rc" = 0 ]; then
        vipcheck_ok=$vipcheck_file
        vipcheck_done="${vipcheck_done-} $vipcheck_file"
    fi
}
# Whether a file was produced whole, earlier in this script.
vipcheck_produced() {
    case " ${vipcheck_done-} " in
        *" $1 "*) return 0 ;;
    esac
    return 1
}
vipcheck_missing() {
    vipcheck_ok=
    printf '===vipcheck:missing=%s:%s\\n' "$1" "$2"
}
# Whether `ip` speaks JSON (iproute2 >= 4.14), asked once.
vipcheck_ip_json() {
    if [ -z "${vipcheck_ip_json_known-}" ]; then
        if ip -j link show lo >/dev/null 2>&1; then
            vipcheck_ip_json_known=yes
        else
            vipcheck_ip_json_known=no
        fi
    fi
    [ "$vipcheck_ip_json_known" = yes ]
}
# `ip -d link show`, or `ip link show` where -d is unknown (busybox).
vipcheck_ip_link_text() {
    if ip -d link show lo >/dev/null 2>&1; then
        ip -d link show
    else
        ip link show
    fi
}
# Whether a module ($1: nf_tables, ip_set) is in the running kernel, so a tool using it cannot
# load it: prints present (loaded, or built in, or no loadable modules at all), absent (a module
# not loaded), or unknown (no modules.builtin to tell a built-in one from a missing one).
vipcheck_proc_modules=/proc/modules
vipcheck_sys_module=/sys/module
vipcheck_lib_modules=/lib/modules
vipcheck_proc_net=/proc/net
vipcheck_in_kernel() {
    if [ -d "$vipcheck_sys_module/$1" ] || [ ! -e "$vipcheck_proc_modules" ]; then
        echo present
        return
    fi
    while read -r vipcheck_module _; do
        if [ "$vipcheck_module" = "$1" ]; then
            echo present
            return
        fi
    done <"$vipcheck_proc_modules"
    vipcheck_builtin="$vipcheck_lib_modules/$(uname -r)/modules.builtin"
    if [ ! -r "$vipcheck_builtin" ]; then
        echo unknown
        return
    fi
    while read -r vipcheck_module; do
        case "$vipcheck_module" in
            */"$1".ko) echo present; return ;;
        esac
    done <"$vipcheck_builtin"
    echo absent
}
# One family's iptables chains ($1: iptables or ip6tables; $2: its legacy tables' file in
# /proc/net), from each backend whose tables the kernel holds, so no module is loaded: legacy
# where that file names tables (ip_tables loaded, with some), nft where nf_tables is in the
# kernel (iptables-nft-save lists, and creates no table where there is none). A backend that may
# hold tables but has no -save here is one `# vipcheck: unread:` line, never an empty backend.
vipcheck_xtables() {
    # A /proc file's size is 0 whatever it holds: whether it names a table is read.
    if [ -r "$vipcheck_proc_net/$2" ] && read -r _ <"$vipcheck_proc_net/$2"; then
        vipcheck_xtables_backend legacy "$1"
    fi
    if [ "$(vipcheck_in_kernel nf_tables)" = present ]; then
        vipcheck_xtables_backend nf_tables "$1"
    fi
    return 0
}
# One backend's dump ($1: legacy or nf_tables; $2: iptables or ip6tables): its own -save, or the
# plain one where `--version` names that backend (iptables before 1.8 is legacy and names none).
vipcheck_xtables_backend() {
    if [ "$1" = legacy ]; then vipcheck_save=$2-legacy-save; else vipcheck_save=$2-nft-save; fi
    if ! command -v "$vipcheck_save" >/dev/null 2>&1; then
        vipcheck_version=$("$2-save" --version 2>/dev/null) || vipcheck_version=
        case $vipcheck_version in
            *"($1)"*) vipcheck_plain=yes ;;
            "" | *"("*")"*) vipcheck_plain=no ;;
            *) if [ "$1" = legacy ]; then vipcheck_plain=yes; else vipcheck_plain=no; fi ;;
        esac
        if [ "$vipcheck_plain" = no ]; then
            printf '# vipcheck: unread: %s tables: no %s here to read them\n' "$1" "$vipcheck_save"
            return
        fi
        vipcheck_save=$2-save
    fi
    printf '# vipcheck: backend %s (%s)\n' "$1" "$vipcheck_save"
    { "$vipcheck_save" 2>&1; printf 'vipcheck-exit %s\n' "$?"; } | vipcheck_xtables_cut "$1"
}
# What the checks read of a dump: table and chain lines, and the rules of other chains that
# jump to a KUBE-* one (what must go before that chain can be deleted); a failure as unread.
vipcheck_xtables_cut() {
    vipcheck_said=
    while IFS= read -r vipcheck_line; do
        case $vipcheck_line in
            [*:]*) printf '%s\n' "$vipcheck_line" ;;
            "-A KUBE-"*) ;;
            "-A "*" -j KUBE-"*|"-A "*" -g KUBE-"*) printf '%s\n' "$vipcheck_line" ;;
            "-A "*|"#"*|COMMIT) ;;
            "vipcheck-exit 0") ;;
            "vipcheck-exit "*)
                printf '# vipcheck: unread: %s tables: %s exited %s: %s\n' "$1" \
                    "$vipcheck_save" "${vipcheck_line#vipcheck-exit }" "$vipcheck_said" ;;
            *) [ -n "$vipcheck_said" ] || vipcheck_said=$vipcheck_line ;;
        esac
    done
}
# Whether `nft list tables` lists this family's kube-proxy table. Asked once; that listing names
# tables only, so it cannot crash on objects a newer nft made (kubernetes issue 136786).
vipcheck_nft_has() {
    if [ -z "${vipcheck_nft_tables_known-}" ]; then
        vipcheck_nft_tables=$(nft list tables 2>/dev/null)
        vipcheck_nft_tables_known=yes
    fi
    case "$vipcheck_nl$vipcheck_nft_tables$vipcheck_nl" in
        *"${vipcheck_nl}table $1 kube-proxy$vipcheck_nl"*) return 0 ;;
    esac
    return 1
}
# Whether nft speaks JSON (k3s and rke2 have shipped builds without it), asked once.
vipcheck_nft_json() {
    if [ -z "${vipcheck_nft_json_known-}" ]; then
        if nft -j list tables >/dev/null 2>&1; then
            vipcheck_nft_json_known=yes
        else
            vipcheck_nft_json_known=no
        fi
    fi
    [ "$vipcheck_nft_json_known" = yes ]
}
# A /proc file in reads shorter than any of its records. Where the kernel keeps one IPVS service
# table for all network namespaces (Linux 6.1; nodes as containers on one host: kind), a read of
# /proc/net/ip_vs that takes several records resumes past services of this namespace, so `cat`
# silently loses some (1,349 of 2,104 on the lab). A read shorter than the shortest record (18
# bytes, a service without real servers) takes at most one, and resumes where it should.
vipcheck_small_reads() {
    if command -v dd >/dev/null 2>&1; then
        dd if="$1" bs=16
    else
        cat "$1"
    fi
}
# Each readable file's lines as `grep -H .` prints them (PATH:LINE), with no grep needed.
vipcheck_grep_h() {
    for vipcheck_path in "$@"; do
        [ -f "$vipcheck_path" ] || continue
        { while IFS= read -r vipcheck_line || [ -n "$vipcheck_line" ]; do
            [ -n "$vipcheck_line" ] && printf '%s:%s\\n' "$vipcheck_path" "$vipcheck_line"
        done <"$vipcheck_path"; } 2>/dev/null
    done
    return 0
}
"""
_IP_VS = "/proc/net/ip_vs"
_NO_IP_VS = f"{_IP_VS} absent: ip_vs module not loaded"


# Files the script produces with a function of its own rather than the documented command; a
# documented `grep -H .` runs as vipcheck_grep_h (no grep needed).
_SCRIPT_COMMANDS = {
    "proc-ip_vs.txt": "vipcheck_small_reads /proc/net/ip_vs",
    "ip-link.txt": "vipcheck_ip_link_text",
    "iptables-chains.txt": "vipcheck_xtables iptables ip_tables_names",
    "ip6tables-chains.txt": "vipcheck_xtables ip6tables ip6_tables_names",
}
_GREP_H = "grep -H . "
PROC_SYS = "proc-sys.txt"
# A sysctl key the script may name: words of letters, digits, `_` and `-`, `*` a glob in one.
_SYSCTL_KEY = re.compile(r"[\w*-]+(?:\.[\w*-]+)+", re.ASCII)
_HAS_IP = "command -v ip >/dev/null 2>&1"
_IP_WITHOUT_JSON = (
    "`ip -j` unknown (iproute2 before 4.14, or busybox): ip-addr.txt and ip-link.txt hold the text"
)
_HAS_NFT = "command -v nft >/dev/null 2>&1"


def _has_xtables(tool: str) -> str:
    """The sh test that some -save of this iptables family is installed (plain, legacy or nft)."""
    return (
        "{ "
        + " || ".join(
            f"command -v {tool}{variant}-save >/dev/null 2>&1"
            for variant in ("", "-legacy", "-nft")
        )
        + "; }"
    )


def _nft_table_guards(family: str, text: bool) -> list[tuple[str, str | None]]:
    """A family's kube-proxy table is listed only where `nft list tables` (nft-tables.txt, just
    before) was produced and names it: a node without the table has nothing to list, and a
    node where nft failed says so once, in that file. Its text only where its JSON could not be
    produced (nft without JSON, or failing on JSON)."""
    json_name = f"nft-{family}-kube-proxy.json"
    guards: list[tuple[str, str | None]] = [
        (_HAS_NFT, NFT_NOT_INSTALLED),
        ("vipcheck_produced nft-tables.txt", None),
        (f"vipcheck_nft_has {family}", None),
    ]
    if text:
        return [*guards, (f"{{ ! vipcheck_produced {json_name}; }}", None)]
    no_json = f"nft without JSON support: nft-{family}-kube-proxy.txt holds the text"
    return [*guards, ("vipcheck_nft_json", no_json)]


# Fallbacks: (sh test, why) guards before the usual ones; why None means skip in silence, as
# the preferred file was produced.
_FALLBACK_GUARDS: dict[str, list[tuple[str, str | None]]] = {
    "ip-addr.json": [(_HAS_IP, "ip not installed"), ("vipcheck_ip_json", _IP_WITHOUT_JSON)],
    "ip-link.json": [(_HAS_IP, "ip not installed"), ("vipcheck_ip_json", _IP_WITHOUT_JSON)],
    "ip-addr.txt": [(_HAS_IP, "ip not installed"), ("{ ! vipcheck_ip_json; }", None)],
    "ip-link.txt": [(_HAS_IP, "ip not installed"), ("{ ! vipcheck_ip_json; }", None)],
    "sys-class-net.txt": [
        (f"{{ ! {_HAS_IP}; }}", None),
        ("[ -d /sys/class/net ]", "/sys/class/net absent"),
    ],
    PROC_SYS: [("{ ! command -v sysctl >/dev/null 2>&1; }", None)],
    # The table ipvsadm-Ln.txt (just before it in NODE_FILES) holds: read only where that was not
    # produced (no ipvsadm: old nodes, kind's; ipvsadm failing), with small reads.
    "proc-ip_vs.txt": [
        (f"[ -e {_IP_VS} ]", _NO_IP_VS),
        ('[ "${vipcheck_ok-}" != ipvsadm-Ln.txt ]', None),
    ],
    "nft-tables.txt": [
        (_HAS_NFT, NFT_NOT_INSTALLED),
        ('[ "$(vipcheck_in_kernel nf_tables)" != unknown ]', NF_TABLES_UNKNOWN),
        ('[ "$(vipcheck_in_kernel nf_tables)" = present ]', NF_TABLES_NOT_LOADED),
    ],
    # ipset would load ip_set: asked only where it is in the kernel (no set exists otherwise).
    "ipset-list-names.txt": [
        ('[ "$(vipcheck_in_kernel ip_set)" != unknown ]', IP_SET_UNKNOWN),
        ('[ "$(vipcheck_in_kernel ip_set)" = present ]', IP_SET_NOT_LOADED),
        ("command -v ipset >/dev/null 2>&1", "ipset not installed"),
    ],
    "iptables-chains.txt": [(_has_xtables("iptables"), IPTABLES_NOT_INSTALLED)],
    "ip6tables-chains.txt": [(_has_xtables("ip6tables"), IPTABLES_NOT_INSTALLED)],
    **{
        f"nft-{family}-kube-proxy.{suffix}": _nft_table_guards(family, suffix == "txt")
        for family in ("ip", "ip6")
        for suffix in ("json", "txt")
    },
}
# Files of the format the script never produces. `ipvsadm -Lnc` prints /proc/net/ip_vs_conn
# again (it reads that file): where the file is, ip_vs_conn.txt holds the table, which on a busy
# director would come back twice; where it is not, ipvsadm would load the module. The name stays
# for pasted evidence, in which it is often the only table.
PASTED_ONLY = frozenset({"ipvsadm-Lnc.txt"})

# Files a node's output may hold neither as gathered nor as missing: those produced only where
# the preferred one cannot be, and the pasted-only ones.
FALLBACK_FILES = PASTED_ONLY | frozenset(
    name for name, guards in _FALLBACK_GUARDS.items() if any(why is None for _, why in guards)
)


def _guards(name: str, command: str, documented: bool) -> list[tuple[str, str | None]]:
    """Preconditions as (sh test, why the file is missing when it fails), checked in order."""
    if documented and name in _FALLBACK_GUARDS:
        return _FALLBACK_GUARDS[name]
    words = command.split()
    if words[0] == "cat":
        path = words[1]
        absent = f"{path} absent: ip_vs module not loaded" if path.startswith(_IP_VS) else None
        return [(f"[ -e {shlex.quote(path)} ]", absent or f"{path} absent")]
    tool_present = f"command -v {shlex.quote(words[0])} >/dev/null 2>&1"
    if words[0] == "ipvsadm":
        no_module = f"{_NO_IP_VS}; ipvsadm not run, as it would load it"
        return [(f"[ -e {_IP_VS} ]", no_module), (tool_present, "ipvsadm not installed")]
    return [(tool_present, f"{words[0]} not installed")]


def build_node_script(
    files: Mapping[str, str] = NODE_FILES,
    *,
    sysctl_keys: Sequence[str] = (),
    path_suffix: str = ":/usr/sbin:/sbin",
    fallbacks: bool = True,
) -> str:
    """The script for a table of file name -> command (plain words, as NODE_FILES holds).

    sysctl_keys are the keys proc-sys.txt's documented command reads (`*` a glob): the checks
    declare them, and this layer knows no check; without any, that file is not produced.
    path_suffix is appended to the login's PATH, where ipvsadm, sysctl and ip usually live.
    With fallbacks, the files of FALLBACK_FILES are produced only where the preferred ones cannot
    be, and PASTED_ONLY ones not at all; without, every command runs as given (to record them all).
    """
    parts = [_PREAMBLE.replace("{path_suffix}", path_suffix)]
    known = _for_sysctl_keys(NODE_FILES, sysctl_keys)
    for name, command in _for_sysctl_keys(files, sysctl_keys).items():
        quoted = shlex.quote(name)
        documented = fallbacks and known.get(name) == command
        if documented and name in PASTED_ONLY:
            continue
        script_command = _script_command(name, command) if documented else command
        words = script_command.split()
        # Globs (/proc/sys/net/ipv4/conf/*/rp_filter) are left for the shell to expand.
        run = f"vipcheck_run {quoted} " + " ".join(
            word if "*" in word else shlex.quote(word) for word in words
        )
        for index, (test, why) in enumerate(_guards(name, command, documented)):
            keyword = "if" if index == 0 else "elif"
            parts.append(f"{keyword} ! {test}; then\n")
            parts.append(
                "    :\n" if why is None else f"    vipcheck_missing {quoted} {shlex.quote(why)}\n"
            )
        parts.append(f"else\n    {run}\nfi\n")
    parts.append(f"printf '%s\\n' {shlex.quote(END)}\nexit 0\n")
    return "".join(parts)


def _for_sysctl_keys(files: Mapping[str, str], keys: Sequence[str]) -> dict[str, str]:
    """The table with proc-sys.txt's documented form made the command for these keys, or left
    out without any (nothing to read)."""
    if files.get(PROC_SYS) != PROC_SYS_COMMAND:
        return dict(files)
    if not keys:
        return {name: command for name, command in files.items() if name != PROC_SYS}
    if bad := [key for key in keys if not _SYSCTL_KEY.fullmatch(key)]:
        raise ValueError(f"sysctl key {bad[0]!r}: expected dotted words of [A-Za-z0-9_*-]")
    return {**files, PROC_SYS: proc_sys_command(keys)}


def _script_command(name: str, command: str) -> str:
    """What the script runs for a documented command: its own function where it has one."""
    if command.startswith(_GREP_H):
        return "vipcheck_grep_h " + command.removeprefix(_GREP_H)
    return _SCRIPT_COMMANDS.get(name, command)


@dataclass(frozen=True, slots=True)
class NodeFrames:
    """The script's output cut back into files, why each missing one is missing, and notes."""

    files: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    # Whether the script's end marker was read: without it the output was cut somewhere.
    complete: bool = False
    last: str | None = None  # the last file named, whole or not, where a cut output stops


def split_node_output(stdout: str) -> tuple[dict[str, str], dict[str, str]]:
    """Cut the script's output back into files, and why each missing one is missing."""
    frames = split_node_frames(stdout)
    return frames.files, frames.missing


CUT_OFF = "output cut off"


def split_node_frames(stdout: str) -> NodeFrames:
    """Cut the script's output back into files, missing reasons and notes on partial outputs."""
    frames = NodeFrames()
    files, missing = frames.files, frames.missing
    position, last = 0, None
    while position < len(stdout):
        line_end = _line_end(stdout, position)
        line = stdout[position:line_end]
        position = line_end + 1
        if line == END and line_end < len(stdout):
            return replace(frames, complete=True, last=last)
        if line.startswith(MISSING):
            name, _, why = line.removeprefix(MISSING).partition(":")
            missing[name] = why
            last = name
        elif line.startswith(FILE):
            name = last = line.removeprefix(FILE)
            end = stdout.find(_FRAME_END, position)
            if end < 0:
                missing[name] = f"{CUT_OFF} before its end (connection lost?)"
                break
            content = stdout[position:end]
            position, rc, error = _trailer(stdout, end + 1)
            if rc == "0":
                files[name] = content
            elif rc is None:
                missing[name] = f"{CUT_OFF} before its exit status (connection lost?)"
            elif name in KEEPS_PARTIAL_OUTPUT and content.strip():
                files[name] = content
                frames.notes[name] = f"exited {rc} after printing what it could: " + (
                    error or "no message"
                )
            else:
                missing[name] = error or _silent_failure(rc)
    return replace(frames, last=last)


def _silent_failure(rc: str) -> str:
    """Why a command that printed no error failed: a crash (nft 0.9.8 segfaults on
    kube-proxy's sets) is named by its signal, as sh reports it in the status (128 + N)."""
    if rc.isdigit() and 128 < int(rc) < 128 + signal.NSIG:
        number = int(rc) - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name} (exit status {rc})"
    return f"exited {rc} without a message"


def _trailer(stdout: str, position: int) -> tuple[int, str | None, str | None]:
    """Read a frame's error and rc lines; return where the next frame starts, rc and error."""
    error = None
    while position < len(stdout):
        line_end = _line_end(stdout, position)
        line = stdout[position:line_end]
        if line.startswith(ERROR):
            error = line.removeprefix(ERROR)
        elif line.startswith(RC):
            return line_end + 1, line.removeprefix(RC), error
        else:
            break
        position = line_end + 1
    return position, None, error


def _line_end(text: str, position: int) -> int:
    end = text.find("\n", position)
    return len(text) if end < 0 else end
