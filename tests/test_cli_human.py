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
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .upsample_env import (
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


def test_remote_logs_prints_the_last_lines_asked_for(setup, workdir):
    job_id, _ = finished_job(setup, workdir)
    log = (setup.jobs / job_id / "worker.log").read_text().splitlines()
    assert len(log) > 3

    result = cosmos("remote", "logs", job_id, "--lines", 3)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == log[-3:]

    # --follow on a finished job prints the log and returns.
    followed = cosmos("remote", "logs", job_id, "--follow", "--lines", 1000)
    assert followed.exit_code == 0, followed.output
    assert followed.stdout.splitlines() == log


def test_remote_results_writes_the_specs_and_shows_the_table(setup, workdir):
    job_id, prompts = finished_job(setup, workdir)
    result = cosmos("remote", "results", job_id, prompts, "--save-dir", workdir / "again")
    assert result.exit_code == 0, result.output
    assert f"job {job_id}" in result.stdout
    for name in ("office_handover", "robot_lab_night"):
        (row,) = lines_with(result.stdout, name, " ok ")
        # The whole path, as typed from here: not cut to "…" by the table.
        assert f" again/{name}.json " in row, row
        written = json.loads((workdir / "again" / f"{name}.json").read_text())
        assert written["is_upsampled"] is True
    assert "2 ok, 0 failed, 0 skipped" in result.stderr

    # A long save-dir outside the current folder: shown whole (folded), never elided.
    far = workdir.parent / ("deep-" * 12) / "outputs"
    result = cosmos("remote", "results", job_id, prompts, "--save-dir", far)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout, result.stdout
    assert (far / "office_handover.json").is_file()


# -- remote check / trust -----------------------------------------------------------------------


def test_remote_check_reads_as_a_report_not_python_reprs(setup, host):
    result = cosmos("remote", "check")
    assert result.exit_code == 1, result.output  # no GPU on this machine: "not ready" is honest
    text = result.stdout + result.stderr
    assert "{" not in result.stdout and "[" not in result.stdout, result.stdout
    assert lines_with(result.stdout, "vllm", "0.0-standin")
    assert lines_with(result.stdout, "model", str(host / "checkpoints"))
    assert lines_with(result.stdout, "params.json", "2 bytes")
    assert re.search(r"disk\s.*\d+\.\d GiB free at ", result.stdout), result.stdout
    assert lines_with(result.stderr, "problem", "no GPU visible")
    assert "not ready" in text


@pytest.fixture
def untrusted(workdir, sshd, tmp_path) -> Path:
    """A config whose known_hosts does not know the sshd yet."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    write_config(workdir / "config.toml", {"remote": sshd_remote(sshd, known_hosts=known)})
    return known


def run_in_terminal(args: list[str], typed: str, cwd: Path) -> tuple[int, str]:
    """`python -m cosmos_workflow ARGS` with a pseudo-terminal as stdin; `typed` is typed
    into it. Returns the exit code and stderr (where prompts and messages go)."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cosmos_workflow", *args],
            cwd=cwd,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        terminal = None
        os.write(controller, typed.encode())  # the terminal holds the line until it is read
        _, stderr = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)
    return proc.returncode, stderr


def test_remote_trust_asks_shows_the_fingerprint_and_records_it_once(untrusted, sshd, workdir):
    key = f"{sshd.known_hosts_name} ssh-ed25519 {sshd.host_key_fingerprint}"
    code, stderr = run_in_terminal(["remote", "trust"], "y\n", workdir)
    assert code == 0, stderr
    assert f"presents a ssh-ed25519 key {sshd.host_key_fingerprint}" in stderr
    assert "Trust this key and record it in known_hosts?" in stderr
    assert f"recorded: {key}" in stderr
    assert sshd.known_hosts_name in untrusted.read_text()
    recorded = untrusted.read_text()

    again = cosmos("remote", "trust", "--yes")
    assert again.exit_code == 0, again.output
    assert f"already trusted: {key}" in again.stderr
    assert untrusted.read_text() == recorded


def test_remote_trust_answered_no_records_nothing(untrusted, sshd, workdir):
    code, stderr = run_in_terminal(["remote", "trust"], "n\n", workdir)
    assert code == 1
    assert sshd.host_key_fingerprint in stderr
    assert "recorded" not in stderr
    assert untrusted.read_text() == ""


def test_remote_trust_yes_records_without_asking(untrusted, sshd):
    result = cosmos("remote", "trust", "--yes")
    assert result.exit_code == 0, result.output
    assert "Trust this key" not in result.stderr
    key = f"{sshd.known_hosts_name} ssh-ed25519 {sshd.host_key_fingerprint}"
    assert f"recorded: {key}" in result.stderr
    assert sshd.known_hosts_name in untrusted.read_text()
