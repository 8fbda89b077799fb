"""What every transport shares: result records, counters, command quoting, remote path rules.

`Connection` (ssh.py, paramiko) and `LocalConnection` (local.py, subprocess) both satisfy the
`Host` protocol below, so the orchestrator uses either one without knowing which it holds.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..errors import RemoteCommandError, TransferError

LineCallback = Callable[[str], None]


@dataclass(frozen=True)
class ShellCommand:
    """Shell text the caller has already quoted, run as is by the host's shell.

    Plain `str` commands are refused on purpose: an argv list is quoted for you with
    `shlex.join`, and wrapping text in `ShellCommand` is the explicit "I quoted every user
    value myself" marker (use `shlex.quote` for each one).
    """

    text: str


Command = Sequence[str | os.PathLike] | ShellCommand


@dataclass(frozen=True)
class CommandResult:
    """What ran and how it ended. `exit_code` is None when no exit status came (timeout).

    `command` is the command alone, without the `cd`/`export` prefix that `cwd`/`env` add,
    so environment values (which may be tokens) never reach error messages or logs.
    """

    command: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class TransferResult:
    """One file moved: the local path, the absolute POSIX remote path, its size in bytes."""

    local: Path | None  # None for write_bytes
    remote: str
    bytes: int
    duration_s: float


@dataclass
class Counters:
    """High-level operations on one connection; one method call counts once.

    `exec`: commands run. `sftp`: file operations (put, get, read_bytes, write_bytes, exists,
    listdir, mkdirs, remove) — SFTP over SSH, plain file calls for `LocalConnection`.
    `connect`: SSH sessions opened (0 for local).
    """

    exec: int = 0
    sftp: int = 0
    connect: int = 0

    def snapshot(self) -> Counters:
        return Counters(self.exec, self.sftp, self.connect)

    def as_dict(self) -> dict[str, int]:
        return {"exec": self.exec, "sftp": self.sftp, "connect": self.connect}

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.exec - other.exec, self.sftp - other.sftp, self.connect - other.connect
        )


class Host(Protocol):
    """The interface the orchestrator relies on; see `Connection` for the full contract."""

    counters: Counters

    @property
    def description(self) -> str: ...

    def connect(self) -> Host: ...

    def run(
        self,
        command: Command,
        *,
        check: bool = True,
        on_stdout: LineCallback | None = None,
        on_stderr: LineCallback | None = None,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult: ...

    def put(self, local: str | os.PathLike, remote: str) -> TransferResult: ...

    def get(self, remote: str, local: str | os.PathLike) -> TransferResult: ...

    def read_bytes(self, remote: str) -> bytes: ...

    def write_bytes(self, remote: str, data: bytes) -> TransferResult: ...

    def exists(self, remote: str) -> bool: ...

    def listdir(self, remote: str, *, missing_ok: bool = False) -> list[str]: ...

    def mkdirs(self, remote: str) -> None: ...

    def remove(self, remote: str, *, missing_ok: bool = True) -> None: ...

    def close(self) -> None: ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...


# --- commands ---------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def command_text(command: Command) -> str:
    """The shell text for `command`: an argv list joined with `shlex.join`, or ShellCommand text.

    NUL bytes are refused: no argv can carry them (exec truncates at NUL), so the text that ran
    would differ from the text given.
    """
    if isinstance(command, ShellCommand):
        text = command.text
    elif isinstance(command, (str, bytes)):
        raise TypeError(
            "run() takes an argv list; wrap shell text you quoted yourself in ShellCommand(...)"
        )
    else:
        argv = [os.fspath(arg) for arg in command]
        if not argv:
            raise ValueError("run() needs a non-empty argv list")
        if not all(isinstance(arg, str) for arg in argv):
            raise TypeError("argv items must be str or path-like")
        text = shlex.join(argv)
    if "\x00" in text:
        raise ValueError("a command cannot contain NUL bytes; send such data in a file instead")
    return text


def shell_script(text: str, *, cwd: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """`text` prefixed with a quoted `cd` and `export`s, on separate lines.

    Separate lines (not `&&`) keep a `;` inside `text` from escaping the `cd` guard.
    """
    lines = []
    if cwd is not None:
        lines.append(f"cd -- {shlex.quote(check_remote_path(cwd))} || exit")
    for name, value in check_env(env).items():
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join([*lines, text])


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """`env` as a dict, after checking names are shell identifiers and values hold no NUL."""
    env = dict(env or {})
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not a valid environment variable name: {name!r}")
        if "\x00" in value:
            raise ValueError(f"environment variable {name} contains a NUL byte")
    return env


def shorten(text: str, limit: int = 120) -> str:
    """One line, at most `limit` characters, middle elided."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return text[:half] + "…" + text[-half:]


def command_failed(result: CommandResult, where: str) -> RemoteCommandError:
    """The error for a non-zero exit: the command (shortened), the code, the last stderr lines."""
    tail = [line.strip() for line in result.stderr.splitlines() if line.strip()][-3:]
    message = f"`{shorten(result.command)}` exited with code {result.exit_code} on {where}"
    if tail:
        message += ": " + " | ".join(shorten(line, 200) for line in tail)
    return RemoteCommandError(message, result=result, code="remote_command")


def command_timed_out(result: CommandResult, timeout_s: float, where: str) -> RemoteCommandError:
    return RemoteCommandError(
        f"`{shorten(result.command)}` did not finish within {timeout_s:g} s on {where}",
        "raise the timeout, or check what the command waits for",
        result=result,
        code="command_timeout",
    )


class LineStream:
    """Collects a byte stream and calls `callback` once per complete line (without the newline).

    Bytes are split on b"\\n" before decoding, so a UTF-8 character cut between two reads
    is never mangled.
    """

    def __init__(self, callback: LineCallback | None):
        self.callback = callback
        self._chunks: list[bytes] = []
        self._pending = b""

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        if self.callback is None:
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self.callback(line.decode("utf-8", errors="replace"))

    def finish(self) -> str:
        if self.callback is not None and self._pending:
            self.callback(self._pending.decode("utf-8", errors="replace"))
            self._pending = b""
        return b"".join(self._chunks).decode("utf-8", errors="replace")


@dataclass
class Stopwatch:
    start: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.start


# --- remote paths -----------------------------------------------------------------------------


def check_remote_path(path: str | PurePosixPath) -> str:
    """Return `path` as a string if it is an absolute POSIX path, else raise TransferError.

    Remote paths are never expanded: `~` means a folder literally named `~`, so it is refused
    here rather than silently creating one.
    """
    text = str(path)
    if not text.startswith("/"):
        raise TransferError(
            f"remote path {text!r} is not absolute",
            "remote paths are absolute POSIX paths (e.g. /home/ubuntu/...); ~ is not expanded",
            code="remote_path_relative",
        )
    if "\x00" in text:
        raise TransferError(f"remote path {text!r} contains a NUL byte", code="remote_path")
    return text


@contextlib.contextmanager
def file_errors(doing: str, path: str) -> Iterator[None]:
    """Turn a failed file operation into a one-line TransferError naming the path.

    Connection-level failures (ConnectionError, TimeoutError) pass through for the transport
    to report as a lost connection.
    """
    try:
        yield
    except (ConnectionError, TimeoutError):
        raise
    except FileNotFoundError as e:
        raise TransferError(
            f"cannot {doing} {path}: no such file or folder", code="remote_not_found"
        ) from e
    except PermissionError as e:
        raise TransferError(
            f"cannot {doing} {path}: permission denied",
            "check the owner and permissions of the folder",
            code="remote_permission",
        ) from e
    except OSError as e:
        raise TransferError(f"cannot {doing} {path}: {e.strerror or e}", code="transfer") from e


def temporary_sibling(path: str, token: str) -> str:
    """A hidden name in the same folder as `path`, so the final rename never crosses devices."""
    parent, name = posixpath.split(path)
    return f"{parent.rstrip('/')}/.{name}.{token}.tmp"
