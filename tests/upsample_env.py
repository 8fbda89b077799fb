"""Building a `cosmos upsample` setup for tests: config.toml, spec folders, a host checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from typer.testing import CliRunner

from cosmos_workflow.cli import app
from cosmos_workflow.config import SCHEMA

from .conftest import PROMPT_SPECS
from .engine import FAKE_VLLM, cpu_bench_settings, engine_env

CHECKPOINT = "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def write_config(path: Path, sections: dict) -> Path:
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def stand_in_checkpoint(base: Path) -> Path:
    """A checkpoints/ folder whose model dir satisfies the stand-in engine."""
    model = base / "checkpoints" / CHECKPOINT
    model.mkdir(parents=True, exist_ok=True)
    for name in ("params.json", "consolidated.safetensors", "tekken.json"):
        (model / name).write_text("{}")
    return base / "checkpoints"


def real_checkpoint(base: Path, tiny_model: Path) -> Path:
    """A checkpoints/ folder whose model dir is the tiny Pixtral (a symlink)."""
    model = base / "checkpoints" / CHECKPOINT
    model.parent.mkdir(parents=True, exist_ok=True)
    if not model.exists():
        model.symlink_to(tiny_model, target_is_directory=True)
    return base / "checkpoints"


def sshd_remote(sshd, known_hosts: Path | None = None, **extra) -> dict:
    return {
        "transport": "ssh",
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "ssh_key": str(sshd.key),
        "known_hosts": str(known_hosts or sshd.known_hosts),
        "connect_timeout_s": 5.0,
        **extra,
    }


def stand_in_worker(engine_log: Path, checkpoint_dir: Path, chunk_size=64, **controls) -> dict:
    """[worker] settings for the stand-in engine. `controls` that are [worker] keys (e.g.
    stall_timeout_s) are set as such; the others become FAKE_VLLM_* variables."""
    worker_keys = {k: v for k, v in controls.items() if k in SCHEMA["worker"]}
    env = {"PYTHONPATH": str(FAKE_VLLM), "FAKE_VLLM_LOG": str(engine_log)}
    env.update(
        {f"FAKE_VLLM_{k.upper()}": str(v) for k, v in controls.items() if k not in worker_keys}
    )
    return {
        "runner": "direct",
        "python": sys.executable,
        "checkpoint_dir": str(checkpoint_dir),
        "chunk_size": chunk_size,
        "env": env,
        **worker_keys,
    }


def real_worker(python: str, checkpoint_dir: Path, work_dir: Path) -> dict:
    """[worker] settings for the REAL vLLM engine (tests/engine.py's venv) on this machine."""
    # Only what engine_env adds or changes (vLLM on CPU, caches in work_dir): the worker
    # inherits the rest from the SSH session.
    env = {k: v for k, v in engine_env(work_dir).items() if os.environ.get(k) != v and k != "PATH"}
    return {
        "runner": "direct",
        "python": python,
        "checkpoint_dir": str(checkpoint_dir),
        # torch.compile would add about a minute of start-up on 2 cores.
        "enforce_eager": True,
        "env": env,
        **cpu_bench_settings(python),
    }


def seed_specs(folder: Path, names=("office_handover", "robot_lab_night"), **prompts) -> Path:
    """Copies of the real seed specs with their video paths made absolute (so they resolve)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = PROMPT_SPECS / f"{name}.json"
        spec = json.loads(source.read_text())
        spec["input_video_path"] = os.path.normpath(source.parent / spec["input_video_path"])
        spec["control_inputs"] = {
            k: os.path.normpath(source.parent / v) for k, v in spec["control_inputs"].items()
        }
        if name in prompts:
            spec["prompt"] = prompts[name]
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=2, ensure_ascii=False))
    return folder


def engine_events(log: Path, event: str = "generate") -> list[dict]:
    if not log.exists():
        return []
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in events if e["event"] == event]


def many_specs(folder: Path, count: int) -> Path:
    """`count` seed specs on the real 640×480 clip, each with its own prompt."""
    source = PROMPT_SPECS / "office_handover.json"
    base = json.loads(source.read_text())
    base["input_video_path"] = os.path.normpath(source.parent / base["input_video_path"])
    base["control_inputs"] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        spec = dict(base, id=f"ps_{n:012x}", name=f"item_{n:04d}", prompt=f"prompt number {n}")
        (folder / f"item_{n:04d}.json").write_text(json.dumps(spec))
    return folder


def stand_in_setup(workdir: Path, host: Path, engine_log: Path, default_remote):
    """`configure(remote=None, remote_dir=None, **worker_controls)`: writes ./config.toml for
    the host (reached through `default_remote()`, or `remote`) with the stand-in engine, and is
    called once here. `.engine_log` and `.jobs` say where to look afterwards."""

    def configure(remote=None, remote_dir=None, **worker_controls):
        write_config(
            workdir / "config.toml",
            {
                "remote": remote or default_remote(),
                "paths": {"remote_dir": str(remote_dir or host)},
                "worker": stand_in_worker(engine_log, stand_in_checkpoint(host), **worker_controls),
            },
        )

    configure()
    configure.engine_log = engine_log
    configure.jobs = host / "cosmos_workflow" / "jobs"
    return configure


_runner = CliRunner()


def upsample(*args):
    """`cosmos upsample ARGS…` through typer's runner."""
    return _runner.invoke(app, ["upsample", *map(str, args)])


def record_of(result) -> dict:
    """The run record a `--json` run printed."""
    assert result.stdout, result.stderr
    return json.loads(result.stdout)["data"]


def digest_tree(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}
