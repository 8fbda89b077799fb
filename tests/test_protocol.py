"""The contract between the CLI and the worker: remote/protocol.py against the real worker.py.

worker.py runs on the GPU host with only the standard library and vLLM, so it keeps its own
copy of the wire formats and of NVIDIA's defaults. These tests run the real worker (with the
stand-in engine) through the real job wrapper (`jobctl`, a real `sh`), parse everything it
writes with `protocol`, and check the copies of the defaults are equal — so a format or a
default that drifts on one side fails here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from dataclasses import asdict, fields

import pytest
from PIL import Image

from cosmos_workflow.config import load_config
from cosmos_workflow.remote import jobctl, protocol, servectl
from cosmos_workflow.remote.protocol import EngineSettings
from cosmos_workflow.remote.runner import RunnerSettings, worker_command
from cosmos_workflow.workflows.gpuhost import GpuHost
from cosmos_workflow.workflows.preflight import Preflight

from .engine import FAKE_VLLM, WORKER, fake_engine_env


def _worker_module():
    spec = importlib.util.spec_from_file_location("cosmos_worker_copy", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _worker_module()


# -- the defaults, three copies -----------------------------------------------------------------


def test_the_worker_defaults_equal_the_protocol_defaults():
    assert asdict(EngineSettings()) == worker.DEFAULT_SETTINGS


def test_the_config_defaults_make_the_protocol_defaults(workdir):
    """No config file: the engine settings the CLI sends are NVIDIA's, as the worker has them."""
    config = load_config()
    sent = GpuHost(config).engine_settings(Preflight(config).budget())
    # Where the checkpoints are is the host's business, not a default of the engine.
    assert sent == EngineSettings(checkpoint_dir=sent.checkpoint_dir)


def test_the_worker_constants_equal_the_protocol_constants():
    assert worker.BATCH_VERSION == protocol.BATCH_VERSION
    assert worker.PROGRESS_PREFIX == protocol.PROGRESS_PREFIX
    assert worker.CHECK_PREFIX == protocol.CHECK_PREFIX
    assert worker.UPSAMPLER_CHECKPOINT == protocol.UPSAMPLER_MODEL


def test_every_engine_setting_is_a_key_the_worker_reads():
    assert {f.name for f in fields(EngineSettings)} == set(worker.DEFAULT_SETTINGS)


# -- builders next to parsers -------------------------------------------------------------------


def test_each_builder_is_read_back_by_its_parser():
    assert protocol.parse_progress(protocol.progress_line(3, 1, 10, "ü $(x)")) == {
        "done": 3,
        "failed": 1,
        "total": 10,
        "id": "ü $(x)",
    }
    assert protocol.parse_progress("an ordinary log line") is None
    assert protocol.parse_exit(protocol.exit_line("137")) == "137"
    assert protocol.parse_exit("@@cosmos-progress {}") is None
    banner = "=== TRITON banner ===\n" + protocol.check_line({"ready": True}) + "\n"
    assert protocol.parse_check_report(banner) == {"ready": True}
    line = protocol.result_line(
        "a",
        text="t",
        prompt_tokens=5,
        generated_tokens=2,
        finish_reason="stop",
        error=None,
        elapsed_s=0.5,
    )
    assert protocol.parse_results((line + "\n").encode())["a"]["generated_tokens"] == 2
    rows, gpus = protocol.parse_status(
        protocol.status_row("j1", True, False, {"state": "running"}) + "\n@@gpu 0, H100\n"
    )
    assert rows == [protocol.JobRow("j1", True, False, {"state": "running"})]
    assert gpus == ["0, H100"]
    batch = protocol.batch_json("j1", [protocol.batch_item("a", "p", ["ab"])], EngineSettings())
    assert protocol.parse_batch(batch)["items"] == [
        {"id": "a", "prompt": "p", "frames": ["cache/ab.png"]}
    ]


def test_a_version_1_result_line_is_read_with_the_new_name():
    old = json.dumps({"id": "a", "text": "t", "output_tokens": 7, "error": None})
    assert protocol.parse_results(old.encode())["a"]["generated_tokens"] == 7


# -- the real worker, parsed by the protocol ----------------------------------------------------


@pytest.fixture
def host_root(tmp_path):
    """A remote_dir with our folder in it: worker.py, a frame in the cache, a stand-in model."""
    remote_dir = tmp_path / "host" / "cosmos-transfer1"
    root = remote_dir / "cosmos_workflow"
    (root / "cache").mkdir(parents=True)
    (root / "worker.py").write_bytes(WORKER.read_bytes())
    model = tmp_path / "model"
    model.mkdir()
    for name in worker.MODEL_FILES:
        (model / name).write_text("{}")
    return remote_dir, root, model


def test_the_real_worker_speaks_the_protocol(host_root, tmp_path):
    remote_dir, root, model = host_root
    frame = root / "cache" / "incoming.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(frame)
    sha = hashlib.sha256(frame.read_bytes()).hexdigest()
    frame.rename(root / "cache" / f"{sha}.png")
    items = [protocol.batch_item(f"item-{n}", f"prompt {n}", [sha, sha]) for n in range(3)]
    settings = EngineSettings(model=str(model), chunk_size=2)
    job_id = protocol.job_id_for(items, settings)
    job_dir = root / "jobs" / job_id
    job_dir.mkdir(parents=True)
    (job_dir / "batch.json").write_bytes(protocol.batch_json(job_id, items, settings))

    env = fake_engine_env(tmp_path / "engine.jsonl")
    runner = RunnerSettings(
        kind="direct",
        remote_dir=str(remote_dir),
        python=sys.executable,
        env={"PYTHONPATH": str(FAKE_VLLM), "FAKE_VLLM_LOG": env["FAKE_VLLM_LOG"]},
    )
    launch = jobctl.launch_and_follow(str(job_dir), worker_command(runner, job_id))
    run = subprocess.run(["sh", "-c", launch], capture_output=True, text=True, timeout=120)
    lines = run.stdout.splitlines()

    # stdout: a progress line per item, the wrapper's exit line last.
    progress = [p for p in map(protocol.parse_progress, lines) if p is not None]
    assert [p["done"] for p in progress] == [1, 2, 3], run.stdout
    assert {p["id"] for p in progress} == {"item-0", "item-1", "item-2"}
    assert protocol.parse_exit(lines[-1]) == "0", run.stdout + run.stderr

    # results.jsonl: every item, with the keys the protocol builds.
    results = protocol.parse_results((job_dir / "results.jsonl").read_bytes())
    assert set(results) == {"item-0", "item-1", "item-2"}
    built = json.loads(
        protocol.result_line(
            "x",
            text=None,
            prompt_tokens=None,
            generated_tokens=None,
            finish_reason=None,
            error=None,
            elapsed_s=0,
        )
    )
    for result in results.values():
        assert set(result) == set(built)
        assert result["error"] is None and result["generated_tokens"] > 0

    # status rows: the real `jobctl.status` over the job folder.
    status = subprocess.run(
        ["sh", "-c", jobctl.status(str(root))], capture_output=True, text=True, timeout=60
    )
    rows, _ = protocol.parse_status(status.stdout)
    assert [(r.job_id, r.alive, r.cancelled) for r in rows] == [(job_id, False, False)]
    assert rows[0].status["state"] == "done" and rows[0].status["done"] == 3

    # `worker.py check --json`: its report on the last @@cosmos-check line.
    check = subprocess.run(
        [sys.executable, str(root / "worker.py"), "check", "--json", "--model", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    report = protocol.parse_check_report(check.stdout)
    assert report is not None and report["model"]["path"] == str(model), check.stdout


def test_the_worker_reads_what_the_protocol_writes_and_nothing_else(host_root):
    """A batch whose settings the worker does not know as the protocol's fails loudly."""
    _, root, model = host_root
    job_dir = root / "jobs" / "j"
    job_dir.mkdir(parents=True)
    settings = asdict(EngineSettings(model=str(model)))
    settings["frame_count"] = 0  # protocol's name: the worker validates it
    batch = {"version": protocol.BATCH_VERSION, "job_id": "j", "settings": settings, "items": []}
    (job_dir / "batch.json").write_text(json.dumps(batch))
    with pytest.raises(worker.BatchError, match="settings.frame_count"):
        worker.load_batch(str(job_dir))


# -- the warm server ----------------------------------------------------------------------------


def test_the_server_formats_are_the_workers(tmp_path):
    """request.json as the CLI writes it is what `worker.py serve` reads; the state.json the
    supervisor writes is what `servectl.probe` prints and `protocol` parses back."""
    assert worker.SERVER_SETTINGS == protocol.SERVER_SETTINGS
    assert set(protocol.SERVER_SETTINGS) <= set(worker.DEFAULT_SETTINGS)
    engine = EngineSettings(max_model_len=8192, frame_count=3, checkpoint_dir="/c")
    (tmp_path / "request.json").write_bytes(protocol.server_request_json(engine, 8765, 90.0))
    request = worker.load_server_request(str(tmp_path))
    assert request["port"] == 8765 and request["idle_timeout_s"] == 90.0
    assert request["settings"] == asdict(engine)

    state = worker.ServerState(str(tmp_path), port=8765)
    state.update(
        state="ready",
        settings={key: request["settings"][key] for key in worker.SERVER_SETTINGS},
    )
    probe = subprocess.run(
        ["sh", "-c", servectl.probe(str(tmp_path))], capture_output=True, text=True, check=True
    )
    read, alive = protocol.parse_server_probe(probe.stdout)
    assert alive is False  # no supervisor pid file here
    assert read["state"] == "ready" and read["port"] == 8765
    assert read["settings"] == protocol.server_settings(engine)
