"""`LocalConnection`: the `Host` interface on this machine, for users working on the GPU box.

Commands run with subprocess from an argv list (a `ShellCommand` goes to `/bin/sh -c`), files
are copied atomically (temporary sibling, then rename), and `upload_to_cache` works unchanged.
"Remote" paths are this machine's absolute paths, under the same rules as over SSH.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..errors import ServerError
from .base import (
    Command,
    CommandResult,
    Counters,
    LineCallback,
    LineStream,
    ShellCommand,
    Stopwatch,
    TransferResult,
    check_env,
    check_remote_path,
    command_failed,
    command_text,
    command_timed_out,
    file_errors,
)
from .transfer import (
    download_atomically,
    local_temporary,
    require_local_file,
    storage_errors,
)

_READ_SIZE = 1 << 16


class LocalConnection:
    """Runs commands and moves files on this machine; same contract as `Connection`."""

    description = "this machine"

    def __init__(self) -> None:
        self.counters = Counters()

    def connect(self) -> LocalConnection:
        return self

    def close(self) -> None:
        """Nothing to close; present so both transports are used the same way."""

    def __enter__(self) -> LocalConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<LocalConnection>"

    # --- tunnels ------------------------------------------------------------------------------

    def open_tunnel(self, port: int, *, timeout_s: float | None = None) -> socket.socket:
        """A TCP connection to 127.0.0.1:`port` on this machine (what a tunnel is over SSH)."""
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout_s or 15.0)
        except OSError as e:
            raise ServerError(
                f"nothing answers on port {port} of this machine ({e.strerror or e})",
                "`cosmos serve status` says whether the server runs",
                code="tunnel_refused",
            ) from e

    # --- commands -----------------------------------------------------------------------------

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
    ) -> CommandResult:
        """Run `command` here; same arguments, record and errors as `Connection.run`.

        On timeout the whole process group is killed.
        """
        text = command_text(command)
        if isinstance(command, ShellCommand):
            argv = ["/bin/sh", "-c", text]
        else:
            argv = [os.fspath(arg) for arg in command]
        self.counters.exec += 1
        clock = Stopwatch()
        if cwd is not None and not os.path.isdir(check_remote_path(cwd)):
            # What the `cd` prefix does over SSH.
            result = CommandResult(text, 1, "", f"cd: {cwd}: No such file or directory\n", 0.0)
        else:
            result = self._spawn(argv, text, clock, on_stdout, on_stderr, timeout_s, env, cwd)
        if check and result.exit_code != 0:
            raise command_failed(result, self.description)
        return result

    def _spawn(self, argv, text, clock, on_stdout, on_stderr, timeout_s, env, cwd):
        out, err = LineStream(on_stdout), LineStream(on_stderr)
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env={**os.environ, **check_env(env)} if env else None,
                start_new_session=True,  # so a timeout can kill the command's children too
            )
        except OSError as e:
            # What a shell would say: command not found (127) or not executable (126).
            code = 127 if isinstance(e, FileNotFoundError) else 126
            return CommandResult(text, code, "", f"{argv[0]}: {e.strerror}\n", clock.elapsed_s)
        with process:
            finished = _pump(process, out, err, clock, timeout_s)
            if not finished:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        exit_code = process.returncode if finished else None
        result = CommandResult(text, exit_code, out.finish(), err.finish(), clock.elapsed_s)
        if not finished:
            raise command_timed_out(result, timeout_s, self.description)
        return result

    # --- files --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _file_op(self, doing: str, path: str) -> Iterator[None]:
        self.counters.sftp += 1
        with file_errors(doing, path):
            yield

    def _write_atomically(self, remote: str, write) -> int:
        target = Path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = local_temporary(target)
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target.stat().st_size

    def put(self, local: str | os.PathLike, remote: str) -> TransferResult:
        """Copy `local` to absolute path `remote` atomically; parent folders are created."""
        local, remote = Path(local), check_remote_path(remote)
        require_local_file(local)
        clock = Stopwatch()
        with storage_errors(self, remote, local.stat().st_size), self._file_op("upload to", remote):
            size = self._write_atomically(remote, lambda tmp: shutil.copyfile(local, tmp))
        return TransferResult(local, remote, size, clock.elapsed_s)

    def write_bytes(self, remote: str, data: bytes) -> TransferResult:
        """Write `data` to absolute path `remote` atomically; parent folders are created."""
        remote = check_remote_path(remote)
        clock = Stopwatch()
        with storage_errors(self, remote, len(data)), self._file_op("write", remote):
            size = self._write_atomically(remote, lambda tmp: tmp.write_bytes(data))
        return TransferResult(None, remote, size, clock.elapsed_s)

    def get(self, remote: str, local: str | os.PathLike) -> TransferResult:
        """Copy absolute path `remote` to `local` atomically; parent folders are created."""
        local, remote = Path(local), check_remote_path(remote)
        clock = Stopwatch()
        with self._file_op("download", remote):
            download_atomically(local, lambda tmp: shutil.copyfile(remote, tmp))
        return TransferResult(local, remote, local.stat().st_size, clock.elapsed_s)

    def read_bytes(self, remote: str) -> bytes:
        """The whole content of absolute path `remote`."""
        remote = check_remote_path(remote)
        with self._file_op("read", remote):
            return Path(remote).read_bytes()

    def exists(self, remote: str) -> bool:
        """Whether absolute path `remote` exists (file or folder)."""
        remote = check_remote_path(remote)
        with self._file_op("check", remote):
            return os.path.lexists(remote)

    def listdir(self, remote: str, *, missing_ok: bool = False) -> list[str]:
        """Names in folder `remote`, sorted; `[]` for a missing folder if `missing_ok`."""
        remote = check_remote_path(remote)
        with self._file_op("list", remote):
            try:
                return sorted(os.listdir(remote))
            except FileNotFoundError:
                if missing_ok:
                    return []
                raise

    def mkdirs(self, remote: str) -> None:
        """Create folder `remote` and its parents; fine if it exists."""
        remote = check_remote_path(remote)
        with storage_errors(self, remote, 0), self._file_op("create folder", remote):
            os.makedirs(remote, exist_ok=True)

    def remove(self, remote: str, *, missing_ok: bool = True) -> None:
        """Delete file `remote`; folders are not removed."""
        remote = check_remote_path(remote)
        with self._file_op("remove", remote):
            try:
                os.unlink(remote)
            except FileNotFoundError:
                if not missing_ok:
                    raise


def _pump(process, out: LineStream, err: LineStream, clock: Stopwatch, timeout_s) -> bool:
    """Read both pipes as output arrives until they close (True) or time runs out (False)."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            wait_s = None if timeout_s is None else timeout_s - clock.elapsed_s
            if wait_s is not None and wait_s <= 0:
                return False
            for key, _ in selector.select(wait_s):
                data = os.read(key.fd, _READ_SIZE)
                if data:
                    key.data.feed(data)
                else:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()
    if timeout_s is None:
        return True
    try:
        process.wait(max(timeout_s - clock.elapsed_s, 0))
    except subprocess.TimeoutExpired:
        return False
    return True
