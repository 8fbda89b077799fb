"""Nothing lost: detached jobs, reattach, Ctrl+C, cancel, dropped connections, a killed worker.

Each test runs the real `cosmos` CLI as a subprocess against the real loopback sshd. To interfere
mid-job the test holds the stand-in engine after N items (FAKE_VLLM_HOLD_FILE) and lets it go on
when it is done: every step waits on a state (results written, a line printed, a process gone),
never on a delay, so a loaded machine only makes the tests slower.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
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
    hold = tmp_path / "hold-engine"

    def configure(**controls):
        controls.setdefault("chunk_size", 1)
        controls.setdefault("hold_file", hold)
        write_config(
            workdir / "config.toml",
            {
                "remote": sshd_remote(sshd, reconnect_attempts=3),
                "paths": {"remote_dir": str(host)},
                "worker": stand_in_worker(engine_log, stand_in_checkpoint(host), **controls),
            },
        )

    configure()
    prompts = many_specs(workdir / "prompts", ITEMS)
    return {
        "configure": configure,
        "hold": hold,
        "host": host,
        "log": engine_log,
        "prompts": prompts,
        "workdir": workdir,
        "jobs": host / "cosmos_workflow" / "jobs",
    }


def hold_after(env, items: int) -> None:
    """The stand-in engine serves `items` items, then waits until `release(env)`."""
    env["hold"].write_text(str(items))


def release(env) -> None:
    env["hold"].unlink()


class Watch:
    """Reads a process's stream in a thread, so a test can wait for a line while it runs."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append(None)  # end of stream
            self.changed.notify_all()

    def wait_for(self, text: str, timeout_s: float = 30) -> None:
        def seen():
            return any(line is None or text in line for line in self.lines)

        with self.changed:
            self.changed.wait_for(seen, timeout_s)
            assert any(line and text in line for line in self.lines), (text, self.text())

    def text(self) -> str:
        return "".join(line for line in self.lines if line)

    def finish(self, timeout_s: float = 60) -> str:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.text()


def start_cli(env, *extra) -> subprocess.Popen:
    args = [sys.executable, "-m", "cosmos_workflow", "upsample", str(env["prompts"])]
    args += ["--save-dir", "out", "--json", *extra]
    return subprocess.Popen(
        args,
        cwd=env["workdir"],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
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
    hold_after(job_env, 1)
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert f"job {job.name} keeps running on the host" in stderr
    assert "reattach: run the same command again" in stderr
    assert worker_alive(job)

    again = start_cli(job_env)
    watch = Watch(again.stderr)
    watch.wait_for(f"1/{ITEMS} items finished")  # streaming the worker that is still held
    assert worker_alive(job)
    release(job_env)
    stdout = again.stdout.read()
    assert again.wait(60) == 0, watch.finish()
    record = json.loads(stdout)["data"]
    assert record["job_id"] == job.name and record["counts"]["ok"] == ITEMS
    each_item_once(job_env)
    assert len((job / "results.jsonl").read_text().splitlines()) == ITEMS
    # Reattached, not restarted: one engine load across both commands, in the first worker.
    (load,) = engine_events(job_env["log"], "load")
    assert {e["pid"] for e in engine_events(job_env["log"])} == {load["pid"]}


def test_cancel_on_interrupt_stops_the_job_and_a_rerun_resumes(job_env):
    hold_after(job_env, 1)
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
    assert len((job / "results.jsonl").read_text().splitlines()) == 1

    release(job_env)
    rerun(job_env)
    each_item_once(job_env)


def test_dropped_connection_is_retried_and_the_run_completes(job_env, sshd):
    hold_after(job_env, 1)
    proc = start_cli(job_env)
    wait_for_results(job_env, 1)
    assert sshd.kill_sessions() >= 1  # end the sshd process serving the session
    release(job_env)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "connection lost; reconnecting in 1 s (attempt 1 of 3)" in stderr
    record = json.loads(stdout)["data"]
    assert record["counts"]["ok"] == ITEMS
    each_item_once(job_env)
    assert len(engine_events(job_env["log"], "load")) == 1  # the worker ran on meanwhile


def test_killed_worker_keeps_finished_items_and_rerun_sends_only_the_rest(job_env):
    hold_after(job_env, 2)
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 2)
    os.killpg(int((job / "pid").read_text()), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr
    record = json.loads(stdout)["data"]
    failed = [i for i in record["items"] if i["status"] == "failed"]
    assert len(failed) == ITEMS - 2 and record["counts"]["ok"] == 2
    assert "the worker stopped without an exit status" in failed[0]["error"]["message"]
    done_before = {e["prompt"] for e in engine_events(job_env["log"])}
    assert len(done_before) == 2

    release(job_env)
    rerun(job_env)
    each_item_once(job_env)
    resent = [e["prompt"] for e in engine_events(job_env["log"])][len(done_before) :]
    assert not set(resent) & done_before


def test_status_logs_and_cancel_commands(job_env):
    hold_after(job_env, 1)
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 1)
    status = runner.invoke(app, ["remote", "status", "--json"])
    assert status.exit_code == 0, status.output
    (row,) = json.loads(status.stdout)["data"]["jobs"]
    assert row["job_id"] == job.name and row["state"] == "running" and row["alive"]
    assert row["total"] == ITEMS

    logs = runner.invoke(app, ["remote", "logs", job.name])
    assert logs.exit_code == 0, logs.output
    assert f"{ITEMS} items: 0 already finished, {ITEMS} to run" in logs.stdout
    assert "engine ready in" in logs.stdout
    assert "job done" not in logs.stdout  # the log as it is now, mid-job

    cancel = runner.invoke(app, ["remote", "cancel", job.name])
    assert cancel.exit_code == 0, cancel.output
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    record = json.loads(stdout)["data"]
    assert record["counts"]["ok"] == 1
    cancelled = [i for i in record["items"] if i["status"] == "failed"]
    assert len(cancelled) == ITEMS - 1
    assert all(i["error"]["code"] == "cancelled" for i in cancelled)
    wait_until_dead(job)


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


def read_position(path: Path) -> int | None:
    """How far a process has read `path` while it holds it open (here: the host's SFTP server
    serving a download), or None when no process has it open."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(path):
                    info = (fd_dir.parent / "fdinfo" / fd.name).read_text()
                    return int(info.split()[1])  # "pos:\t<offset>"
            except (OSError, ValueError, IndexError):
                continue
    return None


@pytest.fixture
def big_results(job_env):
    """A finished job whose results.jsonl is ~48 MB (each item's text made 8 MB long), long
    enough on loopback to cut its download; and a `cosmos remote results` for it that kills
    the SSH session while the host is sending that file."""
    job = job_env["jobs"] / rerun(job_env)["job_id"]
    texts = {}
    lines = []
    for line in (job / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        texts[result["id"]] = result["text"] = f"{result['id']} " + "long " * ((8 << 20) // 5)
        lines.append(json.dumps(result))
    (job / "results.jsonl").write_text("\n".join(lines) + "\n")
    results = job / "results.jsonl"
    args = [sys.executable, "-m", "cosmos_workflow", "remote", "results", job.name]
    args += [str(job_env["prompts"]), "--save-dir", "fetched", "--json"]

    def cut(sshd, **extra_env) -> tuple[int, dict, str]:
        proc = subprocess.Popen(
            args,
            cwd=job_env["workdir"],
            env=dict(os.environ, **extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not read_position(results):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.005)
        assert sshd.kill_sessions() >= 1  # mid-transfer: the client holds the file open
        stdout, stderr = proc.communicate(timeout=120)
        return proc.returncode, json.loads(stdout), stderr

    return {"cut": cut, "texts": texts, "out": job_env["workdir"] / "fetched"}


def test_download_cut_mid_transfer_is_retried_and_every_output_is_whole(job_env, sshd, big_results):
    code, envelope, stderr = big_results["cut"](sshd)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "Exception in thread" not in stderr
    record = envelope["data"]
    assert record["counts"]["ok"] == ITEMS and record["ops"]["connect"] == 2  # one reconnect
    out = big_results["out"]
    for item in record["items"]:
        spec = json.loads(Path(item["output"]).read_text())
        assert spec["prompt"] == big_results["texts"][item["id"]]  # the whole text, not a part
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {f"item_{n:04d}.json" for n in range(ITEMS)} | {
        "run.json",
        f"runs/{record['job_id']}.json",
        ".cosmos-outputs.json",  # the ledger of what cosmos wrote here
    }


def test_download_cut_without_retries_is_one_error_and_writes_nothing(job_env, sshd, big_results):
    code, envelope, stderr = big_results["cut"](sshd, COSMOS_REMOTE_RECONNECT_ATTEMPTS="0")
    assert code == 4, stderr
    assert "Traceback" not in stderr and "Exception in thread" not in stderr
    error = envelope["error"]
    assert error["code"] == "connection_lost"
    assert "keeps its results on the host" in error["message"]
    assert "cosmos remote results" in error["hint"]
    out = big_results["out"]
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


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
    hold_after(job_env, 1)
    proc = start_cli(job_env)
    job = wait_for_results(job_env, 1)
    follow = subprocess.Popen(
        [sys.executable, "-m", "cosmos_workflow", "remote", "logs", job.name, "--follow"],
        cwd=job_env["workdir"],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = Watch(follow.stdout)
    watch.wait_for("engine ready in")  # following, while the held worker still runs
    assert worker_alive(job) and follow.poll() is None
    release(job_env)
    stderr = follow.stderr.read()
    assert follow.wait(60) == 0, stderr
    last = watch.finish().strip().splitlines()[-1]
    assert f"job done: {ITEMS} ok, 0 failed" in last  # written as the worker ended
    assert not worker_alive(job)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
