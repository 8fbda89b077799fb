"""Nothing lost: detached jobs, reattach, Ctrl+C, cancel, dropped connections, a killed worker.

Each test runs the real `cosmos` CLI as a subprocess against the real loopback sshd, with the
stand-in engine slowed down (FAKE_VLLM_DELAY_S) so there is a moment to interfere.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .upsample_env import (
    engine_events,
    many_specs,
    sshd_remote,
    stand_in_checkpoint,
    stand_in_worker,
    write_config,
)

ITEMS = 6
runner = CliRunner()


@pytest.fixture
def job_env(workdir, sshd, tmp_path):
    host = tmp_path / "host" / "cosmos-transfer1"
    host.mkdir(parents=True)
    engine_log = tmp_path / "engine.jsonl"

    def configure(**controls):
        controls.setdefault("chunk_size", 1)
        write_config(
            workdir / "config.toml",
            {
                "remote": sshd_remote(sshd, reconnect_attempts=3),
                "paths": {"remote_dir": str(host)},
                "worker": stand_in_worker(engine_log, stand_in_checkpoint(host), **controls),
            },
        )

    configure(delay_s=0.4)
    prompts = many_specs(workdir / "prompts", ITEMS)
    return {
        "configure": configure,
        "host": host,
        "log": engine_log,
        "prompts": prompts,
        "workdir": workdir,
        "jobs": host / "cosmos_workflow" / "jobs",
    }


def start_cli(env, *extra) -> subprocess.Popen:
    args = [sys.executable, "-m", "cosmos_workflow", "upsample", str(env["prompts"])]
    args += ["--save-dir", "out", "--json", *extra]
    return subprocess.Popen(
        args,
        cwd=env["workdir"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_results(env, at_least: int, timeout_s: float = 30) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for results in env["jobs"].glob("*/results.jsonl"):
            if len(results.read_text().splitlines()) >= at_least:
                return results.parent
        time.sleep(0.05)
    raise AssertionError(f"no job reached {at_least} results in {timeout_s} s")


def worker_alive(job: Path) -> bool:
    try:
        os.kill(int((job / "pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def wait_until_dead(job: Path, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while worker_alive(job):
        assert time.monotonic() < deadline, "worker still running"
        time.sleep(0.05)


def each_item_once(env) -> None:
    prompts = sorted(e["prompt"] for e in engine_events(env["log"]))
    assert prompts == sorted(f"prompt number {n}" for n in range(ITEMS))


def rerun(env) -> dict:
    proc = start_cli(env)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    record = json.loads(stdout)["data"]
    assert record["counts"]["ok"] == ITEMS
    return record


def test_ctrl_c_leaves_the_job_running_and_the_same_command_reattaches(job_env):
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert f"job {job.name} keeps running on the host" in stderr
    assert "reattach: run the same command again" in stderr
    assert worker_alive(job)

    record = rerun(job_env)
    assert record["job_id"] == job.name
    each_item_once(job_env)
    assert len((job / "results.jsonl").read_text().splitlines()) == ITEMS


def test_cancel_on_interrupt_stops_the_job_and_a_rerun_resumes(job_env):
    job_env["configure"](delay_s=1.5)  # slow enough that the cancel lands mid-job
    proc = start_cli(job_env, "--cancel-on-interrupt")
    job = wait_for_results(job_env, 1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert f"cancelled job {job.name}" in stderr
    wait_until_dead(job)
    status = runner.invoke(app, ["remote", "status", job.name, "--json"])
    assert status.exit_code == 0, status.output
    (row,) = json.loads(status.stdout)["data"]["jobs"]
    assert row["state"] == "cancelled" and row["alive"] is False
    finished = len((job / "results.jsonl").read_text().splitlines())
    assert finished < ITEMS

    rerun(job_env)
    each_item_once(job_env)


def test_dropped_connection_is_retried_and_the_run_completes(job_env, sshd):
    proc = start_cli(job_env)
    wait_for_results(job_env, 1)
    assert sshd.kill_sessions() >= 1  # end the sshd process serving the session
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "connection lost; reconnecting in 1 s (attempt 1 of 3)" in stderr
    record = json.loads(stdout)["data"]
    assert record["counts"]["ok"] == ITEMS
    each_item_once(job_env)


def test_killed_worker_keeps_finished_items_and_rerun_sends_only_the_rest(job_env):
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 2)
    os.killpg(int((job / "pid").read_text()), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr
    record = json.loads(stdout)["data"]
    failed = [i for i in record["items"] if i["status"] == "failed"]
    assert failed and record["counts"]["ok"] >= 2
    assert "the worker stopped without an exit status" in failed[0]["error"]["message"]
    done_before = {e["prompt"] for e in engine_events(job_env["log"])}

    rerun(job_env)
    each_item_once(job_env)
    resent = [e["prompt"] for e in engine_events(job_env["log"])][len(done_before) :]
    assert not set(resent) & done_before


def test_status_logs_and_cancel_commands(job_env):
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 1)
    status = runner.invoke(app, ["remote", "status", "--json"])
    assert status.exit_code == 0, status.output
    (row,) = json.loads(status.stdout)["data"]["jobs"]
    assert row["job_id"] == job.name and row["state"] == "running" and row["alive"]
    assert row["total"] == ITEMS

    logs = runner.invoke(app, ["remote", "logs", job.name])
    assert logs.exit_code == 0
    assert "loading" in logs.stdout.lower() or "engine" in logs.stdout.lower()

    cancel = runner.invoke(app, ["remote", "cancel", job.name])
    assert cancel.exit_code == 0, cancel.output
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    record = json.loads(stdout)["data"]
    cancelled = [i for i in record["items"] if i["status"] == "failed"]
    assert cancelled and all(i["error"]["code"] == "cancelled" for i in cancelled)


def test_results_from_another_checkout_write_outputs_without_running(job_env, tmp_path):
    job_env["configure"]()  # fast engine
    record = rerun(job_env)
    loads_before = len(engine_events(job_env["log"], "load"))
    other = tmp_path / "other-checkout"
    other.mkdir()
    copy = many_specs(other / "prompts", ITEMS)
    write_config(other / "config.toml", {})
    (other / "config.toml").write_text((job_env["workdir"] / "config.toml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "cosmos_workflow", "remote", "results", record["job_id"]]
        + [str(copy), "--save-dir", "out", "--json"],
        cwd=other,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"]["counts"]["ok"] == ITEMS
    assert len(list((other / "out").glob("item_*.json"))) == ITEMS
    assert len(engine_events(job_env["log"], "load")) == loads_before  # nothing ran


def test_results_for_other_inputs_is_a_clear_error(job_env):
    result = runner.invoke(
        app, ["remote", "results", "0123456789abcdef", str(job_env["prompts"]), "--json"]
    )
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "job_mismatch"
    assert "not 0123456789abcdef" in error["message"]


@pytest.fixture
def noise_upload(job_env, tmp_path):
    """A one-spec batch of two 4K noise frames (~50 MB of PNG, long enough on loopback to cut
    the upload), and a function that starts it and kills the SSH session mid-upload."""
    clip = tmp_path / "noise4k.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "nullsrc=s=3840x2160:r=2:d=1"]
        + ["-vf", "geq=lum='random(1)*255':cb=128:cr=128", "-frames:v", "2"]
        + ["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )
    prompts = job_env["workdir"] / "big"
    prompts.mkdir()
    spec = {"name": "noise", "prompt": "noise", "input_video_path": str(clip)}
    (prompts / "noise.json").write_text(json.dumps(spec))
    job_env["configure"]()
    args = [sys.executable, "-m", "cosmos_workflow", "upsample", str(prompts), "--save-dir"]
    args += ["out", "--max-resolution", "source", "--json"]
    env = dict(os.environ, COSMOS_UPSAMPLING_MAX_TOKENS="8192")
    cache = job_env["host"] / "cosmos_workflow" / "cache"

    def cut(sshd, **extra_env) -> tuple[int, str, str]:
        proc = subprocess.Popen(
            args,
            cwd=job_env["workdir"],
            env=dict(env, **extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        partial = []
        while not partial and time.monotonic() < deadline:
            partial = [p for p in cache.glob(".*") if p.is_file() and p.stat().st_size > 1 << 20]
            time.sleep(0.01)
        assert partial, "the upload never started"
        assert sshd.kill_sessions() >= 1
        stdout, stderr = proc.communicate(timeout=60)
        return proc.returncode, stdout, stderr

    def rerun() -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=job_env["workdir"], env=env, capture_output=True, text=True, timeout=120
        )

    def cache_is_sound() -> set[str]:
        """Nothing under a final cache name unless it is whole and verified."""
        entries = {p.stem for p in cache.glob("*.png")}
        for name in entries:
            assert hashlib.sha256((cache / f"{name}.png").read_bytes()).hexdigest() == name
        return entries

    return {"cut": cut, "rerun": rerun, "cache_is_sound": cache_is_sound}


def one_4k_item(stdout: str) -> None:
    (item,) = json.loads(stdout)["data"]["items"]
    assert item["status"] == "ok" and (item["frame_width"], item["frame_height"]) == (3840, 2160)


def test_interrupted_upload_leaves_no_corrupt_cache_entry_and_rerun_is_right(
    job_env, sshd, noise_upload
):
    code, stdout, stderr = noise_upload["cut"](sshd, COSMOS_REMOTE_RECONNECT_ATTEMPTS="0")
    assert code == 4, stderr
    error = json.loads(stdout)["error"]
    assert error["code"] == "connection_lost"
    assert "(after 1 attempt(s)); nothing was started on the host" in error["message"]
    assert "frames the host received whole are not sent again" in error["hint"]
    assert "Socket exception" not in stderr  # paramiko's own log stays quiet
    noise_upload["cache_is_sound"]()
    assert not job_env["log"].exists()  # the engine never ran

    result = noise_upload["rerun"]()
    assert result.returncode == 0, result.stderr
    one_4k_item(result.stdout)
    sent = {e["image_sha256"][0] for e in engine_events(job_env["log"])}
    assert noise_upload["cache_is_sound"]() >= sent


def test_upload_cut_by_a_dropped_connection_is_retried_in_the_same_run(job_env, sshd, noise_upload):
    code, stdout, stderr = noise_upload["cut"](sshd)
    assert code == 0, stderr
    assert "connection lost; reconnecting in 1 s (attempt 1 of 3)" in stderr
    one_4k_item(stdout)
    record = json.loads(stdout)["data"]
    assert record["ops"]["connect"] == 2
    sent = {e["image_sha256"][0] for e in engine_events(job_env["log"])}
    assert len(engine_events(job_env["log"])) == 1
    assert noise_upload["cache_is_sound"]() >= sent


def test_logs_follow_streams_until_the_worker_ends(job_env):
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 1)
    assert worker_alive(job)
    logs = runner.invoke(app, ["remote", "logs", job.name, "--follow"])
    assert logs.exit_code == 0, logs.output
    assert "job done: 6 ok, 0 failed" in logs.stdout  # the last line, written as it ended
    assert not worker_alive(job)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
