"""Shell snippets that control a detached worker job on the host (POSIX sh + coreutils).

A job folder (`<root>/jobs/<job_id>/`) holds, besides the worker's own files:

- `pid`       the process id of the detached wrapper (`setsid` makes it a process-group leader,
              so `kill -- -PID` reaches the worker and everything it started);
- `stdout.log` what the worker prints (log lines and `@@cosmos-progress` lines);
- `exitcode`  written by the wrapper when the worker ends: its exit status;
- `cancelled` present when `cosmos remote cancel` stopped the job;
- `launching` a lock folder, present while one `cosmos upsample` starts the worker.

The worker runs detached from the SSH session (`setsid nohup`, stdin from /dev/null), so a
dropped connection, a closed laptop or Ctrl+C ends only the `tail` that streams its output.

Pure functions: paths and the worker command in, one shell command line out. Every value is
quoted with `shlex.quote`.
"""

from __future__ import annotations

import posixpath
import shlex

from .protocol import EXIT_PREFIX, GPU_PREFIX, NO_JOB, NO_JOB_EXIT

# Seconds between tail's checks of the worker's pid (GNU tail --pid); the default is 1 s.
_FOLLOW_POLL_S = "0.2"


def job_dir(root: str, job_id: str) -> str:
    return posixpath.join(root, "jobs", job_id)


def _alive(pid_file: str) -> str:
    """A test: the pid in `pid_file` exists and is a live process."""
    return f'{{ [ -s {pid_file} ] && kill -0 "$(cat {pid_file})" 2>/dev/null; }}'


def launch_and_follow(job: str, worker_command: str, *, skip_lines: int = 0) -> str:
    """Start the worker detached unless it is already running, then stream its output.

    Streams `stdout.log` from line `skip_lines + 1` until the worker process ends, then prints
    `@@cosmos-exit <code>` (`lost` when the worker died without writing its exit code, e.g.
    SIGKILL; `cancelled` after `cosmos remote cancel`). Running it again after a dropped
    connection reattaches instead of starting twice.
    """
    q = shlex.quote
    # The wrapper records its own pid: `setsid` may fork (it does under bash), so `$!` would
    # be a short-lived parent, not the session leader. The worker runs in a subshell: it may
    # `exec`, which must not skip writing the exit code.
    wrapper = f"echo $$ > pid.tmp && mv pid.tmp pid; ({worker_command}); echo $? > exitcode"
    start = (
        "rm -f exitcode cancelled pid && "
        f"{{ setsid nohup sh -c {q(wrapper)} > stdout.log 2>&1 < /dev/null & }}; "
        "i=0; while [ ! -s pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
    )
    # Two runs of the same command at once must start ONE worker: the launcher that creates
    # `launching` (mkdir is atomic) looks again and starts it; the others wait for it to finish
    # launching, then follow. A lock left by a launcher killed mid-launch expires after a minute.
    return (
        f"cd {q(job)} && "
        "find . -maxdepth 1 -name launching -mmin +1 -exec rmdir {} + 2>/dev/null; "
        f"if ! {_alive('pid')}; then "
        "if mkdir launching 2>/dev/null; then "
        f"if ! {_alive('pid')}; then {start}fi; "
        "rmdir launching; "
        "else "
        "i=0; while [ -d launching ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; "
        "fi; "
        "fi; "
        "touch stdout.log; "
        f'tail -n +{int(skip_lines) + 1} -s {_FOLLOW_POLL_S} --pid="$(cat pid)" -F stdout.log '
        "2>/dev/null; "
        f'if [ -e cancelled ]; then echo "{EXIT_PREFIX}cancelled"; '
        f'else echo "{EXIT_PREFIX}$(cat exitcode 2>/dev/null || echo lost)"; fi'
    )


def cancel(job: str, container: str | None = None, *, docker: str = "docker") -> str:
    """Stop a running job: SIGTERM its process group (and its container, for docker, with the
    `docker` command the runner uses: `RunnerSettings.docker`).

    Prints `NO_JOB` (and changes nothing) when the host has no such job.
    """
    q = shlex.quote
    words = f"if ! cd {q(job)} 2>/dev/null; then echo {NO_JOB}; exit 0; fi; touch cancelled && "
    # `kill -TERM -PGID` (no `--`): the form both dash and bash accept for a process group.
    words += f'if {_alive("pid")}; then kill -TERM "-$(cat pid)" 2>/dev/null; fi'
    if container:
        words += f"; {docker} stop {q(container)} >/dev/null 2>&1 || true"
    return words + "; echo cancelled"


def status(root: str, job_id: str | None = None) -> str:
    """One line per job: `<job_id>\\t<alive|dead>\\t<cancelled|->\\t<status.json on one line>`.

    Then the GPUs, if any: lines prefixed `@@gpu ` (nvidia-smi CSV).
    """
    q = shlex.quote
    jobs = posixpath.join(root, "jobs")
    pattern = q(job_id) if job_id else "*"
    return (
        f"cd {q(jobs)} 2>/dev/null && for j in {pattern}; do "
        '[ -d "$j" ] || continue; '
        'if [ -s "$j/pid" ] && kill -0 "$(cat "$j/pid")" 2>/dev/null; '
        "then a=alive; else a=dead; fi; "
        'if [ -e "$j/cancelled" ]; then c=cancelled; else c=-; fi; '
        'printf "%s\\t%s\\t%s\\t" "$j" "$a" "$c"; '
        '(tr -d "\\n" < "$j/status.json") 2>/dev/null; echo; '
        "done; "
        "nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu "
        f"--format=csv,noheader 2>/dev/null | sed 's/^/{GPU_PREFIX}/' || true"
    )


def logs(job: str, *, follow: bool = False, lines: int = 200) -> str:
    """The worker's log: the last `lines`, or followed until the worker ends.

    Exits NO_JOB_EXIT, creating nothing, when the job folder does not exist.
    """
    q = shlex.quote
    log = posixpath.join(job, "worker.log")
    exists = f"[ -d {q(job)} ] || exit {NO_JOB_EXIT}; "
    if not follow:
        return exists + f"tail -n {int(lines)} {q(log)}"
    return exists + (
        f"cd {q(job)} && touch worker.log && "
        f"if {_alive('pid')}; then tail -n {int(lines)} -s {_FOLLOW_POLL_S} "
        f'--pid="$(cat pid)" -F worker.log 2>/dev/null; else tail -n {int(lines)} worker.log; fi'
    )
