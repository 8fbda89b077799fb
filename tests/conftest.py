"""Shared fixtures: isolated user state, paths to the real-world media in ../shared/media."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real OpenSSH sshd fixture (and its helpers) for every test module.
pytest_plugins = ["tests.sshd"]

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
ASSETS = MEDIA / "cosmos-transfer1" / "assets"
PROMPT_SPECS = MEDIA / "prompt-specs"


@pytest.fixture(autouse=True)
def isolated_user_state(tmp_path_factory, monkeypatch):
    """Every test gets its own user folder (config + cache) and a clean COSMOS_* environment.

    Like simonw/llm's LLM_USER_PATH: state is isolated through an environment variable, so no
    test reads the developer's own ~/.config or ~/.cache.
    """
    for name in list(os.environ):
        if name.startswith("COSMOS_") and not name.startswith("COSMOS_ENGINE_"):
            monkeypatch.delenv(name)
    user_dir = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("COSMOS_USER_DIR", str(user_dir))
    return user_dir


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh current directory (so ./config.toml of the repo is not picked up)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work
