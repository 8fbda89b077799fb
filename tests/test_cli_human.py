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
import time
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .engine import require_engine_python, tiny_model_dir
from .upsample_env import (
    many_specs,
    real_checkpoint,
    real_worker,
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
        "--num-frames",
        "--max-model-len",
        "--output-tokens",
        "--resolution",
        "--recursive",
    },
    "limits": {
        "--max-model-len",
        "--frames",
        "--num-frames",
        "--aspect",
        "--prompt-tokens",
        "--output-tokens",
    },
    "prepare": {
        "--resolution",
        "--out",
        "--preview",
        "--frames",
        "--num-frames",
        "--prompt",
        "--recursive",
    },
    "upsample": {
        "--preprocess-videos",
        "--max-resolution",
        "--num-frames",
        "--frames",
        "--max-model-len",
        "--output-tokens",
        "--num-gpu",
        "--save-dir",
        "--dry-run",
        "--force",
        "--recursive",
        "--cancel-on-interrupt",
        "--overwrite",
        "--server",
        "--endpoint",
    },
    "serve start": {"--idle-timeout"},
    "serve status": set(),
    "serve logs": {"--follow", "--lines"},
    "serve stop": set(),
    "remote check": set(),
    "remote trust": {"--yes"},
    "remote status": set(),
    "remote logs": {"--follow", "--lines"},
    "remote cancel": set(),
    "remote results": {
        "--max-resolution",
        "--preprocess-videos",
        "--num-frames",
        "--frames",
        "--max-model-len",
        "--output-tokens",
        "--num-gpu",
        "--save-dir",
        "--recursive",
        "--force",
        "--overwrite",
    },
    "config show": set(),
    "history": {"--limit"},
    "history show": set(),
    "history search": {"--limit"},
    "history export": {"--jsonl", "--output"},
    "history import": set(),
    "report": {"--output", "--open"},
}


def cosmos(*args, input=None):
    """`cosmos ARGS…` in human mode; unexpected exceptions propagate (no exit 70 hidden)."""
    return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def table_rows(text: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell, each cell's folded lines joined back together."""
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0]:
            current = rows.setdefault(cells[0], cells)
        elif current is not None:
            current[1:] = [a + b for a, b in zip(current[1:], cells[1:], strict=True)]
    return rows


def lines_with(text: str, *words: str) -> list[str]:
    return [line for line in text.splitlines() if all(w in line for w in words)]


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


def test_remote_status_shows_why_a_job_failed(setup, workdir):
    setup(fail_load="CUDA out of memory")
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    assert cosmos("upsample", prompts, "--save-dir", "o").exit_code == 5
    (job_id,) = [p.name for p in setup.jobs.iterdir()]
    result = cosmos("remote", "status")
    assert result.exit_code == 0, result.output
    row = table_rows(result.stdout)[job_id]
    assert row[1:6] == ["failed", "0", "0", "1", "1"], row
    assert "CUDA out of memory" in row[7]


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

    # A hand edit survives a rerun (reported, kept); --overwrite replaces it with cosmos' text.
    edited = workdir / "again" / "office_handover.json"
    edited.write_text('{"prompt": "my own words"}\n')
    result = cosmos("remote", "results", job_id, prompts, "--save-dir", workdir / "again")
    assert "my own words" in edited.read_text()
    (row,) = lines_with(result.stdout, "office_handover", "kept")
    assert lines_with(result.stderr, "skipped: ", "office_handover", "--overwrite") or (
        "--overwrite" in result.stderr
    ), result.stderr
    result = cosmos(
        "remote", "results", job_id, prompts, "--save-dir", workdir / "again", "--overwrite"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(edited.read_text())["is_upsampled"] is True

    # A long save-dir outside the current folder: shown whole (folded), never elided.
    far = workdir.parent / ("deep-" * 12) / "outputs"
    result = cosmos("remote", "results", job_id, prompts, "--save-dir", far)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout, result.stdout
    assert (far / "office_handover.json").is_file()


# -- remote check / trust -----------------------------------------------------------------------


def test_remote_check_reads_as_a_report_not_python_reprs(workdir, sshd, tmp_path):
    # A long remote_dir, as on real hosts: its paths must still be shown whole.
    deep = tmp_path / ("long-folder-name-" * 6) / "cosmos-transfer1"
    deep.mkdir(parents=True)
    checkpoints = stand_in_checkpoint(deep)
    write_config(
        workdir / "config.toml",
        {
            "remote": sshd_remote(sshd),
            "paths": {"remote_dir": str(deep)},
            "worker": stand_in_worker(tmp_path / "engine.jsonl", checkpoints),
        },
    )
    result = cosmos("remote", "check")
    assert result.exit_code == 1, result.output  # no GPU on this machine: "not ready" is honest
    assert "{" not in result.stdout and "[" not in result.stdout, result.stdout
    assert "…" not in result.stdout, result.stdout
    rows = table_rows(result.stdout)
    assert rows["vllm"][1].startswith("0.0-standin (compiled extension")
    assert rows["gpu"][1] == "none"
    assert rows["model"][1] == str(checkpoints / "nvidia" / "Cosmos-UpsamplePrompt1-12B-Transfer")
    assert rows["params.json"][1] == "2 bytes"
    # (A line folded at a space loses that space when the cell is joined back.)
    where = re.escape(f"{deep}/cosmos_workflow")
    assert re.fullmatch(rf"\d+\.\d GiB free at ?{where}", rows["disk"][1]), rows["disk"]
    assert lines_with(result.stderr, "problem: ", "no GPU visible")
    assert "not ready" in result.stderr


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

    # Already trusted: nothing to ask, so no terminal is needed (CliRunner's stdin is none).
    plain = cosmos("remote", "trust")
    assert plain.exit_code == 0, plain.output
    assert f"already trusted: {key}" in plain.stderr and "Trust this key" not in plain.stderr
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


# -- upsample ---------------------------------------------------------------------------------


def run_record(save_dir: Path) -> dict:
    return json.loads((save_dir / "run.json").read_text())


def item_row(stdout: str, name: str, status: str) -> str:
    (row,) = [line for line in lines_with(stdout, f" {name} ", f" {status} ")]
    return row


def test_upsample_one_spec_with_preprocessed_videos_and_one_frame(setup, workdir):
    (spec,) = seed_specs(workdir / "prompts", names=("office_handover",)).glob("*.json")
    before = spec.read_bytes()
    result = cosmos("upsample", spec, "--preprocess-videos", "--num-frames", 1, "--save-dir", "o")
    assert result.exit_code == 0, result.output

    (item,) = run_record(workdir / "o")["items"]
    # Preprocessed: 640×480 became at most safe_resolution (320×180), kept in aspect.
    assert item["frame_height"] <= 180 and item["frame_width"] <= 320
    assert abs(item["frame_width"] / item["frame_height"] - 640 / 480) < 0.05
    row = item_row(result.stdout, "office_handover", "ok")
    assert f" 1×{item['frame_width']}×{item['frame_height']} " in row
    assert f" {item['prompt_tokens_engine']:,} " in row
    assert " o/office_handover.json " in row
    record = run_record(workdir / "o")
    assert "1 ok, 0 failed, 0 skipped in " in result.stderr
    assert f"; {record['bytes_sent']:,} bytes sent" in result.stderr
    assert json.loads((workdir / "o" / "office_handover.json").read_text())["is_upsampled"]
    assert spec.read_bytes() == before


@pytest.mark.engine
def test_upsample_one_720p_spec_preprocessed_on_the_real_engine(workdir, sshd, host, tmp_path):
    python = require_engine_python()
    checkpoints = real_checkpoint(tmp_path, tiny_model_dir(python))
    write_config(
        workdir / "config.toml",
        {
            "remote": sshd_remote(sshd),
            "paths": {"remote_dir": str(host)},
            "worker": real_worker(python, checkpoints, tmp_path / "engine-work"),
        },
    )
    # The 1280×704 clip does not fit 4,096 tokens as it is; preprocessed to safe_resolution it does.
    spec = seed_specs(workdir / "prompts", names=("robot_lab_night",)) / "robot_lab_night.json"
    result = cosmos("upsample", spec, "--preprocess-videos", "--save-dir", "o")
    assert result.exit_code == 0, result.output

    (item,) = run_record(workdir / "o")["items"]
    assert (item["frame_width"], item["frame_height"]) == (320, 176)  # 1280×704 inside 320×180
    assert item["prompt_tokens_engine"] == item["prompt_tokens_local"]
    row = item_row(result.stdout, "robot_lab_night", "ok")
    assert " 2×320×176 " in row
    assert f" {item['prompt_tokens_engine']:,} " in row
    assert " o/robot_lab_night.json " in row
    assert f" {item['finish_reason']} " in row
    assert "1 ok, 0 failed, 0 skipped" in result.stderr
    assert "running the worker" in result.stderr  # progress, on stderr
    written = json.loads((workdir / "o" / "robot_lab_night.json").read_text())
    assert written["prompt"] == item["upsampled_prompt"] and written["prompt"]


def test_upsample_recursive_force_max_resolution_and_num_gpu(setup, workdir):
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    seed_specs(prompts / "night", names=("robot_lab_night",))
    done = json.loads((prompts / "office_handover.json").read_text())
    done.update(id="ps_0000000000aa", name="already_done", is_upsampled=True)
    (prompts / "already_done.json").write_text(json.dumps(done))

    flat = cosmos("upsample", prompts, "--max-resolution", 240, "--save-dir", "flat")
    assert flat.exit_code == 0, flat.output
    assert "robot_lab_night" not in flat.stdout  # in a sub-folder: not without --recursive
    assert item_row(flat.stdout, "already_done", "skipped")
    assert "1 ok, 0 failed, 1 skipped" in flat.stderr

    deep = cosmos(
        "upsample", prompts, "--recursive", "--force", "--max-resolution", 240,
        "--num-gpu", 1, "--save-dir", "deep",
    )  # fmt: skip
    assert deep.exit_code == 0, deep.output
    items = {i["name"]: i for i in run_record(workdir / "deep")["items"]}
    assert set(items) == {"office_handover", "robot_lab_night", "already_done"}
    assert run_record(workdir / "deep")["settings"]["tensor_parallel_size"] == 1
    for name, item in items.items():
        assert item["frame_height"] == 240, item
        row = item_row(deep.stdout, name, "ok")
        assert f" 2×{item['frame_width']}×240 " in row
    assert "3 ok, 0 failed, 0 skipped" in deep.stderr


def test_upsample_dry_run_shows_the_plan_and_sends_nothing(setup, workdir, host):
    prompts = seed_specs(workdir / "prompts")
    result = cosmos("upsample", prompts, "--dry-run", "--save-dir", "o")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing sent" in result.stdout
    for name in ("office_handover", "robot_lab_night"):
        assert lines_with(result.stdout, f" {name} ")
    sent = re.search(r"would send up to ([\d,]+) bytes of frames", result.stderr)
    assert sent and int(sent.group(1).replace(",", "")) > 0, result.stderr
    assert lines_with(result.stderr, "would run:", "worker.py")
    assert not (host / "cosmos_workflow").exists()
    assert not (workdir / "o").exists() or not list((workdir / "o").iterdir())


def test_upsample_keeps_a_hand_edit_and_overwrite_replaces_it(setup, workdir):
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    assert cosmos("upsample", prompts, "--save-dir", "o").exit_code == 0
    output = workdir / "o" / "office_handover.json"
    output.write_text('{"prompt": "my own words"}\n')

    plan = cosmos("upsample", prompts, "--save-dir", "o", "--dry-run", "--overwrite")
    assert lines_with(plan.stdout, "office_handover", "overwrite"), plan.stdout
    kept = cosmos("upsample", prompts, "--save-dir", "o")
    assert "my own words" in output.read_text()
    assert lines_with(kept.stdout, "office_handover", "kept"), kept.stdout
    replaced = cosmos("upsample", prompts, "--save-dir", "o", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(output.read_text())["is_upsampled"] is True


# -- Ctrl+C, and the commands its message names -----------------------------------------------


def start_upsample(workdir: Path, prompts: Path, *extra) -> subprocess.Popen:
    """Human-mode `cosmos upsample` as a process of its own (it gets a real SIGINT)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cosmos_workflow", "upsample", str(prompts), "--save-dir", "o"]
        + [str(e) for e in extra],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_results(jobs: Path, at_least: int, timeout_s: float = 60) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for results in jobs.glob("*/results.jsonl"):
            if len(results.read_text().splitlines()) >= at_least:
                return results.parent
        time.sleep(0.05)
    raise AssertionError(f"no job reached {at_least} results in {timeout_s} s")


def wait_for_state(job_id: str, state: str, timeout_s: float = 30) -> str:
    """`cosmos remote status JOB` until its row shows `state`; that row."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = cosmos("remote", "status", job_id)
        assert result.exit_code == 0, result.output
        rows = lines_with(result.stdout, job_id, f" {state} ")
        if rows:
            return rows[0]
        assert time.monotonic() < deadline, result.stdout
        time.sleep(0.1)


def test_ctrl_c_message_names_commands_that_work(setup, workdir):
    # One item per engine call; each worker serves one item, then hangs until cancelled.
    hold = workdir.parent / "hold"
    hold.write_text("1")  # the stand-in engine waits before a worker's second item
    setup(chunk_size=1, hold_file=hold)
    prompts = many_specs(workdir / "prompts", 3)
    proc = start_upsample(workdir, prompts)
    job = wait_for_results(setup.jobs, 1)
    job_id = job.name
    try:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert f"job {job_id} keeps running on the host" in stderr
        # The message names these commands; each must work in its human form.
        assert f"`cosmos remote status {job_id}`" in stderr
        assert f"`cosmos remote logs {job_id} --follow`" in stderr

        row = wait_for_state(job_id, "running")
        assert re.search(rf"{job_id}\s*│\s*running\s*│\s*1\s*│\s*0\s*│\s*2\s*│\s*3\s*│", row)
        listed = cosmos("remote", "status")
        assert lines_with(listed.stdout, job_id, "running")

        cancelled = cosmos("remote", "cancel", job_id)
        assert cancelled.exit_code == 0, cancelled.output
        assert f"cancelled job {job_id}; rerun the same `cosmos upsample`" in cancelled.stderr
        wait_for_state(job_id, "cancelled")
        logs = cosmos("remote", "logs", job_id, "--follow")  # a stopped job: prints, returns
        assert logs.exit_code == 0, logs.output
        assert f"job {job}" in logs.stdout

        # The same command resumes (one more item); this time Ctrl+C cancels without asking.
        proc = start_upsample(workdir, prompts, "--cancel-on-interrupt")
        wait_for_results(setup.jobs, 2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert f"cancelled job {job_id}; finished items are kept on the host" in stderr
        assert "resume: run the same command again" in stderr
        row = wait_for_state(job_id, "cancelled")
        assert re.search(rf"{job_id}\s*│\s*cancelled\s*│\s*2\s*│\s*0\s*│\s*1\s*│\s*3\s*│", row)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        cosmos("remote", "cancel", job_id)  # never leave a hanging worker behind


# -- config, the global options, help -----------------------------------------------------------


def test_config_show_names_each_value_and_where_it_came_from(workdir, monkeypatch):
    write_config(workdir / "config.toml", {"remote": {"host": "gpu-a", "port": 2201}})
    monkeypatch.setenv("COSMOS_UPSAMPLING_MAX_MODEL_LEN", "8192")
    result = cosmos("config", "show")
    assert result.exit_code == 0, result.output
    assert "effective configuration" in result.stdout
    rows = table_rows(result.stdout)  # (folded cells joined back: the source path is long)
    config = str(workdir / "config.toml")
    assert rows["remote.host"] == ["remote.host", "'gpu-a'", config]
    assert rows["remote.port"] == ["remote.port", "2201", config]
    assert rows["upsampling.max_model_len"][1:] == [
        "8192",
        "environment COSMOS_UPSAMPLING_MAX_MODEL_LEN",
    ]
    assert rows["upsampling.output_tokens"][1:] == ["300", "default"]


def test_global_config_option_replaces_the_config_in_the_current_folder(
    workdir, sshd, host, tmp_path
):
    write_config(workdir / "config.toml", {"remote": {"host": "not-this-one"}})
    (tmp_path / "elsewhere").mkdir()
    chosen = write_config(
        tmp_path / "elsewhere" / "chosen.toml",
        {"remote": sshd_remote(sshd), "paths": {"remote_dir": str(host)}},
    )
    shown = cosmos("--config", chosen, "config", "show")
    assert shown.exit_code == 0, shown.output
    rows = table_rows(shown.stdout)
    assert rows["remote.host"] == ["remote.host", f"'{sshd.host}'", str(chosen)]
    assert rows["paths.remote_dir"] == ["paths.remote_dir", f"'{host}'", str(chosen)]
    assert "…" not in shown.stdout
    assert "not-this-one" not in shown.stdout

    # Every command reads it: here one that must reach the host it names.
    status = cosmos("--config", chosen, "remote", "status")
    assert status.exit_code == 0, status.output
    assert "no GPU visible to nvidia-smi on the host" in status.stderr

    missing = cosmos("--config", tmp_path / "nope.toml", "config", "show")
    assert missing.exit_code == 2
    assert "nope.toml" in missing.stderr and missing.stderr.startswith("error: ")


def test_version_names_the_package_version(workdir):
    from cosmos_workflow import __version__

    result = cosmos("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cosmos-workflow {__version__}"


def command_tree() -> dict[str, set[str]]:
    """Command path → its options, read from the app itself (what `--help` lists)."""
    tree: dict[str, set[str]] = {}

    def walk(command, path: str) -> None:
        tree[path] = {
            opt
            for param in command.params
            if param.param_type_name == "option"
            for opt in param.opts
            if opt.startswith("--") and opt not in ("--json", "--help")
        }
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    groups = ("remote", "config", "serve")
    return {path: opts for path, opts in tree.items() if opts or path not in groups}


def test_every_option_is_driven_here():
    """A new command or option fails this until a test in this module drives it."""
    assert command_tree() == DRIVEN
    # …and each is written out (in quotes) somewhere besides DRIVEN: in an invocation.
    source = Path(__file__).read_text()
    for options in DRIVEN.values():
        for option in options:
            assert source.count(f'"{option}"') >= 2, f"{option} is never passed to a command"


# -- history and report -------------------------------------------------------------------------


def test_history_search_export_and_report_in_human_form(setup, workdir, tmp_path):
    job_id, _ = finished_job(setup, workdir)
    cosmos("upsample", seed_specs(workdir / "more", names=("office_handover",)), "--save-dir",
           workdir / "out2")  # fmt: skip
    listed = cosmos("history", "--limit", 1)
    assert listed.exit_code == 0, listed.output
    rows = table_rows(listed.stdout)
    assert list(rows) == ["2"]  # newest first, one row
    assert rows["2"][2:4] == ["job", "127.0.0.1"] and rows["2"][5] == "1 ok"
    assert rows["2"][7] == "out2"  # the save folder as typed from here

    shown = cosmos("history", "show", "1")
    assert shown.exit_code == 0, shown.output
    assert f"job {job_id}" in shown.stdout
    assert "  original:  Robot arms hand a coffee cup to a woman across an office counter." in (
        shown.stdout
    )
    assert "  upsampled: standin upsampled: Robot arms hand a coffee cup" in shown.stdout

    found = cosmos("history", "search", "coffee cup", "--limit", 1)
    assert found.exit_code == 0, found.output
    assert "1 item(s) matching 'coffee cup'" in found.stdout
    nothing = cosmos("history", "search", "zeppelin")
    assert nothing.exit_code == 0 and "no prompt holds 'zeppelin'" in nothing.stderr

    exported = cosmos("history", "export", "--jsonl", "--output", tmp_path / "h.jsonl")
    assert exported.exit_code == 0, exported.output
    assert f"wrote 2 run(s) to {tmp_path / 'h.jsonl'}" in exported.stderr
    assert [json.loads(line)["id"] for line in (tmp_path / "h.jsonl").open()] == [1, 2]

    imported = cosmos("history", "import", workdir / "out" / "run.json")
    assert imported.exit_code == 0, imported.output
    assert "run.json: already in the history as run 1" in imported.stderr

    report = cosmos("report", "1", "--output", workdir / "r.html")
    assert report.exit_code == 0, report.output
    assert report.stderr.strip() == "wrote " + str(workdir / "r.html") + (
        " (run 1, 2 item(s), 4 frame(s) shown)"
    )


def test_report_open_hands_the_page_to_the_web_browser(setup, workdir, tmp_path):
    finished_job(setup, workdir)
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    env = dict(os.environ, BROWSER=f"{browser} %s", PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.run(
        [sys.executable, "-m", "cosmos_workflow", "report", "--output", "r.html", "--open"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert opened.read_text() == (workdir / "r.html").as_uri()


# -- the local commands: limits, check, prepare -----------------------------------------------


def as_json(*args) -> dict:
    result = cosmos(*args, "--json")
    return json.loads(result.stdout)["data"]


def test_limits_table_shows_what_the_solver_found(workdir):
    args = ["limits", "--max-model-len", 4096, "--max-model-len", 8192, "--aspect", "16:9"]
    args += ["--aspect", "4:3", "--frames", 1, "--prompt-tokens", 40, "--output-tokens", 250]
    result = cosmos(*args)
    assert result.exit_code == 0, result.output
    assert "largest frame size that fits (1 frames, 250 output tokens kept)" in result.stdout
    expected = as_json(*args)["limits"]
    assert len(expected) == 4
    for row in expected:
        (line,) = lines_with(result.stdout, f" {row['max_model_len']:,} ", f" {row['aspect']} ")
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert cells == [
            f"{row['max_model_len']:,}",
            row["aspect"],
            f"{row['width']}×{row['height']}",
            f"{row['prompt_tokens']:,}",
            f"{row['margin']:,}",
        ]
        # What "fits" means: the prompt plus the kept output within the context.
        assert row["prompt_tokens"] + 250 <= row["max_model_len"]


@pytest.fixture
def spec_tree(workdir) -> Path:
    """prompts/office_handover.json and prompts/night/robot_lab_night.json (real clips)."""
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    seed_specs(prompts / "night", names=("robot_lab_night",))
    return prompts


def check_cells(stdout: str, name: str) -> list[str]:
    (line,) = lines_with(stdout, f"│ {name} ")
    return [c.strip() for c in line.strip("│").split("│")]


def test_check_a_folder_and_its_sub_folders(spec_tree):
    flat = cosmos("check", spec_tree)
    assert flat.exit_code == 0, flat.output
    assert "token check (resolution: source)" in flat.stdout
    cells = check_cells(flat.stdout, "office_handover")
    # 640×480, 2 frames: 2 × 30 rows × (40 + 1) = 2,460 image tokens (DESIGN.md's rule).
    assert cells[1:4] == ["640×480", "2×640×480", "2,460"]
    assert cells[7] == "fits"
    assert "robot_lab_night" not in flat.stdout

    deep = cosmos("check", spec_tree, "--recursive")
    assert deep.exit_code == 1, deep.output  # the 1280×720 clip does not fit as it is
    robot = check_cells(deep.stdout, "robot_lab_night")
    assert robot[1].startswith("1280×") and robot[7] == "too_long"
    assert re.fullmatch(r"\d+×\d+", robot[8])  # where it would fit


def test_check_options_change_the_count(spec_tree):
    args = ["check", spec_tree / "office_handover.json", "--prompt", "a red cup", "--frames", 1]
    args += ["--max-model-len", 1400, "--output-tokens", 200, "--resolution", 240]
    result = cosmos(*args)
    (item,) = as_json(*args)["items"]
    cells = check_cells(result.stdout, "office_handover")
    assert "token check (resolution: 240)" in result.stdout
    # One 320×240 frame: 15 rows × (20 + 1) = 315 image tokens; the prompt is "a red cup".
    assert cells[2:4] == ["1×320×240", "315"]
    assert cells[4:7] == [
        f"{item['text_tokens']:,}",
        f"{item['prompt_tokens']:,}",
        f"{1400 - item['prompt_tokens']:,}",
    ]
    assert item["text_tokens"] < 17 + 10
    assert cells[7] == "fits" and result.exit_code == 0, result.output

    # The clip as it is: 1 × 30 × 41 = 1,230 image tokens do not fit 1,000.
    tight = cosmos(*args[:-6], "--max-model-len", 1000, "--output-tokens", 200)
    assert tight.exit_code == 1, tight.output
    cells = check_cells(tight.stdout, "office_handover")
    assert cells[2:4] == ["1×640×480", "1,230"] and cells[7] == "too_long"
    fits_at = tuple(map(int, cells[8].split("×")))
    assert fits_at < (640, 480)


def test_prepare_a_folder_recursively_with_previews(spec_tree, workdir):
    out = workdir / "hints"
    args = ["prepare", spec_tree, "--recursive", "--out", out, "--preview", "--frames", 1]
    result = cosmos(*args, "--prompt", "a red cup", "--resolution", "auto")
    assert result.exit_code == 0, result.output
    assert f"prepared into {out}" in result.stdout.replace("\n", "")
    for name in ("office_handover", "robot_lab_night"):
        assert f"prepared {name} → {out / name}" in result.stderr
        assert (out / name / "frame_000.png").is_file()
        assert not (out / name / "frame_001.png").exists()  # --frames 1
        assert (out / name / "hint.mp4").is_file()
        assert (out / name / "preview.png").is_file()
        assert check_cells(result.stdout, name)[7] == "fits"

    flat = cosmos("prepare", spec_tree, "--out", workdir / "flat")
    assert flat.exit_code == 0, flat.output
    assert sorted(p.name for p in (workdir / "flat").iterdir()) == ["office_handover"]


def test_help_shows_every_option_help_text_literally():
    """Typer reads help as rich markup: a `[section]` in a help text would vanish."""
    lost = []
    for path in command_tree():
        words = path.split()
        command = typer.main.get_command(app)
        for word in words:
            command = command.commands[word]
        result = cosmos(*words, "--help")
        assert result.exit_code == 0, result.output
        rendered = " ".join(result.stdout.replace("│", " ").split())
        for param in command.params:
            for bracketed in re.findall(r"\[[^\]]*\]", getattr(param, "help", None) or ""):
                if bracketed not in rendered:
                    lost.append(f"{path} {param.opts[0]}: {bracketed}")
    assert not lost


def test_cancel_of_a_job_the_host_does_not_have_says_so(setup, workdir):
    job_id, _ = finished_job(setup, workdir)
    unknown = "0123456789abcdef"
    result = cosmos("remote", "cancel", unknown)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == f"error: no job {unknown} on the host"
    assert "cosmos remote status" in result.stderr
    assert "cancelled" not in result.stderr
    assert not (setup.jobs / unknown).exists()
    assert not (setup.jobs / job_id / "cancelled").exists()  # the real job is left alone


# -- the budget flags: one name per meaning on every command ------------------------------------


def test_num_frames_and_frames_are_one_flag_on_every_local_command(spec_tree, workdir):
    spec = spec_tree / "office_handover.json"
    for command in (["check", spec], ["limits", "--aspect", "16:9"]):
        seed = as_json(*command, "--num-frames", 1)
        assert seed == as_json(*command, "--frames", 1)
        assert seed != as_json(*command)  # the default is 2 frames
    result = cosmos("prepare", spec, "--num-frames", 1, "--out", workdir / "p")
    assert result.exit_code == 0, result.output
    assert (workdir / "p" / "office_handover" / "frame_000.png").is_file()
    assert not (workdir / "p" / "office_handover" / "frame_001.png").exists()


def test_upsample_takes_the_budget_flags_and_local_prompts_dir(setup, workdir):
    seed_specs(workdir / "inputs" / "prompts")  # [paths] local_prompts_dir's default
    args = ["upsample", "--dry-run", "--save-dir", "o", "--frames", 1]
    result = cosmos(*args, "--max-model-len", 8192, "--output-tokens", 200)
    assert result.exit_code == 0, result.output
    for name in ("office_handover", "robot_lab_night"):
        assert lines_with(result.stdout, f" {name} ", " 1×")
    record = as_json(*args, "--max-model-len", 8192, "--output-tokens", 200)
    assert record["settings"]["max_model_len"] == 8192
    assert record["settings"]["output_tokens"] == 200
    assert record["settings"]["frame_count"] == 1
    assert {item["name"] for item in record["items"]} == {"office_handover", "robot_lab_night"}

    (workdir / "inputs" / "prompts").rename(workdir / "elsewhere")
    missing = cosmos("upsample", "--dry-run")
    assert missing.exit_code == 2
    assert "no input given, and [paths] local_prompts_dir (inputs/prompts)" in missing.stderr


def test_remote_results_needs_the_budget_flags_the_job_was_started_with(setup, workdir):
    job_id, prompts = finished_job(setup, workdir)
    other = cosmos("remote", "results", job_id, prompts, "--max-model-len", 8192)
    assert other.exit_code == 2
    assert f"not {job_id}" in other.stderr and "--num-frames" in other.stderr
    for flags in (["--output-tokens", 200], ["--frames", 1]):
        assert f"not {job_id}" in cosmos("remote", "results", job_id, prompts, *flags).stderr
    same = cosmos("remote", "results", job_id, prompts, "--save-dir", workdir / "again")
    assert same.exit_code == 0, same.output


def test_remote_results_with_no_input_takes_local_prompts_dir(setup, workdir):
    job_id, prompts = finished_job(setup, workdir)
    (workdir / "inputs").mkdir()
    prompts.rename(workdir / "inputs" / "prompts")  # [paths] local_prompts_dir's default
    result = cosmos("remote", "results", job_id, "--save-dir", workdir / "again")
    assert result.exit_code == 0, result.output
    assert f"job {job_id}" in result.stdout
    assert (workdir / "again" / "office_handover.json").is_file()


# -- the warm server: what the stand-in host lets us drive (the real one: test_serve.py) -------


def test_upsample_server_flags_say_which_mode_and_why(setup, workdir):
    prompts = seed_specs(workdir / "prompts")
    required = cosmos("upsample", prompts, "--server", "--save-dir", workdir / "out")
    assert required.exit_code == 5, required.output
    assert required.stderr.splitlines()[-2] == "error: --server: no server runs on the host"
    assert required.stderr.splitlines()[-1].startswith("hint: `cosmos serve start` starts one")
    assert not list(workdir.glob("out/*.json"))

    auto = cosmos("upsample", prompts, "--save-dir", workdir / "out")
    assert auto.exit_code == 0, auto.output
    assert "mode: job (no server runs on the host)" in auto.stderr
    forced = cosmos("upsample", prompts, "--no-server", "--save-dir", workdir / "out2")
    assert forced.exit_code == 0, forced.output
    assert "mode: job (--no-server)" in forced.stderr
    assert json.loads((workdir / "out2" / "run.json").read_text())["mode"] == "job"


def test_upsample_endpoint_that_is_not_a_url_or_not_answering_is_one_line(setup, workdir):
    prompts = seed_specs(workdir / "prompts")
    bad = cosmos("upsample", prompts, "--endpoint", "gpu:8000")
    assert bad.exit_code == 5, bad.output
    assert bad.stderr.splitlines()[-2] == "error: 'gpu:8000' is not an http:// or https:// URL"
    with socket_on_a_free_port() as port:
        url = f"http://127.0.0.1:{port}/v1"
    silent = cosmos("upsample", prompts, "--endpoint", url)
    assert silent.exit_code == 5, silent.output
    (line,) = [x for x in silent.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: the endpoint {url} does not answer")


def socket_on_a_free_port():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    class Port:
        def __enter__(self):
            return sock.getsockname()[1]

        def __exit__(self, *exc):
            sock.close()

    return Port()


def test_serve_start_on_a_host_without_vllm_is_one_line_and_stop_is_idempotent(setup, host):
    # The stand-in host's Python has no vLLM distribution: the supervisor says so and stops.
    start = cosmos("serve", "start", "--idle-timeout", 2.5)
    assert start.exit_code == 5, start.output
    errors = [x for x in start.stderr.splitlines() if x.startswith(("error:", "hint:"))]
    assert errors[0].startswith("error: the server did not start: vLLM is not installed for ")
    server = host / "cosmos_workflow" / "server"
    assert json.loads((server / "request.json").read_text())["idle_timeout_s"] == 150.0

    status = json.loads(cosmos("serve", "status", "--json").stdout)["data"]
    assert status["state"] == "failed" and not status["alive"]
    assert status["error"].startswith("vLLM is not installed")
    human = cosmos("serve", "status")
    assert "error: vLLM is not installed" in human.stderr

    logs = cosmos("serve", "logs", "--lines", 1)
    assert logs.exit_code == 0 and "server not started: vLLM is not installed" in logs.stdout
    followed = cosmos("serve", "logs", "--follow")  # nothing runs: prints and returns
    assert "server not started" in followed.stdout

    for _ in range(2):
        stop = cosmos("serve", "stop")
        assert stop.exit_code == 0 and "no server was running" in stop.stderr


def test_serve_logs_before_any_server_says_so(setup):
    result = cosmos("serve", "logs")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: no server was ever started on the host"
