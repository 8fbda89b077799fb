"""What a run is made of: the planned items on their way through the pipeline, and the run
record (`run.json`, `cosmos upsample --json`) that reports them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..remote import protocol
from ..specs import PromptSpec
from ..specs.reading import RUN_RECORD_KIND


@dataclass
class PlannedItem:
    """One spec on its way through the pipeline, with everything the run record reports."""

    id: str  # unique in the batch; also the output file's stem
    spec: PromptSpec
    output_name: str
    status: str = "planned"  # planned | staged | ok | failed | skipped
    frame_width: int | None = None
    frame_height: int | None = None
    frame_count: int = 0
    prompt_tokens_local: int | None = None
    frame_files: list[Path] = field(default_factory=list)  # local PNGs (frame cache)
    frame_sha256: list[str] = field(default_factory=list)
    upsampled_prompt: str | None = None
    prompt_tokens_engine: int | None = None
    generated_tokens: int | None = None  # what the model wrote (the budget: output_tokens)
    finish_reason: str | None = None
    output: str | None = None  # path of the written spec
    # Planned (dry run): new | replace | keep | overwrite; done: written | unchanged | kept.
    output_action: str | None = None
    error: dict | None = None

    def fail(self, error: dict) -> None:
        self.status = "failed"
        self.error = error

    def batch_entry(self) -> dict:
        return protocol.batch_item(self.id, self.spec.prompt, self.frame_sha256)

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
            "frame_count": self.frame_count,
            "frame_sha256": list(self.frame_sha256),
            "prompt_tokens_local": self.prompt_tokens_local,
            "prompt_tokens_engine": self.prompt_tokens_engine,
            "generated_tokens": self.generated_tokens,
            "finish_reason": self.finish_reason,
            "error": self.error,
        }


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
    # How the items were run: "job" (a batch job on the host), "server" (the warm server or an
    # endpoint); a dry run that would let the host decide says "auto".
    mode: str = "job"
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    duration_s: float | None = None
    dry_run: bool = False
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
            "mode": self.mode,
            "model": self.model,
            "settings": self.settings,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "dry_run": self.dry_run,
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
