"""File transfers: SFTP operations of `Connection`, and the content-addressed input cache.

Remote paths are absolute POSIX paths and are never expanded (`~` is refused, not resolved).
Writes are atomic: data goes to a hidden temporary name in the destination folder and is renamed
into place (SFTP posix-rename), so a reader sees the old file or the whole new one.

The input cache (`<remote_root>/cache/<sha256><ext>`) is filled by `upload_to_cache` with a
number of operations that does not grow with the number of files: one command that hashes the
entries the host already has (one per CHECK_NAMES_PER_COMMAND entries), one tar upload, one
command that verifies and installs. A cache entry only ever appears under its final name after
its SHA-256 was checked on the host, and is only reused while its bytes still match its name.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ..errors import SSHError, TransferError
from .base import (
    Counters,
    Host,
    Stopwatch,
    TransferResult,
    check_remote_path,
    file_errors,
    shorten,
    temporary_sibling,
)


def _token() -> str:
    return uuid.uuid4().hex[:12]


def local_temporary(path: Path) -> Path:
    """A hidden sibling of local `path`, for write-then-rename."""
    return path.with_name(f".{path.name}.{_token()}.tmp")


def download_atomically(local: Path, fetch: Callable[[str], object]) -> None:
    """`fetch(tmp)` writes the file to a hidden sibling of `local`, then it is renamed into
    place; parent folders are created, and the temporary file never outlives a failure."""
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local_temporary(local)
    try:
        fetch(str(tmp))
        os.replace(tmp, local)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# A failed write with less than this free is put down to a full disk: a file system at the
# last megabyte fails writes (logs, status files) before it reports 0 bytes free.
LOW_FREE_BYTES = 1 << 20

# POSIX sh, run as `sh -c SCRIPT sh PATH`: the nearest existing folder of PATH, its free KiB
# (df -P), and whether a new empty file can be made there (the shell's own error if not).
_SPACE_SCRIPT = r"""d=$1
while [ ! -d "$d" ]; do d=$(dirname -- "$d"); done
printf '%s\n' "$d"
df -Pk -- "$d" | tail -n 1
probe="$d/.cosmos-write-test-$$"
if msg=$( { : > "$probe"; } 2>&1 ); then rm -f -- "$probe"; echo writable; else echo "$msg"; fi
"""


def storage_problem(
    conn: Host, path: str, needed_bytes: int = 0, error_text: str = ""
) -> TransferError | None:
    """After a write under `path` failed: the error naming a full or read-only host disk, or
    None when the disk is not why (the caller keeps its own error).

    One command on the host. "Full" means under `needed_bytes` + LOW_FREE_BYTES free, or the
    failure's own `error_text` saying so (a disk can be full of inodes, or over quota).
    """
    try:
        result = conn.run(["sh", "-c", _SPACE_SCRIPT, "sh", path], check=False)
    except SSHError:
        return None
    lines = result.stdout.splitlines()
    if len(lines) < 3:
        return None
    folder, df_line, write_test = lines[0], lines[1], " ".join(lines[2:])
    fields = df_line.split()
    free = int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None
    said = f"{error_text} {write_test}"
    free_text = (
        f"{free} bytes ({free / 2**20:.1f} MiB) free" if free is not None else "free space unknown"
    )
    if "Read-only file system" in said:
        return TransferError(
            f"the host's {folder} is on a read-only file system: nothing can be written there",
            "remount it read-write, or set [paths] remote_dir to a writable folder",
            code="host_read_only",
        )
    quota = "Disk quota exceeded" in said
    if (
        quota
        or "No space left on device" in said
        or (free is not None and free < needed_bytes + LOW_FREE_BYTES)
    ):
        what = "the SSH user's disk quota is used up" if quota else "the host's disk is full"
        return TransferError(
            f"{what}: {free_text} in {folder}"
            + (f", {needed_bytes} bytes needed" if needed_bytes else ""),
            "free space on the host (old jobs in <remote_dir>/cosmos_workflow/jobs can go), or "
            "set [paths] remote_dir to a bigger disk",
            code="host_disk_full",
        )
    return None


@contextlib.contextmanager
def storage_errors(conn: Host, path: str, needed_bytes: int) -> Iterator[None]:
    """Turn a write under `path` that failed for no stated reason (SFTP v3 reports a full or
    read-only disk as a bare "Failure", paramiko as "size mismatch in put") into the error
    naming the disk, when the disk is why."""
    try:
        yield
    except TransferError as e:
        if e.code != "transfer":
            raise
        problem = storage_problem(conn, path, needed_bytes, e.message)
        if problem is None:
            raise
        raise problem from e


def _prefetch_thread_lost_connection(args) -> bool:
    """Whether an uncaught thread exception is paramiko's read-ahead thread failing because
    the connection dropped (paramiko/paramiko#2379)."""
    if not issubclass(args.exc_type, (EOFError, OSError, paramiko.SSHException)):
        return False
    tb = args.exc_traceback
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_prefetch_thread":
            return True
        tb = tb.tb_next
    return False


def quiet_prefetch_thread_errors() -> None:
    """Keep paramiko's read-ahead thread from printing a traceback when the connection drops.

    `get` and `read_bytes` read ahead (SFTPFile.prefetch) in a thread of paramiko's own; on a
    dropped connection that thread dies with EOFError and Python prints its traceback to
    stderr, while the read in the calling thread fails too and becomes one "connection_lost"
    error. Installs (once) a threading.excepthook that drops exactly those; any other thread
    exception goes to the hook that was there before.
    """
    previous = threading.excepthook
    if getattr(previous, "quiets_prefetch_thread", False):
        return

    def excepthook(args) -> None:
        if not _prefetch_thread_lost_connection(args):
            previous(args)

    excepthook.quiets_prefetch_thread = True
    threading.excepthook = excepthook


def require_local_file(path: Path) -> None:
    if not path.is_file():
        raise TransferError(f"local file {path} does not exist", code="local_not_found")


class SFTPOperations:
    """The file half of `Connection`: every method is one count in `counters.sftp`.

    Needs `self.sftp` (a paramiko SFTPClient) and `self._lost_on_failure(doing)` from the class
    it is mixed into.
    """

    counters: Counters

    @contextlib.contextmanager
    def _file_op(self, doing: str, remote: str) -> Iterator:
        self.counters.sftp += 1
        quiet_prefetch_thread_errors()
        # file_errors outside: an OSError from a dead transport is a lost connection first.
        with file_errors(doing, remote), self._lost_on_failure(f"trying to {doing} {remote}"):
            yield self.sftp

    def _upload_atomically(self, sftp, remote: str, send: Callable[[str], int]) -> int:
        _makedirs(sftp, posixpath.dirname(remote))
        tmp = temporary_sibling(remote, _token())
        try:
            size = send(tmp)
            sftp.posix_rename(tmp, remote)
        except BaseException:
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise
        return size

    def put(self, local: str | os.PathLike, remote: str) -> TransferResult:
        """Upload local file `local` to absolute POSIX path `remote`, atomically.

        Parent folders are created. `remote` is the file's full path (not a folder to put it
        in) and is not expanded: `~` is refused.
        """
        local, remote = Path(local), check_remote_path(remote)
        require_local_file(local)
        clock = Stopwatch()
        with (
            storage_errors(self, remote, local.stat().st_size),
            self._file_op("upload to", remote) as sftp,
        ):
            size = self._upload_atomically(
                sftp, remote, lambda tmp: sftp.put(str(local), tmp, confirm=True).st_size
            )
        return TransferResult(local, remote, size, clock.elapsed_s)

    def write_bytes(self, remote: str, data: bytes) -> TransferResult:
        """Write `data` to absolute POSIX path `remote` atomically; parent folders are created."""
        remote = check_remote_path(remote)
        clock = Stopwatch()
        with storage_errors(self, remote, len(data)), self._file_op("write", remote) as sftp:
            size = self._upload_atomically(
                sftp, remote, lambda tmp: sftp.putfo(io.BytesIO(data), tmp, confirm=True).st_size
            )
        return TransferResult(None, remote, size, clock.elapsed_s)

    def get(self, remote: str, local: str | os.PathLike) -> TransferResult:
        """Download absolute POSIX path `remote` to `local`, atomically; local parents created."""
        local, remote = Path(local), check_remote_path(remote)
        clock = Stopwatch()
        with self._file_op("download", remote) as sftp:
            download_atomically(local, lambda tmp: sftp.get(remote, tmp))
        return TransferResult(local, remote, local.stat().st_size, clock.elapsed_s)

    def read_bytes(self, remote: str) -> bytes:
        """The whole content of absolute POSIX path `remote`."""
        remote = check_remote_path(remote)
        with self._file_op("read", remote) as sftp, sftp.open(remote, "rb") as f:
            f.prefetch()
            return f.read()

    def exists(self, remote: str) -> bool:
        """Whether absolute POSIX path `remote` exists (file or folder)."""
        remote = check_remote_path(remote)
        with self._file_op("check", remote) as sftp:
            try:
                sftp.stat(remote)
            except FileNotFoundError:
                return False
            return True

    def listdir(self, remote: str, *, missing_ok: bool = False) -> list[str]:
        """Names in folder `remote` (absolute POSIX), sorted; `[]` for a missing folder if
        `missing_ok`."""
        remote = check_remote_path(remote)
        with self._file_op("list", remote) as sftp:
            try:
                return sorted(sftp.listdir(remote))
            except FileNotFoundError:
                if missing_ok:
                    return []
                raise

    def mkdirs(self, remote: str) -> None:
        """Create folder `remote` (absolute POSIX) and its parents; fine if it exists."""
        remote = check_remote_path(remote)
        with storage_errors(self, remote, 0), self._file_op("create folder", remote) as sftp:
            _makedirs(sftp, remote)

    def remove(self, remote: str, *, missing_ok: bool = True) -> None:
        """Delete file `remote` (absolute POSIX); folders are not removed."""
        remote = check_remote_path(remote)
        with self._file_op("remove", remote) as sftp:
            try:
                sftp.remove(remote)
            except FileNotFoundError:
                if not missing_ok:
                    raise


def _makedirs(sftp, path: str) -> None:
    try:
        if stat.S_ISDIR(sftp.stat(path).st_mode):
            return
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
    except FileNotFoundError:
        pass
    _makedirs(sftp, posixpath.dirname(path))
    try:
        sftp.mkdir(path)
    except OSError:
        # Another uploader may have created it meanwhile; SFTP v3 reports that as "Failure".
        if not stat.S_ISDIR(sftp.stat(path).st_mode):
            raise


# --- the content-addressed input cache --------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXTENSION = re.compile(r"(\.[a-z0-9]{1,16})?")


def cache_entry_name(local: str | os.PathLike, sha256: str) -> str:
    """`<sha256><ext>`: the name of `local` in the host's cache (extension lower-cased)."""
    extension = Path(local).suffix.lower()
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a lower-case hex SHA-256: {sha256!r}")
    if not _EXTENSION.fullmatch(extension):
        raise ValueError(f"unsupported file extension for the cache: {extension!r}")
    return sha256 + extension


@dataclass(frozen=True)
class CacheUploadResult:
    """Which cache entries were sent now and which the host already had (names, input order).

    `stale` lists the entries the host had whose bytes no longer matched their name (cut,
    damaged or replaced): they are among `sent`. `bytes_sent` is the size of the one archive
    uploaded (0 if nothing was missing).
    """

    remote_cache_dir: str
    sent: list[str]
    reused: list[str]
    bytes_sent: int
    duration_s: float
    stale: list[str] = field(default_factory=list)

    def remote_path(self, name: str) -> str:
        return posixpath.join(self.remote_cache_dir, name)


def upload_to_cache(
    conn: Host, files: Iterable[tuple[Path, str]], remote_cache_dir: str
) -> CacheUploadResult:
    """Make sure the host's cache holds every `(local path, sha256)` in `files`.

    Operations, whatever the number of files: one command that hashes the entries already in
    `remote_cache_dir` (absolute POSIX, created if missing; see `verified_cache_entries`); if
    anything is missing or no longer matches its name, one upload of an uncompressed tar of
    those files and one command that unpacks it into a temporary folder inside the cache,
    checks each file's SHA-256 against its name, and renames the verified files into place
    (over a damaged entry). The archive and the temporary folder are removed whatever happens.
    """
    clock = Stopwatch()
    cache_dir = check_remote_path(remote_cache_dir)
    entries: dict[str, Path] = {}
    for local, sha256 in files:
        entries.setdefault(cache_entry_name(local, sha256), Path(local))
    present, stale = verified_cache_entries(conn, cache_dir, list(entries))
    missing = [name for name in entries if name not in present]
    bytes_sent = 0
    if missing:
        token = _token()
        remote_tar = posixpath.join(cache_dir, f".upload-{token}.tar")
        with tempfile.TemporaryDirectory(prefix="cosmos-upload-") as tmp:
            archive = pack_cache_tar({name: entries[name] for name in missing}, Path(tmp) / "a.tar")
            bytes_sent = conn.put(archive, remote_tar).bytes
        result = conn.run(
            cache_install_command(cache_dir, remote_tar, len(missing), token), check=False
        )
        if not result.ok:
            problem = storage_problem(conn, cache_dir, bytes_sent, result.stderr)
            if problem is not None:
                raise problem
            tail = [line for line in result.stderr.splitlines() if line.strip()][-3:]
            raise TransferError(
                f"the host rejected the upload to {cache_dir}: "
                + (" | ".join(shorten(line, 160) for line in tail) or f"exit {result.exit_code}"),
                "a file may have changed after it was hashed, or the transfer was damaged; "
                "run the command again",
                code="cache_verify_failed",
            )
    reused = [name for name in entries if name in present]
    return CacheUploadResult(cache_dir, missing, reused, bytes_sent, clock.elapsed_s, stale)


# Entry names per hashing command: a name is 69 characters, and the whole command travels as
# one argument of the login shell (`sh -c TEXT`), which Linux caps at 128 KiB.
CHECK_NAMES_PER_COMMAND = 1000

# POSIX sh, run as `sh -c SCRIPT sh CACHE NAME...`: `<sha256>  <name>` for each named entry the
# cache holds. A missing entry is no error (sha256sum exits 1); a missing sha256sum is (127).
_HASH_SCRIPT = r"""cd -- "$1" 2>/dev/null || exit 0
shift
sha256sum -- "$@" 2>/dev/null
[ "$?" -le 1 ]
"""


def verified_cache_entries(
    conn: Host, cache_dir: str, names: list[str]
) -> tuple[set[str], list[str]]:
    """Which cache entry `names` the host holds with the bytes their name promises.

    Returns `(verified names, stale names)`: stale entries exist but their SHA-256 differs from
    their name (cut short, damaged, replaced), so they must be sent again. Hashing happens on
    the host, in one command per CHECK_NAMES_PER_COMMAND names, so checking costs no extra
    round trip per file. A missing `cache_dir` holds nothing.
    """
    verified: set[str] = set()
    stale: list[str] = []
    for start in range(0, len(names), CHECK_NAMES_PER_COMMAND):
        chunk = names[start : start + CHECK_NAMES_PER_COMMAND]
        result = conn.run(["sh", "-c", _HASH_SCRIPT, "sh", cache_dir, *chunk])
        wanted = set(chunk)
        for line in result.stdout.splitlines():
            digest, _, name = line.partition("  ")
            if name not in wanted:
                continue
            if digest == name.split(".", 1)[0]:
                verified.add(name)
            else:
                stale.append(name)
    return verified, stale


def pack_cache_tar(entries: Mapping[str, Path], tar_path: Path) -> Path:
    """Write an uncompressed tar (frames are PNGs: they do not compress) of `entries`,
    each member named by its cache name, owned by nobody in particular, mode 0644."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT, dereference=True) as tar:
        for name, local in entries.items():
            require_local_file(local)
            info = tar.gettarinfo(str(local), arcname=name)
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
            with open(local, "rb") as f:
                tar.addfile(info, f)
    return tar_path


# POSIX sh, run as `sh -c SCRIPT sh CACHE TAR COUNT TOKEN` so no path is pasted into the text.
# The temporary folder sits inside the cache so the final `mv` is a same-filesystem rename:
# an entry appears under its final name whole and verified, or not at all.
_INSTALL_SCRIPT = r"""set -eu
cache=$1 tar=$2 expected=$3 tmp=$1/.incoming-$4
trap 'rm -rf -- "$tmp" "$tar"' EXIT
# leftovers of uploads interrupted more than a day ago (a live upload is younger)
find "$cache" -maxdepth 1 \( -name '.incoming-*' -o -name '.*upload-*' \) -mmin +1440 \
    -exec rm -rf -- {} + 2>/dev/null || :
mkdir -- "$tmp"
tar -xf "$tar" -C "$tmp" --no-same-owner
cd -- "$tmp"
set -- *
if [ "$#" -ne "$expected" ]; then
    echo "the archive held $# files, $expected expected" >&2
    exit 1
fi
# each name is <sha256><ext>: the checksum list is derived from the names themselves
for f do printf '%s  %s\n' "${f%%.*}" "$f"; done | sha256sum -c --quiet --strict - >&2
for f do mv -f -- "$f" "$cache/$f"; done
"""


def cache_install_command(cache_dir: str, remote_tar: str, count: int, token: str) -> list[str]:
    """The argv that verifies and installs an uploaded cache archive (see `upload_to_cache`)."""
    return ["sh", "-c", _INSTALL_SCRIPT, "sh", cache_dir, remote_tar, str(count), token]
