"""Faults against the real vLLM engine (CPU build, tiny Pixtral): a worker killed mid-batch, and
an engine that cannot start. Runs on whichever vLLM of the matrix the session uses (see
test_worker_engine.py).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine import (
    WORKER,
    batch_settings,
    cpu_bench_settings,
    engine_env,
    require_engine_python,
    tiny_model_dir,
)
from tests.test_worker_engine import make_testsrc_frames

pytestmark = pytest.mark.engine


def lay_out(base: Path, python: str, items: list, **settings) -> tuple[Path, Path]:
    """A worker root with frames for `items` (each gets the same two 320×180 frames)."""
    root = base / "cosmos_workflow"
    (root / "cache").mkdir(parents=True)
    shutil.copy(WORKER, root / "worker.py")
    frames = make_testsrc_frames(root / "cache", (320, 180), "small")
    job_dir = root / "jobs" / "job"
    job_dir.mkdir(parents=True)
    batch = {
        "version": 1,
        "job_id": "job",
        "settings": batch_settings(enforce_eager=True, **settings, **cpu_bench_settings(python)),
        "items": [dict(item, frames=frames) for item in items],
    }
    (job_dir / "batch.json").write_text(json.dumps(batch), encoding="utf-8")
    return root, job_dir


def result_ids(job_dir: Path) -> list[str]:
    path = job_dir / "results.jsonl"
    if not path.exists():
        return []
    data = path.read_text(encoding="utf-8")
    return [json.loads(line)["id"] for line in data[: data.rfind("\n") + 1].splitlines()]


def test_sigkill_mid_batch_then_rerun_runs_every_item_exactly_once(tmp_path):
    python = require_engine_python()
    model = tiny_model_dir(python)
    items = [{"id": f"item{n}", "prompt": f"A robot arm, take {n}."} for n in range(6)]
    root, job_dir = lay_out(tmp_path, python, items, chunk_size=1)
    env = engine_env(tmp_path / "work")
    cmd = [python, str(root / "worker.py"), "run", str(job_dir), "--model", str(model)]

    with open(job_dir / "stdout.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not result_ids(job_dir) and proc.poll() is None:
                assert time.monotonic() < deadline, "no result within 10 minutes"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
    first = result_ids(job_dir)
    assert 1 <= len(first) < len(items), f"killed too late to test a resume: {first}"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)

    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    final = result_ids(job_dir)
    assert sorted(final) == sorted(item["id"] for item in items)  # every item exactly once
    assert final[: len(first)] == first
    progress = [
        json.loads(line.split(" ", 1)[1])["id"]
        for line in rerun.stdout.splitlines()
        if line.startswith("@@cosmos-progress ")
    ]
    assert progress == [i["id"] for i in items if i["id"] not in first]  # only the rest ran
    log = (job_dir / "worker.log").read_text(encoding="utf-8")
    assert f"{len(first)} already finished, {len(items) - len(first)} to run" in log


def test_engine_that_cannot_load_its_weights_names_the_reason_in_one_line(tmp_path):
    python = require_engine_python()
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir(python), broken)
    weights = broken / "consolidated.safetensors"
    data = weights.read_bytes()
    # Rename the final norm's tensor (same length, so the offsets hold): the file reads fine and
    # the configuration checks pass; the engine process fails while loading the weights.
    assert data.count(b'"norm.weight"') == 1
    weights.write_bytes(data.replace(b'"norm.weight"', b'"nurm.weight"'))
    root, job_dir = lay_out(tmp_path, python, [{"id": "a", "prompt": "x"}])
    env = engine_env(tmp_path / "work")
    # vLLM's default: the engine in its own process, whose traceback goes to the job's output
    # and whose client raises only "Engine core initialization failed. See root cause above".
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING")
    cmd = [python, str(root / "worker.py"), "run", str(job_dir), "--model", str(broken)]

    with open(job_dir / "stdout.log", "wb") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900)

    output = (job_dir / "stdout.log").read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 3, output[-3000:]
    error = json.loads((job_dir / "status.json").read_text(encoding="utf-8"))["error"]
    assert error.startswith("engine failed to start: ")
    assert "root cause above" not in error and "\n" not in error, output[-4000:]
    reason = error.removeprefix("engine failed to start: ")
    # The reason is the engine's own: the tensor it could not place.
    assert reason.split(":")[0].endswith(("Error", "Exception")), error
    assert "nurm" in reason, error
