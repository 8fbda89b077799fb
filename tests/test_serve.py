"""The warm server against real parts: `vllm serve` (vLLM's OpenAI server, from the engine venv)
with the tiny Pixtral, started by `worker.py serve` behind the loopback sshd, reached through a
direct-tcpip tunnel over the CLI's own SSH connection.

A model load costs ~40-80 s on 2 cores, so the module starts one server and runs its tests in
order against it; the fault tests (killed mid-batch, watchdog) come last and restart it once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .conftest import PROMPT_SPECS
from .engine import require_engine_python, tiny_model_dir
from .sshd import free_port
from .upsample_env import real_checkpoint, real_worker, sshd_remote, write_config

pytestmark = [pytest.mark.engine, pytest.mark.server]

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 600.0


def specs_with_prompts(folder: Path, prompts: list[str], tag: str) -> Path:
    """One spec per prompt on the real 640×480 clip."""
    source = PROMPT_SPECS / "office_handover.json"
    base = json.loads(source.read_text())
    base["input_video_path"] = os.path.normpath(source.parent / base["input_video_path"])
    base["control_inputs"] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for n, prompt in enumerate(prompts):
        name = f"{tag}_{n:03d}"
        spec = dict(base, id=f"ps_{abs(hash(name)) % 16**12:012x}", name=name, prompt=prompt)
        (folder / f"{name}.json").write_text(json.dumps(spec))
    return folder


class Env:
    """One host folder + config; runs the CLI in-process (cwd = work) or as a process."""

    def __init__(self, base: Path, sshd, python: str, model: Path, port: int, **server):
        self.base = base
        self.host = base / "host" / "cosmos-transfer1"
        self.host.mkdir(parents=True, exist_ok=True)
        self.work = base / "work"
        self.work.mkdir(exist_ok=True)
        self.worker = real_worker(python, real_checkpoint(base, model), base / "engine-work")
        self.remote = sshd_remote(sshd)
        self.server = {"port": port, "idle_timeout_min": 30, **server}
        self.write()

    @property
    def server_dir(self) -> Path:
        return self.host / "cosmos_workflow" / "server"

    def write(self, **worker) -> None:
        write_config(
            self.work / "config.toml",
            {
                "remote": self.remote,
                "paths": {"remote_dir": str(self.host), "cache_dir": str(self.base / "cache")},
                "worker": {**self.worker, **worker},
                "server": self.server,
            },
        )

    def cli(self, *args):
        cwd = os.getcwd()
        os.chdir(self.work)
        try:
            return CliRunner().invoke(app, [str(a) for a in args])
        finally:
            os.chdir(cwd)

    def process(self, *args) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "cosmos_workflow", *map(str, args)],
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def state(self) -> dict:
        path = self.server_dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def journal_lines(self) -> int:
        folder = self.base / "cache" / "server-results"
        return sum(len(p.read_text().splitlines()) for p in folder.glob("*.jsonl"))


def data(result) -> dict:
    assert result.stdout, result.output
    return json.loads(result.stdout)["data"]


def wait_for(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def env(tmp_path_factory, sshd):
    python = require_engine_python()
    model = tiny_model_dir(python)
    env = Env(tmp_path_factory.mktemp("serve"), sshd, python, model, free_port())
    env.python, env.model = python, model
    start = env.cli("serve", "start", "--json")
    env.first_start = start
    yield env
    env.cli("serve", "stop")


def test_start_returns_when_the_server_answers(env):
    result = env.first_start
    assert result.exit_code == 0, result.output
    status = data(result)
    assert status["started"] is True
    assert status["state"] == "ready" and status["alive"]
    assert status["model"] == "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"
    assert status["port"] == env.server["port"]
    assert status["settings"]["max_model_len"] == 4096
    assert status["settings"]["frame_count"] == 2
    # Frames by file:// URL from the host's cache where its mistral_common reads them (not the
    # 1.5.x of vLLM 0.8's time, as in NVIDIA's image: inline data URLs there).
    assert status["image_urls"] == ("data" if status["vllm_version"].startswith("0.8") else "file")
    assert status["differences"] == []
    # Progress while loading: the supervisor's and vLLM's log lines reached stderr.
    assert "starting vLLM" in result.stderr


def test_server_listens_on_the_hosts_loopback_only(env):
    state = env.state()
    pid = state["server_pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(b"--host") + 1] == b"127.0.0.1"
    # The batch job's engine arguments, from the same settings → kwargs function.
    assert b"--tokenizer-mode" in cmdline and b"mistral" in cmdline
    assert (
        cmdline[cmdline.index(b"--max-num-seqs") + 1]
        == str(state["settings"]["max_num_seqs"]).encode()
    )


def test_start_when_running_says_so_and_changes_nothing(env):
    before = env.state()
    result = env.cli("serve", "start")
    assert result.exit_code == 0, result.output
    assert "already running" in result.stderr
    after = env.state()
    assert after["pid"] == before["pid"] and after["started_at"] == before["started_at"]


def test_upsample_uses_the_ready_server_with_exact_prompt_tokens(env):
    prompts = specs_with_prompts(env.work / "p1", ["a red car", "two robots " * 9], "one")
    result = env.cli("upsample", prompts, "--preprocess-videos", "--save-dir", "out1", "--json")
    assert result.exit_code == 0, result.output
    record = data(result)
    assert record["mode"] == "server"
    assert "mode: server" in result.stderr
    for item in record["items"]:
        assert item["status"] == "ok", item["error"]
        assert item["prompt_tokens_engine"] == item["prompt_tokens_local"]
        written = json.loads((env.work / item["output"]).read_text())
        assert written["parent_prompt_text"] == item["original_prompt"]
    assert json.loads((env.work / "out1" / "run.json").read_text())["mode"] == "server"
    # The supervisor reads vLLM's counters every couple of seconds.
    wait_for(lambda: env.state().get("requests_served", 0) >= 2, "the requests counted")
    assert data(env.cli("serve", "status", "--json"))["requests_served"] >= 2


def test_server_flag_requires_a_server_with_one_clear_line(env, tmp_path, sshd):
    other = Env(tmp_path, sshd, env.python, env.model, free_port())  # a host folder without one
    prompts = specs_with_prompts(other.work / "p0", ["x"], "zero")
    result = other.cli("upsample", prompts, "--preprocess-videos", "--server")
    assert result.exit_code == 5, result.output
    assert "error: --server: no server runs on the host" in result.stderr
    assert not list(other.work.glob("outputs/*.json"))  # nothing written


def test_two_upsamples_at_once_are_both_served_never_crossed(env):
    short = specs_with_prompts(env.work / "pa", [f"cat {n}" for n in range(3)], "short")
    long = specs_with_prompts(
        env.work / "pb", [("a long prompt about a lab " * (n + 4)) for n in range(3)], "long"
    )
    runs = [
        env.process("upsample", folder, "--preprocess-videos", "--save-dir", out, "--json")
        for folder, out in ((short, "outa"), (long, "outb"))
    ]
    for run, folder in zip(runs, (short, long), strict=True):
        stdout, stderr = run.communicate(timeout=WAIT_S)
        assert run.returncode == 0, stderr
        record = json.loads(stdout)["data"]
        assert record["mode"] == "server"
        for item in record["items"]:
            # Each prompt has its own length: an answer to another prompt would not match.
            assert item["prompt_tokens_engine"] == item["prompt_tokens_local"], item
            spec = json.loads((folder / f"{item['name']}.json").read_text())
            written = json.loads((env.work / item["output"]).read_text())
            assert written["parent_prompt_text"] == spec["prompt"]


def test_server_with_other_settings_is_not_used_and_status_says_how(env):
    env.write(max_num_seqs=3)
    try:
        status = data(env.cli("serve", "status", "--json"))
        assert status["state"] == "ready"
        assert any(d.startswith("max_num_seqs: server") for d in status["differences"])
        human = env.cli("serve", "status")
        assert "max_num_seqs: server" in human.stderr
        prompts = specs_with_prompts(env.work / "pc", ["x"], "other")
        result = env.cli("upsample", prompts, "--preprocess-videos", "--server", "--json")
        assert result.exit_code == 5
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "no_usable_server"
        assert "other settings: max_num_seqs" in error["message"]
    finally:
        env.write()


def test_start_on_a_taken_port_is_one_clear_line(env, tmp_path, sshd):
    # A second host folder whose server would listen on the running server's port.
    other = Env(tmp_path, sshd, env.python, env.model, env.server["port"])
    result = other.cli("serve", "start")
    assert result.exit_code == 5, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert lines[0].startswith("error: the server did not start: port ")
    assert "already in use" in lines[0]
    assert lines[1].startswith("hint: another program listens on port")
    assert other.state()["state"] == "failed"


def test_model_that_fails_to_load_is_its_root_cause(env, tmp_path, sshd):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for name in ("params.json", "tekken.json"):
        (broken / name).write_bytes((env.model / name).read_bytes())
    (broken / "consolidated.safetensors").write_bytes(b"\x00" * 64)  # not safetensors
    other = Env(tmp_path, sshd, env.python, broken, free_port())
    result = other.cli("serve", "start", "--json")
    assert result.exit_code == 5, result.output
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert error["code"] == "server_start_failed"
    assert error["message"].startswith("the server did not start: vLLM's server failed to start")
    assert "Error" in error["message"]  # the exception vLLM printed, not a generic line
    assert "\n" not in error["message"]
    assert other.state()["state"] == "failed"
    assert other.cli("serve", "stop").exit_code == 0  # nothing left running: idempotent


def test_endpoint_gets_frames_inline_and_the_key_is_never_shown(env, tmp_path):
    # The server listens on this machine's loopback (the sshd is local): reach it as a plain
    # OpenAI-compatible URL, with no SSH and nothing uploaded.
    key = "sk-test-never-shown-7f3a"
    url = f"http://127.0.0.1:{env.server['port']}/v1"
    prompts = specs_with_prompts(env.work / "pe", ["an endpoint prompt"], "endpoint")
    process_env = dict(os.environ, COSMOS_SERVER_API_KEY=key)
    run = subprocess.run(
        [sys.executable, "-m", "cosmos_workflow", "upsample", str(prompts), "--preprocess-videos",
         "--endpoint", url, "--save-dir", "oute", "--json"],
        cwd=env.work, env=process_env, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)["data"]
    assert record["mode"] == "server" and record["bytes_sent"] == 0
    (item,) = record["items"]
    assert item["status"] == "ok" and item["prompt_tokens_engine"] == item["prompt_tokens_local"]
    assert f"mode: server (the endpoint {url} serves" in run.stderr
    written = [p.read_text() for p in (env.work / "oute").rglob("*.json")]
    assert key not in run.stdout + run.stderr and not any(key in text for text in written)


def test_ssh_connection_dropped_mid_batch_reconnects_and_finishes(env, sshd):
    prompts = specs_with_prompts(env.work / "pd", [f"drop {n} " * 3 for n in range(8)], "drop")
    before = env.journal_lines()
    run = env.process("upsample", prompts, "--preprocess-videos", "--save-dir", "outd", "--json")
    wait_for(lambda: env.journal_lines() > before, "a first answer")
    assert sshd.kill_sessions() >= 1  # the CLI's connection, tunnels and all
    stdout, stderr = run.communicate(timeout=WAIT_S)
    assert run.returncode == 0, stderr
    record = json.loads(stdout)["data"]
    assert record["mode"] == "server"
    assert all(item["status"] == "ok" for item in record["items"])
    assert record["ops"]["connect"] >= 2  # it reconnected
    assert "connection lost; reconnecting" in stderr
    assert env.state()["state"] == "ready"  # the server never noticed


def test_server_killed_mid_batch_fails_the_rest_and_the_same_command_finishes(env):
    prompts = specs_with_prompts(env.work / "pk", [f"scene {n} " * 3 for n in range(8)], "kill")
    command = ("upsample", prompts, "--preprocess-videos", "--save-dir", "outk", "--json")
    before = env.journal_lines()
    run = env.process(*command)
    wait_for(lambda: env.journal_lines() > before, "a first answer")
    os.killpg(env.state()["server_pid"], signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=WAIT_S)
    assert run.returncode == 1, stderr
    record = json.loads(stdout)["data"]
    assert record["mode"] == "server"
    failed = [i for i in record["items"] if i["status"] == "failed"]
    done = [i for i in record["items"] if i["status"] == "ok"]
    assert failed and done
    for item in failed:
        assert item["error"]["code"] == "server_lost"
        assert "run the same command again" in item["error"]["hint"]
        assert item["output"] is None
        assert not (env.work / "outk" / f"{item['name']}.json").exists()
    assert sorted(p.name for p in (env.work / "outk").glob("*.tmp*")) == []
    wait_for(lambda: env.state().get("state") == "failed", "the supervisor to see the death")
    # Right away (its supervisor may still be exiting): a new server, not "already running".

    # A restarted server with a short idle timeout finishes only what is left. Two starts at
    # once (a second terminal): one server, the other start waits for it.
    other = env.process("serve", "start", "--idle-timeout", "0.25", "--json")
    restart = env.cli("serve", "start", "--idle-timeout", "0.25", "--json")
    other_out, other_err = other.communicate(timeout=WAIT_S)
    assert restart.exit_code == 0, restart.output
    assert other.returncode == 0, other_err
    both = [data(restart), json.loads(other_out)["data"]]
    assert sorted(s["started"] for s in both) == [False, True]
    assert both[0]["pid"] == both[1]["pid"] and both[0]["state"] == both[1]["state"] == "ready"
    served_before = data(env.cli("serve", "status", "--json"))["requests_served"]
    again = env.cli(*command)
    assert again.exit_code == 0, again.output
    record = data(again)
    assert record["mode"] == "server"
    assert all(item["status"] == "ok" for item in record["items"])
    assert wait_for(
        lambda: env.state().get("requests_served", 0) - served_before >= len(failed), "counters"
    )
    assert env.state()["requests_served"] - served_before == len(failed)

    # The watchdog: no request for 15 s and the server stops itself.
    stopped = wait_for(lambda: env.state().get("state") == "stopped" and env.state(), "idle stop")
    assert stopped["stop_reason"].startswith("idle for")
    # Its supervisor exits right after writing "stopped".
    status = wait_for(
        lambda: (s := data(env.cli("serve", "status", "--json")))["alive"] is False and s,
        "the supervisor to exit",
    )
    assert status["state"] == "stopped"
    assert not Path(f"/proc/{stopped['server_pid']}").exists()


def test_stop_while_loading_and_again_is_idempotent(env):
    interrupted = env.process("serve", "start")
    wait_for(
        lambda: env.state().get("state") == "starting" and env.state().get("server_pid"), "a load"
    )
    # Ctrl+C on the start: it says the server keeps loading (it runs detached), and it does.
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=WAIT_S)
    assert interrupted.returncode == 130, stderr
    assert "the server keeps loading on the host" in stderr
    assert data(env.cli("serve", "status", "--json"))["alive"] is True
    start = env.process("serve", "start")  # a second start waits for the load it finds
    for line in start.stderr:
        if "already loading on the host" in line:
            break
    first = env.cli("serve", "stop")
    assert first.exit_code == 0 and "server stopped" in first.stderr
    start.communicate(timeout=WAIT_S)
    assert start.returncode == 5  # the start it interrupted says it did not start
    second = env.cli("serve", "stop")
    assert second.exit_code == 0 and "no server was running" in second.stderr
    status = data(env.cli("serve", "status", "--json"))
    assert status["state"] == "stopped" and status["stop_reason"] == "stopped"
