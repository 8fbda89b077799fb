"""The job a batch becomes: items, engine settings, a job id derived from both, the run record.

A job id is a hash of what the worker will do (each item's id, prompt and frame hashes, and the
engine settings), so running the same command again finds the same job on the host.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..specs import PromptSpec
from ..specs.reading import RUN_RECORD_KIND

PROGRESS_PREFIX = "@@cosmos-progress "
# `worker.py check --json` ends with its report on one line after this marker: whatever ran
# before it (the Docker image's entrypoint banner, vLLM's log) may have printed on stdout too.
CHECK_PREFIX = "@@cosmos-check "


@dataclass
class PlannedItem:
    """One spec on its way through the pipeline, with everything the run record reports."""

    id: str  # unique in the batch; also the output file's stem
    spec: PromptSpec
    output_name: str
    status: str = "planned"  # planned | staged | ok | failed | skipped
    frame_width: int | None = None
    frame_height: int | None = None
    frames: int = 0
    prompt_tokens_local: int | None = None
    frame_files: list[Path] = field(default_factory=list)  # local PNGs (frame cache)
    frame_sha256: list[str] = field(default_factory=list)
    upsampled_prompt: str | None = None
    prompt_tokens_engine: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    output: str | None = None  # path of the written spec
    # Planned (dry run): new | replace | keep | overwrite; done: written | unchanged | kept.
    output_action: str | None = None
    error: dict | None = None

    def fail(self, error: dict) -> None:
        self.status = "failed"
        self.error = error

    def batch_entry(self) -> dict:
        return {
            "id": self.id,
            "prompt": self.spec.prompt,
            "frames": [posixpath.join("cache", f"{sha}.png") for sha in self.frame_sha256],
        }

    def record(self) -> dict:
        return {
            "id": self.id,
            "input": str(self.spec.path or self.spec.video),
            "name": self.spec.name,
            "status": self.status,
            "output": self.output,
            "output_action": self.output_action,
            "original_prompt": self.spec.prompt,
            "upsampled_prompt": self.upsampled_prompt,
            "video": str(self.spec.video) if self.spec.video else None,
            "frame_width": self.frame_width,
            "frame_height": self.frame_height,
            "frames": self.frames,
            "prompt_tokens_local": self.prompt_tokens_local,
            "prompt_tokens_engine": self.prompt_tokens_engine,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
            "error": self.error,
        }


@dataclass(frozen=True)
class EngineSettings:
    """What batch.json tells the worker about the engine (see remote/worker.py)."""

    max_model_len: int
    max_tokens: int
    frames: int
    temperature: float = 0.6
    max_num_seqs: int = 2
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    gpu_memory_utilization: float = 0.98
    checkpoint_dir: str | None = None
    model: str | None = None
    chunk_size: int = 64
    seed: int | None = None
    stall_timeout_s: int = 900  # status.json says "stalled" after this long without progress


def job_id_for(items: list[PlannedItem], settings: EngineSettings) -> str:
    """16 hex digits of SHA-256 over the items to send and the engine settings."""
    canonical = json.dumps(
        {"items": [item.batch_entry() for item in items], "settings": asdict(settings)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def batch_json(job_id: str, items: list[PlannedItem], settings: EngineSettings) -> bytes:
    batch = {
        "version": 1,
        "job_id": job_id,
        "settings": asdict(settings),
        "items": [item.batch_entry() for item in items],
    }
    return (json.dumps(batch, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def parse_progress(line: str) -> dict | None:
    """The worker's `@@cosmos-progress {json}` stdout lines; None for ordinary log lines."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        return json.loads(line[len(PROGRESS_PREFIX) :])
    except json.JSONDecodeError:
        return None


def parse_check_report(stdout: str) -> dict | None:
    """The report on the last `@@cosmos-check {json}` line of `worker.py check --json`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(CHECK_PREFIX):
            try:
                report = json.loads(line[len(CHECK_PREFIX) :])
            except json.JSONDecodeError:
                return None
            return report if isinstance(report, dict) else None
    return None


def parse_results(data: bytes) -> dict[str, dict]:
    """`results.jsonl` → {item id: result}; a torn last line (killed mid-write) is ignored.

    A rerun of the job retries the items whose result was an error and appends their new
    line: an item's first success wins, otherwise its latest error.
    """
    results: dict[str, dict] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict) and isinstance(result.get("id"), str):
            earlier = results.get(result["id"])
            if earlier is None or earlier.get("error"):
                results[result["id"]] = result
    return results


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunRecord:
    """What one `cosmos upsample` did: the shape of `run.json` and of `--json`."""

    job_id: str | None
    host: str
    transport: str
    runner: str
    model: str
    settings: dict
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    duration_s: float | None = None
    dry_run: bool = False
    mode: str = "job"  # "job": the batch worker; "server": the warm server (cosmos serve)
    remote_command: str | None = None
    bytes_to_send: int = 0
    bytes_sent: int = 0
    ops: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    items: list[PlannedItem] = field(default_factory=list)
    load_errors: list[dict] = field(default_factory=list)  # spec files that could not be read
    # Files in input folders that cosmos wrote (earlier outputs, run records): not inputs.
    passed_over: list[dict] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def finish(self) -> None:
        self.finished_at = utc_now()
        self.duration_s = round(time.monotonic() - self._t0, 3)

    @property
    def counts(self) -> dict:
        statuses = [item.status for item in self.items]
        return {
            "total": len(statuses),
            "ok": statuses.count("ok"),
            "failed": statuses.count("failed"),
            "skipped": statuses.count("skipped"),
        }

    @property
    def exit_code(self) -> int:
        """0 when every item that was not skipped succeeded; 1 when any failed."""
        return 1 if self.counts["failed"] or self.load_errors else 0

    def to_dict(self) -> dict:
        return {
            "kind": RUN_RECORD_KIND,
            "job_id": self.job_id,
            "host": self.host,
            "transport": self.transport,
            "runner": self.runner,
            "model": self.model,
            "settings": self.settings,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "dry_run": self.dry_run,
            "mode": self.mode,
            "remote_command": self.remote_command,
            "bytes_to_send": self.bytes_to_send,
            "bytes_sent": self.bytes_sent,
            "ops": self.ops,
            "timings_s": self.timings_s,
            "counts": self.counts,
            "items": [item.record() for item in self.items],
            "load_errors": self.load_errors,
            "passed_over": self.passed_over,
        }
