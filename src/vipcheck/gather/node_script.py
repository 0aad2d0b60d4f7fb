"""The one POSIX sh script a node runs: every NODE_FILES command, each output between markers.

No bash, no Python on the node, nothing written there. Each output is streamed as the command
prints it (the connection table can be large), framed so it comes back byte for byte:

    ===vipcheck:file=<name>
    <output, exactly>
    ===vipcheck:error=<first stderr line>      (only when the command failed)
    ===vipcheck:rc=<exit status>

The newline before `===vipcheck:error` / `===vipcheck:rc` belongs to the frame, not the output.
What the node cannot produce is one line, `===vipcheck:missing=<name>:<why>`. ipvsadm is not run
when /proc/net/ip_vs is absent: it would load the ip_vs module, and gathering only reads.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from vipcheck.snapshot import NODE_FILES

PREFIX = "===vipcheck:"
FILE = PREFIX + "file="
ERROR = PREFIX + "error="
RC = PREFIX + "rc="
MISSING = PREFIX + "missing="
_FRAME_END = "\n" + PREFIX

_PREAMBLE = """\
# vipcheck: read-only observation of this node, one output per frame (see vipcheck.gather).
exec 3>&1
LC_ALL=C
export LC_ALL
PATH="$PATH:/usr/sbin:/sbin"
export PATH
vipcheck_nl='
'
vipcheck_run() {
    printf '===vipcheck:file=%s\\n' "$1"
    shift
    vipcheck_out=$( { "$@" 2>&1 1>&3 3>&-; printf '\\n%s' "$?"; } )
    vipcheck_rc=${vipcheck_out##*"$vipcheck_nl"}
    vipcheck_err=${vipcheck_out%"$vipcheck_nl"*}
    printf '\\n'
    if [ "$vipcheck_rc" != 0 ] && [ -n "$vipcheck_err" ]; then
        printf '===vipcheck:error=%s\\n' "${vipcheck_err%%"$vipcheck_nl"*}"
    fi
    printf '===vipcheck:rc=%s\\n' "$vipcheck_rc"
}
vipcheck_missing() {
    printf '===vipcheck:missing=%s:%s\\n' "$1" "$2"
}
"""
_IP_VS = "/proc/net/ip_vs"
_NO_IP_VS = f"{_IP_VS} absent: ip_vs module not loaded"


def _guards(command: str) -> list[tuple[str, str]]:
    """Preconditions as (sh test, why the file is missing when it fails), checked in order."""
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


def build_node_script(files: Mapping[str, str] = NODE_FILES) -> str:
    """The script for a table of file name -> command (plain words, as NODE_FILES holds)."""
    parts = [_PREAMBLE]
    for name, command in files.items():
        quoted = shlex.quote(name)
        run = f"vipcheck_run {quoted} {' '.join(shlex.quote(w) for w in command.split())}"
        for index, (test, why) in enumerate(_guards(command)):
            keyword = "if" if index == 0 else "elif"
            parts.append(f"{keyword} ! {test}; then\n")
            parts.append(f"    vipcheck_missing {quoted} {shlex.quote(why)}\n")
        parts.append(f"else\n    {run}\nfi\n")
    parts.append("exit 0\n")
    return "".join(parts)


NODE_SCRIPT = build_node_script()


def split_node_output(stdout: str) -> tuple[dict[str, str], dict[str, str]]:
    """Cut the script's output back into files, and why each missing one is missing."""
    files: dict[str, str] = {}
    missing: dict[str, str] = {}
    position = 0
    while position < len(stdout):
        line_end = _line_end(stdout, position)
        line = stdout[position:line_end]
        position = line_end + 1
        if line.startswith(MISSING):
            name, _, why = line.removeprefix(MISSING).partition(":")
            missing[name] = why
        elif line.startswith(FILE):
            name = line.removeprefix(FILE)
            end = stdout.find(_FRAME_END, position)
            if end < 0:
                missing[name] = "output cut off before its end (connection lost?)"
                break
            content = stdout[position:end]
            position, rc, error = _trailer(stdout, end + 1)
            if rc == "0":
                files[name] = content
            elif rc is None:
                missing[name] = "output cut off before its exit status (connection lost?)"
            else:
                missing[name] = error or f"exited {rc} without a message"
    return files, missing


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
