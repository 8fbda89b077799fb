"""The worker against the real vLLM engine (CPU build) and a tiny random Pixtral.

The model is NVIDIA's upsampler in miniature (Mistral native format, same tokenizer, same image
rules; see shared/ENGINE.md and scripts/make_tiny_model.py), loaded with the production
arguments. Its text is gibberish, so these tests assert structure, token counts and errors.
Starting the engine costs tens of seconds, so ONE job runs once for the module and each test
reads a different part of what it left.

The job, chunk_size 3: [a, b, c] in one chat call; then [d, big, e], which the engine rejects
because big's two 1280×720 frames exceed max_model_len; the worker isolates big and runs d and
e. On vLLM 0.8/0.9 the rejected call leaves d queued in the engine (vLLM issue 26081): the worker
must drop it, or the next call returns one output too many.

The module runs against whichever vLLM of the matrix COSMOS_ENGINE_VLLM / COSMOS_ENGINE_PYTHON
names (.ci/run runs it on each): 0.32.0, 0.9.2 (NVIDIA's conda install), 0.8.5 (nearest to the
Docker image's 0.8.1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cosmos_workflow.tokens import count_prompt_tokens
from tests.engine import (
    WORKER,
    batch_settings,
    cpu_bench_settings,
    engine_env,
    engine_vllm_version,
    is_legacy,
    require_engine_python,
    tiny_model_dir,
)

pytestmark = pytest.mark.engine

SMALL = (320, 180)
BIG = (1280, 720)
PROMPTS = {
    "a": "A robotic arm hands a coffee cup to a woman in a modern office.",
    "b": "",  # becomes NVIDIA's "describe the following images"
    "c": 'Dusk; "quoted" $(whoami) `ls` && rm -rf / ünïcödé 東京 🚧\nsecond line',
    "big": "Same scene, but the frames are 720p.",
    "d": "A warehouse robot at night.",
    "e": "A forklift in the rain.",
}
ORDER = ("a", "b", "c", "d", "big", "e")
# torch.compile would add about a minute of start-up on 2 cores; the request path is the same.
SETTINGS = batch_settings(enforce_eager=True, chunk_size=3)


def make_testsrc_frames(cache: Path, size: tuple[int, int], name: str) -> list[str]:
    """The first 2 frames of an ffmpeg testsrc2 clip, content-addressed as the CLI stores them."""
    width, height = size
    pattern = cache / f"{name}-%d.png"
    src = f"testsrc2=size={width}x{height}:rate=25"
    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", src, "-frames:v", "2", str(pattern)]
    subprocess.run(cmd, check=True)
    paths = []
    for n in (1, 2):
        frame = cache / f"{name}-{n}.png"
        digest = hashlib.sha256(frame.read_bytes()).hexdigest()
        frame.replace(cache / f"{digest}.png")
        paths.append(f"cache/{digest}.png")
    return paths


@pytest.fixture(scope="module")
def engine_job(tmp_path_factory):
    """Run one job through the real engine; returns what it left and how long it took."""
    python = require_engine_python()
    model = tiny_model_dir(python)
    base = tmp_path_factory.mktemp("engine")
    root = base / "cosmos_workflow"
    (root / "cache").mkdir(parents=True)
    shutil.copy(WORKER, root / "worker.py")
    small = make_testsrc_frames(root / "cache", SMALL, "small")
    big = make_testsrc_frames(root / "cache", BIG, "big")
    items = [
        {"id": key, "prompt": PROMPTS[key], "frames": big if key == "big" else small}
        for key in ORDER
    ]
    job_dir = root / "jobs" / "engine-job"
    job_dir.mkdir(parents=True)
    settings = dict(SETTINGS, **cpu_bench_settings(python))
    batch = {"version": 1, "job_id": "engine-job", "settings": settings, "items": items}
    (job_dir / "batch.json").write_text(json.dumps(batch), encoding="utf-8")

    started = time.monotonic()
    proc = subprocess.run(
        [python, str(root / "worker.py"), "run", str(job_dir), "--model", str(model)],
        env=engine_env(base / "work"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    duration_s = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (job_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {
        "python": python,
        "lines": lines,
        "results": {r["id"]: r for r in map(json.loads, lines)},
        "status": json.loads((job_dir / "status.json").read_text(encoding="utf-8")),
        "log": (job_dir / "worker.log").read_text(encoding="utf-8"),
        "stdout": proc.stdout,
        "duration_s": duration_s,
    }


def test_every_item_has_one_result_and_the_job_is_done(engine_job):
    assert sorted(json.loads(line)["id"] for line in engine_job["lines"]) == sorted(ORDER)
    status = engine_job["status"]
    expected_version = engine_vllm_version(engine_job["python"])
    assert status["state"] == "done" and status["vllm_version"].split("+")[0] == expected_version
    assert (status["total"], status["done"], status["failed"], status["pending"]) == (6, 5, 1, 0)


@pytest.mark.parametrize("item_id", ["a", "b", "c", "d", "e"])
def test_prompt_tokens_equal_the_local_preflight_count(engine_job, item_id):
    result = engine_job["results"][item_id]
    expected = count_prompt_tokens(*SMALL, 2, PROMPTS[item_id]).prompt_tokens
    assert result["error"] is None
    assert result["prompt_tokens"] == expected


@pytest.mark.parametrize("item_id", ["a", "b", "c", "d", "e"])
def test_generation_stops_at_max_tokens_or_a_stop_token(engine_job, item_id):
    result = engine_job["results"][item_id]
    assert result["finish_reason"] in ("length", "stop")
    if result["finish_reason"] == "length":
        assert result["generated_tokens"] == SETTINGS["output_tokens"]
    else:
        assert 0 < result["generated_tokens"] < SETTINGS["output_tokens"]
    assert isinstance(result["text"], str)


def test_too_big_frames_fail_alone_with_the_engine_count_the_preflight_predicts(engine_job):
    error = engine_job["results"]["big"]["error"]
    expected = count_prompt_tokens(*BIG, 2, PROMPTS["big"]).prompt_tokens
    if is_legacy(engine_job["python"]):  # vLLM 0.8 / 0.9: a plain ValueError
        assert error["type"] == "ValueError"
        assert (
            f"prompt (length {expected}) is longer than the maximum model length of 4096"
            in (error["message"])
        )
    else:
        assert error["type"] == "VLLMValidationError"
        assert "maximum context length is 4096 tokens" in error["message"]
        assert f"your prompt contains {expected} input tokens" in error["message"]
    for key in ("d", "e"):  # same chunk as big, still served
        assert engine_job["results"][key]["error"] is None


def test_first_chunk_ran_as_one_chat_call_of_three(engine_job):
    # Items of one chat call share its wall time; the rejected chunk was served in pieces.
    elapsed = {key: r["elapsed_s"] for key, r in engine_job["results"].items()}
    assert elapsed["a"] == elapsed["b"] == elapsed["c"] > 0
    assert elapsed["d"] != elapsed["a"]
    assert "engine rejected 3 requests" in engine_job["log"]


def test_progress_lines_stream_on_stdout_in_result_order(engine_job):
    prefix = "@@cosmos-progress "
    lines = [
        json.loads(line[len(prefix) :])
        for line in engine_job["stdout"].splitlines()
        if line.startswith(prefix)
    ]
    assert [p["id"] for p in lines] == ["a", "b", "c", "d", "big", "e"]
    assert lines[-1] == {"done": 5, "failed": 1, "total": 6, "id": "e"}
