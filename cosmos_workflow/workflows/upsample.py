"""Upsample mixin: `upsample()`, a face over `UpsamplePipeline` with the warm server or a job."""

from __future__ import annotations

from pathlib import Path

from .. import history
from ..config import Config, user_data_dir
from .batchjob import JobExecutor
from .gpuhost import GpuHost
from .jobs import RunRecord
from .pipeline import Events, UpsamplePipeline, quiet
from .preflight import Preflight
from .server import ModeChoice


class UpsampleMixin:
    """Mixed into `WorkflowOrchestrator`: needs `config`, `preflight` and `gpu_host`."""

    config: Config
    preflight: Preflight
    gpu_host: GpuHost

    def upsample(
        self,
        inputs: list[Path],
        *,
        save_dir: Path | None = None,
        preprocess_videos: bool = False,
        max_resolution: str | None = None,
        frame_count: int | None = None,
        max_model_len: int | None = None,
        output_tokens: int | None = None,
        num_gpu: int | None = None,
        dry_run: bool = False,
        force: bool = False,
        overwrite: bool = False,
        recursive: bool = False,
        collect_job: str | None = None,
        server: bool | None = None,
        endpoint: str | None = None,
        on_event: Events = quiet,
    ) -> RunRecord:
        """Upsample every spec in `inputs` on the host; write the upsampled specs to `save_dir`.

        See `UpsamplePipeline.run`; the flags of `cosmos upsample` map 1:1 to the arguments.
        `server`: None uses a ready warm server with this run's settings, else a batch job;
        True requires the server; False forces a job. `endpoint` (default `[server]
        endpoint`): an OpenAI-compatible base URL that gets every item instead.
        """
        save_dir = Path(save_dir or self.config.paths.local_outputs_dir)
        budget = self.preflight.budget(
            frame_count=frame_count, max_model_len=max_model_len, output_tokens=output_tokens
        )
        executor = JobExecutor(self.gpu_host, self.gpu_host.engine_settings(budget, num_gpu))
        if collect_job is None:  # `remote results` collects a job; a run may use a server
            executor = ModeChoice(
                executor,
                use_server=server,
                endpoint=self.config.server.endpoint if endpoint is None else endpoint,
                journal_dir=self.preflight.cache_dir / "server-results",
            )
        with self.gpu_host.session():  # one SSH connection for the whole run
            record = UpsamplePipeline(self.preflight, executor).run(
                inputs,
                save_dir=save_dir,
                budget=budget,
                preprocess_videos=preprocess_videos,
                max_resolution=max_resolution,
                dry_run=dry_run,
                force=force,
                overwrite=overwrite,
                recursive=recursive,
                collect_job=collect_job,
                on_event=on_event,
            )
        if not record.dry_run and record.job_id is not None:  # run.json was written
            # The history never costs a run: a failure to record is a warning event.
            history.record_run_or_warn(
                self.history_path,
                record.to_dict(),
                save_dir=save_dir,
                frame_cache=self.preflight.cache_dir / "frames",
                on_event=on_event,
            )
        return record

    @property
    def history_path(self) -> Path:
        """The run history: `[paths] history_db`, else history.db in the user data folder."""
        return Path(self.config.paths.history_db or user_data_dir() / "history.db")
