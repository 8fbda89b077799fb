"""Upsample mixin: load → plan → stage → ship → run the worker → collect.

Everything that can fail locally (specs, videos, token budget, output names, the save folder)
fails before any network traffic. One connection carries a whole batch, in a number of SSH
operations that does not grow with the batch (see `RunRecord.ops`).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import tokens
from ..errors import CosmosError, MediaError, SpecError, SSHError
from ..fsutil import atomic_write_json
from ..remote import jobctl
from ..remote import runner as runners
from ..remote.transfer import upload_to_cache
from ..specs import output_names
from .follow import follow_worker, reconnecting
from .jobs import (
    EngineSettings,
    PlannedItem,
    RunRecord,
    batch_json,
    job_id_for,
    parse_results,
)
from .outputs import plan_outputs, write_outputs
from .resolution import Budget, CheckItem, Resolution, check_writable_dir
from .server import SERVER_LOST, TOKEN_MISMATCH, select_executor

WORKER_FILE = Path(__file__).resolve().parent.parent / "remote" / "worker.py"
MODEL_NAME = "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"

Events = Callable[..., None]
# Concurrent ffmpeg extractions while staging a batch.
STAGE_WORKERS = 4


def _quiet(kind: str, **data) -> None:
    """Default event sink: the library never prints."""


def _error(exc: CosmosError) -> dict:
    return {"code": exc.code, "message": exc.message, "hint": exc.hint}


class UpsampleMixin:
    """`upsample()`, mixed into `WorkflowOrchestrator` (needs `self.config`, ResolutionMixin)."""

    # -- settings from config ---------------------------------------------------------------

    def runner_settings(self) -> runners.RunnerSettings:
        c = self.config
        return runners.RunnerSettings(
            kind=c.worker.runner,
            remote_dir=c.paths.remote_dir,
            python=c.worker.python,
            image=c.docker.image,
            sudo=c.docker.sudo,
            shm_size=c.docker.shm_size,
            hf_cache=c.docker.hf_cache,
            vllm_cache=c.docker.vllm_cache,
            cuda_visible_devices=c.worker.cuda_visible_devices,
            checkpoint_dir=c.checkpoint_dir(),
            env=dict(c.worker.env),
        )

    def engine_settings(self, budget: Budget, num_gpu: int | None = None) -> EngineSettings:
        c = self.config
        checkpoint_dir = c.checkpoint_dir()
        if c.worker.runner == "docker":
            # The worker sees the checkout at /workspace (and other checkpoints at /checkpoints).
            checkpoint_dir = self.runner_settings().container_path(checkpoint_dir)
        return EngineSettings(
            max_model_len=budget.max_model_len,
            max_tokens=budget.output_tokens,
            frames=budget.frames,
            temperature=c.worker.temperature,
            max_num_seqs=c.worker.max_num_seqs,
            tensor_parallel_size=num_gpu or c.worker.num_gpu,
            enforce_eager=c.worker.enforce_eager,
            gpu_memory_utilization=c.worker.gpu_memory_utilization,
            chunk_size=c.worker.chunk_size,
            stall_timeout_s=c.worker.stall_timeout_s,
            checkpoint_dir=checkpoint_dir,
        )

    # -- the pipeline -----------------------------------------------------------------------

    def upsample(
        self,
        inputs: list[Path],
        *,
        save_dir: Path | None = None,
        preprocess: bool = False,
        max_resolution: str | None = None,
        num_frames: int | None = None,
        num_gpu: int | None = None,
        dry_run: bool = False,
        force: bool = False,
        overwrite: bool = False,
        recursive: bool = False,
        collect_job: str | None = None,
        server: bool | None = None,
        endpoint: str | None = None,
        on_event: Events = _quiet,
    ) -> RunRecord:
        """Upsample every spec in `inputs` in one job on the host; write specs to `save_dir`.

        Outputs follow the save folder's rules (`workflows.outputs`): a file cosmos did not
        write is never replaced; one it wrote and that was edited since is kept unless
        `overwrite`. With `collect_job`, start nothing: check that `inputs` and the options
        make that job, then download its results and write the outputs (`cosmos remote
        results`). `server`: None uses a ready warm server with this run's settings, else a job;
        True requires one; False forces a job. `endpoint` (or [server] endpoint): an
        OpenAI-compatible URL to send the items to.
        """
        save_dir = Path(save_dir or self.config.paths.local_outputs_dir)
        budget = self.budget(frames=num_frames)
        engine = self.engine_settings(budget, num_gpu)
        runner = self.runner_settings()
        record = RunRecord(
            job_id=None,
            host=self.config.remote.host if self.config.remote.transport == "ssh" else "local",
            transport=self.config.remote.transport,
            runner=runner.kind,
            model=MODEL_NAME,
            settings={
                "max_model_len": engine.max_model_len,
                "output_tokens": engine.max_tokens,
                "frames": engine.frames,
                "temperature": engine.temperature,
                "max_num_seqs": engine.max_num_seqs,
                "tensor_parallel_size": engine.tensor_parallel_size,
                "gpu_memory_utilization": engine.gpu_memory_utilization,
            },
            dry_run=dry_run,
        )
        started = time.monotonic()
        items, load_errors = self._plan(
            inputs, save_dir, budget, preprocess, max_resolution, force, recursive, record
        )
        plan_outputs(items, save_dir, overwrite=overwrite)
        record.items = items
        record.load_errors = [_error(e) for e in load_errors]
        if not dry_run:
            check_writable_dir(save_dir, "--save-dir", "save_dir_not_writable")
            if self.config.remote.transport == "ssh":
                self.host_settings()  # "no host configured" before any extraction
        on_event("stage", message=f"planned {len(items)} item(s)")
        self._stage(items, budget)
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
            record.job_id = job_id_for(staged, engine)
            record.remote_command = runners.worker_command(runner, record.job_id)
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
        # -- executor dispatch (issue 9): the warm server, or the batch job ------------------
        executor = None
        if launch:
            executor = select_executor(
                use_server=server,
                endpoint=self.config.server.endpoint if endpoint is None else endpoint,
                connect=self.connect,
                runner=runner,
                engine=engine,
                journal_dir=self.cache_dir / "server-results",
                attempts=self.config.remote.reconnect_attempts,
                on_event=on_event,
            )
        if executor is not None:
            record.mode = executor.mode
            t0 = time.monotonic()
            results = executor.execute(record, staged, on_event)
            record.timings_s["run"] = round(time.monotonic() - t0, 3)
        else:
            results = self._ship_and_run(record, staged, engine, runner, on_event, launch=launch)
        self._collect(record, staged, results, save_dir, finished=launch, overwrite=overwrite)
        record.finish()
        atomic_write_json(save_dir / "runs" / f"{record.job_id}.json", record.to_dict())
        atomic_write_json(save_dir / "run.json", record.to_dict())
        return record

    def _plan(self, inputs, save_dir, budget, preprocess, max_resolution, force, recursive, record):
        specs, load_errors = self.load_inputs(
            inputs, recursive=recursive, passed_over=record.passed_over
        )
        if not specs and load_errors:
            raise load_errors[0]
        if not specs:
            raise SpecError("no prompt specs found", "give a spec .json or a folder of specs")
        names = output_names(specs, out_dir=save_dir)
        if max_resolution is not None:
            resolution = Resolution.parse(max_resolution)
        elif preprocess:
            width, height = self.config.frame_size()
            resolution = Resolution("box", width, height)
        else:
            resolution = Resolution("source")
        checked = self.check_specs(specs, resolution, budget)
        if max_resolution is None and not preprocess and self.config.upsampling.auto_resize:
            for check in checked:
                if check.error is None and check.verdict != "fits":
                    self.count_tokens(check, check.video, Resolution("auto"), budget)

        items = []
        for check, name in zip(checked, names, strict=True):
            item = PlannedItem(id=Path(name).stem, spec=check.spec, output_name=name)
            item.frames = budget.frames
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
        return items, load_errors

    def _stage(self, items: list[PlannedItem], budget: Budget) -> None:
        """Extract each item's first frames at its size into the content-addressed cache.

        One ffmpeg process per distinct (clip, size), a few at a time: most of each one's time
        is ffmpeg starting up, which overlaps well even on two cores.
        """
        todo = [item for item in items if item.status == "planned"]
        if not todo:
            return
        cache = self.frame_cache()
        keys = {(item.spec.video, item.frame_width, item.frame_height) for item in todo}

        def extract(key):
            try:
                return cache.frames(key[0], key[1], key[2], budget.frames)
            except MediaError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=STAGE_WORKERS) as pool:
            prepared = dict(zip(keys, pool.map(extract, keys), strict=True))
        for item in todo:
            frames = prepared[(item.spec.video, item.frame_width, item.frame_height)]
            if isinstance(frames, MediaError):
                item.fail(_error(frames))
                continue
            item.frame_files = list(frames.paths)
            item.frame_sha256 = list(frames.sha256)
            item.status = "staged"

    def _ship_and_run(self, record, staged, engine, runner, on_event, *, launch=True):
        """Upload, start (or reattach to) the detached worker, stream it, fetch results.

        Each phase is retried when the connection drops (`reconnecting`): the upload sends
        only what the host's cache still lacks, the stream resumes where it stopped.
        With `launch=False` nothing is uploaded or started: only the job's results are read.
        """
        root = runner.root
        job_dir = jobctl.job_dir(root, record.job_id)
        frames = {}
        for item in staged:
            frames.update(zip(item.frame_sha256, item.frame_files, strict=True))
        attempts = self.config.remote.reconnect_attempts

        def ship() -> None:
            self.ensure_worker(conn, root, job_dir)
            on_event("stage", message=f"uploading {len(frames)} frame(s)")
            upload = upload_to_cache(
                conn, [(path, sha) for sha, path in frames.items()], posixpath.join(root, "cache")
            )
            record.bytes_sent += upload.bytes_sent
            if upload.stale:
                on_event(
                    "stage",
                    message=f"sent {len(upload.stale)} frame(s) again: the host's cached copy "
                    "no longer matched its hash",
                )
            conn.write_bytes(
                posixpath.join(job_dir, "batch.json"), batch_json(record.job_id, staged, engine)
            )

        def fetch() -> bytes:
            results_path = posixpath.join(job_dir, "results.jsonl")
            return conn.read_bytes(results_path) if conn.exists(results_path) else b""

        with self.connect() as conn:
            failure = None
            if launch:
                t0 = time.monotonic()
                on_event("stage", message="connecting")
                reconnecting(ship, attempts=attempts, on_event=on_event, give_up=_upload_gave_up)
                record.timings_s["ship"] = round(time.monotonic() - t0, 3)
                t0 = time.monotonic()
                on_event("job", job_id=record.job_id)  # from here on, the job is on the host
                on_event("stage", message="running the worker")
                on_event("progress", done=0, failed=0, total=len(staged))
                failure = follow_worker(
                    conn,
                    job_dir,
                    record.remote_command,
                    record.job_id,
                    attempts=attempts,
                    on_event=on_event,
                )
                record.timings_s["run"] = round(time.monotonic() - t0, 3)
            t0 = time.monotonic()
            data = reconnecting(
                fetch,
                attempts=attempts,
                on_event=on_event,
                give_up=lambda exc, tries: _collect_gave_up(exc, tries, record.job_id),
            )
            record.timings_s["collect"] = round(time.monotonic() - t0, 3)
            record.ops = dict(conn.counters.as_dict())
        results = parse_results(data)
        if failure is not None:
            if not results:
                raise failure
            # Some items finished before the worker stopped: keep them, fail the rest.
            for item in staged:
                if item.id not in results:
                    item.fail(_error(failure))
        return results

    def _collect(
        self, record, staged, results, save_dir: Path, *, finished=True, overwrite=False
    ) -> None:
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
            item.output_tokens = result.get("output_tokens")
            item.finish_reason = result.get("finish_reason")
            if result.get("error"):
                item.fail(_engine_item_error(result["error"]))
                continue
            item.upsampled_prompt = result.get("text", "")
            done.append(item)
        write_outputs(done, save_dir, overwrite=overwrite)


def _upload_gave_up(exc: SSHError, tries: int) -> SSHError:
    return SSHError(
        f"{exc.message} (after {tries} attempt(s)); nothing was started on the host",
        "run the same command again: frames the host received whole are not sent again",
        code=exc.code,
    )


def _collect_gave_up(exc: SSHError, tries: int, job_id: str) -> SSHError:
    return SSHError(
        f"{exc.message} (after {tries} attempt(s)); job {job_id} keeps its results on the host",
        "rerun the same command (or `cosmos remote results`) to download them",
        code=exc.code,
    )


def _budget_error(check: CheckItem) -> dict:
    needed = check.prompt_tokens + check.output_tokens
    if check.recommended_width:
        hint = (
            f"it fits at {check.recommended_width}×{check.recommended_height}: "
            "use --preprocess-videos or --max-resolution auto"
        )
    else:
        hint = "no frame size fits: shorten the prompt or raise [upsampling] max_tokens"
    return {
        "code": check.verdict,
        "message": (
            f"{check.frame_width}×{check.frame_height} × {check.frames} frames needs "
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
            "--max-resolution or a shorter prompt, and check [upsampling] max_tokens "
            "matches the engine; the same command again retries only failed items",
        ),
    )
    return {"code": code, "message": f"{kind}: {engine_error.get('message')}", "hint": hint}
