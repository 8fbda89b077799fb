"""Command lines that run the worker on the host: inside NVIDIA's Docker image, or directly.

Pure functions: settings in, one shell command line out. Every value is quoted with
`shlex.quote`; the only unquoted word ever emitted is the literal `"$HOME"` prefix for a
`~/…` host path (remote paths are otherwise never `~`-expanded).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import WorkerError

CONTAINER_WORKSPACE = "/workspace"
CONTAINER_HF_CACHE = "/root/.cache/huggingface"
# vLLM's own cache (torch.compile artifacts, CUDA graphs' kernels): on a host mount, a `--rm`
# container reuses it instead of recompiling for minutes at every job.
CONTAINER_VLLM_CACHE = "/root/.cache/vllm"
CONTAINER_CHECKPOINTS = "/checkpoints"


@dataclass(frozen=True)
class RunnerSettings:
    """How to start the worker on the host (built from config by the orchestrator)."""

    kind: str  # "docker" | "direct"
    remote_dir: str  # the cosmos-transfer1 checkout on the host (absolute POSIX path)
    python: str = "python3"  # direct: may be a command with arguments ("conda run -n x python")
    image: str = "nvcr.io/ubuntu/cosmos-transfer1:latest"
    sudo: bool = True
    shm_size: str = "8g"
    hf_cache: str = "~/.cache/huggingface"
    vllm_cache: str = "~/.cache/vllm"  # host folder for vLLM's compile cache; "" = not mounted
    cuda_visible_devices: str = ""
    checkpoint_dir: str = ""  # host path; mounted separately when outside remote_dir
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        """Our folder on the host: worker, cache and jobs."""
        return posixpath.join(self.remote_dir.rstrip("/") or "/", "cosmos_workflow")

    def container_path(self, host_path: str) -> str:
        """Where a host path appears inside the container (docker runner)."""
        base = self.remote_dir.rstrip("/")
        if host_path == base or host_path.startswith(base + "/"):
            return CONTAINER_WORKSPACE + host_path[len(base) :]
        if self.checkpoint_dir and host_path.startswith(self.checkpoint_dir.rstrip("/")):
            return CONTAINER_CHECKPOINTS + host_path[len(self.checkpoint_dir.rstrip("/")) :]
        return host_path

    def mounts_checkpoints(self) -> bool:
        """True when the checkpoints live outside remote_dir and need their own mount."""
        return bool(self.checkpoint_dir) and self.container_path(self.checkpoint_dir).startswith(
            CONTAINER_CHECKPOINTS
        )


def _host_path(path: str) -> str:
    """Quote a host path; `~/x` becomes `"$HOME"/x` so the remote shell expands only $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _worker_env(settings: RunnerSettings) -> dict[str, str]:
    env = {
        # NVIDIA's instruction for the upsampler: vLLM workers must spawn, not fork, with CUDA.
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    }
    # Docker selects GPUs with `--gpus device=N` and renumbers them from 0 inside the container:
    # CUDA_VISIBLE_DEVICES=N there would hide them all. Only the direct runner passes it.
    if settings.cuda_visible_devices and settings.kind != "docker":
        env["CUDA_VISIBLE_DEVICES"] = settings.cuda_visible_devices
    if settings.kind == "docker" and settings.vllm_cache:
        env["VLLM_CACHE_ROOT"] = CONTAINER_VLLM_CACHE
    env.update(settings.env)
    return env


# What sudo prints when it would have to ask for a password: with -n, and without a terminal.
_SUDO_PASSWORD_MESSAGES = ("a password is required", "a terminal is required to read the password")


def sudo_password_error(output_lines: Iterable[str]) -> WorkerError | None:
    """The error to show when the worker's output says sudo wanted a password, else None."""
    for line in output_lines:
        if line.lstrip().startswith("sudo:") and any(m in line for m in _SUDO_PASSWORD_MESSAGES):
            return WorkerError(
                "sudo on the host asks for a password to run docker, and there is no terminal "
                f"to type it ({line.strip()})",
                "configure passwordless sudo for docker on the host (a NOPASSWD sudoers rule), "
                "or add the SSH user to the docker group and set [docker] sudo = false",
                code="sudo_password",
            )
    return None


def container_name(job_id: str) -> str:
    return f"cosmos-upsample-{job_id}"


SERVER_CONTAINER = "cosmos-upsample-server"


def server_command(settings: RunnerSettings) -> str:
    """The shell command line that runs `worker.py serve <root>/server` (the warm server).

    Docker: a container named SERVER_CONTAINER with the host's network (`--network host`), so
    the server's 127.0.0.1 is the host's loopback, reached through the SSH tunnel; no `-p`,
    nothing is published on the host's network.
    """
    if settings.kind == "docker":
        server_dir = posixpath.join(CONTAINER_WORKSPACE, "cosmos_workflow", "server")
        return _docker_command(
            settings, "server", ("serve", server_dir), name=SERVER_CONTAINER, host_network=True
        )
    if settings.kind == "direct":
        return _direct_command(
            settings, "server", ("serve", posixpath.join(settings.root, "server"))
        )
    raise ValueError(f"unknown runner {settings.kind!r}")


def worker_command(settings: RunnerSettings, job_id: str, *args: str) -> str:
    """The shell command line that runs `worker.py run <job dir>` (or `args`) on the host.

    `args` replaces the default `run <job dir>` (e.g. `("check", "--json")`).
    """
    if settings.kind == "docker":
        return _docker_command(settings, job_id, args)
    if settings.kind == "direct":
        return _direct_command(settings, job_id, args)
    raise ValueError(f"unknown runner {settings.kind!r}")


def _direct_command(settings: RunnerSettings, job_id: str, args: tuple[str, ...]) -> str:
    root = settings.root
    worker_args = args or ("run", posixpath.join(root, "jobs", job_id))
    argv = [
        "env",
        *(f"{k}={v}" for k, v in _worker_env(settings).items()),
        *shlex.split(settings.python),
        posixpath.join(root, "worker.py"),
        *worker_args,
    ]
    return f"cd {shlex.quote(settings.remote_dir)} && exec {shlex.join(argv)}"


def _docker_command(
    settings: RunnerSettings,
    job_id: str,
    args: tuple[str, ...],
    *,
    name: str | None = None,
    host_network: bool = False,
) -> str:
    root = posixpath.join(CONTAINER_WORKSPACE, "cosmos_workflow")
    worker_args = args or ("run", posixpath.join(root, "jobs", job_id))
    gpus = f'"device={settings.cuda_visible_devices}"' if settings.cuda_visible_devices else "all"
    # `sudo -n`: over SSH there is no terminal to type a password into; fail at once with
    # sudo's "a password is required" (see sudo_password_error) instead of waiting.
    words = ["sudo", "-n"] if settings.sudo else []
    words += [
        "docker",
        "run",
        "--rm",
        # An init process as PID 1: NVIDIA's entrypoint `exec`s python3, and PID 1 ignores the
        # signals vLLM 0.8's engine client sends its own process group when the engine dies,
        # so the worker would hang forever instead of exiting.
        "--init",
        "--name",
        name or container_name(job_id),
        "--gpus",
        gpus,
        *(["--network", "host"] if host_network else []),
        # vLLM's tensor-parallel workers share memory through /dev/shm; Docker's 64 MB default
        # is far too small, and --ipc=host is what NVIDIA's own instructions use.
        "--ipc=host",
        f"--shm-size={settings.shm_size}",
        "-v",
        f"{settings.remote_dir}:{CONTAINER_WORKSPACE}",
        "-w",
        CONTAINER_WORKSPACE,
    ]
    if settings.mounts_checkpoints():
        words += ["-v", f"{settings.checkpoint_dir}:{CONTAINER_CHECKPOINTS}:ro"]
    for name, value in _worker_env(settings).items():
        words += ["-e", f"{name}={value}"]
    head = shlex.join(words)
    # The Hugging Face cache mount may start with ~ on the host: only $HOME stays unquoted.
    mounts = [f"-v {_host_path(settings.hf_cache)}:{shlex.quote(CONTAINER_HF_CACHE)}"]
    if settings.vllm_cache:
        mounts.append(f"-v {_host_path(settings.vllm_cache)}:{shlex.quote(CONTAINER_VLLM_CACHE)}")
    tail = shlex.join([settings.image, "python3", posixpath.join(root, "worker.py"), *worker_args])
    return " ".join([head, *mounts, tail])
