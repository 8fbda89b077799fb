"""The batch-job executor: a detached `worker.py run` job on the GPU host.

One connection carries a whole batch, in a number of SSH operations that does not grow with
the batch (see `RunRecord.ops`): upload the frames the host's cache lacks, write `batch.json`,
start (or reattach to) the worker, stream its progress, read `results.jsonl`. The job id is a
hash of what the worker will do, so the same command again finds the same job.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

from ..errors import SSHError
from ..remote import jobctl, protocol
from ..remote import runner as runners
from ..remote.protocol import EngineSettings
from ..remote.transfer import upload_to_cache
from .follow import follow_worker, reconnecting
from .gpuhost import GpuHost
from .jobs import PlannedItem, RunRecord

Events = Callable[..., None]


class JobExecutor:
    """Runs staged items as one batch job on `host` with `engine` settings."""

    mode = "job"
    # The engine settings a run record keeps.
    RECORDED_SETTINGS = (
        "max_model_len",
        "output_tokens",
        "frame_count",
        "temperature",
        "max_num_seqs",
        "tensor_parallel_size",
        "gpu_memory_utilization",
    )

    def __init__(self, host: GpuHost, engine: EngineSettings):
        self.host = host
        self.engine = engine
        self.runner = host.runner_settings()

    def describe(self) -> dict:
        """Where and how the items run: the run record's host, transport, runner, settings."""
        config = self.host.config
        return {
            "host": config.remote.host if config.remote.transport == "ssh" else "local",
            "transport": config.remote.transport,
            "runner": self.runner.kind,
            "settings": {key: getattr(self.engine, key) for key in self.RECORDED_SETTINGS},
        }

    def ready(self, on_event: Events) -> JobExecutor:
        """Fail before any frame is extracted when the host cannot be reached at all."""
        if self.host.config.remote.transport == "ssh":
            self.host.host_settings()  # "no GPU host configured"
        return self

    def job_id(self, staged: list[PlannedItem]) -> str:
        return protocol.job_id_for([item.batch_entry() for item in staged], self.engine)

    def command(self, job_id: str) -> str:
        """The command line that runs the job's worker on the host (shown by --dry-run)."""
        return runners.worker_command(self.runner, job_id)

    def execute(
        self,
        record: RunRecord,
        staged: list[PlannedItem],
        on_event: Events,
        *,
        launch: bool = True,
    ) -> tuple[dict[str, dict], Exception | None]:
        """Upload, start (or reattach to) the detached worker, stream it, fetch its results.

        Returns {item id: result} (`protocol.parse_results`) and the worker's failure, if any.
        Each phase is retried when the connection drops (`reconnecting`): the upload sends
        only what the host's cache still lacks, the stream resumes where it stopped.
        With `launch=False` nothing is uploaded or started: only the job's results are read.
        """
        root = self.runner.root
        job_dir = jobctl.job_dir(root, record.job_id)
        frames = {}
        for item in staged:
            frames.update(zip(item.frame_sha256, item.frame_files, strict=True))
        attempts = self.host.config.remote.reconnect_attempts
        entries = [item.batch_entry() for item in staged]

        def ship() -> None:
            self.host.ensure_worker(conn, root, job_dir)
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
                posixpath.join(job_dir, "batch.json"),
                protocol.batch_json(record.job_id, entries, self.engine),
            )

        def fetch() -> bytes:
            results_path = posixpath.join(job_dir, "results.jsonl")
            return conn.read_bytes(results_path) if conn.exists(results_path) else b""

        with self.host.connect() as conn:
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
        return protocol.parse_results(data), failure


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
