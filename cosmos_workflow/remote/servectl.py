"""Shell snippets that control the warm server on the host (POSIX sh + coreutils).

The server folder (`<root>/server/`) holds, besides the supervisor's own files (`request.json`,
`state.json`, `server.log`, see `worker.py serve`):

- `pid`        the process id of the detached wrapper (`setsid` makes it a process-group leader,
               so `kill -- -PID` reaches the supervisor, vLLM's server and its engine);
- `stdout.log` what the supervisor prints;
- `launching`  a lock folder, present while one `cosmos serve start` starts the server.

The same detachment as a job's (jobctl.py): `setsid nohup`, stdin from /dev/null, so the server
outlives the SSH session that started it. Every value is quoted with `shlex.quote`.
"""

from __future__ import annotations

import posixpath
import shlex

from .jobctl import _alive
from .protocol import NO_SERVER_EXIT
from .protocol import SERVER_ALIVE_PREFIX as ALIVE_PREFIX
from .protocol import SERVER_LAUNCHED as LAUNCHED
from .protocol import SERVER_RUNNING as RUNNING
from .protocol import SERVER_STATE_PREFIX as STATE_PREFIX


def server_dir(root: str) -> str:
    return posixpath.join(root, "server")


def probe(folder: str) -> str:
    """Prints `@@cosmos-server-state {state.json on one line}` and `@@cosmos-server-alive yes|no`.

    Prints nothing of the state when there is none; creates nothing.
    """
    q = shlex.quote
    return (
        f"cd {q(folder)} 2>/dev/null || exit 0; "
        f'if [ -s state.json ]; then printf "%s" "{STATE_PREFIX}"; tr -d "\\n" < state.json; '
        "echo; fi; "
        f'if {_alive("pid")}; then echo "{ALIVE_PREFIX}yes"; else echo "{ALIVE_PREFIX}no"; fi'
    )


def launch(folder: str, server_command: str) -> str:
    """Start the supervisor detached unless one is alive; print LAUNCHED or RUNNING.

    Two `cosmos serve start` at once start ONE server (a mkdir lock, as jobctl.launch_and_follow
    does); a lock left by a launcher killed mid-launch expires after a minute.
    """
    q = shlex.quote
    wrapper = f"echo $$ > pid.tmp && mv pid.tmp pid; ({server_command}); echo $? > exitcode"
    start = (
        "rm -f exitcode pid state.json && "
        f"{{ setsid nohup sh -c {q(wrapper)} > stdout.log 2>&1 < /dev/null & }}; "
        "i=0; while [ ! -s pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
        f"echo {LAUNCHED}; "
    )
    return (
        f"cd {q(folder)} && "
        "find . -maxdepth 1 -name launching -mmin +1 -exec rmdir {} + 2>/dev/null; "
        f"if {_alive('pid')}; then echo {RUNNING}; exit 0; fi; "
        "if mkdir launching 2>/dev/null; then "
        f"if {_alive('pid')}; then echo {RUNNING}; else {start}fi; "
        "rmdir launching; "
        "else "
        "i=0; while [ -d launching ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; "
        f"echo {RUNNING}; "
        "fi"
    )


def stop(folder: str, container: str | None = None, *, docker: str = "docker") -> str:
    """Stop the server: SIGTERM its process group (and its container, with the runner's
    `docker` command), wait until it is gone.

    Prints `stopped` when it was running, `not-running` otherwise (and changes nothing then).
    """
    q = shlex.quote
    # vLLM's own session (server.pid), should the supervisor have died without stopping it.
    leftover = f'if {_alive("server.pid")}; then kill -KILL "-$(cat server.pid)" 2>/dev/null; fi; '
    words = f"cd {q(folder)} 2>/dev/null || {{ echo not-running; exit 0; }}; "
    words += f"if ! {_alive('pid')}; then {leftover}echo not-running; exit 0; fi; "
    if container:
        words += f"{docker} stop -t 35 {q(container)} >/dev/null 2>&1 || true; "
    # The supervisor stops vLLM's server on SIGTERM and writes state.json; give it the grace
    # it gives the server, then kill what is left.
    words += (
        'kill -TERM "-$(cat pid)" 2>/dev/null; '
        f"i=0; while {_alive('pid')} && [ $i -lt 700 ]; do sleep 0.05; i=$((i+1)); done; "
        f'if {_alive("pid")}; then kill -KILL "-$(cat pid)" 2>/dev/null; fi; '
        f"{leftover}echo stopped"
    )
    return words


def logs(folder: str, *, follow: bool = False, lines: int = 200) -> str:
    """server.log: the last `lines`, or followed until the server stops.

    Exits NO_SERVER_EXIT, creating nothing, when no server was ever started here.
    """
    q = shlex.quote
    log = posixpath.join(folder, "server.log")
    exists = f"[ -e {q(log)} ] || exit {NO_SERVER_EXIT}; "
    if not follow:
        return exists + f"tail -n {int(lines)} {q(log)}"
    return exists + (
        f"cd {q(folder)} && "
        f"if {_alive('pid')}; then tail -n {int(lines)} -s 0.2 "
        f'--pid="$(cat pid)" -F server.log 2>/dev/null; else tail -n {int(lines)} server.log; fi'
    )
