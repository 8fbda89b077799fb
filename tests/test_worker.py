"""The GPU-host worker, run as a real subprocess against the stand-in engine (tests/fake_vllm).

Each test lays out a remote root the way the CLI does (worker.py copied alone, cache/<sha>.png,
jobs/<id>/batch.json) and reads what the worker leaves: results.jsonl, status.json, worker.log
and stdout. The stand-in logs every item it generates, so a test can prove that each item
reached the engine exactly once. The same worker against the real vLLM: test_worker_engine.py.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.engine import WORKER, batch_settings, fake_engine_env, missing_in_ci
from tests.isolation import REAL_HOME

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CHECKPOINT = "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"
RESULT_KEYS = {"id", "text", "prompt_tokens", "generated_tokens", "finish_reason", "error"}
RESULT_KEYS |= {"elapsed_s"}
STATUS_KEYS = {"job_id", "state", "total", "done", "failed", "pending", "pid", "heartbeat"}
STATUS_KEYS |= {"started_at", "finished_at", "error", "vllm_version", "python", "stalled_since"}


class Remote:
    """A worker root in tmp: worker.py alone, a frame cache, jobs, and a stand-in model."""

    def __init__(self, base: Path):
        self.root = base / "cosmos_workflow"
        (self.root / "cache").mkdir(parents=True)
        (self.root / "jobs").mkdir()
        shutil.copy(WORKER, self.root / "worker.py")
        self.model = base / "model"
        self.model.mkdir()
        for name in ("params.json", "consolidated.safetensors", "tekken.json"):
            (self.model / name).write_text("{}")
        self.engine_log = base / "engine.jsonl"

    def frame(self, width: int, height: int, color=(200, 30, 30)) -> str:
        """A PNG frame stored content-addressed in cache/, as its root-relative path."""
        tmp = self.root / "cache" / "incoming.png"
        Image.new("RGB", (width, height), color).save(tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        tmp.replace(self.root / "cache" / f"{digest}.png")
        return f"cache/{digest}.png"

    def job(self, items: list, job_id: str = "job1", **settings) -> Path:
        job_dir = self.root / "jobs" / job_id
        job_dir.mkdir()
        full = batch_settings(**{"model": str(self.model), **settings})
        batch = {"version": 2, "job_id": job_id, "settings": full, "items": items}
        (job_dir / "batch.json").write_text(json.dumps(batch), encoding="utf-8")
        return job_dir

    def run(
        self,
        *args: str,
        path: str | None = None,
        python: str = sys.executable,
        env: dict | None = None,
        **controls,
    ) -> subprocess.CompletedProcess:
        """Run worker.py with the stand-in engine; controls become FAKE_VLLM_* variables,
        `env` is added as it is (e.g. FAKE_TORCH_GPUS, CUDA_VISIBLE_DEVICES)."""
        run_env = fake_engine_env(self.engine_log, **controls)
        run_env.pop("CUDA_VISIBLE_DEVICES", None)
        run_env.update(env or {})
        env = run_env
        if path is not None:
            env["PATH"] = path
        cmd = [python, str(self.root / "worker.py"), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    def engine_events(self, event: str) -> list:
        if not self.engine_log.exists():
            return []
        lines = self.engine_log.read_text(encoding="utf-8").splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == event]

    def generated_prompts(self) -> list:
        return [e["prompt"] for e in self.engine_events("generate")]


def results(job_dir: Path) -> list:
    lines = (job_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def status(job_dir: Path) -> dict:
    return json.loads((job_dir / "status.json").read_text(encoding="utf-8"))


def progress_lines(stdout: str) -> list:
    prefix = "@@cosmos-progress "
    return [
        json.loads(line[len(prefix) :]) for line in stdout.splitlines() if line.startswith(prefix)
    ]


@pytest.fixture
def remote(tmp_path):
    return Remote(tmp_path)


def test_job_writes_a_result_line_per_item_status_log_and_progress(remote):
    frames = [remote.frame(320, 180), remote.frame(320, 180, (0, 90, 200))]
    items = [{"id": f"item-{n}", "prompt": f"prompt {n}", "frames": frames} for n in range(3)]
    job_dir = remote.job(items)

    proc = remote.run("run", str(job_dir))

    assert proc.returncode == 0, proc.stderr
    rows = results(job_dir)
    assert [r["id"] for r in rows] == ["item-0", "item-1", "item-2"]
    for n, row in enumerate(rows):
        assert set(row) == RESULT_KEYS
        assert row["error"] is None
        assert row["text"] == f"standin upsampled: prompt {n}"
        assert row["prompt_tokens"] == 3 + 3 + 2 * 12 * 21  # chat frame + text + 2 × 320×180
        assert row["generated_tokens"] == 4
        assert row["finish_reason"] == "stop"
        assert row["elapsed_s"] >= 0
    st = status(job_dir)
    assert set(st) == STATUS_KEYS
    assert st["state"] == "done"
    assert (st["job_id"], st["total"], st["done"], st["failed"], st["pending"]) == (
        "job1",
        3,
        3,
        0,
        0,
    )
    assert st["pid"] > 0 and st["started_at"] <= st["heartbeat"]
    assert st["finished_at"] >= st["started_at"]
    assert st["vllm_version"] == "0.0-standin" and st["error"] is None
    assert st["python"] == ".".join(map(str, sys.version_info[:3]))
    assert progress_lines(proc.stdout) == [
        {"done": n, "failed": 0, "total": 3, "id": f"item-{n - 1}"} for n in (1, 2, 3)
    ]
    log_lines = (job_dir / "worker.log").read_text(encoding="utf-8").splitlines()
    assert any("engine ready" in line for line in log_lines)
    assert all(line[:4].isdigit() and line[10] == "T" for line in log_lines)


def test_engine_gets_nvidia_settings_and_one_chat_call_per_chunk(remote):
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": f"i{n}", "prompt": f"p{n}", "frames": frames} for n in range(5)]
    job_dir = remote.job(items, chunk_size=2, seed=7, output_tokens=2)

    assert remote.run("run", str(job_dir)).returncode == 0

    (load,) = remote.engine_events("load")
    assert load["kwargs"] == {
        "model": str(remote.model),
        "tokenizer_mode": "mistral",
        "max_model_len": 4096,
        "max_num_seqs": 2,
        "limit_mm_per_prompt": {"image": 2},
        "enable_prefix_caching": True,
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.98,
        "enforce_eager": False,
    }
    generated = remote.engine_events("generate")
    assert {json.dumps(e["sampling"]) for e in generated} == {
        json.dumps({"temperature": 0.6, "max_tokens": 2, "seed": 7})
    }
    calls = [e["call"] for e in generated]
    assert calls == [1, 1, 2, 2, 3]
    assert [r["generated_tokens"] for r in results(job_dir)] == [2] * 5
    assert {r["finish_reason"] for r in results(job_dir)} == {"length"}


def test_message_has_frames_first_as_png_data_urls_then_the_text(remote):
    frames = [remote.frame(320, 180), remote.frame(320, 180, (1, 2, 3))]
    job_dir = remote.job([{"id": "a", "prompt": "a robot arm", "frames": frames}])

    assert remote.run("run", str(job_dir)).returncode == 0

    (event,) = remote.engine_events("generate")
    assert event["parts"] == ["image_url", "image_url", "text"]
    assert event["url_prefixes"] == ["data:image/png;base64"] * 2
    assert event["image_sha256"] == [Path(f).stem for f in frames]


def test_empty_or_blank_prompt_becomes_nvidia_default_text(remote):
    frames = [remote.frame(320, 180)] * 2
    items = [
        {"id": "a", "prompt": "", "frames": frames},
        {"id": "b", "prompt": " \n", "frames": frames},
    ]
    job_dir = remote.job(items)

    assert remote.run("run", str(job_dir)).returncode == 0

    assert remote.generated_prompts() == ["describe the following images"] * 2


def test_prompt_with_shell_metacharacters_quotes_newlines_and_emoji_is_sent_byte_exact(remote):
    spec = json.loads((MEDIA / "prompt-specs" / "windows_path_missing_video.json").read_text())
    tricky = [
        spec["prompt"],
        "line one\nline two\t'single' \"double\" `tick` $HOME $(id) ; rm -rf / && echo | cat > x",
        "  leading and trailing spaces \\ backslash \\n not-a-newline 🚀 👩‍🚀 \u200b end",
    ]
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": f"ü-{n} $(x)", "prompt": p, "frames": frames} for n, p in enumerate(tricky)]
    job_dir = remote.job(items)

    assert remote.run("run", str(job_dir)).returncode == 0

    assert remote.generated_prompts() == tricky
    rows = results(job_dir)
    assert [r["id"] for r in rows] == [item["id"] for item in items]
    # The result text is stripped, as NVIDIA strips the upsampled prompt; inside, nothing moves.
    assert [r["text"] for r in rows] == [("standin upsampled: " + p).strip() for p in tricky]
    raw = (job_dir / "results.jsonl").read_text(encoding="utf-8")
    assert "🚀" in raw and "東京" in raw  # written as UTF-8 text, not \u escapes


def test_too_long_item_fails_alone_with_engine_message_and_the_rest_complete(remote):
    small = [remote.frame(320, 180)] * 2
    big = [remote.frame(1280, 720)] * 2
    items = [
        {"id": "a", "prompt": "first", "frames": small},
        {"id": "big", "prompt": "too big", "frames": big},
        {"id": "b", "prompt": "second", "frames": small},
        {"id": "c", "prompt": "third", "frames": small},
    ]
    job_dir = remote.job(items)

    proc = remote.run("run", str(job_dir))

    assert proc.returncode == 0
    rows = {r["id"]: r for r in results(job_dir)}
    assert rows["big"]["error"]["type"] == "VLLMValidationError"
    assert "maximum context length is 4096 tokens" in rows["big"]["error"]["message"]
    assert rows["big"]["text"] is None and rows["big"]["prompt_tokens"] is None
    assert all(rows[i]["error"] is None and rows[i]["text"] for i in ("a", "b", "c"))
    # Rejected calls run nothing; each good item was generated exactly once.
    assert sorted(remote.generated_prompts()) == ["first", "second", "third"]
    assert remote.engine_events("reject")
    st = status(job_dir)
    assert (st["state"], st["done"], st["failed"], st["pending"]) == ("done", 3, 1, 0)
    assert progress_lines(proc.stdout)[-1] == {"done": 3, "failed": 1, "total": 4, "id": "c"}


def test_missing_frame_is_an_item_error_and_never_reaches_the_engine(remote):
    frames = [remote.frame(320, 180)] * 2
    gone = ["cache/" + "0" * 64 + ".png", frames[0]]
    items = [
        {"id": "ok", "prompt": "fine", "frames": frames},
        {"id": "lost", "prompt": "missing frame", "frames": gone},
    ]
    job_dir = remote.job(items)

    assert remote.run("run", str(job_dir)).returncode == 0

    rows = {r["id"]: r for r in results(job_dir)}
    assert rows["lost"]["error"]["type"] == "FileNotFoundError"
    assert "0" * 64 in rows["lost"]["error"]["message"]
    assert rows["ok"]["error"] is None
    seen = remote.generated_prompts() + [
        p for e in remote.engine_events("reject") for p in e["prompts"]
    ]
    assert "missing frame" not in seen


def test_unreadable_frame_fails_only_its_item(remote):
    frames = [remote.frame(320, 180)] * 2
    (remote.root / "cache" / "junk.png").write_bytes(b"not a png at all")
    items = [
        {"id": "ok", "prompt": "fine", "frames": frames},
        {"id": "junk", "prompt": "junk frame", "frames": ["cache/junk.png", frames[0]]},
    ]
    job_dir = remote.job(items)

    assert remote.run("run", str(job_dir)).returncode == 0

    rows = {r["id"]: r for r in results(job_dir)}
    assert "cannot identify image file" in rows["junk"]["error"]["message"]
    assert rows["ok"]["error"] is None
    assert remote.generated_prompts() == ["fine"]


def test_absolute_frame_paths_are_accepted(remote, tmp_path):
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (320, 180)).save(outside)
    job_dir = remote.job([{"id": "a", "prompt": "abs", "frames": [str(outside)] * 2}])

    assert remote.run("run", str(job_dir)).returncode == 0

    assert results(job_dir)[0]["error"] is None


def test_rerun_skips_finished_items_and_drops_a_partial_last_line(remote):
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": i, "prompt": f"prompt {i}", "frames": frames} for i in ("a", "b", "c")]
    job_dir = remote.job(items)
    earlier = {"id": "a", "text": "from before", "prompt_tokens": 1, "generated_tokens": 1}
    earlier.update(finish_reason="stop", error=None, elapsed_s=1.0)
    partial = '{"id": "b", "text": "cut off mid-wri'
    (job_dir / "results.jsonl").write_text(json.dumps(earlier) + "\n" + partial, encoding="utf-8")

    assert remote.run("run", str(job_dir)).returncode == 0

    assert remote.generated_prompts() == ["prompt b", "prompt c"]
    rows = results(job_dir)  # every line parses: the partial one is gone
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["text"] == "from before"
    st = status(job_dir)
    assert (st["done"], st["failed"], st["pending"], st["state"]) == (3, 0, 0, "done")


def test_rerun_retries_items_whose_result_is_an_error_and_keeps_the_successes(remote):
    items = [
        {"id": "ok", "prompt": "fine", "frames": [remote.frame(320, 180)] * 2},
        {"id": "bad", "prompt": "rejected once", "frames": [remote.frame(320, 180, (1, 2, 3))] * 2},
    ]
    job_dir = remote.job(items)
    assert remote.run("run", str(job_dir), reject_prompt="rejected").returncode == 0
    assert [(r["id"], r["error"] is None) for r in results(job_dir)] == [
        ("ok", True),
        ("bad", False),
    ]

    proc = remote.run("run", str(job_dir))

    assert proc.returncode == 0, proc.stderr
    assert remote.generated_prompts() == ["fine", "rejected once"]  # "fine" ran once
    rows = results(job_dir)  # the error line stays; the retry's success is appended
    assert [(r["id"], r["error"] is None) for r in rows] == [
        ("ok", True),
        ("bad", False),
        ("bad", True),
    ]
    st = status(job_dir)
    assert (st["done"], st["failed"], st["pending"], st["state"]) == (2, 0, 0, "done")
    assert progress_lines(proc.stdout)[-1] == {"done": 2, "failed": 0, "total": 2, "id": "bad"}


def test_rerun_of_a_finished_job_does_not_start_the_engine(remote):
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "once", "frames": frames}])
    assert remote.run("run", str(job_dir)).returncode == 0

    proc = remote.run("run", str(job_dir))

    assert proc.returncode == 0
    assert len(remote.engine_events("load")) == 1
    assert remote.generated_prompts() == ["once"]
    assert status(job_dir)["state"] == "done"


def test_crashed_job_resumes_without_resending_recorded_items(remote):
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": f"i{n}", "prompt": f"p{n}", "frames": frames} for n in range(4)]
    job_dir = remote.job(items, chunk_size=1)

    crashed = remote.run("run", str(job_dir), exit_after=2)  # the process dies at item 3

    assert crashed.returncode == 137
    assert [r["id"] for r in results(job_dir)] == ["i0", "i1"]
    assert status(job_dir)["state"] == "running"  # what the CLI sees: a stale heartbeat

    resumed = remote.run("run", str(job_dir))

    assert resumed.returncode == 0
    assert remote.generated_prompts() == ["p0", "p1", "p2", "p3"]  # each exactly once
    assert [r["id"] for r in results(job_dir)] == ["i0", "i1", "i2", "i3"]


def test_dead_engine_fails_the_job_without_marking_pending_items_failed(remote):
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": f"i{n}", "prompt": f"p{n}", "frames": frames} for n in range(3)]
    job_dir = remote.job(items, chunk_size=1)

    proc = remote.run("run", str(job_dir), dead_after=1)

    assert proc.returncode == 4
    assert [r["id"] for r in results(job_dir)] == ["i0"]
    st = status(job_dir)
    assert st["state"] == "failed" and "EngineDeadError" in st["error"]
    assert (st["done"], st["failed"], st["pending"]) == (1, 0, 2)


@pytest.mark.parametrize(
    "batch_text, message",
    [
        ("{not json", "not readable JSON"),
        (json.dumps({"version": 3, "items": []}), "version 3"),
        (json.dumps({"version": 1, "items": [{"id": "a"}, {"id": "a"}]}), "appears twice"),
        (json.dumps({"version": 1, "items": [{"prompt": "no id"}]}), "needs a non-empty"),
        (
            json.dumps({"version": 2, "settings": {"frame_count": 0}, "items": []}),
            "settings.frame_count",
        ),
        # A version 1 batch names it "frames": read as frame_count.
        (
            json.dumps({"version": 1, "settings": {"frames": 0}, "items": []}),
            "settings.frame_count",
        ),
    ],
)
def test_bad_batch_exits_2_with_failed_status(remote, batch_text, message):
    job_dir = remote.root / "jobs" / "bad"
    job_dir.mkdir()
    (job_dir / "batch.json").write_text(batch_text)

    proc = remote.run("run", str(job_dir))

    assert proc.returncode == 2
    st = status(job_dir)
    assert st["state"] == "failed" and message in st["error"]
    assert st["job_id"] == "bad"
    assert not remote.engine_events("load")


def test_missing_job_folder_or_arguments_exit_2(remote):
    assert remote.run("run", str(remote.root / "jobs" / "nope")).returncode == 2
    assert remote.run("run").returncode == 2
    assert remote.run("launch").returncode == 2


def test_missing_checkpoint_exits_3_naming_the_default_path(remote):
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "x", "frames": frames}], model=None)

    proc = remote.run("run", str(job_dir))

    assert proc.returncode == 3
    expected = remote.root.parent / "checkpoints" / CHECKPOINT
    st = status(job_dir)
    assert st["state"] == "failed" and str(expected) in st["error"]
    assert "does not exist" in st["error"]
    assert str(expected) in proc.stdout  # the log line the CLI streams
    assert not remote.engine_events("load")


def test_checkpoint_missing_a_file_is_named(remote, tmp_path):
    ckpt = tmp_path / "ckpts"
    model = ckpt / CHECKPOINT
    model.mkdir(parents=True)
    (model / "params.json").write_text("{}")
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": "a", "prompt": "x", "frames": frames}]
    job_dir = remote.job(items, model=None, checkpoint_dir=str(ckpt))

    proc = remote.run("run", str(job_dir))

    assert proc.returncode == 3
    assert "lacks consolidated.safetensors, tekken.json" in status(job_dir)["error"]


def test_default_model_is_nvidia_checkpoint_in_the_checkout_beside_the_root(remote):
    model = remote.root.parent / "checkpoints" / CHECKPOINT
    shutil.copytree(remote.model, model)
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "x", "frames": frames}], model=None)

    assert remote.run("run", str(job_dir)).returncode == 0

    (load,) = remote.engine_events("load")
    assert Path(load["kwargs"]["model"]) == model.resolve()


def test_model_flag_overrides_batch_model(remote, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(remote.model, other)
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "x", "frames": frames}])

    assert remote.run("run", str(job_dir), "--model", str(other)).returncode == 0

    (load,) = remote.engine_events("load")
    assert load["kwargs"]["model"] == str(other)


def test_engine_that_fails_to_start_exits_3_with_its_error(remote):
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "x", "frames": frames}])

    proc = remote.run("run", str(job_dir), fail_load="CUDA out of memory")

    assert proc.returncode == 3
    st = status(job_dir)
    assert st["state"] == "failed"
    assert st["error"] == (
        "engine failed to start: RuntimeError: CUDA out of memory"
        " (lower [worker] gpu_memory_utilization or max_num_seqs, or use more GPUs)"
    )
    assert not (job_dir / "results.jsonl").exists()


def test_sigterm_stops_the_job_as_failed_and_keeps_finished_results(remote):
    frames = [remote.frame(320, 180)] * 2
    items = [{"id": f"i{n}", "prompt": f"p{n}", "frames": frames} for n in range(20)]
    job_dir = remote.job(items, chunk_size=1)
    env = fake_engine_env(remote.engine_log, delay_s="0.2")
    cmd = [sys.executable, str(remote.root / "worker.py"), "run", str(job_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (job_dir / "results.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)

    assert proc.returncode == 4
    st = status(job_dir)
    assert st["state"] == "failed" and st["error"] == "interrupted"
    assert 1 <= len(results(job_dir)) < 20
    # Interrupted anywhere: the counts never claim more than results.jsonl holds.
    assert st["done"] <= len(results(job_dir))


def write_fake_nvidia_smi(bin_dir: Path) -> None:
    """The GPU query tool's CSV answer for one H100 (no GPU on this machine)."""
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559, 3'\n")
    tool.chmod(0o755)


def check_report(stdout: str) -> dict:
    """The report on `check --json`'s marker line, which must be the last line of stdout."""
    last = stdout.splitlines()[-1]
    assert last.startswith("@@cosmos-check "), stdout[-500:]
    return json.loads(last[len("@@cosmos-check ") :])


@pytest.fixture
def gpu_path(tmp_path) -> str:
    """PATH with a stand-in nvidia-smi that lists one H100."""
    write_fake_nvidia_smi(tmp_path / "bin")
    return f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"


def test_check_json_reports_python_vllm_torch_gpus_model_and_disk(remote, gpu_path):
    proc = remote.run(
        "check", "--model", str(remote.model), "--json", "--min-free-gib", "0", path=gpu_path
    )

    assert proc.returncode == 0, proc.stdout
    report = check_report(proc.stdout)
    assert report["ready"] is True and report["problems"] == [] and report["warnings"] == []
    assert report["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["vllm"] == {"version": "0.0-standin", "error": None, "extension_error": None}
    assert report["torch"] == {
        "version": "2.7.1-standin",
        "error": None,
        "cuda_available": True,
        "cuda_device_count": 1,
    }
    assert report["transformers"] == {"version": "4.49.0"}
    assert report["cuda_visible_devices"] is None
    assert report["gpus"] == [
        {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "memory_used_mib": 3}
    ]
    assert report["model"]["ok"] is True
    assert report["model"]["files"] == {
        "params.json": 2,
        "consolidated.safetensors": 2,
        "tekken.json": 2,
    }
    assert report["disk"]["path"] == str(remote.root)
    assert report["disk"]["free_bytes"] > 0 and report["disk"]["low"] is False
    # For a person reading it, the same report as indented JSON comes first.
    human = proc.stdout[: proc.stdout.rindex("@@cosmos-check ")]
    assert json.loads(human) == report


TRITON_BANNER = """
=============================
== Triton Inference Server ==
=============================

NVIDIA Release 25.04 (build 160000000)
{"not": "the report"}
"""


def write_entrypoint(path: Path) -> Path:
    """Like the Triton image's entrypoint: print a banner on stdout, then exec the command."""
    path.write_text(
        f"#!/bin/sh\ncat <<'EOF'\n{TRITON_BANNER}EOF\nexec {shlex.quote(sys.executable)} \"$@\"\n"
    )
    path.chmod(0o755)
    return path


def test_check_json_marker_line_comes_after_an_entrypoint_banner(remote, gpu_path, tmp_path):
    python = str(write_entrypoint(tmp_path / "entrypoint"))

    proc = remote.run("check", "--model", str(remote.model), "--json", python=python, path=gpu_path)

    assert proc.stdout.startswith(TRITON_BANNER)
    assert check_report(proc.stdout)["ready"] is True


def test_dash_dash_check_is_the_check_command(remote):
    proc = remote.run("--check", "--model", str(remote.model), "--json")
    assert check_report(proc.stdout)["model"]["ok"] is True


def test_check_without_gpu_or_checkpoint_is_not_ready_and_says_why(remote, tmp_path):
    python_dir = str(Path(sys.executable).parent)

    proc = remote.run(
        "check", "--checkpoint-dir", str(tmp_path / "ckpts"), "--json", path=python_dir
    )

    assert proc.returncode == 1
    report = check_report(proc.stdout)
    assert report["ready"] is False and report["gpus"] == []
    assert any("nvidia-smi not found" in p for p in report["problems"])
    expected = tmp_path / "ckpts" / CHECKPOINT
    assert report["model"]["path"] == str(expected)
    assert report["model"]["files"]["params.json"] is None
    assert any(str(expected) in p for p in report["problems"])


def test_gpus_hidden_by_cuda_visible_devices_are_not_ready(remote, gpu_path):
    """`docker run --gpus device=2` shows that GPU as 0: CUDA_VISIBLE_DEVICES=2 inside hides it.
    nvidia-smi still lists it, so `check` must not say ready."""
    args = ("check", "--model", str(remote.model), "--json")
    inside = {"FAKE_TORCH_GPUS": "1"}  # the container sees one GPU, numbered 0

    hidden = remote.run(*args, path=gpu_path, env={**inside, "CUDA_VISIBLE_DEVICES": "2"})

    assert hidden.returncode == 1
    report = check_report(hidden.stdout)
    assert report["ready"] is False
    assert report["torch"]["cuda_available"] is False
    assert report["cuda_visible_devices"] == "2"
    (problem,) = report["problems"]
    assert "nvidia-smi lists 1 GPU(s) but torch sees no CUDA device" in problem
    assert "CUDA_VISIBLE_DEVICES='2'" in problem and "--gpus device=N" in problem

    renumbered = remote.run(*args, path=gpu_path, env={**inside, "CUDA_VISIBLE_DEVICES": "0"})
    assert renumbered.returncode == 0
    assert check_report(renumbered.stdout)["torch"]["cuda_device_count"] == 1


def test_torch_seeing_no_gpu_without_cuda_visible_devices_points_at_the_driver(remote, gpu_path):
    proc = remote.run(
        "check", "--model", str(remote.model), "--json", path=gpu_path,
        env={"FAKE_TORCH_GPUS": "0"},
    )  # fmt: skip

    assert proc.returncode == 1
    (problem,) = check_report(proc.stdout)["problems"]
    assert "torch sees no CUDA device (CUDA_VISIBLE_DEVICES is unset)" in problem
    assert "driver" in problem


def test_missing_torch_is_a_problem(remote, gpu_path):
    proc = remote.run(
        "check", "--model", str(remote.model), "--json", path=gpu_path,
        env={"FAKE_TORCH_ERROR": "No module named 'torch'"},
    )  # fmt: skip

    assert proc.returncode == 1
    report = check_report(proc.stdout)
    assert report["torch"]["version"] is None
    assert report["problems"] == ["torch cannot be imported: ImportError: No module named 'torch'"]


def test_vllm_compiled_extension_that_does_not_load_is_a_problem(remote, gpu_path):
    """A vLLM built for another torch imports fine; only vllm._C shows the mismatch."""
    symbol = "vllm/_C.abi3.so: undefined symbol: _ZN3c104cuda9SetDeviceEi"
    proc = remote.run(
        "check", "--model", str(remote.model), "--json", path=gpu_path, extension_error=symbol
    )

    assert proc.returncode == 1
    report = check_report(proc.stdout)
    assert report["vllm"]["version"] == "0.0-standin"
    assert report["vllm"]["extension_error"] == f"ImportError: {symbol}"
    (problem,) = report["problems"]
    assert (
        problem.startswith("vLLM's compiled extension (vllm._C) does not load")
        and symbol in problem
    )


def test_low_free_disk_is_a_warning_not_a_blocker(remote, gpu_path):
    args = ("check", "--model", str(remote.model), "--min-free-gib", "1000000000")

    proc = remote.run(*args, "--json", path=gpu_path)

    assert proc.returncode == 0
    report = check_report(proc.stdout)
    assert report["ready"] is True and report["disk"]["low"] is True
    assert report["disk"]["min_free_bytes"] == 1000000000 * 2**30
    (warning,) = report["warnings"]
    assert warning.startswith("low disk: ") and str(remote.root) in warning
    text = remote.run(*args, path=gpu_path).stdout.splitlines()
    assert any(line.startswith("warning  low disk: ") for line in text)
    assert remote.run(*args[:-1], "-1", path=gpu_path).returncode == 2


def test_check_text_output_lists_each_finding_and_ends_with_the_verdict(remote, gpu_path):
    proc = remote.run("check", "--model", str(remote.model), path=gpu_path)

    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert "vllm     0.0-standin (compiled extension loads)" in lines
    assert "torch    2.7.1-standin, CUDA available, 1 device(s)" in lines
    assert "transformers 4.49.0" in lines
    assert "gpu      NVIDIA H100 80GB HBM3, 81559 MiB total, 3 MiB used" in lines
    assert f"model    {remote.model}" in lines
    assert not any(line.startswith("@@") for line in lines)
    assert lines[-1] == "ready"


def test_worker_runs_alone_in_isolated_python(tmp_path):
    """Copied alone to an empty folder and run with -I, it needs nothing of this project."""
    shutil.copy(WORKER, tmp_path / "worker.py")
    cmd = [sys.executable, "-I", str(tmp_path / "worker.py"), "check", "--json"]

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert proc.returncode == 1, proc.stderr
    report = check_report(proc.stdout)
    assert report["vllm"]["version"] is None
    assert "No module named 'vllm'" in report["vllm"]["error"]
    assert "No module named 'torch'" in report["torch"]["error"]


def find_python(version: str) -> str | None:
    """An interpreter of that version that really runs (pyenv shims may only pretend)."""
    root = Path(os.environ.get("PYENV_ROOT") or REAL_HOME / ".pyenv")  # HOME is a temp folder
    pyenv = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
    for candidate in [*map(str, pyenv), shutil.which(f"python{version}")]:
        if candidate and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    return None


def require_python(version: str) -> str:
    """find_python(version), or stop: fail under CI=true (scripts/install.sh installs both
    interpreters, so a missing one is a broken setup), else skip."""
    python = find_python(version)
    if python is not None:
        return python
    missing_in_ci("worker tests", f"python{version} not installed (scripts/install.sh installs it)")


@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_worker_runs_a_job_on_other_supported_pythons(remote, version):
    """GPU hosts and Docker images bring their own Python (3.10 to 3.12)."""
    python = require_python(version)
    frames = [remote.frame(320, 180)] * 2
    job_dir = remote.job([{"id": "a", "prompt": "x", "frames": frames}])

    proc = remote.run("run", str(job_dir), python=python)

    assert proc.returncode == 0, proc.stderr
    assert status(job_dir)["python"].startswith(version + ".")
    assert results(job_dir)[0]["error"] is None


def _imported(nodes) -> set:
    modules = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_worker_imports_only_the_standard_library_and_vllm():
    """At module level only the standard library; vLLM (and torch and transformers, which vLLM
    brings: for `check` and the aimv2 guard) only inside functions, so the worker starts and
    reports without them."""
    tree = ast.parse(WORKER.read_text(encoding="utf-8"))
    assert _imported(tree.body) <= set(sys.stdlib_module_names) | {"__future__"}
    assert _imported(ast.walk(tree)) - set(sys.stdlib_module_names) == {
        "vllm",
        "torch",
        "transformers",
    }
