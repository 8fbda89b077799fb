"""The docker and direct command lines, exactly, and hostile values staying data."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

from cosmos_workflow.remote.runner import RunnerSettings, worker_command


def test_direct_command_line_is_exact():
    settings = RunnerSettings(
        kind="direct",
        remote_dir="/home/ubuntu/cosmos-transfer1",
        python="conda run -n cosmos python",
        cuda_visible_devices="0,1",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert worker_command(settings, "job1") == (
        "cd /home/ubuntu/cosmos-transfer1 && exec env VLLM_WORKER_MULTIPROC_METHOD=spawn "
        "CUDA_VISIBLE_DEVICES=0,1 HF_HUB_OFFLINE=1 conda run -n cosmos python "
        "/home/ubuntu/cosmos-transfer1/cosmos_workflow/worker.py "
        "run /home/ubuntu/cosmos-transfer1/cosmos_workflow/jobs/job1"
    )


def test_docker_command_line_is_exact():
    settings = RunnerSettings(kind="docker", remote_dir="/home/ubuntu/NatsFS/cosmos-transfer1")
    assert worker_command(settings, "abc123") == (
        'mkdir -p "$HOME"/.cache/huggingface "$HOME"/.cache/vllm && '
        "sudo -n docker run --rm --init --pull never --name cosmos-upsample-abc123 --gpus all "
        "--shm-size=8g -v /home/ubuntu/NatsFS/cosmos-transfer1:/workspace -w /workspace "
        "-e VLLM_WORKER_MULTIPROC_METHOD=spawn -e HOME=/tmp -e HF_HOME=/cosmos-cache/huggingface "
        "-e VLLM_CACHE_ROOT=/cosmos-cache/vllm "
        '--user "$(id -u):$(id -g)" -e "USER=$(id -un)" '
        '-v "$HOME"/.cache/huggingface:/cosmos-cache/huggingface '
        '-v "$HOME"/.cache/vllm:/cosmos-cache/vllm '
        "nvcr.io/ubuntu/cosmos-transfer1:latest python3 "
        "/workspace/cosmos_workflow/worker.py run /workspace/cosmos_workflow/jobs/abc123"
    )


def test_docker_without_gpus_passes_no_gpus_flag_and_host_ipc_on_request():
    """A CPU image, or a host without the NVIDIA runtime: `--gpus` would fail every run."""
    settings = RunnerSettings(kind="docker", remote_dir="/d", gpus="none", shm_size="host")
    words = shlex.split(worker_command(settings, "j"))
    assert "--gpus" not in words
    # --ipc=host alone: with it docker ignores --shm-size, so both would only mislead.
    assert "--ipc=host" in words and not any(w.startswith("--shm-size") for w in words)
    counted = shlex.split(
        worker_command(RunnerSettings(kind="docker", remote_dir="/d", gpus="2"), "j")
    )
    assert counted[counted.index("--gpus") + 1] == "2"


def test_docker_extra_args_are_words_before_the_image():
    settings = RunnerSettings(
        kind="docker", remote_dir="/d", extra_args=("-v", "/data sets:/data:ro", "--label", "$(x)")
    )
    words = shlex.split(worker_command(settings, "j"))
    image = words.index("nvcr.io/ubuntu/cosmos-transfer1:latest")
    assert words[image - 4 : image] == ["-v", "/data sets:/data:ro", "--label", "$(x)"]


def test_docker_runs_as_the_ssh_user_with_caches_it_created_itself():
    """Files the container writes on the host stay the SSH user's; docker would create a
    missing mount source as root, so the user creates the cache folders first."""
    command = worker_command(RunnerSettings(kind="docker", remote_dir="/d"), "j")
    assert command.startswith('mkdir -p "$HOME"/.cache/huggingface "$HOME"/.cache/vllm && ')
    assert '--user "$(id -u):$(id -g)"' in command
    # Not under /root: the SSH user's uid could not read it in NVIDIA's image.
    assert "-e HF_HOME=/cosmos-cache/huggingface" in command


def test_docker_runs_an_init_process_so_a_dead_engine_can_end_the_worker():
    """vLLM 0.8.1 kills its own process group when the engine dies; as PID 1 (NVIDIA's
    entrypoint execs python3) the worker would ignore that and hang. `--init` makes tini PID 1."""
    words = shlex.split(worker_command(RunnerSettings(kind="docker", remote_dir="/d"), "j"))
    assert "--init" in words
    assert words.index("--init") < words.index("nvcr.io/ubuntu/cosmos-transfer1:latest")


def test_docker_sudo_never_waits_for_a_password():
    words = shlex.split(worker_command(RunnerSettings(kind="docker", remote_dir="/d"), "j"))
    docker = words.index("docker")
    assert words[docker - 2 : docker + 2] == ["sudo", "-n", "docker", "run"]
    no_sudo = shlex.split(
        worker_command(RunnerSettings(kind="docker", remote_dir="/d", sudo=False), "j")
    )
    assert "sudo" not in no_sudo and no_sudo[no_sudo.index("docker") + 1] == "run"


def test_docker_keeps_vllm_compile_cache_on_a_host_mount():
    settings = RunnerSettings(kind="docker", remote_dir="/d", vllm_cache="/mnt/fast disk/vllm")
    command = worker_command(settings, "j")
    assert "-v '/mnt/fast disk/vllm':/cosmos-cache/vllm" in command
    assert "-e VLLM_CACHE_ROOT=/cosmos-cache/vllm" in command
    off = worker_command(RunnerSettings(kind="docker", remote_dir="/d", vllm_cache=""), "j")
    assert "/cosmos-cache/vllm" not in off and "VLLM_CACHE_ROOT" not in off


def test_docker_selects_gpus_with_gpus_flag_only_not_cuda_visible_devices_inside():
    """Inside the container the selected GPU is device 0: CUDA_VISIBLE_DEVICES=2 would hide it."""
    settings = RunnerSettings(
        kind="docker",
        remote_dir="/data/ct1",
        sudo=False,
        cuda_visible_devices="2",
        hf_cache="/mnt/hf cache",
    )
    command = worker_command(settings, "j", "check", "--json")
    words = shlex.split(command)
    assert "docker run --rm --init --pull never --name cosmos-upsample-j --gpus " in command
    assert words[words.index("--gpus") + 1] == '"device=2"'  # docker's own quoting for lists
    assert "CUDA_VISIBLE_DEVICES" not in command
    assert "-v '/mnt/hf cache':/cosmos-cache/huggingface" in command
    assert command.endswith("python3 /workspace/cosmos_workflow/worker.py check --json")
    several = shlex.split(
        worker_command(
            RunnerSettings(kind="docker", remote_dir="/d", cuda_visible_devices="0,3"), "j"
        )
    )
    assert several[several.index("--gpus") + 1] == '"device=0,3"'


def test_direct_runner_still_selects_gpus_with_cuda_visible_devices():
    settings = RunnerSettings(kind="direct", remote_dir="/d", cuda_visible_devices="2")
    assert "CUDA_VISIBLE_DEVICES=2" in shlex.split(worker_command(settings, "j"))


def test_hostile_values_stay_data_in_a_real_shell(tmp_path: Path):
    """Every value passes through a real `sh -c` unchanged and nothing executes."""
    canary = tmp_path / f"canary-{uuid.uuid4().hex}"
    hostile = f"$(touch {canary}) `touch {canary}` \"q\" 'q' ; touch {canary} \n x"
    remote_dir = tmp_path / "remote $(x) dir"
    (remote_dir / "cosmos_workflow").mkdir(parents=True)
    # A stand-in "worker" that prints the argv and environment it received.
    (remote_dir / "cosmos_workflow" / "worker.py").write_text(
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'env': os.environ.get('HOSTILE')}))\n"
    )
    settings = RunnerSettings(
        kind="direct",
        remote_dir=str(remote_dir),
        python=sys.executable,
        env={"HOSTILE": hostile},
    )
    command = worker_command(settings, "job", "run", hostile)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    echoed = json.loads(result.stdout)
    assert echoed == {"argv": ["run", hostile], "env": hostile}
    assert not canary.exists()


def test_docker_mounts_checkpoints_outside_the_checkout_read_only():
    settings = RunnerSettings(
        kind="docker", remote_dir="/data/ct1", checkpoint_dir="/mnt/models/checkpoints"
    )
    command = worker_command(settings, "j")
    assert "-v /mnt/models/checkpoints:/checkpoints:ro" in command
    assert settings.container_path("/mnt/models/checkpoints") == "/checkpoints"
    inside = RunnerSettings(kind="docker", remote_dir="/data/ct1", checkpoint_dir="/data/ct1/ck")
    assert ":/checkpoints" not in worker_command(inside, "j")
    assert inside.container_path("/data/ct1/ck") == "/workspace/ck"


def test_worker_gets_the_checkpoint_path_as_the_container_sees_it(workdir):
    from cosmos_workflow.config import load_config
    from cosmos_workflow.sizing import Budget
    from cosmos_workflow.workflows.gpuhost import GpuHost

    def checkpoint_dir(**overrides):
        config = load_config(overrides={"paths.remote_dir": "/data/ct1", **overrides})
        return GpuHost(config).engine_settings(Budget(4096, 300, 2)).checkpoint_dir

    assert checkpoint_dir() == "/workspace/checkpoints"  # docker, default <remote_dir>/checkpoints
    assert checkpoint_dir(**{"worker.checkpoint_dir": "/mnt/ck"}) == "/checkpoints"
    assert checkpoint_dir(**{"worker.runner": "direct"}) == "/data/ct1/checkpoints"


# What the host printed when a launch failed, word for word (docker 28, sudo 1.9, dash).
DOCKER_HELP = "Run 'docker run --help' for more information"


def test_launch_errors_name_the_cause_not_dockers_last_line():
    from cosmos_workflow.remote.runner import launch_error

    cases = {
        "docker_no_gpu_runtime": "docker: Error response from daemon: could not select device "
        'driver "" with capabilities: [[gpu]]',
        "docker_permission": "docker: permission denied while trying to connect to the Docker "
        "daemon socket at unix:///var/run/docker.sock: Head ...: connect: permission denied",
        "docker_daemon": "docker: Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?",
        "docker_image_missing": "docker: Error response from daemon: No such image: nv/ct1:x",
        "docker_name_in_use": "docker: Error response from daemon: Conflict. The container name "
        '"/cosmos-upsample-ab" is already in use by container "f00".',
        "docker_error": "docker: Error response from daemon: invalid mount config",
        "sudo_missing": "sh: 1: sudo: not found",
        "docker_missing": "bash: line 1: docker: command not found",
        "sudo_password": "sudo: a password is required",
    }
    for code, line in cases.items():
        error = launch_error(["some earlier output", line, DOCKER_HELP])
        assert error is not None and error.code == code, (code, error)
        assert DOCKER_HELP not in error.message
        assert error.hint
    assert launch_error(["2026-12-04 INFO loading", "worker exited", DOCKER_HELP]) is None
    # A worker's own log line that mentions docker is not a launch failure.
    assert launch_error(["INFO: running inside docker: not found a GPU"]) is None


def test_docker_facts_are_read_from_their_marker_lines_only():
    from cosmos_workflow.remote.runner import DOCKER_PREFIX, parse_docker_facts

    stdout = "\n".join(
        [
            "== banner ==",
            f"{DOCKER_PREFIX}server 28.2.2",
            f"{DOCKER_PREFIX}image sha256:abc 2026-12-04T21:00:00.1Z 2560000000",
            '{"not": "facts"}',
        ]
    )
    assert parse_docker_facts(stdout) == {
        "server_version": "28.2.2",
        "image_id": "sha256:abc",
        "image_created": "2026-12-04T21:00:00.1Z",
        "image_size_bytes": 2560000000,
    }
    assert parse_docker_facts("")["image_id"] is None  # the host lacks the image
