"""Helpers for the history and report tests: run records made by the real classes, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cosmos_workflow.cli import app
from cosmos_workflow.specs.model import PromptSpec, SpecFormat
from cosmos_workflow.workflows.jobs import PlannedItem, RunRecord

_runner = CliRunner()


def cosmos(*args):
    """`cosmos ARGS…` through typer's runner (stdout and stderr apart)."""
    return _runner.invoke(app, [str(a) for a in args])


def data_of(result):
    """The `data` of a `--json` command's envelope."""
    assert result.stdout, result.stderr
    return json.loads(result.stdout)["data"]


def run_record(prompts: dict[str, tuple[str, str | None]], job_id="0123456789abcdef", **fields):
    """A run record as `RunRecord.to_dict()` makes it: name → (original, upsampled prompt)."""
    record = RunRecord(
        job_id=job_id,
        host="gpu-host",
        transport="ssh",
        runner="direct",
        model="nvidia/Cosmos-UpsamplePrompt1-12B-Transfer",
        settings={"max_model_len": 4096, "output_tokens": 300, "frame_count": 2},
    )
    for n, (name, (original, upsampled)) in enumerate(prompts.items()):
        spec = PromptSpec(
            path=Path(f"/specs/{name}.json"),
            format=SpecFormat.SEED,
            id=f"ps_{n:012x}",
            name=name,
            prompt=original,
            video=Path(f"/videos/{name}.mp4"),
        )
        item = PlannedItem(id=name, spec=spec, output_name=f"{name}.json")
        item.frame_count, item.frame_width, item.frame_height = 2, 320, 180
        item.frame_sha256 = [f"{n:02x}" * 32, f"{n + 100:02x}" * 32]
        item.prompt_tokens_local = item.prompt_tokens_engine = 530
        if upsampled is None:
            item.fail({"code": "engine_rejected", "message": "too long", "hint": "shorten it"})
        else:
            item.status, item.upsampled_prompt, item.generated_tokens = "ok", upsampled, 40
            item.finish_reason = "stop"
            item.output = f"/out/{name}.json"
        record.items.append(item)
    record.finish()
    data = record.to_dict()
    data.update(fields)
    return data
