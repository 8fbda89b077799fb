"""Every command and option in its human form (no --json): what a person reads on the terminal.

Drives the real CLI (typer's CliRunner, or `python -m cosmos_workflow` where a terminal or a
signal is needed) against the real loopback sshd and the stand-in engine, and asserts on the
words, numbers and paths in the tables and messages. `test_every_option_is_driven_here` keeps
the inventory honest: a new command or option fails it until a test here drives it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .upsample_env import (
    many_specs,
    seed_specs,
    sshd_remote,
    stand_in_checkpoint,
    stand_in_worker,
    write_config,
)

runner = CliRunner()
JOB_ID = re.compile(r"\b[0-9a-f]{16}\b")

# Command path → the options the tests below drive in human form (--json and --help aside:
# every other module drives --json; --help is test_help_*).
DRIVEN = {
    "": {"--config", "--version"},
    "check": {
        "--prompt",
        "--frames",
        "--max-model-len",
        "--output-tokens",
        "--resolution",
        "--recursive",
    },
    "limits": {"--max-model-len", "--frames", "--aspect", "--prompt-tokens", "--output-tokens"},
    "prepare": {"--resolution", "--out", "--preview", "--frames", "--prompt", "--recursive"},
    "upsample": {
        "--preprocess-videos",
        "--max-resolution",
        "--num-frames",
        "--num-gpu",
        "--save-dir",
        "--dry-run",
        "--force",
        "--recursive",
        "--cancel-on-interrupt",
    },
    "remote check": set(),
    "remote trust": {"--yes"},
    "remote status": set(),
    "remote logs": {"--follow", "--lines"},
    "remote cancel": set(),
    "remote results": {
        "--max-resolution",
        "--preprocess-videos",
        "--num-frames",
        "--num-gpu",
        "--save-dir",
        "--recursive",
        "--force",
    },
    "config show": set(),
}


def cosmos(*args, input=None):
    """`cosmos ARGS…` in human mode; unexpected exceptions propagate (no exit 70 hidden)."""
    return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def lines_with(text: str, *words: str) -> list[str]:
    return [line for line in text.splitlines() if all(w in line for w in words)]


@pytest.fixture
def host(tmp_path):
    remote_dir = tmp_path / "host" / "cosmos-transfer1"
    remote_dir.mkdir(parents=True)
    return remote_dir


@pytest.fixture
def setup(workdir, host, sshd, tmp_path):
    """./config.toml pointing at the sshd host with the stand-in engine; call to change it."""
    engine_log = tmp_path / "engine.jsonl"

    def configure(remote=None, **worker_controls):
        write_config(
            workdir / "config.toml",
            {
                "remote": remote or sshd_remote(sshd),
                "paths": {"remote_dir": str(host)},
                "worker": stand_in_worker(engine_log, stand_in_checkpoint(host), **worker_controls),
            },
        )

    configure()
    configure.engine_log = engine_log
    configure.jobs = host / "cosmos_workflow" / "jobs"
    return configure


def finished_job(setup, workdir) -> tuple[str, Path]:
    """Run one small upsample in human mode; its job id and the folder it wrote to."""
    prompts = seed_specs(workdir / "prompts")
    result = cosmos("upsample", prompts, "--save-dir", workdir / "out")
    assert result.exit_code == 0, result.output
    (job_id,) = [p.name for p in setup.jobs.iterdir()]
    return job_id, prompts


# -- remote status / logs / cancel / results --------------------------------------------------


def test_remote_status_renders_a_table_once_a_job_exists(setup, workdir):
    job_id, _ = finished_job(setup, workdir)
    status = json.loads((setup.jobs / job_id / "status.json").read_text())

    result = cosmos("remote", "status")
    assert result.exit_code == 0, result.output
    (row,) = lines_with(result.stdout, job_id)
    assert re.search(rf"{job_id}\s*│\s*done\s*│\s*2\s*│\s*0\s*│\s*0\s*│\s*2\s*│", row), row
    # When it started, as a person reads a time (local clock), not seconds since 1970.
    started = datetime.fromtimestamp(status["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
    assert started in row
    assert "no GPU visible" in result.stderr

    one = cosmos("remote", "status", job_id)
    assert one.exit_code == 0, one.output
    assert lines_with(one.stdout, job_id, "done", started)
