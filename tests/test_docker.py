"""The Docker runner for real: a real dockerd, the stand-in of NVIDIA's image with the real CPU
vLLM inside (scripts/docker_image.sh), the tiny Pixtral, the loopback sshd, real ffmpeg.

Everything a user of NVIDIA's image does: `cosmos remote check`, `cosmos upsample` (a spec, a
folder, a rerun), the faults (SSH dropped, `remote cancel`, the container SIGKILLed), the warm
server in a container, and SSH users who are not root (passwordless sudo, the docker group,
sudo that asks a password). The image has no CUDA: `[docker] gpus = "none"`, as on a host
without the NVIDIA runtime; `gpus = "all"` is tested for the clear error it gives here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from cosmos_workflow.remote.runner import RunnerSettings, container_name, server_container

from .dockerhost import (
    Account,
    containers,
    docker,
    make_account,
    path_without,
    remove_account,
    require_docker,
    stand_in_image,
)
from .engine import (
    FAKE_VLLM,
    cpu_bench_settings,
    engine_vllm_version,
    require_engine_python,
    tiny_model_dir,
)
from .sshd import free_port, start_sshd, stop_sshd
from .upsample_env import CHECKPOINT, many_specs, seed_specs, sshd_remote, write_config

pytestmark = [pytest.mark.docker, pytest.mark.ssh]

CLI_TIMEOUT_S = 600
# The engine inside the container, as tests/engine.py's engine_env sets it for the venv: CPU KV
# cache of 1 GiB, engine core in-process, nothing reaching for a hub or phoning home.
ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@dataclass
class Bench:
    image: str
    vllm: str
    python: str
    model: Path
    base: Path  # every account can traverse it: homes, host folders, the sshd's keys
    sshd: object
    accounts: dict[str, Account]


@pytest.fixture(scope="module")
def bench():
    require_docker()
    python = require_engine_python()
    image = stand_in_image()
    model = tiny_model_dir(python)
    base = Path(tempfile.mkdtemp(prefix="cosmos-docker-test-"))
    base.chmod(0o755)
    accounts = {
        # The shapes of a shared GPU host's SSH users who are not root.
        "sudo": make_account(
            base, "sudo", sudoers="ALL=(root) NOPASSWD: /usr/bin/docker, /usr/local/bin/docker"
        ),
        "group": make_account(base, "group", groups=("docker",)),
        "password": make_account(base, "password", sudoers="ALL=(ALL) ALL"),
    }
    (base / "sshd").mkdir(mode=0o755)
    server = start_sshd(base / "sshd", other_users=tuple(a.name for a in accounts.values()))
    try:
        yield Bench(
            image=image,
            vllm=engine_vllm_version(python),
            python=python,
            model=model,
            base=base,
            sshd=server,
            accounts=accounts,
        )
    finally:
        stop_sshd(server)
        for account in accounts.values():
            remove_account(account.name)
        for name in containers("cosmos-upsample-"):
            if name.split("-")[-1] in _started_here:
                docker("rm", "-f", name, check=False)
        shutil.rmtree(base, ignore_errors=True)


_started_here: set[str] = set()  # job ids and host folders' server names this module made


class Host:
    """One host folder (a cosmos-transfer1 checkout with the tiny model) and a work folder with
    config.toml, for one SSH user; runs the CLI as a process, as a user does."""

    def __init__(self, bench: Bench, work: Path, account: Account | None = None, **docker_keys):
        self.bench, self.work, self.account = bench, work, account
        owner = account.home if account else bench.base / f"root-{work.parent.name}"
        self.home = owner
        self.remote_dir = owner / "ct1"
        model = self.remote_dir / "checkpoints" / CHECKPOINT
        model.parent.mkdir(parents=True, exist_ok=True)
        # A copy, not a link: the container sees only what is mounted.
        shutil.copytree(bench.model, model, dirs_exist_ok=True)
        if account:
            account.chown(self.remote_dir)
        work.mkdir(parents=True, exist_ok=True)
        self.remote = sshd_remote(bench.sshd, **({"user": account.name} if account else {}))
        self.docker = {
            "image": bench.image,
            "gpus": "none",
            "shm_size": "1g",
            "sudo": False,
            **(
                {}
                if account
                else {  # root's real home stays out of it
                    "hf_cache": str(owner / "cache" / "huggingface"),
                    "vllm_cache": str(owner / "cache" / "vllm"),
                }
            ),
            **docker_keys,
        }
        self.worker = {
            "runner": "docker",
            "enforce_eager": True,  # torch.compile would add a minute on 2 cores
            "chunk_size": 1,  # results saved after every item: faults lose little
            "env": ENGINE_ENV,
            **cpu_bench_settings(bench.python),
        }
        self.server = {"port": free_port(), "idle_timeout_min": 30}
        self.write()

    @property
    def jobs(self) -> Path:
        return self.remote_dir / "cosmos_workflow" / "jobs"

    def write(self, remote=None, **worker) -> None:
        write_config(
            self.work / "config.toml",
            {
                "remote": remote or self.remote,
                "paths": {
                    "remote_dir": str(self.remote_dir),
                    "cache_dir": str(self.work / "frame-cache"),
                },
                "docker": self.docker,
                "worker": {**self.worker, **worker},
                "server": self.server,
            },
        )

    def process(self, *args, env=None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "cosmos_workflow", *map(str, args)],
            cwd=self.work,
            env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args, env=None) -> subprocess.CompletedProcess:
        proc = self.process(*args, env=env)
        stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def results(self, job_id: str) -> list[dict]:
        path = self.jobs / job_id / "results.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def data(result: subprocess.CompletedProcess) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)["data"]


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def wait_for(predicate, what: str, timeout_s: float = 300.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def first_job(host: Host, at_least: int) -> str:
    """The id of the job on the host once it has `at_least` results."""

    def ready():
        for results in host.jobs.glob("*/results.jsonl"):
            if len(results.read_text().splitlines()) >= at_least:
                return results.parent.name
        return None

    job_id = wait_for(ready, f"{at_least} result(s) on the host")
    _started_here.add(job_id)
    return job_id


def each_item_once(results: list[dict], count: int) -> None:
    """Exactly one successful result per item: none lost, none run twice."""
    ok = Counter(r["id"] for r in results if not r.get("error"))
    assert len(ok) == count and set(ok.values()) == {1}, ok


def assert_tokens_as_counted(record: dict) -> None:
    for item in record["items"]:
        assert item["status"] == "ok", item
        assert item["prompt_tokens_engine"] == item["prompt_tokens_local"], item


# -- cosmos remote check ------------------------------------------------------------------------


def test_check_reports_docker_the_image_and_what_runs_inside(bench, tmp_path):
    host = Host(bench, tmp_path / "work")

    human = host.cli("remote", "check")
    as_json = host.cli("remote", "check", "--json")

    assert human.returncode == 0, human.stderr
    table = human.stdout
    assert "docker" in table and bench.image in table and "as the SSH user" in table
    assert f"{bench.vllm}" in table and "shm" in table and "1.0 GiB at /dev/shm" in table
    assert "not passed (gpus = none)" in table
    assert human.stderr.strip().splitlines()[-1] == "ready"
    assert "this vLLM is a CPU build" in human.stderr  # a warning, not a problem
    # The image's banner went to stdout too; --json is still one JSON document.
    report = data(as_json)
    assert as_json.returncode == 0 and report["ready"] is True, report
    assert report["vllm"]["version"].split("+")[0] == bench.vllm
    assert report["python"].startswith("3.11.")  # the image's Debian python3, not this venv's
    assert report["python_executable"] == "/usr/bin/python3"
    facts = report["docker"]
    assert facts["server_version"] and facts["image_id"].startswith("sha256:")
    assert facts["image"] == bench.image and facts["gpus"] == "none" and facts["sudo"] is False
    assert report["shm"]["total_bytes"] == 2**30  # --shm-size=1g reached the container
    assert report["model"]["path"] == "/workspace/checkpoints/" + CHECKPOINT
    assert report["model"]["ok"] is True
    assert not containers("cosmos-upsample-check")  # --rm: nothing left behind


def test_two_checks_at_once_do_not_collide(bench, tmp_path):
    host = Host(bench, tmp_path / "work")
    procs = [host.process("remote", "check", "--json") for _ in range(2)]
    outputs = [proc.communicate(timeout=CLI_TIMEOUT_S) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["data"]["ready"] is True
    assert not containers("cosmos-upsample-check")


def test_gpus_on_a_host_without_the_nvidia_runtime_is_one_clear_line(bench, tmp_path):
    """This machine has no NVIDIA container runtime, like a CPU host: `--gpus all` fails."""
    host = Host(bench, tmp_path / "work", gpus="all")
    result = host.cli("remote", "check")
    assert result.returncode == 5, result.stderr
    (error,) = error_lines(result)
    assert "cannot give containers GPUs" in error and "capabilities: [[gpu]]" in error
    assert "Run 'docker run --help'" not in result.stderr
    assert 'gpus = "none"' in result.stderr  # the hint says what to set
    as_json = json.loads(host.cli("remote", "check", "--json").stdout)
    assert as_json["error"]["code"] == "docker_no_gpu_runtime"


def test_an_image_the_host_lacks_is_one_clear_line_and_no_pull(bench, tmp_path):
    host = Host(bench, tmp_path / "work", image="cosmos-no-such-image:0")
    started = time.monotonic()
    result = host.cli("remote", "check", "--json")
    assert result.returncode == 5
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "docker_image_missing" and "cosmos-no-such-image:0" in error["message"]
    assert "docker images" in error["hint"]
    assert time.monotonic() - started < 60  # --pull never: no registry is tried


# -- cosmos upsample ----------------------------------------------------------------------------


def test_upsample_a_spec_then_a_folder_then_rerun_in_the_image(bench, tmp_path):
    host = Host(bench, tmp_path / "work")
    prompts = seed_specs(host.work / "prompts", names=("office_handover", "robot_lab_night"))
    folder = many_specs(host.work / "folder", 3)

    one = host.cli("upsample", prompts / "office_handover.json", "--preprocess-videos", "--json")
    many = host.cli("upsample", folder, "--preprocess-videos", "--save-dir", "out", "--json")
    again = host.cli("upsample", folder, "--preprocess-videos", "--save-dir", "out", "--json")
    checked = host.cli("check", folder, "--resolution", "320x180", "--json")

    assert one.returncode == 0, one.stderr
    record = data(one)
    _started_here.add(record["job_id"])
    assert record["runner"] == "docker"
    assert_tokens_as_counted(record)
    assert many.returncode == 0, many.stderr
    first = data(many)
    _started_here.add(first["job_id"])
    assert_tokens_as_counted(first)
    # The engine's counts are the ones `cosmos check` gives without a GPU.
    counted = {Path(i["input"]).stem: i["prompt_tokens"] for i in data(checked)["items"]}
    assert {i["name"]: i["prompt_tokens_engine"] for i in first["items"]} == counted
    # The rerun finds the same job: nothing uploaded, nothing run again.
    assert again.returncode == 0, again.stderr
    second = data(again)
    assert second["job_id"] == first["job_id"] and second["bytes_sent"] == 0
    each_item_once(host.results(first["job_id"]), 3)
    log = (host.jobs / first["job_id"] / "worker.log").read_text()
    assert "3 items: 3 already finished, 0 to run" in log
    # Every file the container wrote is the SSH user's (root here), and nothing is left running.
    assert not containers(container_name(first["job_id"]))
    assert not containers(container_name(record["job_id"]))


def test_ssh_dropped_mid_batch_reattaches_to_the_running_container(bench, tmp_path):
    host = Host(bench, tmp_path / "work")
    folder = many_specs(host.work / "prompts", 6)
    run = host.process("upsample", folder, "--preprocess-videos", "--save-dir", "out", "--json")

    job_id = first_job(host, at_least=1)
    assert bench.sshd.kill_sessions() >= 1
    assert containers(container_name(job_id))  # the job runs on without the SSH session

    stdout, stderr = run.communicate(timeout=CLI_TIMEOUT_S)
    assert run.returncode == 0, stderr
    assert "connection lost; reconnecting" in stderr
    record = json.loads(stdout)["data"]
    assert record["job_id"] == job_id
    assert_tokens_as_counted(record)
    each_item_once(host.results(job_id), 6)
    assert not containers(container_name(job_id))


def test_cancel_stops_the_container_and_the_same_command_finishes(bench, tmp_path):
    host = Host(bench, tmp_path / "work")
    folder = many_specs(host.work / "prompts", 6)
    args = ("upsample", folder, "--preprocess-videos", "--save-dir", "out", "--json")
    run = host.process(*args)

    job_id = first_job(host, at_least=1)
    cancel = host.cli("remote", "cancel", job_id)
    stdout, stderr = run.communicate(timeout=CLI_TIMEOUT_S)

    assert cancel.returncode == 0, cancel.stderr
    assert run.returncode != 0
    failed = [i for i in json.loads(stdout)["data"]["items"] if i["status"] == "failed"]
    assert failed and {i["error"]["code"] for i in failed} == {"cancelled"}, failed
    wait_for(lambda: not containers(container_name(job_id)), "the container to go", 60)
    status = data(host.cli("remote", "status", job_id, "--json"))
    assert status["jobs"][0]["state"] == "cancelled"

    rerun = host.cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert_tokens_as_counted(data(rerun))
    each_item_once(host.results(job_id), 6)
    assert not containers(container_name(job_id))


def test_container_killed_mid_batch_then_the_same_command_runs_each_item_once(bench, tmp_path):
    host = Host(bench, tmp_path / "work")
    folder = many_specs(host.work / "prompts", 6)
    args = ("upsample", folder, "--preprocess-videos", "--save-dir", "out", "--json")
    run = host.process(*args)

    job_id = first_job(host, at_least=1)
    docker("kill", container_name(job_id))
    stdout, stderr = run.communicate(timeout=CLI_TIMEOUT_S)

    assert run.returncode != 0
    record = json.loads(stdout)["data"]
    failed = [i for i in record["items"] if i["status"] == "failed"]
    assert failed and all("SIGKILL (exit code 137)" in i["error"]["message"] for i in failed)
    done_before = len([r for r in host.results(job_id) if not r.get("error")])
    assert 1 <= done_before < 6
    assert not containers(container_name(job_id))  # --rm removed the killed one

    rerun = host.cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert_tokens_as_counted(data(rerun))
    each_item_once(host.results(job_id), 6)
    log = (host.jobs / job_id / "worker.log").read_text()
    assert f"6 items: {done_before} already finished, {6 - done_before} to run" in log


# -- the warm server in a container -------------------------------------------------------------


def test_serve_in_the_image_start_use_stop_and_idle_stop_removes_the_container(bench, tmp_path):
    host = Host(bench, tmp_path / "work")
    name = server_container(RunnerSettings(kind="docker", remote_dir=str(host.remote_dir)))
    _started_here.add(name.split("-")[-1])
    folder = many_specs(host.work / "prompts", 2)

    start = host.cli("serve", "start")
    status = host.cli("serve", "status", "--json")
    served = host.cli("upsample", folder, "--preprocess-videos", "--save-dir", "out", "--json")
    stop = host.cli("serve", "stop")

    assert start.returncode == 0, start.stderr
    state = data(status)
    assert state["state"] == "ready" and state["container"] == name
    assert served.returncode == 0, served.stderr
    record = data(served)
    assert record["mode"] == "server"
    assert_tokens_as_counted(record)
    assert stop.returncode == 0, stop.stderr
    assert not containers(name)

    # Idle: the server stops itself, and the container goes with it (--rm).
    again = host.cli("serve", "start", "--idle-timeout", "0.25")
    assert again.returncode == 0, again.stderr
    assert containers(name)
    wait_for(lambda: not containers(name), "the idle server's container to go", 180)
    final = data(host.cli("serve", "status", "--json"))
    assert final["state"] == "stopped" and final["stop_reason"].startswith("idle for")


# -- SSH users who are not root -----------------------------------------------------------------


def test_a_sudo_user_runs_the_image_and_owns_every_file_it_leaves(bench, tmp_path):
    """Passwordless sudo for docker (NVIDIA's instructions): the container runs as the SSH
    user, so results, logs, status and the cache folders on the host are the user's, and a
    direct-runner job on the same folder afterwards works."""
    account = bench.accounts["sudo"]
    host = Host(bench, tmp_path / "work", account, sudo=True)  # default caches: ~/.cache/…
    folder = many_specs(host.work / "prompts", 2)

    result = host.cli("upsample", folder, "--preprocess-videos", "--save-dir", "out", "--json")

    assert result.returncode == 0, result.stderr
    record = data(result)
    _started_here.add(record["job_id"])
    assert_tokens_as_counted(record)
    cache = account.home / ".cache"
    assert (cache / "huggingface").is_dir() and (cache / "vllm").is_dir()
    assert account.owns_everything_under(host.remote_dir / "cosmos_workflow", cache) == []

    # The same folder with the direct runner (the stand-in engine, the host's python3).
    engine = bench.base / "fake_vllm"
    if not engine.exists():
        shutil.copytree(FAKE_VLLM, engine)
        for path in [engine, *engine.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    host.write(
        runner="direct",
        python="/usr/bin/python3",
        checkpoint_dir=str(host.remote_dir / "checkpoints"),
        env={"PYTHONPATH": str(engine), "FAKE_VLLM_LOG": str(account.home / "engine.jsonl")},
    )
    more = many_specs(host.work / "more", 3)
    direct = host.cli("upsample", more, "--preprocess-videos", "--save-dir", "out2", "--json")
    assert direct.returncode == 0, direct.stderr
    assert data(direct)["runner"] == "direct"
    assert account.owns_everything_under(host.remote_dir / "cosmos_workflow", cache) == []


def test_a_docker_group_user_without_sudo(bench, tmp_path):
    account = bench.accounts["group"]
    host = Host(bench, tmp_path / "work", account, sudo=False)

    result = host.cli("remote", "check", "--json")

    assert result.returncode == 0, result.stderr
    report = data(result)
    assert report["ready"] is True and report["docker"]["sudo"] is False
    cache = account.home / ".cache"
    assert account.owns_everything_under(host.remote_dir / "cosmos_workflow", cache) == []


def test_sudo_that_asks_a_password_is_one_clear_line_and_nothing_half_done(bench, tmp_path):
    account = bench.accounts["password"]
    host = Host(bench, tmp_path / "work", account, sudo=True)
    folder = many_specs(host.work / "prompts", 1)

    check = host.cli("remote", "check")
    run = host.cli("upsample", folder, "--preprocess-videos", "--save-dir", "out")

    for result in (check, run):
        assert result.returncode == 5, result.stderr
        (error,) = error_lines(result)
        assert "sudo on the host asks for a password to run docker" in error
        assert "NOPASSWD" in result.stderr  # the hint says what to configure
    assert not (host.work / "out" / "item_0000.json").exists()
    for job in host.jobs.iterdir():
        assert not containers(container_name(job.name))
    # Neither sudo nor the docker group: docker's socket refuses the user, said in one line.
    host.docker["sudo"] = False
    host.write()
    denied = host.cli("remote", "check", "--json")
    assert denied.returncode == 5
    assert json.loads(denied.stdout)["error"]["code"] == "docker_permission"


def test_sudo_on_a_host_without_sudo_is_one_clear_line(bench, tmp_path):
    """`[docker] sudo = true` (the default) where sudo is not installed: the local transport
    with a PATH that lacks it, as on a minimal host."""
    host = Host(bench, tmp_path / "work", sudo=True)
    host.write(remote={"transport": "local"})
    env = dict(os.environ, PATH=path_without(tmp_path, "sudo"))

    result = host.cli("remote", "check", "--json", env=env)

    assert result.returncode == 5, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "sudo_missing"
    assert "sudo = false" in error["hint"]
