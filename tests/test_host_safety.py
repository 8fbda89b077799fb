"""The host side of "nothing lost": a stale frame cache, a full or read-only host, and the
`remote` commands that must not guess (unknown job, no terminal, mistyped remote_dir).

Everything runs against the real loopback sshd (and the local transport where both apply),
with real files on this machine standing in for the host's disk.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app
from cosmos_workflow.remote.base import Counters
from cosmos_workflow.remote.transfer import cache_entry_name, upload_to_cache

from .test_transfer import make_frames, sha256_of
from .upsample_env import sshd_remote, stand_in_checkpoint, stand_in_worker, write_config

runner = CliRunner()


@pytest.fixture
def host(tmp_path):
    remote_dir = tmp_path / "host" / "cosmos-transfer1"
    remote_dir.mkdir(parents=True)
    return remote_dir


@pytest.fixture(params=["ssh", "local"])
def configure(request, workdir, host, tmp_path):
    """Write config.toml for the sshd host (or the local transport); keys override sections."""

    def write(remote_dir=None, **controls):
        remote = (
            sshd_remote(request.getfixturevalue("sshd"))
            if request.param == "ssh"
            else {"transport": "local"}
        )
        write_config(
            workdir / "config.toml",
            {
                "remote": remote,
                "paths": {"remote_dir": str(remote_dir or host)},
                "worker": stand_in_worker(
                    tmp_path / "engine.jsonl", stand_in_checkpoint(host), **controls
                ),
            },
        )

    write()
    return write


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- i: remote logs / trust / check -----------------------------------------------------------


@pytest.mark.parametrize("follow", [[], ["--follow"]], ids=["tail", "follow"])
def test_logs_of_an_unknown_job_fails_like_status(configure, host, follow):
    job = "0123456789abcdef"
    logs = runner.invoke(app, ["remote", "logs", job, *follow])
    status = runner.invoke(app, ["remote", "status", job])
    assert status.exit_code == 2, status.output
    assert logs.exit_code == 2, logs.output
    assert error_lines(logs) == error_lines(status)
    assert error_lines(logs)[0] == f"error: no job {job} on the host"
    assert not (host / "cosmos_workflow" / "jobs" / job).exists()  # nothing made by asking


def test_trust_without_a_terminal_says_to_pass_yes_and_records_nothing(workdir, sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    write_config(workdir / "config.toml", {"remote": sshd_remote(sshd, known_hosts=known)})
    result = runner.invoke(app, ["remote", "trust"])  # CliRunner's stdin is not a terminal
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert sshd.host_key_fingerprint in lines[0]  # shown, so it can be compared first
    assert lines[1] == (
        "error: cannot ask whether to trust this key: standard input is not a terminal"
    )
    assert lines[2].startswith("hint: ") and "cosmos remote trust --yes" in lines[2]
    assert len(lines) == 3
    assert known.read_text() == ""
    assert runner.invoke(app, ["remote", "trust", "--yes"]).exit_code == 0
    assert sshd.known_hosts_name in known.read_text()


def test_check_of_a_mistyped_remote_dir_reports_it_and_creates_nothing(configure, host):
    typo = host.parent / "cosmos-transfer" / "nested"
    configure(remote_dir=typo)
    result = runner.invoke(app, ["remote", "check", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)["data"]
    assert report["ready"] is False
    assert report["problems"] == [
        f"[paths] remote_dir {typo} is not a folder on the host: fix the path, or create the "
        "cosmos-transfer1 checkout there"
    ]
    assert not typo.parent.exists()
    # The human form names it too, and still creates nothing.
    table = runner.invoke(app, ["remote", "check"])
    assert table.exit_code == 1 and str(typo) in table.stdout
    assert not typo.parent.exists()


# --- d: the host's frame cache is checked before it is reused ---------------------------------


def damage(path, how: str) -> None:
    """Change a cached file's bytes behind the cache's back."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "same size, other bytes":
        path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    elif how == "emptied":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "same size, other bytes", "emptied"])
def test_a_cached_frame_whose_bytes_changed_is_sent_again(connection, tmp_path, how):
    cache = tmp_path / "host" / "cache"
    files = make_frames(tmp_path / "frames", 3)
    names = [cache_entry_name(p, sha) for p, sha in files]
    upload_to_cache(connection, files, str(cache))
    damage(cache / names[1], how)
    before = connection.counters.snapshot()
    result = upload_to_cache(connection, files, str(cache))
    assert (result.sent, result.stale) == ([names[1]], [names[1]])
    assert result.reused == [names[0], names[2]]
    assert result.bytes_sent > 2048
    for name in names:
        assert sha256_of(cache / name) == name.split(".")[0]
    assert sorted(os.listdir(cache)) == sorted(names)  # no temporary left behind
    # hash (exec), archive (sftp), install (exec): the same as for a cold cache
    assert connection.counters - before == Counters(exec=2, sftp=1, connect=0)
    assert upload_to_cache(connection, files, str(cache)).sent == []


def test_checking_the_cache_costs_the_same_for_one_frame_or_fifty(connection, tmp_path):
    deltas = []
    for count in (1, 50):
        cache = tmp_path / f"cache{count}"
        files = make_frames(tmp_path / f"frames{count}", count)
        upload_to_cache(connection, files, str(cache))
        for path, sha in files:  # every entry damaged: all of them go again
            damage(cache / cache_entry_name(path, sha), "same size, other bytes")
        before = connection.counters.snapshot()
        result = upload_to_cache(connection, files, str(cache))
        assert len(result.stale) == len(result.sent) == count
        deltas.append(connection.counters - before)
    assert deltas[0] == deltas[1] == Counters(exec=2, sftp=1, connect=0)
