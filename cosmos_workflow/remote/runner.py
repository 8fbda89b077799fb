"""Command lines that run the worker on the host: inside NVIDIA's Docker image, or directly.

Pure functions: settings in, one shell command line out. Every value is quoted with
`shlex.quote`; the only unquoted shell words ever emitted are the literal `"$HOME"` prefix for a
`~/…` host path (remote paths are otherwise never `~`-expanded) and, for the Docker runner,
`"$(id -u):$(id -g)"` and `"$(id -un)"`: the SSH user the container runs as.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import WorkerError

CONTAINER_WORKSPACE = "/workspace"
# The caches are mounted outside any home folder: the container runs as the SSH user's uid
# (`--user`), which the image has no home for, and NVIDIA's image keeps /root private.
CONTAINER_HF_CACHE = "/cosmos-cache/huggingface"
# vLLM's own cache (torch.compile artifacts, CUDA graphs' kernels): on a host mount, a `--rm`
# container reuses it instead of recompiling for minutes at every job.
CONTAINER_VLLM_CACHE = "/cosmos-cache/vllm"
CONTAINER_CHECKPOINTS = "/checkpoints"
# HOME inside the container: a uid without a passwd entry gets "/", which it cannot write;
# what follows HOME (triton's and torch's caches, vLLM's config) goes to the container's /tmp.
CONTAINER_HOME = "/tmp"


@dataclass(frozen=True)
class RunnerSettings:
    """How to start the worker on the host (built from config by the orchestrator)."""

    kind: str  # "docker" | "direct"
    remote_dir: str  # the cosmos-transfer1 checkout on the host (absolute POSIX path)
    python: str = "python3"  # direct: may be a command with arguments ("conda run -n x python")
    image: str = "nvcr.io/ubuntu/cosmos-transfer1:latest"
    sudo: bool = True
    gpus: str = "all"  # docker --gpus; "none": no --gpus at all (CPU image, no NVIDIA runtime)
    shm_size: str = "8g"  # docker --shm-size; "host": --ipc=host (the host's /dev/shm)
    hf_cache: str = "~/.cache/huggingface"
    vllm_cache: str = "~/.cache/vllm"  # host folder for vLLM's compile cache; "" = not mounted
    extra_args: tuple[str, ...] = ()  # more `docker run` arguments, each one word
    cuda_visible_devices: str = ""
    checkpoint_dir: str = ""  # host path; mounted separately when outside remote_dir
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        """Our folder on the host: worker, cache and jobs."""
        return posixpath.join(self.remote_dir.rstrip("/") or "/", "cosmos_workflow")

    @property
    def docker(self) -> str:
        """How docker is invoked on the host: `sudo -n docker` or `docker`.

        `sudo -n`: over SSH there is no terminal to type a password into; sudo fails at once
        with "a password is required" (see `launch_error`) instead of waiting.
        """
        return "sudo -n docker" if self.sudo else "docker"

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
    if settings.kind == "docker":
        env["HOME"] = CONTAINER_HOME
        env["HF_HOME"] = CONTAINER_HF_CACHE
        if settings.vllm_cache:
            env["VLLM_CACHE_ROOT"] = CONTAINER_VLLM_CACHE
    env.update(settings.env)
    return env


def container_name(job_id: str) -> str:
    return f"cosmos-upsample-{job_id}"


def server_container(settings: RunnerSettings) -> str:
    """The warm server's container: one per checkout on the host (two users, two checkouts and
    two ports on one shared host get two containers, not a name clash)."""
    return "cosmos-upsample-server-" + hashlib.sha256(settings.root.encode()).hexdigest()[:12]


def server_command(settings: RunnerSettings) -> str:
    """The shell command line that runs `worker.py serve <root>/server` (the warm server).

    Docker: a container named `server_container()` with the host's network (`--network
    host`), so the server's 127.0.0.1 is the host's loopback, reached through the SSH tunnel;
    no `-p`, nothing is published on the host's network.
    """
    if settings.kind == "docker":
        server_dir = posixpath.join(CONTAINER_WORKSPACE, "cosmos_workflow", "server")
        return _docker_command(
            settings,
            "server",
            ("serve", server_dir),
            name=server_container(settings),
            host_network=True,
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


# What `docker_facts` prints before the check runs: docker's server version, the image.
DOCKER_PREFIX = "@@cosmos-docker "


def docker_facts(settings: RunnerSettings) -> str:
    """Shell words that print the host's Docker facts as `@@cosmos-docker <key> <value>` lines:
    `server` (the daemon's version) and `image` (`<id> <created> <size in bytes>`, nothing when
    the host lacks the image). Errors go to stderr as docker printed them."""
    q = shlex.quote
    marker = DOCKER_PREFIX
    return (
        f"{settings.docker} version --format {q('{{.Server.Version}}')} "
        f"| sed {q(f's/^/{marker}server /')}; "
        f"{settings.docker} image inspect --format {q('{{.Id}} {{.Created}} {{.Size}}')} "
        f"{q(settings.image)} | sed {q(f's/^/{marker}image /')}; "
    )


def parse_docker_facts(stdout: str) -> dict:
    """`docker_facts` lines → {"server_version": …, "image_id": …, "image_created": …,
    "image_size_bytes": …} (None where docker said nothing)."""
    facts = dict.fromkeys(("server_version", "image_id", "image_created", "image_size_bytes"))
    for line in stdout.splitlines():
        if not line.startswith(DOCKER_PREFIX):
            continue
        key, _, value = line[len(DOCKER_PREFIX) :].partition(" ")
        if key == "server" and value.strip():
            facts["server_version"] = value.strip()
        elif key == "image":
            parts = value.split()
            if len(parts) >= 3 and parts[-1].isdigit():
                facts["image_id"], facts["image_size_bytes"] = parts[0], int(parts[-1])
                facts["image_created"] = " ".join(parts[1:-1])
    return facts


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


def _gpus(settings: RunnerSettings) -> list[str]:
    if settings.gpus == "none":
        return []
    if settings.gpus == "all" and settings.cuda_visible_devices:
        # Docker's own quoting for a device list: the value's double quotes reach docker.
        return ["--gpus", f'"device={settings.cuda_visible_devices}"']
    return ["--gpus", settings.gpus]


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
    words = [
        "run",
        "--rm",
        # An init process as PID 1: NVIDIA's entrypoint `exec`s python3, and PID 1 ignores the
        # signals vLLM 0.8's engine client sends its own process group when the engine dies,
        # so the worker would hang forever instead of exiting.
        "--init",
        # The image is built on the host from NVIDIA's Dockerfile (no registry serves it): a
        # missing image is an error at once, not a pull attempt that hangs on a registry.
        "--pull",
        "never",
        "--name",
        name or container_name(job_id),
        *_gpus(settings),
        *(["--network", "host"] if host_network else []),
        # vLLM's tensor-parallel workers share memory through /dev/shm, and Docker's 64 MB
        # default is far too small: a private one of shm_size, or the host's (--ipc=host, as
        # NVIDIA's instructions do; docker then ignores any --shm-size).
        *(["--ipc=host"] if settings.shm_size == "host" else [f"--shm-size={settings.shm_size}"]),
        "-v",
        f"{settings.remote_dir}:{CONTAINER_WORKSPACE}",
        "-w",
        CONTAINER_WORKSPACE,
    ]
    if settings.mounts_checkpoints():
        words += ["-v", f"{settings.checkpoint_dir}:{CONTAINER_CHECKPOINTS}:ro"]
    for env_name, value in _worker_env(settings).items():
        words += ["-e", f"{env_name}={value}"]
    # As the SSH user, not the image's root: what the worker writes into remote_dir (results,
    # logs, status) and into the cache mounts stays the user's, so a later direct-runner run or
    # `cosmos remote cancel` can still touch it. The caches are created first, by that user:
    # docker would create a missing mount source as root.
    caches = [settings.hf_cache] + ([settings.vllm_cache] if settings.vllm_cache else [])
    mkdir = "mkdir -p " + " ".join(_host_path(path) for path in caches)
    user = '--user "$(id -u):$(id -g)" -e "USER=$(id -un)"'
    mounts = [f"-v {_host_path(settings.hf_cache)}:{shlex.quote(CONTAINER_HF_CACHE)}"]
    if settings.vllm_cache:
        mounts.append(f"-v {_host_path(settings.vllm_cache)}:{shlex.quote(CONTAINER_VLLM_CACHE)}")
    tail = shlex.join(
        [
            *settings.extra_args,
            settings.image,
            "python3",
            posixpath.join(root, "worker.py"),
            *worker_args,
        ]
    )
    return " ".join([f"{mkdir} &&", settings.docker, shlex.join(words), user, *mounts, tail])


# -- what a failed launch printed --------------------------------------------------------------

# What sudo prints when it would have to ask for a password: with -n, and without a terminal.
_SUDO_PASSWORD_MESSAGES = ("a password is required", "a terminal is required to read the password")
# A command the shell could not find: dash ("sh: 1: sudo: not found"), bash ("sudo: command not
# found"), busybox ("sh: sudo: not found").
_NOT_FOUND = re.compile(r"(?:^|\s|:)(sudo|docker): (?:command )?not found\s*$")

# Docker's own error lines (after "docker: " or "Error response from daemon: "), each with what
# it means and what to do: (pattern, code, message, hint). The first that matches wins.
_DOCKER_ERRORS = (
    (
        re.compile(r"could not select device driver .* capabilities: \[\[gpu\]\]"),
        "docker_no_gpu_runtime",
        "docker on the host cannot give containers GPUs (no NVIDIA container runtime)",
        "install the NVIDIA Container Toolkit on the host; for a CPU image or a host without "
        'GPUs set [docker] gpus = "none"',
    ),
    (
        re.compile(r"permission denied while trying to connect to the docker", re.I),
        "docker_permission",
        "the SSH user may not use docker on the host (the Docker socket refused it)",
        "add the SSH user to the docker group (then log in again), or set [docker] sudo = true "
        "with passwordless sudo for docker",
    ),
    (
        re.compile(r"cannot connect to the docker daemon", re.I),
        "docker_daemon",
        "the Docker daemon is not running on the host",
        "start it on the host (e.g. `sudo systemctl start docker`)",
    ),
    (
        re.compile(
            r"unable to find image|pull access denied|no such image|manifest unknown|"
            r"repository does not exist|failed to resolve reference",
            re.I,
        ),
        "docker_image_missing",
        "the Docker image is not on the host and could not be pulled",
        "pull or build it on the host (`docker images` lists what it has), or set [docker] "
        "image to one it has",
    ),
    (
        re.compile(r"container name .* is already in use", re.I),
        "docker_name_in_use",
        "a container of the same name is already on the host",
        "another run of the same command may be starting it; `docker ps -a` on the host shows "
        "it, `docker rm -f NAME` removes a leftover",
    ),
)


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


def launch_error(output_lines: Iterable[str]) -> WorkerError | None:
    """What went wrong before the worker ran, from what the launch printed (sudo, docker), as
    one error naming the cause and what to configure; None when nothing there says so.

    Docker ends every failed `docker run` with "Run 'docker run --help' for more information":
    the line that matters is the one before it, so each line is read, not only the last.
    """
    lines = [line.strip() for line in output_lines if line.strip()]
    sudo_error = sudo_password_error(lines)
    if sudo_error is not None:
        return sudo_error
    for line in lines:
        missing = _NOT_FOUND.search(line)
        if missing and missing.group(1) == "sudo":
            return WorkerError(
                "[docker] sudo = true, but the host has no sudo",
                "set [docker] sudo = false (the SSH user must then be root or in the docker "
                "group), or install sudo on the host",
                code="sudo_missing",
            )
        if missing:
            return WorkerError(
                "docker is not installed on the host (or not on the SSH user's PATH)",
                "install Docker and the NVIDIA Container Toolkit on the host, or set [worker] "
                'runner = "direct" with [worker] python naming the Python that has vLLM',
                code="docker_missing",
            )
    for line in lines:
        for pattern, code, message, hint in _DOCKER_ERRORS:
            if pattern.search(line):
                return WorkerError(f"{message}: {line}", hint, code=code)
    for line in lines:
        if line.startswith(("docker: ", "Error response from daemon")):
            return WorkerError(
                f"docker on the host refused to start the container: {line}",
                "fix what docker says on the host, or change [docker] settings "
                "(`cosmos config show` lists them)",
                code="docker_error",
            )
    return None
