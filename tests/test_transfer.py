"""File transfers and the content-addressed input cache, over real SFTP and locally.

The "remote" side of the sshd fixture is this machine, so every remote path is also readable
here: tests look at the result on disk directly, not through the code under test.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cosmos_workflow.errors import SSHError, TransferError
from cosmos_workflow.remote.base import Counters
from cosmos_workflow.remote.local import LocalConnection
from cosmos_workflow.remote.ssh import Connection
from cosmos_workflow.remote.transfer import (
    cache_entry_name,
    cache_install_command,
    pack_cache_tar,
    quiet_prefetch_thread_errors,
    upload_to_cache,
)

pytestmark = pytest.mark.ssh


def make_frames(folder, count: int, start: int = 0) -> list[tuple]:
    """`count` distinct small "PNG" files and their SHA-256, as upload_to_cache takes them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(start, start + count):
        path = folder / f"frame_{i:03d}.PNG"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2048) + str(i).encode())
        files.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return files


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- put / get / small files ------------------------------------------------------------------


def test_put_creates_parents_replaces_whole_file_and_reports_bytes(connection, tmp_path):
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(300_000))
    remote = tmp_path / "host" / "a" / "b" / "file.bin"
    result = connection.put(local, str(remote))
    assert (result.local, result.remote, result.bytes) == (local, str(remote), 300_000)
    assert remote.read_bytes() == local.read_bytes()
    local.write_bytes(b"shorter")
    assert connection.put(local, str(remote)).bytes == 7
    assert remote.read_bytes() == b"shorter"
    assert os.listdir(remote.parent) == ["file.bin"]  # no temporary left behind


def test_get_creates_local_parents_and_reports_bytes(connection, tmp_path):
    remote = tmp_path / "host" / "results.jsonl"
    remote.parent.mkdir()
    remote.write_bytes(b'{"id": 1}\n' * 1000)
    local = tmp_path / "out" / "deep" / "results.jsonl"
    result = connection.get(str(remote), local)
    assert (result.local, result.remote, result.bytes) == (local, str(remote), 10_000)
    assert local.read_bytes() == remote.read_bytes()
    assert os.listdir(local.parent) == ["results.jsonl"]


def test_get_of_a_missing_file_is_a_transfer_error_and_leaves_nothing(connection, tmp_path):
    with pytest.raises(TransferError) as caught:
        connection.get(str(tmp_path / "missing.json"), tmp_path / "out" / "x.json")
    assert caught.value.code == "remote_not_found"
    assert "missing.json" in caught.value.message
    assert os.listdir(tmp_path / "out") == []


def test_small_file_operations(connection, tmp_path):
    folder = str(tmp_path / "host" / "jobs" / "j1")
    assert not connection.exists(folder)
    assert connection.listdir(folder, missing_ok=True) == []
    with pytest.raises(TransferError):
        connection.listdir(folder)
    connection.mkdirs(folder)
    connection.mkdirs(folder)  # exists: fine
    result = connection.write_bytes(folder + "/batch.json", b'{"items": []}')
    assert result.bytes == 13 and result.local is None
    assert connection.read_bytes(folder + "/batch.json") == b'{"items": []}'
    assert connection.exists(folder + "/batch.json")
    assert connection.listdir(folder) == ["batch.json"]
    connection.remove(folder + "/batch.json")
    connection.remove(folder + "/batch.json")  # missing_ok by default
    assert connection.listdir(folder) == []


def cut_mid_transfer(sshd, conn, transfer, folder: Path) -> list[SSHError]:
    """Run `transfer` in a thread, cut the SSH session once bytes flow into a file in `folder`,
    and return the SSHErrors it raised."""
    conn.connect()
    errors: list[SSHError] = []

    def run():
        try:
            transfer()
        except SSHError as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(p.stat().st_size > 0 for p in folder.iterdir()):
        time.sleep(0.01)
    assert sshd.kill_sessions() >= 1
    thread.join(10)
    return errors


@pytest.mark.parametrize("path", ["relative/file", "~/cosmos/file", ""])
def test_relative_remote_paths_are_refused(connection, tmp_path, path):
    local = tmp_path / "f"
    local.write_text("x")
    for call in (
        lambda: connection.put(local, path),
        lambda: connection.get(path, tmp_path / "g"),
        lambda: connection.exists(path),
    ):
        with pytest.raises(TransferError) as caught:
            call()
        assert caught.value.code == "remote_path_relative"
        assert "~ is not expanded" in caught.value.hint
    assert connection.counters.sftp == 0


def test_interrupted_upload_never_appears_under_its_final_name(sshd, tmp_path):
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(48 << 20))
    folder = tmp_path / "host"
    folder.mkdir()
    target = folder / "big.bin"
    with Connection(sshd.settings()) as conn:
        errors = cut_mid_transfer(sshd, conn, lambda: conn.put(local, str(target)), folder)
    assert errors and errors[0].code == "connection_lost"
    assert not target.exists()


# paramiko's read-ahead thread dies with the connection: its traceback must not reach stderr.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_interrupted_download_leaves_no_partial_file_and_a_retry_gets_it_whole(sshd, tmp_path):
    remote = tmp_path / "host" / "big.bin"
    remote.parent.mkdir()
    remote.write_bytes(os.urandom(48 << 20))
    folder = tmp_path / "local"
    folder.mkdir()
    local = folder / "big.bin"
    with Connection(sshd.settings()) as conn:
        errors = cut_mid_transfer(sshd, conn, lambda: conn.get(str(remote), local), folder)
        assert errors and errors[0].code == "connection_lost"
        assert list(folder.iterdir()) == []  # no partial file, under any name

        result = conn.get(str(remote), local)  # the same call again, on a new connection
        assert conn.counters.connect == 2
    assert result.bytes == remote.stat().st_size
    assert sha256_of(local) == sha256_of(remote)
    assert [p.name for p in folder.iterdir()] == ["big.bin"]


def test_only_the_read_ahead_thread_dying_with_the_connection_is_kept_quiet(monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", seen.append)
    quiet_prefetch_thread_errors()
    hook = threading.excepthook
    quiet_prefetch_thread_errors()  # once only: not wrapped twice
    assert threading.excepthook is hook

    def _prefetch_thread():  # named like paramiko's, dying like it does on a dropped connection
        raise EOFError()

    def other():
        raise RuntimeError("a real bug")

    for target in (_prefetch_thread, other):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    assert [args.exc_type for args in seen] == [RuntimeError]


def test_a_closed_sftp_channel_is_a_lost_connection_not_a_file_error(sshd, tmp_path):
    # paramiko closes a dying connection's channels before it marks the transport inactive;
    # an SFTP call in that window gets a bare OSError("Socket is closed"). That must read as a
    # lost connection (retried / "run again"), not as a failure of the file named.
    local = tmp_path / "a.bin"
    local.write_bytes(b"x" * 1000)
    with Connection(sshd.settings()) as conn:
        conn.sftp.sock.close()
        assert conn.is_connected
        with pytest.raises(SSHError) as caught:
            conn.put(local, str(tmp_path / "b.bin"))
        assert caught.value.code == "connection_lost"
        assert conn.put(local, str(tmp_path / "b.bin")).bytes == 1000
        assert conn.counters.connect == 2


# --- the input cache --------------------------------------------------------------------------


def test_cache_entry_name_is_hash_plus_lowercase_extension(tmp_path):
    sha = "ab" * 32
    assert cache_entry_name(tmp_path / "x.PNG", sha) == sha + ".png"
    with pytest.raises(ValueError):
        cache_entry_name(tmp_path / "x.png", "AB" * 32)
    with pytest.raises(ValueError):
        cache_entry_name(tmp_path / "x.p;g", sha)


def test_upload_to_cache_sends_only_missing_files(connection, tmp_path):
    cache = tmp_path / "host" / "cosmos_workflow" / "cache"
    first = make_frames(tmp_path / "frames", 3)
    result = upload_to_cache(connection, first, str(cache))
    names = [cache_entry_name(p, sha) for p, sha in first]
    assert (result.sent, result.reused) == (names, [])
    assert result.bytes_sent > 3 * 2048
    later = first + make_frames(tmp_path / "frames", 2, start=3) + first[:1]  # a duplicate too
    again = upload_to_cache(connection, later, str(cache))
    new_names = [cache_entry_name(p, sha) for p, sha in later[3:5]]
    assert (again.sent, again.reused) == (new_names, names)
    # Exactly the five entries, each holding the bytes its name promises; no leftovers.
    assert sorted(os.listdir(cache)) == sorted(names + new_names)
    for name in names + new_names:
        assert sha256_of(cache / name) == name.split(".")[0]
    assert again.remote_path(new_names[0]) == f"{cache}/{new_names[0]}"


@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_upload_to_cache_uses_a_constant_number_of_operations(request, tmp_path, transport):
    counts = {}
    for count in (1, 50):
        conn = (
            LocalConnection()
            if transport == "local"
            else Connection(request.getfixturevalue("sshd").settings())
        )
        with conn:
            files = make_frames(tmp_path / f"frames{count}", count)
            cache = str(tmp_path / f"cache{count}")
            result = upload_to_cache(conn, files, cache)
            assert len(result.sent) == count
            counts[count] = conn.counters.snapshot()
            before = conn.counters.snapshot()
            assert upload_to_cache(conn, files, cache).reused == result.sent
            counts[f"again{count}"] = conn.counters - before
    connects = 0 if transport == "local" else 1
    # hash what is there (exec), send the archive (sftp), verify and install it (exec)
    assert counts[1] == counts[50] == Counters(exec=2, sftp=1, connect=connects)
    assert counts["again1"] == counts["again50"] == Counters(exec=1, sftp=0, connect=0)


def test_hash_mismatch_leaves_no_file_under_a_final_name(connection, tmp_path):
    cache = tmp_path / "cache"
    files = make_frames(tmp_path / "frames", 3)
    files[1] = (files[1][0], "0" * 64)  # what the caller claims is not what the file holds
    with pytest.raises(TransferError) as caught:
        upload_to_cache(connection, files, str(cache))
    assert caught.value.code == "cache_verify_failed"
    assert "FAILED" in caught.value.message
    # Nothing installed (not even the two good files), archive and temp folder removed.
    assert os.listdir(cache) == []


@pytest.mark.parametrize("cut", ["inside a file", "between two files"])
def test_truncated_archive_leaves_no_file_under_a_final_name(connection, tmp_path, cut):
    cache = tmp_path / "cache"
    files = make_frames(tmp_path / "frames", 3)
    archive = pack_cache_tar(
        {cache_entry_name(p, sha): p for p, sha in files}, tmp_path / "upload.tar"
    )
    with tarfile.open(archive) as tar:
        second = tar.getmembers()[1]
    # Between two files, tar itself reports success: only the file count catches it.
    end = second.offset if cut == "between two files" else second.offset_data + 100
    archive.write_bytes(archive.read_bytes()[:end])
    remote_tar = f"{cache}/.upload-test.tar"
    connection.put(archive, remote_tar)
    result = connection.run(cache_install_command(str(cache), remote_tar, 3, "test"), check=False)
    assert result.exit_code != 0
    assert os.listdir(cache) == []


def test_leftovers_of_old_interrupted_uploads_are_cleaned_up(connection, tmp_path):
    cache = tmp_path / "cache"
    old, fresh = cache / ".incoming-old", cache / "..upload-x.tar.y.tmp"
    old.mkdir(parents=True)
    fresh.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    upload_to_cache(connection, make_frames(tmp_path / "frames", 1), str(cache))
    assert not old.exists()
    assert fresh.exists()  # could be a live upload from another run
