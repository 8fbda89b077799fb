"""The worker against the behaviours of the vLLM versions our users run (stand-in profiles).

NVIDIA's Docker image runs vLLM 0.8.1 and its conda install 0.9.2; we test the newest too. The
stand-in engine (tests/fake_vllm) has a profile per version (FAKE_VLLM_PROFILE): which exception
a too-long prompt raises and at which length, whether a rejected chat() call leaves requests
queued, whether EngineDeadError exists. The same behaviours against the real engines:
test_worker_engine.py, run once per vLLM of the matrix.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine import FAKE_VLLM, WORKER, fake_engine_env
from tests.test_worker import Remote, progress_lines, results, status

FAKE_TRANSFORMERS = Path(__file__).resolve().parent / "fake_transformers"


@pytest.fixture
def remote(tmp_path):
    return Remote(tmp_path)


def load_worker_module():
    spec = importlib.util.spec_from_file_location("cosmos_worker_under_test", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("profile", ["0.8", "0.9", "0.32"])
def test_a_rejected_chunk_leaves_nothing_behind_and_every_item_runs_once(remote, profile):
    # The middle item is too long: vLLM 0.8/0.9 leave the first queued after rejecting the call.
    small, big = [remote.frame(320, 180)] * 2, [remote.frame(1280, 720)] * 2
    items = [
        {"id": "a", "prompt": "first", "frames": small},
        {"id": "big", "prompt": "too long", "frames": big},
        {"id": "c", "prompt": "third", "frames": small},
        {"id": "d", "prompt": "fourth", "frames": small},
        {"id": "e", "prompt": "fifth", "frames": small},
    ]
    job_dir = remote.job(items, chunk_size=3)

    proc = remote.run("run", str(job_dir), profile=profile)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["id"]: r for r in results(job_dir)}
    assert sorted(rows) == ["a", "big", "c", "d", "e"]
    assert rows["big"]["error"]["type"] == (
        "VLLMValidationError" if profile == "0.32" else "ValueError"
    )
    for key in ("a", "c", "d", "e"):
        assert rows[key]["error"] is None
        assert rows[key]["text"].endswith(next(i["prompt"] for i in items if i["id"] == key))
    generated = remote.generated_prompts()
    assert sorted(generated) == sorted(["first", "third", "fourth", "fifth"])  # each exactly once
    assert [p["id"] for p in progress_lines(proc.stdout)] == ["a", "big", "c", "d", "e"]
    assert status(job_dir)["state"] == "done"


@pytest.mark.parametrize(("profile", "accepted"), [("0.8", False), ("0.9", True), ("0.32", True)])
def test_a_prompt_exactly_at_max_model_len(remote, profile, accepted):
    # Stand-in count: 3 chat-frame + 2 text ("abcd") + 2 × 252 image tokens = 509.
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job(
        [{"id": "edge", "prompt": "abcd", "frames": frames}], max_model_len=509, output_tokens=1
    )

    proc = remote.run("run", str(job_dir), profile=profile)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = results(job_dir)
    if accepted:  # served, with no room left to write anything: an empty output is an error
        assert row["prompt_tokens"] == 509 and row["error"]["type"] == "EmptyOutput"
        assert row["finish_reason"] == "length" and row["generated_tokens"] == 0
    else:  # vLLM 0.8 rejects a prompt that leaves no room at all, with a plain ValueError
        assert row["error"]["type"] == "ValueError"
        assert (
            "(length 509) is longer than the maximum model length of 509" in row["error"]["message"]
        )


def test_more_outputs_than_requests_fails_those_items_and_the_job_goes_on(tmp_path):
    worker = load_worker_module()

    class Output:
        def __init__(self, request_id):
            self.request_id = request_id
            self.prompt_token_ids = [0] * 5
            self.outputs = [
                type(
                    "C",
                    (),
                    {"text": f"out {request_id}", "token_ids": [1], "finish_reason": "stop"},
                )
            ]

    class Engine:
        def has_unfinished_requests(self):
            return False

    class LLM:
        """Returns one output too many and hides its request numbering."""

        llm_engine = Engine()

        def chat(self, conversations, sampling_params, use_tqdm=False):
            return [Output(f"x{n}") for n in range(len(conversations) + 1)]

    records = worker.run_chunk(LLM(), None, [("a", []), ("b", [])])

    assert [r["id"] for r in records] == ["a", "b"]
    for record in records:
        assert record["text"] is None
        assert record["error"] == {
            "type": "OutputMismatch",
            "message": "the engine returned 3 outputs for 2 requests",
        }


def test_outputs_of_an_earlier_call_are_told_apart_by_request_id():
    worker = load_worker_module()
    outputs = [type("O", (), {"request_id": str(n)})() for n in (3, 7, 8)]
    assert [o.request_id for o in worker.own_outputs(outputs, 7, 2)] == ["7", "8"]
    assert worker.own_outputs(outputs, None, 2) is None
    assert worker.own_outputs(outputs, 8, 2) is None  # only one is new: cannot be matched


def test_a_dead_engine_without_engine_dead_error_is_reported_stalled(remote):
    # vLLM 0.8: the engine died and the client waits forever; the heartbeat alone says "alive".
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": f"i{n}", "prompt": f"p{n}", "frames": frames} for n in range(3)]
    job_dir = remote.job(items, chunk_size=1, stall_timeout_s=1)
    cmd = [sys.executable, str(remote.root / "worker.py"), "run", str(job_dir)]
    env = fake_engine_env(remote.engine_log, profile="0.8", dead_after=1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            if (job_dir / "status.json").exists():
                state = status(job_dir)
                if state["state"] == "stalled":
                    break
            time.sleep(0.1)
        assert state and state["state"] == "stalled", state
        assert state["done"] == 1 and state["stalled_since"] <= time.time() - 1
        assert proc.poll() is None  # still hung: stalled is a report, not a verdict
        assert "no progress for" in (job_dir / "worker.log").read_text(encoding="utf-8")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def test_progress_after_a_stall_clears_it(tmp_path):
    worker = load_worker_module()
    worker.setup_logging(None)
    files = worker.JobFiles(str(tmp_path), "job")
    files.progressed(state="running")
    files._last_progress -= 10
    files.beat(stall_timeout_s=5)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "stalled"

    files.progressed()

    st = json.loads((tmp_path / "status.json").read_text())
    assert (st["state"], st["stalled_since"]) == ("running", None)


def test_transformers_that_already_has_aimv2_does_not_stop_the_engine(remote):
    # vLLM 0.9.2 registers "aimv2" with AutoConfig; transformers >= 4.54 ships it and refuses.
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "x", "frames": frames}])
    env = fake_engine_env(remote.engine_log, profile="0.9")
    env["PYTHONPATH"] += os.pathsep + str(FAKE_TRANSFORMERS)
    cmd = [sys.executable, str(remote.root / "worker.py"), "run", str(job_dir)]

    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results(job_dir)[0]["error"] is None


def test_the_stand_in_refuses_aimv2_twice_without_the_guard(remote):
    # The guard above is what makes the difference: importing the 0.9 stand-in alone fails.
    env = {"PYTHONPATH": os.pathsep.join([str(FAKE_VLLM), str(FAKE_TRANSFORMERS)])}
    env["FAKE_VLLM_PROFILE"] = "0.9"
    proc = subprocess.run(
        [sys.executable, "-c", "import vllm"], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "'aimv2' is already used" in proc.stderr


def test_engine_start_failure_names_the_root_cause_the_engine_printed(remote):
    # vLLM V1: the engine process prints the reason, the client raises "See root cause above".
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "x", "frames": frames}])
    cause = (
        "ValueError: Free memory on device (3.2/79.1 GiB) on startup is less than desired GPU "
        "memory utilization (0.98, 77.52 GiB). Decrease GPU memory utilization or reduce GPU "
        "memory used by other processes."
    )
    env = fake_engine_env(remote.engine_log, fail_core=cause)
    cmd = [sys.executable, str(remote.root / "worker.py"), "run", str(job_dir)]
    # As the launcher runs it: output (the engine process's too) into the job's stdout.log.
    with open(job_dir / "stdout.log", "wb") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=60)

    assert proc.returncode == 3
    error = status(job_dir)["error"]
    assert error.startswith(f"engine failed to start: {cause}")
    assert "root cause above" not in error
    assert "gpu_memory_utilization" in error


def test_root_cause_prefers_a_meaningful_exception_over_the_generic_one():
    worker = load_worker_module()
    generic = RuntimeError("Engine core initialization failed. See root cause above.")
    text = "INFO loading\nTraceback (most recent call last):\n  File x\n"
    text += "torch.OutOfMemoryError: CUDA out of memory.\n"
    assert worker.root_cause(generic, text) == "OutOfMemoryError: CUDA out of memory."
    assert (
        worker.root_cause(ValueError("bad max_model_len"), text) == "ValueError: bad max_model_len"
    )
    # vLLM 0.32: the reason comes from a worker process, behind its tag and a log header.
    tagged = (
        "(Worker pid=22079) ERROR 12-03 07:55:04 [multiproc_executor.py:953] ValueError: There "
        "is no module or parameter named 'nurm' in MistralForCausalLM. The available " + "x" * 900
    )
    lines = [
        tagged,
        "Exception: WorkerProc initialization failed due to an exception in a "
        "background process. See stack trace for root cause.",
        str(generic),
    ]
    cause = worker.root_cause(generic, "\n".join(lines))
    assert cause.startswith("ValueError: There is no module or parameter named 'nurm'")
    assert len(cause) == worker.ROOT_CAUSE_MAX_CHARS and cause.endswith("…")
    assert worker.root_cause(generic, "") == (
        "RuntimeError: Engine core initialization failed. See root cause above."
    )


def test_remote_status_shows_a_stalled_job_and_how_to_stop_it(remote, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cosmos_workflow.cli.app import app
    from tests.upsample_env import write_config

    frames = [remote.frame(320, 180)] * 2
    items = [{"id": f"i{n}", "prompt": f"p{n}", "frames": frames} for n in range(2)]
    job_dir = remote.job(items, job_id="0123456789abcdef", chunk_size=1, stall_timeout_s=1)
    env = fake_engine_env(remote.engine_log, profile="0.8", dead_after=1)
    cmd = [sys.executable, str(remote.root / "worker.py"), "run", str(job_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (job_dir / "pid").write_text(f"{proc.pid}\n")  # as the launcher records it
    config = write_config(
        tmp_path / "config.toml",
        {"remote": {"transport": "local"}, "paths": {"remote_dir": str(remote.root.parent)}},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (job_dir / "status.json").exists() and status(job_dir)["state"] == "stalled":
                break
            time.sleep(0.1)
        monkeypatch.setenv("COLUMNS", "250")
        result = CliRunner().invoke(app, ["--config", str(config), "remote", "status"])
        assert result.exit_code == 0, result.output
        row = next(line for line in result.output.splitlines() if "0123456789abcdef" in line)
        assert "stalled" in row and "no progress" in row
        data = CliRunner().invoke(app, ["--config", str(config), "remote", "status", "--json"])
        (job,) = json.loads(data.stdout)["data"]["jobs"]
        assert job["state"] == "stalled" and job["alive"] is True
        assert "cosmos remote cancel 0123456789abcdef" in job["error"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def test_spawned_engine_processes_get_the_aimv2_guard_too():
    # multiprocessing's spawn runs the parent's main file as __mp_main__ in each engine process.
    env = {"PYTHONPATH": os.pathsep.join([str(FAKE_VLLM), str(FAKE_TRANSFORMERS)])}
    env["FAKE_VLLM_PROFILE"] = "0.9"
    code = f"import runpy; runpy.run_path({str(WORKER)!r}, run_name='__mp_main__'); import vllm"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_an_item_the_model_wrote_nothing_for_is_an_error_a_rerun_retries(remote):
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": "quiet", "prompt": "say nothing", "frames": frames}]
    items.append({"id": "talks", "prompt": "say something", "frames": frames})
    job_dir = remote.job(items)

    first = remote.run("run", str(job_dir), silent_prompt="nothing")

    assert first.returncode == 0, first.stdout + first.stderr
    rows = {r["id"]: r for r in results(job_dir)}
    assert rows["quiet"]["text"] is None
    assert rows["quiet"]["error"] == {
        "type": "EmptyOutput",
        "message": "the model wrote no text (5 tokens, finish reason stop)",
    }
    assert rows["talks"]["error"] is None
    second = remote.run("run", str(job_dir))  # the model speaks this time
    assert second.returncode == 0
    assert remote.generated_prompts().count("say nothing") == 2
    assert remote.generated_prompts().count("say something") == 1
    (retried,) = [r for r in results(job_dir)[2:]]
    assert retried["id"] == "quiet" and retried["text"].endswith("say nothing")
