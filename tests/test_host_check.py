"""`cosmos remote check` over a real sshd, the worker started the way jobs start it.

The host side is this machine: the direct runner with the stand-in engine (tests/fake_vllm,
which also holds a stand-in torch that applies CUDA_VISIBLE_DEVICES like CUDA does) and a
stand-in nvidia-smi on the worker's PATH. The Docker runner cannot run here (no Docker engine):
its command line still goes through a real shell, with a stand-in `sudo` in front.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app
from cosmos_workflow.remote import jobctl
from cosmos_workflow.remote.runner import RunnerSettings, sudo_password_error

from .upsample_env import (
    engine_events,
    seed_specs,
    sshd_remote,
    stand_in_checkpoint,
    stand_in_worker,
    write_config,
)

runner = CliRunner()

TRITON_BANNER = """
=============================
== Triton Inference Server ==
=============================

NVIDIA Release 25.04 (build 160000000)
Triton Server Version 2.57.0

Copyright (c) 2018-2025, NVIDIA CORPORATION & AFFILIATES.  All rights reserved.
{"banner": "JSON-looking, and not the report"}
"""
# What sudo 1.9 prints with -n when the user's sudoers entry needs a password.
SUDO_PASSWORD_MESSAGE = "sudo: a password is required"


def write_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def host(tmp_path):
    """The GPU host's side: a checkout folder, a stand-in nvidia-smi and an entrypoint."""
    remote_dir = tmp_path / "host" / "cosmos-transfer1"
    remote_dir.mkdir(parents=True)
    bin_dir = tmp_path / "host-bin"
    bin_dir.mkdir()
    write_executable(bin_dir / "nvidia-smi", "#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559, 3'\n")
    # Like the Triton image's entrypoint: a banner on stdout, then `exec` the command.
    write_executable(
        bin_dir / "entrypoint-python",
        f"#!/bin/sh\ncat <<'EOF'\n{TRITON_BANNER}EOF\nexec {shlex.quote(sys.executable)} \"$@\"\n",
    )
    return {"dir": remote_dir, "bin": bin_dir}


@pytest.fixture
def configure(workdir, host, sshd, tmp_path):
    """Write config.toml: sshd, the direct runner through the entrypoint, the stand-in engine."""
    engine_log = tmp_path / "engine.jsonl"

    def write(remote=None, env=None, **worker):
        settings = stand_in_worker(engine_log, stand_in_checkpoint(host["dir"]))
        settings["python"] = str(host["bin"] / "entrypoint-python")
        settings["env"]["PATH"] = f"{host['bin']}{os.pathsep}{os.environ['PATH']}"
        settings["env"].update(env or {})
        settings.update(worker)
        write_config(
            workdir / "config.toml",
            {
                "remote": remote or sshd_remote(sshd),
                "paths": {"remote_dir": str(host["dir"])},
                "worker": settings,
            },
        )

    write.engine_log = engine_log
    write()
    return write


def check(*args: str):
    r = runner.invoke(app, ["remote", "check", *args])
    print("EXIT", r.exit_code, "\nSTDOUT", r.stdout, "\nSTDERR", r.stderr)
    return r


def test_report_is_read_from_its_marker_line_after_the_entrypoint_banner(configure):
    result = check("--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["data"]
    assert report["ready"] is True and report["problems"] == []
    assert report["vllm"] == {"version": "0.0-standin", "error": None, "extension_error": None}
    assert report["torch"]["version"] == "2.7.1-standin"
    assert report["torch"]["cuda_available"] is True
    assert report["transformers"] == {"version": "4.49.0"}
    assert report["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"


def test_text_report_shows_versions_cuda_and_the_verdict(configure):
    result = check()

    assert result.exit_code == 0, result.output
    table = result.stdout
    assert "0.0-standin (compiled extension loads)" in table
    assert "2.7.1-standin, CUDA available, 1 device(s)" in table
    assert "4.49.0" in table and "NVIDIA H100 80GB HBM3" in table
    assert result.stderr.strip().splitlines()[-1] == "ready"


def test_gpus_hidden_by_cuda_visible_devices_make_the_host_not_ready(configure):
    """Torch applies CUDA_VISIBLE_DEVICES, nvidia-smi does not: a wrong index is caught here
    (inside `docker run --gpus device=2` the GPU is number 0)."""
    configure(cuda_visible_devices="2", env={"FAKE_TORCH_GPUS": "1"})

    result = check()

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    problem = next(line for line in lines if line.startswith("problem: "))
    assert "nvidia-smi lists 1 GPU(s) but torch sees no CUDA device" in problem
    assert "CUDA_VISIBLE_DEVICES='2'" in problem and "--gpus device=N" in problem
    assert lines[-1] == "not ready: see the problems above"
    assert "'2'" in result.stdout  # the table shows the value the worker saw


def test_low_free_disk_is_flagged_and_the_host_stays_ready(configure):
    configure(min_free_disk_gib=1e9)

    result = check()

    assert result.exit_code == 0, result.output
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning: "))
    assert "low disk: " in warning and "under 1e+09 GiB" in warning
    assert "(low)" in result.stdout
    data = json.loads(check("--json").stdout)["data"]
    assert data["disk"]["low"] is True and data["disk"]["min_free_bytes"] == int(1e9 * 2**30)


def test_gpu_memory_utilization_reaches_the_engine(configure, workdir):
    configure(gpu_memory_utilization=0.55)
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))

    result = runner.invoke(app, ["upsample", str(prompts), "--save-dir", "out", "--json"])

    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["data"]
    assert record["settings"]["gpu_memory_utilization"] == 0.55
    (load,) = engine_events(configure.engine_log, "load")
    assert load["kwargs"]["gpu_memory_utilization"] == 0.55


def test_gpu_memory_utilization_outside_0_to_1_is_one_config_error(configure):
    configure(gpu_memory_utilization=1.5)

    result = check()

    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "gpu_memory_utilization = 1.5" in lines[0]
    assert "a number above 0 and at most 1" in lines[0] and lines[1].startswith("hint: ")


# -- the Docker runner, with a stand-in sudo (no Docker engine, no sudo on this machine) --------


@pytest.fixture
def sudo_wants_a_password(tmp_path, monkeypatch):
    """A `sudo` first on PATH that refuses like sudo -n does for a password-protected user,
    and records the arguments it was given."""
    bin_dir = tmp_path / "sudo-bin"
    bin_dir.mkdir()
    args_file = tmp_path / "sudo-args"
    write_executable(
        bin_dir / "sudo",
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(args_file))}\n'
        f'echo "{SUDO_PASSWORD_MESSAGE}" >&2\nexit 1\n',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return args_file


def use_docker_locally(configure):
    """The Docker runner through the local transport, so the stand-in sudo is on its PATH."""
    configure(remote={"transport": "local"}, runner="docker")


def test_check_with_sudo_asking_for_a_password_is_one_clear_error(configure, sudo_wants_a_password):
    use_docker_locally(configure)

    result = check()

    assert result.exit_code == 5
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: sudo on the host asks for a password to run docker")
    assert SUDO_PASSWORD_MESSAGE in lines[0]
    assert lines[1] == (
        "hint: configure passwordless sudo for docker on the host (a NOPASSWD sudoers rule), "
        "or add the SSH user to the docker group and set [docker] sudo = false"
    )
    # The real command line reached sudo through a shell: -n first, and docker with --init.
    args = sudo_wants_a_password.read_text().splitlines()
    assert args[:5] == ["-n", "docker", "run", "--rm", "--init"]
    assert json.loads(check("--json").stdout)["error"]["code"] == "sudo_password"


def test_upsample_with_sudo_asking_for_a_password_is_one_clear_error(
    configure, sudo_wants_a_password, workdir
):
    use_docker_locally(configure)
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))

    result = runner.invoke(app, ["upsample", str(prompts), "--save-dir", "out"])
    print("UPSAMPLE", result.exit_code, result.stdout, result.stderr)

    assert result.exit_code == 5
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "sudo on the host asks for a password" in errors[0]
    assert "hint: configure passwordless sudo for docker" in result.stderr
    assert sudo_wants_a_password.read_text().splitlines()[:2] == ["-n", "docker"]
    assert not (workdir / "out" / "office_handover.json").exists()


def test_cancel_stops_the_container_with_sudo_n(sudo_wants_a_password, tmp_path):
    """`docker stop` goes through sudo -n as well: asked for a password, it fails at once."""
    job = tmp_path / "jobs" / "abc"
    job.mkdir(parents=True)
    command = jobctl.cancel(
        str(job),
        "cosmos-upsample-abc",
        docker=RunnerSettings(kind="docker", remote_dir="/d").docker,
    )

    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)

    assert proc.stdout.strip() == "cancelled" and (job / "cancelled").exists()
    args = sudo_wants_a_password.read_text().splitlines()
    assert args == ["-n", "docker", "stop", "cosmos-upsample-abc"]


def test_sudo_messages_without_a_terminal_are_recognised_and_others_are_not():
    """sudo without -n and without a terminal says this instead (sudo 1.8 and 1.9)."""
    terminal = (
        "sudo: a terminal is required to read the password; either use the -S option to read "
        "from standard input or configure an askpass helper"
    )
    assert sudo_password_error(["starting", terminal]).code == "sudo_password"
    assert sudo_password_error([SUDO_PASSWORD_MESSAGE]) is not None
    assert sudo_password_error(["docker: permission denied", "a password is required"]) is None
