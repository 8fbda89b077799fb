"""Shared fixtures and the paths to the real-world media in ../shared/media.

User state is isolated by the tests.isolation plugin (a throwaway home for the session, a fresh
user folder per test); tests.sshd provides the real OpenSSH server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The real OpenSSH sshd fixture (and its helpers), and the session-wide isolation of user
# state with its check that nothing is written outside the temp folders.
pytest_plugins = ["tests.sshd", "tests.isolation"]

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
ASSETS = MEDIA / "cosmos-transfer1" / "assets"
PROMPT_SPECS = MEDIA / "prompt-specs"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh current directory (so ./config.toml of the repo is not picked up)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def host(tmp_path):
    """The "GPU host" side: a cosmos-transfer1 checkout folder on this machine."""
    remote_dir = tmp_path / "host" / "cosmos-transfer1"
    remote_dir.mkdir(parents=True)
    return remote_dir


@pytest.fixture
def setup(workdir, host, sshd, tmp_path):
    """./config.toml for the sshd host with the stand-in engine; call it to change settings
    (`setup(remote=…, chunk_size=…, <FAKE_VLLM control>=…)`)."""
    from .upsample_env import sshd_remote, stand_in_setup

    return stand_in_setup(workdir, host, tmp_path / "engine.jsonl", lambda: sshd_remote(sshd))
