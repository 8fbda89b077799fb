"""The upsample pipeline: plan → stage → execute → collect.

- `plan`: load the specs, check each one's exact tokens (`Preflight`), choose its frame size and
  its output name; everything that can fail locally fails here, before any network traffic;
- `stage`: extract each item's first frames into the content-addressed frame cache;
- `execute`: the executor runs the staged items (a batch job on the GPU host,
  `batchjob.JobExecutor`, or the warm server, `server.ServerExecutor`) and returns one result
  per item;
- `collect`: results become upsampled specs under the save folder's rules (`outputs`).

An executor has `mode`, `describe()`, `ready(on_event)`, `job_id(staged)`, `command(job_id)`
and `execute(record, staged, on_event, launch=…) -> (results by item id, failure or None)`; a
result is a `results.jsonl` line (`protocol.parse_results`). `ready` is called once the run is
planned (never in a dry run): it fails when the items cannot run at all, and returns the
executor that runs them (itself, or the one a chooser picked: `server.ModeChoice`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .. import tokens
from ..errors import CosmosError, MediaError, SpecError
from ..fsutil import atomic_write_json
from ..remote.protocol import SERVER_LOST, TOKEN_MISMATCH, UPSAMPLER_MODEL
from ..sizing import Budget, Resolution
from ..specs import output_names
from .jobs import PlannedItem, RunRecord
from .outputs import plan_outputs, write_outputs
from .preflight import CheckItem, Preflight, check_writable_dir

Events = Callable[..., None]


def quiet(kind: str, **data) -> None:
    """Default event sink: the library never prints."""


def _error(exc: CosmosError) -> dict:
    return {"code": exc.code, "message": exc.message, "hint": exc.hint}


class UpsamplePipeline:
    """Specs in, upsampled specs out, the items run by `executor`."""

    def __init__(self, preflight: Preflight, executor):
        self.preflight = preflight
        self.executor = executor

    def run(
        self,
        inputs: list[Path],
        *,
        save_dir: Path,
        budget: Budget,
        preprocess_videos: bool = False,
        max_resolution: str | None = None,
        dry_run: bool = False,
        force: bool = False,
        overwrite: bool = False,
        recursive: bool = False,
        collect_job: str | None = None,
        on_event: Events = quiet,
    ) -> RunRecord:
        """Upsample every spec in `inputs`; write the upsampled specs to `save_dir`.

        Outputs follow the save folder's rules (`workflows.outputs`): a file cosmos did not
        write is never replaced; one it wrote and that was edited since is kept unless
        `overwrite`. With `collect_job`, start nothing: check that `inputs` and the options
        make that job, then download its results and write the outputs (`cosmos remote
        results`).
        """
        executor = self.executor
        record = RunRecord(
            job_id=None,
            model=UPSAMPLER_MODEL,
            dry_run=dry_run,
            mode=executor.mode,
            **executor.describe(),
        )
        started = time.monotonic()
        items = self.plan(
            inputs,
            record,
            save_dir=save_dir,
            budget=budget,
            preprocess_videos=preprocess_videos,
            max_resolution=max_resolution,
            force=force,
            recursive=recursive,
        )
        plan_outputs(items, save_dir, overwrite=overwrite)
        record.items = items
        if not dry_run:
            check_writable_dir(save_dir, "--save-dir", "save_dir_not_writable")
            executor = executor.ready(on_event)
            record.mode = executor.mode
            for key, value in executor.describe().items():
                setattr(record, key, value)
        on_event("stage", message=f"planned {len(items)} item(s)")
        self.stage(items, budget)
        record.timings_s["plan_and_stage"] = round(time.monotonic() - started, 3)

        staged = [item for item in items if item.status == "staged"]
        record.bytes_to_send = sum(
            {
                sha: path.stat().st_size
                for item in staged
                for sha, path in zip(item.frame_sha256, item.frame_files, strict=True)
            }.values()
        )
        if staged:
            record.job_id = executor.job_id(staged)
            record.remote_command = executor.command(record.job_id)
        if collect_job is not None and record.job_id != collect_job:
            raise SpecError(
                f"these inputs and options make job {record.job_id}, not {collect_job}",
                "give the same specs and the same --max-resolution/--num-frames/--num-gpu "
                "options as the run that started the job",
                code="job_mismatch",
            )
        if dry_run or not staged:
            record.finish()
            return record

        launch = collect_job is None
        results = self.execute(executor, record, staged, on_event, launch=launch)
        self.collect(record, staged, results, save_dir, finished=launch, overwrite=overwrite)
        record.finish()
        data = record.to_dict()
        atomic_write_json(save_dir / "runs" / f"{record.job_id}.json", data)
        atomic_write_json(save_dir / "run.json", data)
        return record

    def plan(
        self,
        inputs: list[Path],
        record: RunRecord,
        *,
        save_dir: Path,
        budget: Budget,
        preprocess_videos: bool,
        max_resolution: str | None,
        force: bool,
        recursive: bool,
    ) -> list[PlannedItem]:
        """Load the specs, check each one's exact tokens, choose its frame size and output name.

        An item that cannot run is failed (or skipped) here, before anything is sent; specs
        that could not be read go to `record.load_errors`.
        """
        specs, load_errors = self.preflight.load_inputs(
            inputs, recursive=recursive, passed_over=record.passed_over
        )
        if not specs and load_errors:
            raise load_errors[0]
        if not specs:
            raise SpecError("no prompt specs found", "give a spec .json or a folder of specs")
        names = output_names(specs, out_dir=save_dir)
        if max_resolution is not None:
            resolution = Resolution.parse(max_resolution)
        elif preprocess_videos:
            width, height = self.preflight.config.upsampling.safe_resolution
            resolution = Resolution("box", width, height)
        else:
            resolution = Resolution("source")
        checked = self.preflight.check_specs(specs, resolution, budget)
        if (
            max_resolution is None
            and not preprocess_videos
            and self.preflight.config.upsampling.auto_resize
        ):
            for check in checked:
                if check.error is None and check.verdict != "fits":
                    self.preflight.count_tokens(check, check.video, Resolution("auto"), budget)

        items = []
        for check, name in zip(checked, names, strict=True):
            item = PlannedItem(id=Path(name).stem, spec=check.spec, output_name=name)
            item.frame_count = budget.frame_count
            item.frame_width, item.frame_height = check.frame_width, check.frame_height
            item.prompt_tokens_local = check.prompt_tokens
            if check.spec.is_upsampled and not force:
                item.status = "skipped"
                item.error = {
                    "code": "already_upsampled",
                    "message": "spec is already upsampled",
                    "hint": "use --force to upsample it again",
                }
            elif check.error is not None:
                item.fail({k: check.error.get(k) for k in ("code", "message", "hint")})
            elif check.verdict != tokens.Verdict.FITS.value:
                item.fail(_budget_error(check))
            items.append(item)
        record.load_errors = [_error(e) for e in load_errors]
        return items

    def stage(self, items: list[PlannedItem], budget: Budget) -> None:
        """Extract each item's first frames at its size into the content-addressed cache.

        One batch (`FrameCache.frames_many`): cached frames need no ffmpeg, the rest are
        extracted several clips per ffmpeg process, a few processes at a time, since most of
        a one-clip extraction is ffmpeg starting up.
        """
        todo = [item for item in items if item.status == "planned"]
        if not todo:
            return
        keys = [(item.spec.video, item.frame_width, item.frame_height) for item in todo]
        prepared = self.preflight.frame_cache().frames_many(keys, budget.frame_count)
        for item in todo:
            frames = prepared[(item.spec.video, item.frame_width, item.frame_height)]
            if isinstance(frames, MediaError):
                item.fail(_error(frames))
                continue
            item.frame_files = list(frames.paths)
            item.frame_sha256 = list(frames.sha256)
            item.status = "staged"

    def execute(
        self,
        executor,
        record: RunRecord,
        staged: list[PlannedItem],
        on_event: Events,
        *,
        launch=True,
    ) -> dict[str, dict]:
        """Run the staged items with `executor` (the ready one); {item id: result}.

        When the executor stopped early but some items finished, those are kept and the
        others fail with its error; when none finished, its error is raised.
        """
        results, failure = executor.execute(record, staged, on_event, launch=launch)
        if failure is not None:
            if not results:
                raise failure
            for item in staged:
                if item.id not in results:
                    item.fail(_error(failure))
        return results

    def collect(
        self,
        record: RunRecord,
        staged: list[PlannedItem],
        results: dict[str, dict],
        save_dir: Path,
        *,
        finished: bool = True,
        overwrite: bool = False,
    ) -> None:
        """Turn each staged item's result into its upsampled spec under the save folder's rules.

        `finished`: the run ended, so an item without a result failed (otherwise it may still
        come: `cosmos remote results` of a running job).
        """
        done = []
        for item in staged:
            result = results.get(item.id)
            if item.status == "failed":
                continue
            if result is None:
                item.fail(
                    {
                        "code": "no_result",
                        "message": "the worker finished without a result for this item"
                        if finished
                        else "no result yet for this item",
                        "hint": "rerun the same command: finished items are not redone"
                        if finished
                        else f"`cosmos remote status {record.job_id}` shows whether it runs",
                    }
                )
                continue
            item.prompt_tokens_engine = result.get("prompt_tokens")
            item.generated_tokens = result.get("generated_tokens")
            item.finish_reason = result.get("finish_reason")
            if result.get("error"):
                item.fail(_engine_item_error(result["error"]))
                continue
            item.upsampled_prompt = result.get("text", "")
            done.append(item)
        write_outputs(done, save_dir, overwrite=overwrite)


def _budget_error(check: CheckItem) -> dict:
    needed = check.prompt_tokens + check.output_tokens
    if check.recommended_width:
        hint = (
            f"it fits at {check.recommended_width}×{check.recommended_height}: "
            "use --preprocess-videos or --max-resolution auto"
        )
    else:
        hint = "no frame size fits: shorten the prompt or raise [upsampling] max_model_len"
    return {
        "code": check.verdict,
        "message": (
            f"{check.frame_width}×{check.frame_height} × {check.frame_count} frames needs "
            f"{check.prompt_tokens} prompt + {check.output_tokens} output = {needed} tokens, "
            f"over max_model_len {check.max_model_len}"
        ),
        "hint": hint,
    }


# Item errors the worker reports that are not the engine refusing a request: (code, hint).
_WORKER_ITEM_ERRORS = {
    "EmptyOutput": ("empty_output", "the same command again retries it (sampling differs)"),
    SERVER_LOST: (
        "server_lost",
        "run the same command again: items already answered are kept, the rest go to a "
        "restarted server (`cosmos serve start`) or a job (--no-server)",
    ),
    TOKEN_MISMATCH: (
        "token_count_mismatch",
        "the server counts this prompt differently from the local preflight: check that it "
        "serves the upsampler checkpoint, or use a job (--no-server)",
    ),
    "OutputMismatch": (
        "engine_output_mismatch",
        "the engine answered out of step; the same command again retries these items",
    ),
}


def _engine_item_error(engine_error: dict) -> dict:
    """An item's error result from the worker as the run record's error."""
    kind = engine_error.get("type")
    code, hint = _WORKER_ITEM_ERRORS.get(
        kind,
        (
            "engine_rejected",
            "the engine refused what the local count accepted: try a smaller "
            "--max-resolution or a shorter prompt, and check [upsampling] max_model_len "
            "matches the engine; the same command again retries only failed items",
        ),
    )
    return {"code": code, "message": f"{kind}: {engine_error.get('message')}", "hint": hint}
