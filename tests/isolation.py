"""pytest plugin: the whole session runs in a throwaway home, and writing outside is a failure.

Enabled from tests/conftest.py (`pytest_plugins`). Three fixtures, all autouse:

- `isolated_session` (session, autouse): HOME, XDG_{CONFIG,CACHE,DATA,STATE}_HOME and
  COSMOS_USER_DIR point into a session temp folder before any other fixture runs, including
  module- and session-scoped ones (the real-engine run). Other COSMOS_* variables are dropped,
  except the engine venv's (`KEPT_ENV`): COSMOS_ENGINE_CACHE is pinned to the real cache first,
  so tests/engine.py still finds the venv that scripts/setup_engine.sh built.
- `nothing_written_outside` (module, autouse): the places no test may touch are snapshotted
  before each test module and compared after it; any change is an error naming the paths. The
  places: the checkout under test (`git status` incl. ignored files, build caches aside), the
  real-world media in ../shared/media, and in the real home the tool's config, cache and data
  folders (the engine venvs aside; the data folder holds the run history) and ~/.ssh. Cheap: a
  git status and a walk of a few small folders.
- `isolated_user_state` (function): each test its own COSMOS_USER_DIR and COSMOS_* environment.

A per-module check, not per test: a stray write makes the module's last test error, naming the
module and the paths.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from pathlib import Path

import pytest

from .engine import engine_cache_dir

# Captured when the plugin loads, before `isolated_session` moves HOME.
REAL_HOME = Path.home()
MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
# COSMOS_* variables that are not user state: where the real-engine venv is, and where tests
# keep artifacts for people to look at (screenshots).
KEPT_ENV = ("COSMOS_ENGINE_PYTHON", "COSMOS_ENGINE_CACHE", "COSMOS_TEST_ARTIFACTS")
# Written by Python and the tools themselves in any checkout; never test output.
BUILD_NOISE = ("__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", ".venv*")


def _real_engine_cache() -> Path:
    return Path(os.environ.get("COSMOS_ENGINE_CACHE") or engine_cache_dir())


def guarded_trees() -> dict[str, tuple[Path, tuple[str, ...]]]:
    """label → (folder, top-level names to leave out) that tests must leave unchanged."""
    return {
        "shared media": (MEDIA, ()),
        "real ~/.config/cosmos-workflow": (REAL_HOME / ".config" / "cosmos-workflow", ()),
        # The engine venvs (and the tiny model built inside them) are the suite's own cache.
        "real ~/.cache/cosmos-workflow": (REAL_HOME / ".cache" / "cosmos-workflow", ("engine-*",)),
        # The run history (history.db) lives in the user data folder.
        "real ~/.local/share/cosmos-workflow": (
            REAL_HOME / ".local" / "share" / "cosmos-workflow",
            (),
        ),
        "real ~/.ssh": (REAL_HOME / ".ssh", ()),
    }


def tree_state(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """relative path → (mtime_ns, size) of everything under `root` (folders too: a removed
    entry changes its folder's mtime); {} when `root` does not exist."""
    state: dict[str, tuple[int, int]] = {}
    if not root.is_dir():
        return state
    for folder, dirs, files in os.walk(root):
        if folder == str(root):
            dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, s) for s in skip)]
            files = [f for f in files if not any(fnmatch.fnmatch(f, s) for s in skip)]
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            state[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size)
    return state


def checkout_state(repo: Path) -> dict[str, tuple[str, int, int]] | None:
    """path → (git status, mtime_ns, size) of each changed, untracked or ignored file of the
    checkout (build noise aside); None when `repo` is not a git checkout."""
    proc = subprocess.run(
        ["git", "--no-optional-locks", "status", "--porcelain=v1", "-z", "--ignored"]
        + ["--untracked-files=all"],
        cwd=repo,
        capture_output=True,
    )
    if proc.returncode != 0:
        return None
    state = {}
    entries = proc.stdout.decode("utf-8", "surrogateescape").split("\0")
    for entry in entries:
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        if any(fnmatch.fnmatch(part, s) for part in Path(path).parts for s in BUILD_NOISE):
            continue
        try:
            st = os.lstat(repo / path)
            state[path] = (status, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            state[path] = (status, 0, -1)
    return state


def _snapshot(repo: Path) -> dict[str, dict]:
    snapshot = {label: tree_state(root, skip) for label, (root, skip) in guarded_trees().items()}
    snapshot[f"checkout {repo}"] = checkout_state(repo) or {}
    return snapshot


def _changes(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    changes = []
    for label, old in before.items():
        new = after[label]
        for path in sorted(set(old) | set(new)):
            if path not in new:
                changes.append(f"{label}: removed {path}")
            elif path not in old:
                changes.append(f"{label}: created {path}")
            elif old[path] != new[path]:
                changes.append(f"{label}: changed {path}")
    return changes


@pytest.fixture(scope="session", autouse=True)
def isolated_session(tmp_path_factory):
    """The session's HOME, XDG folders and COSMOS_USER_DIR are a temp folder (see module doc)."""
    engine_cache = _real_engine_cache()  # before HOME moves: the venvs stay where they are
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("COSMOS_") and name not in KEPT_ENV:
                mp.delenv(name)
        mp.setenv("COSMOS_ENGINE_CACHE", str(engine_cache))
        mp.setenv("HOME", str(home))
        for name, sub in (
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_STATE_HOME", ".local/state"),
        ):
            mp.setenv(name, str(home / sub))
        mp.setenv("COSMOS_USER_DIR", str(home / "cosmos-user"))
        yield home


@pytest.fixture(scope="module", autouse=True)
def nothing_written_outside(request, isolated_session):
    """Fail the module when its tests changed the checkout, ../shared/media or the real home."""
    repo = request.config.rootpath
    before = _snapshot(repo)
    yield
    changes = _changes(before, _snapshot(repo))
    if changes:
        shown = "\n  ".join(changes[:20]) + ("\n  …" if len(changes) > 20 else "")
        pytest.fail(
            f"{request.node.nodeid} wrote outside its temp folders:\n  {shown}", pytrace=False
        )


@pytest.fixture(autouse=True)
def isolated_user_state(tmp_path_factory, monkeypatch):
    """Every test gets its own user folder (config + cache) and a clean COSMOS_* environment.

    Like simonw/llm's LLM_USER_PATH: state is isolated through an environment variable. The
    whole session already runs in a throwaway home (`isolated_session`); this gives each test
    a fresh user folder of its own.
    """
    for name in list(os.environ):
        if name.startswith("COSMOS_") and name not in KEPT_ENV:
            monkeypatch.delenv(name)
    user_dir = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("COSMOS_USER_DIR", str(user_dir))
    return user_dir
