"""The host side of "nothing lost": a stale frame cache, a full or read-only host, and the
`remote` commands that must not guess (unknown job, no terminal, mistyped remote_dir).

Everything runs against the real loopback sshd (and the local transport where both apply),
with real files on this machine standing in for the host's disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app
from cosmos_workflow.remote.base import Counters
from cosmos_workflow.remote.transfer import cache_entry_name, upload_to_cache

from .engine import missing_in_ci
from .test_transfer import make_frames, sha256_of
from .upsample_env import (
    engine_events,
    many_specs,
    seed_specs,
    sshd_remote,
    stand_in_setup,
    write_config,
)

runner = CliRunner()


@pytest.fixture(params=["ssh", "local"])
def configure(request, workdir, host, tmp_path):
    """Write config.toml for the sshd host (or the local transport); keys override sections."""

    def remote():
        if request.param == "ssh":
            return sshd_remote(request.getfixturevalue("sshd"))
        return {"transport": "local"}

    return stand_in_setup(workdir, host, tmp_path / "engine.jsonl", remote)


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
    assert table.exit_code == 1 and str(typo) in " ".join(table.output.split())
    assert "None" not in table.output  # no table of findings the check never made
    assert not typo.parent.exists()


# --- d: the host's frame cache is checked before it is reused ---------------------------------


def damage(path, how: str) -> None:
    """Change a cached file's bytes behind the cache's back."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "same size, other bytes":
        path.write_bytes(b"\0" + data[1:])  # a PNG starts with 0x89; stays damaged if repeated
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


def upsample_json(*args, stale: int = 0) -> dict:
    result = runner.invoke(app, ["upsample", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    said = f"sent {stale} frame(s) again: the host's cached copy no longer matched its hash"
    assert (said in result.stderr) == bool(stale), result.stderr
    return json.loads(result.stdout)["data"]


def test_upsample_resends_damaged_cached_frames_in_the_same_number_of_operations(
    configure, workdir, host, tmp_path
):
    layout = host / "cosmos_workflow"
    engine_log = tmp_path / "engine.jsonl"
    first = upsample_json(seed_specs(workdir / "p0"), "--save-dir", workdir / "out")
    assert first["counts"]["ok"] == 2
    frames = sorted((layout / "cache").glob("*.png"))
    assert len(frames) == 4

    def damaged_run(names: list[str], tag: str) -> dict:
        for frame in frames:
            damage(frame, "same size, other bytes")
        seen = len(engine_events(engine_log))
        prompts = {name: f"{tag}: {name}" for name in names}
        specs = seed_specs(workdir / tag, names, **prompts)
        record = upsample_json(specs, "--save-dir", "out", stale=2 * len(names))
        assert record["counts"]["ok"] == len(names)
        assert record["bytes_sent"] >= record["bytes_to_send"] > 0
        # The engine read the bytes each frame's name promises, not the damaged copies.
        batch = json.loads((layout / "jobs" / record["job_id"] / "batch.json").read_text())
        expected = {
            item["prompt"]: [posixpath.basename(f).split(".")[0] for f in item["frames"]]
            for item in batch["items"]
        }
        events = engine_events(engine_log)[seen:]
        assert {e["prompt"]: e["image_sha256"] for e in events} == expected
        assert len(expected) == len(names)
        return record["ops"]

    one = damaged_run(["office_handover"], "one item")
    two = damaged_run(["office_handover", "robot_lab_night"], "two items")
    assert one == two  # checking and re-sending cost no operation per item
    for frame in frames:
        assert sha256_of(frame) == frame.name.split(".")[0]


# --- g: a full or read-only host ------------------------------------------------------------


def mounted(folder, *mount_args: str):
    """Mount something on `folder` (root, as CI runs); without that right: a skip on a
    developer's machine, a failure under CI=true."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *mount_args, str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        missing_in_ci("full/read-only host tests", f"cannot mount here: {done.stderr.strip()}")
    return folder


@pytest.fixture
def mounts():
    """`mount(folder, *args)`: mounted for this test, unmounted at teardown."""
    made = []

    def mount(folder, *args):
        made.append(mounted(folder, *args))
        return folder

    yield mount
    for folder in reversed(made):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def small_disk(mount, folder, size: str):
    """`folder` on its own tmpfs of `size` bytes (k/m suffixes): a disk that fills for real."""
    return mount(folder, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")


def read_only(mount, folder):
    """`folder` bind-mounted onto itself read-only: writes fail with EROFS, even for root."""
    mount(folder, "--bind", str(folder))
    subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
    return folder


def no_temporaries(*folders) -> list[str]:
    """Hidden or temporary leftovers (`.x.tmp`, `.upload-*.tar`, `.incoming-*`, probes)."""
    return [
        str(p)
        for folder in folders
        for p in folder.rglob("*")
        if (p.name.startswith(".") and p.name != ".cosmos-outputs.json")  # the outputs ledger
        or p.name.endswith(".tmp")
        or p.name.endswith(".tar")
    ]


def test_a_full_host_disk_is_named_with_its_free_bytes_and_leaves_nothing(
    configure, workdir, host, mounts
):
    small_disk(mounts, host, "600k")  # worker.py fits; the frames (1.9 MB) do not
    configure()
    prompts = seed_specs(workdir / "prompts")
    before = {p: p.read_bytes() for p in prompts.iterdir()}
    result = runner.invoke(app, ["upsample", str(prompts), "--save-dir", "out"])
    assert result.exit_code == 4, result.output
    error, hint = error_lines(result)[-2:]
    free = shutil.disk_usage(host).free
    cache = host / "cosmos_workflow" / "cache"
    assert error.startswith(f"error: the host's disk is full: {free} bytes (")
    assert f"free in {cache}, " in error and error.endswith(" bytes needed")
    assert "size mismatch" not in result.stderr and "rebooted" not in result.stderr
    assert hint.startswith("hint: free space on the host")
    assert list(cache.iterdir()) == []
    assert no_temporaries(host, workdir) == []
    assert not (workdir / "out").exists() or list((workdir / "out").iterdir()) == []
    assert {p: p.read_bytes() for p in prompts.iterdir()} == before


def test_a_read_only_host_is_named_as_such_and_leaves_nothing(configure, workdir, host, mounts):
    configure()
    first = runner.invoke(app, ["upsample", str(seed_specs(workdir / "p1")), "--save-dir", "o"])
    assert first.exit_code == 0, first.output
    read_only(mounts, host)
    prompts = seed_specs(workdir / "p2", ["office_handover"], office_handover="a new prompt")
    result = runner.invoke(app, ["upsample", str(prompts), "--save-dir", "out"])
    assert result.exit_code == 4, result.output
    error, hint = error_lines(result)[-2:]
    assert error.startswith(f"error: the host's {host}")
    assert error.endswith("is on a read-only file system: nothing can be written there")
    assert hint == "hint: remount it read-write, or set [paths] remote_dir to a writable folder"
    assert no_temporaries(host, workdir) == []


def test_a_disk_that_fills_while_the_worker_runs_is_named_not_a_reboot(
    configure, workdir, host, mounts
):
    small_disk(mounts, host, "8m")
    configure(delay_s=0.3, chunk_size=1)
    prompts = many_specs(workdir / "prompts", 6)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cosmos_workflow",
            "upsample",
            str(prompts),
            "--save-dir",
            "out",
            "--json",
        ],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    jobs = host / "cosmos_workflow" / "jobs"
    deadline = time.monotonic() + 30
    while not any(r.stat().st_size for r in jobs.glob("*/results.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.05)
    with open(host / "filler", "wb") as filler, contextlib.suppress(OSError):
        while True:  # until the tmpfs says ENOSPC
            filler.write(b"\0" * 65536)
            filler.flush()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr  # some items failed; the finished ones are kept
    record = json.loads(stdout)["data"]
    failed = [item for item in record["items"] if item["status"] == "failed"]
    assert failed and record["counts"]["ok"] >= 1
    free = shutil.disk_usage(host).free
    for item in failed:
        error = item["error"]
        assert error["code"] == "host_disk_full"
        assert error["message"].startswith("the worker ")
        assert f"the host's disk is full: {free} bytes (" in error["message"]
        assert f"free in {host}/cosmos_workflow/jobs/{record['job_id']}" in error["message"]
        assert "rebooted" not in error["message"]
        assert error["hint"].startswith("free space on the host")
        assert error["hint"].endswith("rerun the same command to resume (finished items are kept)")
    for item in record["items"]:
        if item["status"] == "ok":
            assert Path(item["output"]).is_file()
