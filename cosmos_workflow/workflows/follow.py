"""Following a detached worker: start or reattach, stream, reconnect, say how it ended."""

from __future__ import annotations

import json
import posixpath
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from ..errors import CosmosError, SSHError, WorkerError
from ..remote import jobctl, protocol
from ..remote.base import ShellCommand
from ..remote.runner import launch_error
from ..remote.transfer import storage_problem

# SSH failures worth a reconnect: the network, not the settings (host keys, auth, paths).
RETRIABLE = {
    "connection_lost",
    "connection_refused",
    "connect_timeout",
    "host_unreachable",
    "ssh_handshake",
}

T = TypeVar("T")


def reconnecting(
    action: Callable[[], T],
    *,
    attempts: int,
    on_event: Callable[..., None],
    give_up: Callable[[SSHError, int], CosmosError],
) -> T:
    """Call `action()`; when the connection drops, wait and call it again.

    Only a connection that was up and then dropped starts the retries ("connection_lost"):
    a host that refuses or never answers the first time fails at once. Once retrying, the
    network failures in RETRIABLE are retried `attempts` times in all with exponential backoff
    (1, 2, 4 … s, at most 30). `action` must be safe to repeat. When it gives up, it raises
    `give_up(error, attempts made)`; any other SSH error is raised as it is.
    """
    dropped = False
    for attempt in range(attempts + 1):
        try:
            return action()
        except SSHError as exc:
            dropped = dropped or exc.code == "connection_lost"
            if not dropped:
                raise
            if exc.code not in RETRIABLE or attempt == attempts:
                raise give_up(exc, attempt + 1) from None
            delay_s = min(2**attempt, 30)
            on_event(
                "stage",
                message=f"connection lost; reconnecting in {delay_s} s "
                f"(attempt {attempt + 1} of {attempts})",
            )
            time.sleep(delay_s)
    raise AssertionError("unreachable")  # the last attempt returns or raises


def follow_worker(
    conn,
    job_dir: str,
    worker_command: str,
    job_id: str,
    *,
    attempts: int,
    on_event: Callable[..., None],
) -> WorkerError | None:
    """Start the worker (or reattach to it) and stream its output until it ends.

    A dropped connection is retried (see `reconnecting`), resuming the stream where it
    stopped; the worker keeps running meanwhile. Progress lines become
    `on_event("progress", …)`, others `on_event("log", line=…)`.
    Returns the worker's failure, or None when it exited 0.
    """
    seen = 0
    exit_text = None
    # The last log lines: what the launch itself said when it failed (sudo, docker).
    last_lines: deque[str] = deque(maxlen=20)

    def on_stdout(line: str) -> None:
        nonlocal seen, exit_text
        code = protocol.parse_exit(line)
        if code is not None:
            exit_text = code
            return
        seen += 1
        progress = protocol.parse_progress(line)
        if progress is not None:
            on_event("progress", **progress)
        else:
            last_lines.append(line)
            on_event("log", line=line)

    def stream() -> None:
        command = jobctl.launch_and_follow(job_dir, worker_command, skip_lines=seen)
        conn.run(ShellCommand(command), check=False, on_stdout=on_stdout)

    def give_up(exc: SSHError, tries: int) -> SSHError:
        return SSHError(
            f"{exc.message} (after {tries} attempt(s)); job {job_id} keeps running on the host",
            f"rerun the same command to reattach, or `cosmos remote status {job_id}`",
            code=exc.code,
        )

    reconnecting(stream, attempts=attempts, on_event=on_event, give_up=give_up)
    if exit_text == "0":
        return None
    if exit_text == "cancelled":
        return WorkerError(
            f"job {job_id} was cancelled",
            "rerun the same command to resume: finished items are kept",
            code="cancelled",
        )
    launch_failure = launch_error(last_lines)
    if launch_failure is not None:
        return launch_failure
    # A worker that cannot write its results or exit code looks killed: ask the disk first.
    disk = storage_problem(conn, job_dir)
    if disk is not None:
        return WorkerError(
            _worker_failure(exit_text, disk.message, lost="the host could not store it"),
            f"{disk.hint}; then rerun the same command to resume (finished items are kept)",
            code=disk.code,
        )
    return WorkerError(
        _worker_failure(exit_text, _status_error(conn, job_dir)),
        f"see {posixpath.join(job_dir, 'worker.log')} on the host; rerun the same "
        "command to resume (finished items are kept); `cosmos remote check` tells "
        "whether the host is ready",
    )


def _status_error(conn, job_dir: str) -> str | None:
    """The worker's own one-line reason for failing, from its status.json (if it wrote one)."""
    try:
        status = json.loads(conn.read_bytes(posixpath.join(job_dir, "status.json")))
    except (CosmosError, ValueError):
        return None
    error = status.get("error") if isinstance(status, dict) else None
    return " ".join(str(error).split()) if error else None


def _worker_failure(
    exit_text: str | None, reason: str | None, lost: str = "killed, or the host rebooted"
) -> str:
    """One line: how the worker ended, and why when it said so."""
    if exit_text is None or not exit_text.isdigit():
        message = f"the worker stopped without an exit status ({lost})"
    elif int(exit_text) > 128 and int(exit_text) - 128 in signal.Signals._value2member_map_:
        name = signal.Signals(int(exit_text) - 128).name
        message = f"the worker was killed by {name} (exit code {exit_text})"
    else:
        message = f"the worker exited with code {exit_text}"
    return f"{message}: {reason}" if reason else message
