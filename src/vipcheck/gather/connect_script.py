"""The POSIX sh script a vantage point runs: sequential TCP connects and closes, one line each.

It sends no payload and writes nothing on the host. It uses what the host has, checked in order:
bash's /dev/tcp (with `timeout`), python3, or nc (with `timeout`). Output, one line per attempt:

    TOOL <bash|python3|nc|none>
    ATTEMPT <address> <port> <seq> <CONNECTED|REFUSED|TIMEOUT|RESET|ERROR> <ms|-> [detail]
    BUDGET <address> <port> <attempts not made>        (the script's time cap was reached)
    DONE

Attempts run one after another with a small delay, and none starts when it could end past the
script's time cap, so one vantage point opens at most one connection at a time.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from vipcheck.model.handshakes import ProbeSettings
from vipcheck.model.node import HostPort

TOOLS = ("bash", "python3", "nc")

_PREAMBLE = r"""# vipcheck probe: TCP connect and close only, no payload, nothing written.
LC_ALL=C
export LC_ALL
PATH="$PATH:/usr/bin:/bin:/usr/sbin:/sbin"
vp_nl='
'
vp_start=$(date +%s)
vp_nc_z=
vp_nc_e=
vp_spent=
vp_py='
import socket, sys, time
a, p, t = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET)
s.settimeout(t)
t0 = time.monotonic()
try:
    s.connect((a, p))
    r, d = "CONNECTED", ""
except socket.timeout:
    r, d = "TIMEOUT", "no answer within %g s" % t
except ConnectionRefusedError:
    r, d = "REFUSED", "connect: Connection refused"
except ConnectionResetError:
    r, d = "RESET", "connect: Connection reset by peer"
except OSError as e:
    r, d = "ERROR", "connect: %s" % (e.strerror or e)
finally:
    s.close()
print(r, int((time.monotonic() - t0) * 1000), d)
'
vp_bash='s=${EPOCHREALTIME/./}
if exec 3<>"/dev/tcp/$0/$1"; then r=CONNECTED; exec 3>&-; else r=FAILED; fi
e=${EPOCHREALTIME/./}
if [ -n "$s" ]; then echo "$r $(( (e - s) / 1000 ))"; else echo "$r -"; fi'

vp_now_ms() {
    vp_ns=$(date +%s%N 2>/dev/null)
    case "$vp_ns" in
        *[!0-9]*|'') echo - ;;
        *) echo $((vp_ns / 1000000)) ;;
    esac
}

vp_classify() {
    # $1 exit status, $2 output, $3 ms: one `OUTCOME ms detail` line.
    vp_last=${2##*"$vp_nl"}
    vp_first=${2%%"$vp_nl"*}
    case "$1:$2" in
        124:*|137:*|143:*)
            echo "TIMEOUT $((vp_timeout * 1000)) no answer within $vp_timeout s"
            return ;;
    esac
    case "$vp_last" in
        CONNECTED*) echo "$vp_last"; return ;;
        FAILED*) vp_ms=${vp_last#FAILED } ;;
        *) vp_ms=$3 ;;
    esac
    case "$2" in
        *[Rr]efused*) echo "REFUSED $vp_ms connect: Connection refused" ;;
        *[Rr]eset*) echo "RESET $vp_ms connect: Connection reset by peer" ;;
        *[Tt]imed\ out*) echo "TIMEOUT $vp_ms connect: Connection timed out" ;;
        *) if [ "$1" = 0 ] && [ "$vp_tool" = nc ]; then echo "CONNECTED $vp_ms"
           else
               vp_first=$(printf '%s' "$vp_first" | tr -s ' \t' ' ' | cut -c1-120)
               echo "ERROR $vp_ms $vp_first"
           fi ;;
    esac
}

vp_connect() {
    # $1 address, $2 port: prints `OUTCOME ms detail`.
    case "$vp_tool" in
        bash)
            vp_out=$(timeout "$vp_timeout" bash -c "$vp_bash" "$1" "$2" 2>&1)
            vp_classify "$?" "$vp_out" - ;;
        python3)
            python3 -c "$vp_py" "$1" "$2" "$vp_timeout" 2>&1 | tail -n 1 ;;
        nc)
            vp_t0=$(vp_now_ms)
            vp_out=$(timeout "$vp_timeout" nc $vp_nc_z -w "$vp_timeout" "$1" "$2" $vp_nc_e \
                </dev/null 2>&1 >/dev/null)
            vp_rc=$?
            vp_t1=$(vp_now_ms)
            if [ "$vp_t0" = - ] || [ "$vp_t1" = - ]; then vp_ms=-; else vp_ms=$((vp_t1 - vp_t0)); fi
            vp_classify "$vp_rc" "$vp_out" "$vp_ms" ;;
    esac
}

vp_probe() {
    # $1 address, $2 port, $3 attempts. Once the cap is reached (vp_spent), every later target
    # is only listed: no `date` per target, which on a slow host with thousands of targets took
    # longer than the slack the caller allows past the cap, losing the whole round's output.
    vp_i=1
    while [ "$vp_i" -le "$3" ]; do
        if [ -z "$vp_spent" ] && [ $(( $(date +%s) - vp_start + vp_timeout )) -gt "$vp_budget" ]
        then
            vp_spent=1
        fi
        if [ -n "$vp_spent" ]; then
            echo "BUDGET $1 $2 $(( $3 - vp_i + 1 ))"
            return
        fi
        echo "ATTEMPT $1 $2 $vp_i $(vp_connect "$1" "$2")"
        vp_i=$((vp_i + 1))
        sleep "$vp_delay" 2>/dev/null || :
    done
}
"""


def _detect(tools: Sequence[str]) -> str:
    """The if-chain picking the first usable tool, in the given order."""
    needs = {
        "bash": "command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1",
        "python3": "command -v python3 >/dev/null 2>&1",
        "nc": "command -v nc >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1",
    }
    lines = []
    for index, tool in enumerate(tools):
        keyword = "if" if index == 0 else "elif"
        lines.append(f"{keyword} {needs[tool]}; then\n    vp_tool={tool}\n")
    lines.append("else\n    vp_tool=none\nfi\n")
    lines.append(
        # -z connects and closes (OpenBSD, traditional); busybox's nc has -e PROG instead,
        # and `true` exits at once, closing the connection without a byte either way.
        'if [ "$vp_tool" = nc ]; then\n'
        "    vp_nc_help=$(nc -h 2>&1)\n"
        '    case "$vp_nc_help" in\n'
        "        *' -z'*) vp_nc_z=-z ;;\n"
        "        *'-e PROG'*) vp_nc_e='-e true' ;;\n"
        "    esac\n"
        "fi\n"
        'echo "TOOL $vp_tool"\n'
    )
    return "".join(lines)


def build_probe_script(
    targets: Sequence[tuple[HostPort, int]],
    settings: ProbeSettings,
    tools: Sequence[str] = TOOLS,
) -> str:
    """The script for (address:port, attempts) targets; addresses are IP objects, never text."""
    unknown = [tool for tool in tools if tool not in TOOLS]
    if unknown or not tools:
        raise ValueError(f"probe tools must be among {TOOLS}, got {tuple(tools)}")
    bounds = (
        f"vp_timeout={int(settings.timeout_s)}\n"
        f"vp_delay={float(settings.delay_s):g}\n"
        f"vp_budget={int(settings.budget_s)}\n"
    )
    parts = [_PREAMBLE, bounds, _detect(tools)]
    parts.append('if [ "$vp_tool" = none ]; then echo DONE; exit 0; fi\n')
    for address, attempts in targets:
        # str() of an ip_address and ints: nothing the shell could interpret, quoted all the same.
        words = (str(address.address), str(int(address.port)), str(int(attempts)))
        parts.append(f"vp_probe {' '.join(shlex.quote(w) for w in words)}\n")
    parts.append("echo DONE\nexit 0\n")
    return "".join(parts)
