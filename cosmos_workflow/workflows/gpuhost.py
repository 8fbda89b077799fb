"""The GPU host: connecting, its settings, the worker on it, readiness and its jobs.

`GpuHost` owns everything that needs the host: the SSH (or local) connection, the runner
(docker or direct) and engine settings from the config, installing `worker.py`, `worker.py
check`, host-key trust, and job control (status, logs, cancel). Wire formats are `protocol`'s.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import Config
from ..errors import CosmosError, RemoteCommandError, TransferError
from ..fsutil import sha256_file
from ..remote import jobctl, local, protocol, ssh
from ..remote import runner as runners
from ..remote.base import ShellCommand
from ..remote.protocol import EngineSettings
from ..remote.transfer import storage_problem
from ..sizing import Budget

WORKER_FILE = Path(__file__).resolve().parent.parent / "remote" / "worker.py"


class GpuHost:
    """The GPU host of the config's `[remote]`, `[paths]`, `[docker]` and `[worker]`."""

    def __init__(self, config: Config):
        self.config = config
        self._in_session = False
        self._shared = None  # the connection of an open `session()`, once first used

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Within it, every `connect()` is the same connection (made on first use, closed at
        the end): a run asks the host for its server and then runs on one SSH handshake."""
        if self._in_session:  # nested: the outer session's connection
            yield
            return
        self._in_session = True
        try:
            yield
        finally:
            conn, self._shared, self._in_session = self._shared, None, False
            if conn is not None:
                conn.close()

    def runner_settings(self) -> runners.RunnerSettings:
        c = self.config
        return runners.RunnerSettings(
            kind=c.worker.runner,
            remote_dir=c.paths.remote_dir,
            python=c.worker.python,
            image=c.docker.image,
            sudo=c.docker.sudo,
            gpus=c.docker.gpus,
            shm_size=c.docker.shm_size,
            hf_cache=c.docker.hf_cache,
            vllm_cache=c.docker.vllm_cache,
            extra_args=tuple(c.docker.extra_args),
            cuda_visible_devices=c.worker.cuda_visible_devices,
            checkpoint_dir=c.checkpoint_dir(),
            env=dict(c.worker.env),
        )

    def checkpoint_dir(self) -> str:
        """The checkpoints folder as the worker sees it (inside the container for docker)."""
        checkpoint_dir = self.config.checkpoint_dir()
        if self.config.worker.runner == "docker":
            # The worker sees the checkout at /workspace (and other checkpoints at /checkpoints).
            return self.runner_settings().container_path(checkpoint_dir)
        return checkpoint_dir

    def engine_settings(self, budget: Budget, num_gpu: int | None = None) -> EngineSettings:
        """The job's engine settings: the budget's, the [worker] section's, `num_gpu`."""
        c = self.config
        return EngineSettings(
            max_model_len=budget.max_model_len,
            output_tokens=budget.output_tokens,
            frame_count=budget.frame_count,
            temperature=c.worker.temperature,
            max_num_seqs=c.worker.max_num_seqs,
            tensor_parallel_size=num_gpu or c.worker.num_gpu,
            enforce_eager=c.worker.enforce_eager,
            gpu_memory_utilization=c.worker.gpu_memory_utilization,
            chunk_size=c.worker.chunk_size,
            stall_timeout_s=c.worker.stall_timeout_s,
            checkpoint_dir=self.checkpoint_dir(),
        )

    def host_settings(self):
        """The SSH settings from `[remote]` (port and user only when set, so an alias's apply)."""
        remote = self.config.remote
        if not remote.host:
            raise CosmosError(
                "no GPU host configured",
                'set [remote] host in config.toml (or COSMOS_REMOTE_HOST), or transport = "local"',
                code="no_host",
            )
        return ssh.HostSettings(
            host=remote.host,
            user=remote.user or None,
            port=remote.port if self.config.sources.get("remote.port") else None,
            ssh_key=Path(remote.ssh_key) if remote.ssh_key else None,
            known_hosts=Path(remote.known_hosts) if remote.known_hosts else None,
            host_key_policy=remote.host_key_policy,
            connect_timeout_s=remote.connect_timeout_s,
        )

    def connect(self):
        """A connection to the host (`[remote] transport = "ssh"`) or to this machine, for a
        `with` block; inside a `session()`, the session's (the block does not close it)."""
        if not self._in_session:
            return self._new_connection()
        if self._shared is None:
            self._shared = self._new_connection()
        return contextlib.nullcontext(self._shared)

    def _new_connection(self):
        if self.config.remote.transport == "local":
            return local.LocalConnection()
        return ssh.Connection(self.host_settings())

    def ensure_worker(self, conn, root: str, *extra_dirs: str) -> bool:
        """Create our folders (and `extra_dirs`) on the host; upload worker.py if it differs.

        One exec, plus one upload only when needed. Returns True when the worker was sent.
        """
        worker = posixpath.join(root, "worker.py")
        folders = [posixpath.join(root, "cache"), posixpath.join(root, "jobs"), *extra_dirs]
        command = (
            f"mkdir -p {shlex.join(folders)} && "
            f"(sha256sum {shlex.quote(worker)} 2>/dev/null || true)"
        )
        result = conn.run(ShellCommand(command), check=False)
        if result.exit_code != 0:
            problem = storage_problem(conn, root, 0, result.stderr)
            if problem is not None:
                raise problem
            reason = (result.stderr.strip().splitlines() or ["mkdir failed"])[-1]
            raise TransferError(
                f"cannot create {root} on the host: {reason.rsplit(': ', 1)[-1]}",
                f"[paths] remote_dir ({self.config.paths.remote_dir}) must be a folder the SSH "
                "user can write: fix its permissions or choose another remote_dir",
                code="remote_permission",
            )
        remote_hash = result.stdout.split(" ")[0].strip()
        if remote_hash == sha256_file(WORKER_FILE):
            return False
        conn.put(WORKER_FILE, worker)
        return True

    def check(self) -> dict:
        """Run `worker.py check` on the host (in the Docker image, or with the direct runner's
        Python): Python, vLLM and its compiled extension, torch and the GPUs it sees,
        transformers, the checkpoint files, free disk.

        A `remote_dir` that is not a folder on the host is reported as the one problem, and
        nothing is created there (a mistyped path must not become a new folder).
        """
        runner = self.runner_settings()
        checkpoint_dir = self.checkpoint_dir()
        min_free_gib = f"{self.config.worker.min_free_disk_gib:g}"
        with self.connect() as conn:
            if not conn.run(["test", "-d", runner.remote_dir], check=False).ok:
                return {
                    "ready": False,
                    "problems": [
                        f"[paths] remote_dir {runner.remote_dir} is not a folder on the host: "
                        "fix the path, or create the cosmos-transfer1 checkout there"
                    ],
                    "exit_code": 1,
                }
            self.ensure_worker(conn, runner.root)
            command = runners.worker_command(
                runner,
                # Its own container name: two checks at once must not clash.
                f"check-{secrets.token_hex(4)}",
                *("check", "--json", "--checkpoint-dir", checkpoint_dir),
                *("--min-free-gib", min_free_gib),
            )
            if runner.kind == "docker":
                command = runners.docker_facts(runner) + command
            result = conn.run(ShellCommand(command), check=False)
        report = protocol.parse_check_report(result.stdout)
        if report is None:
            launch_failure = runners.launch_error(result.stderr.splitlines())
            if launch_failure is not None:
                raise launch_failure
            raise RemoteCommandError(
                f"`worker.py check` exited with code {result.exit_code} and printed no report",
                "see its stderr: " + (result.stderr.strip().splitlines() or ["(empty)"])[-1],
                result=result,
            )
        if runner.kind == "docker":
            report["docker"] = {
                **runners.parse_docker_facts(result.stdout),
                "image": runner.image,
                "sudo": runner.sudo,
                "gpus": runner.gpus,
                "shm_size": runner.shm_size,
            }
        report["exit_code"] = result.exit_code
        return report

    def host_key(self):
        """The host's key type and fingerprint, without logging in or recording anything."""
        return ssh.host_key_fingerprint(self.host_settings())

    def trust_host(self):
        """Fetch the host's key (no login) and record it in known_hosts."""
        return ssh.trust_host(self.host_settings())

    # -- jobs on the host -------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> str:
        if not job_id or not all(c in "0123456789abcdef" for c in job_id):
            raise CosmosError(
                f"{job_id!r} is not a job id",
                "job ids are 16 hex digits; `cosmos remote status` lists them",
                code="bad_job_id",
            )
        return jobctl.job_dir(self.runner_settings().root, job_id)

    def job_status(self, job_id: str | None = None) -> dict:
        """Jobs on the host (state, counts, alive, cancelled) and the host's GPUs."""
        if job_id is not None:
            self._job_dir(job_id)
        root = self.runner_settings().root
        with self.connect() as conn:
            result = conn.run(ShellCommand(jobctl.status(root, job_id)), check=False)
        rows, gpus = protocol.parse_status(result.stdout)
        jobs = []
        for row in rows:
            name, status = row.job_id, row.status
            state = status.get("state", "unknown")
            if row.cancelled and not row.alive:
                state = "cancelled"
            elif not row.alive and state in ("starting", "loading", "running", "stalled"):
                state = "died"
            error = status.get("error")
            if state == "stalled" and not error:
                error = _stalled_note(name, status.get("stalled_since"))
            jobs.append(
                {
                    "job_id": name,
                    "state": state,
                    "alive": row.alive,
                    "total": status.get("total"),
                    "done": status.get("done"),
                    "failed": status.get("failed"),
                    "pending": status.get("pending"),
                    "started_at": status.get("started_at"),
                    "finished_at": status.get("finished_at"),
                    "heartbeat": status.get("heartbeat"),
                    "stalled_since": status.get("stalled_since"),
                    "error": error,
                }
            )
        if job_id is not None and not jobs:
            raise _no_such_job(job_id)
        return {"jobs": jobs, "gpus": gpus}

    def job_logs(self, job_id: str, *, follow: bool = False, lines: int = 200, on_line=None):
        """The job's worker.log: the last `lines`, or followed until the worker ends."""
        job = self._job_dir(job_id)
        collected: list[str] = []
        with self.connect() as conn:
            result = conn.run(
                ShellCommand(jobctl.logs(job, follow=follow, lines=lines)),
                check=False,
                on_stdout=on_line or collected.append,
            )
        if result.exit_code == protocol.NO_JOB_EXIT:
            raise _no_such_job(job_id)
        return collected

    def cancel_job(self, job_id: str) -> None:
        """Stop a job on the host; its finished items stay, a rerun resumes the rest."""
        job = self._job_dir(job_id)
        settings = self.runner_settings()
        container = runners.container_name(job_id) if settings.kind == "docker" else None
        with self.connect() as conn:
            result = conn.run(ShellCommand(jobctl.cancel(job, container, docker=settings.docker)))
        if protocol.NO_JOB in result.stdout.split():
            raise _no_such_job(job_id)


def _stalled_note(job_id: str, since) -> str:
    """What a stalled job's row says: the worker lives, its engine has not moved for a while."""
    minutes = ""
    if isinstance(since, (int, float)):
        minutes = f" for {max(time.time() - since, 0) / 60:.0f} min"
    return (
        f"the engine has made no progress{minutes} (hung?): `cosmos remote cancel {job_id}` "
        "stops it; rerunning the command resumes the job"
    )


def _no_such_job(job_id: str) -> CosmosError:
    return CosmosError(
        f"no job {job_id} on the host",
        "`cosmos remote status` lists the jobs there",
        code="job_not_found",
    )
