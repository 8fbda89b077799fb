"""The suite's isolation (tests/isolation.py) holds: a test that writes outside its temp folders
fails, and module- or session-scoped fixtures already run in the throwaway home.

The stray writes are made by a separate pytest run on a tiny throwaway checkout (a git repo in a
temp folder, with the plugin loaded), so this suite never writes into its own checkout: there,
the "real home" is this session's throwaway home.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .engine import engine_cache_dir
from .isolation import REAL_HOME

REPO = Path(__file__).resolve().parents[1]

INNER_TESTS = {
    "test_writes_checkout.py": """
from pathlib import Path

def test_writes_into_the_checkout():
    (Path(__file__).parent / "stray-output.json").write_text("{}")
""",
    "test_writes_ignored.py": """
from pathlib import Path

def test_writes_into_an_ignored_folder_of_the_checkout():
    (Path(__file__).parent / "outputs").mkdir()
    (Path(__file__).parent / "outputs" / "run.json").write_text("{}")
""",
    "test_writes_real_home.py": """
from tests.isolation import REAL_HOME

def test_writes_the_real_user_config():
    folder = REAL_HOME / ".config" / "cosmos-workflow"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text("[remote]\\n")
""",
    "test_writes_real_history.py": """
from tests.isolation import REAL_HOME

def test_writes_the_real_run_history():
    folder = REAL_HOME / ".local" / "share" / "cosmos-workflow"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.db").write_bytes(b"")
""",
    "test_stays_inside.py": """
from pathlib import Path

from tests.isolation import REAL_HOME

def test_writes_only_temp_and_the_isolated_home(tmp_path):
    (tmp_path / "out.json").write_text("{}")
    assert Path.home() != REAL_HOME
    (Path.home() / ".cache" / "cosmos-workflow").mkdir(parents=True)
""",
}


@pytest.fixture
def inner_run(tmp_path):
    """Run INNER_TESTS in a throwaway git checkout with the isolation plugin; its 'real home'
    is a folder of ours. Returns (completed process, checkout, real home)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "pytest.ini").write_text("[pytest]\n")
    (checkout / ".gitignore").write_text("/outputs/\n")
    for name, text in INNER_TESTS.items():
        (checkout / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)
    home = tmp_path / "real-home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO))
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "PYENV_ROOT"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.isolation", "-p", "no:cacheprovider"]
        + ["-rA", "-q", "--basetemp", str(tmp_path / "inner-tmp"), str(checkout)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, checkout, home


def test_writing_outside_the_temp_folders_fails_the_test_module(inner_run):
    proc, checkout, home = inner_run
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ERROR ")}
    assert errors == {
        "test_writes_checkout.py::test_writes_into_the_checkout",
        "test_writes_ignored.py::test_writes_into_an_ignored_folder_of_the_checkout",
        "test_writes_real_home.py::test_writes_the_real_user_config",
        "test_writes_real_history.py::test_writes_the_real_run_history",
    }, proc.stdout
    assert "PASSED test_stays_inside.py::test_writes_only_temp_and_the_isolated_home" in proc.stdout
    assert "test_writes_checkout.py wrote outside its temp folders" in proc.stdout
    assert f"checkout {checkout}: created stray-output.json" in proc.stdout
    assert f"checkout {checkout}: created outputs/run.json" in proc.stdout
    assert "real ~/.config/cosmos-workflow: created config.toml" in proc.stdout
    assert "real ~/.local/share/cosmos-workflow: created history.db" in proc.stdout
    # The inner session's own throwaway home is not the real one: nothing landed there.
    assert not (home / ".cache").exists()


@pytest.fixture(scope="module")
def home_seen_by_a_module_fixture():
    """What a module-scoped fixture (like the real-engine run) sees: it runs before any
    function-scoped fixture, so only session-wide isolation can cover it."""
    return {
        "home": Path.home(),
        "user_dir": os.environ.get("COSMOS_USER_DIR"),
        "cache": os.environ.get("XDG_CACHE_HOME"),
        "engine_cache": engine_cache_dir(),
    }


def test_module_fixtures_already_run_in_the_throwaway_home(home_seen_by_a_module_fixture):
    seen = home_seen_by_a_module_fixture
    assert seen["home"] != REAL_HOME
    assert Path(seen["user_dir"]).is_relative_to(seen["home"])
    assert Path(seen["cache"]).is_relative_to(seen["home"])
    # ... while the engine venvs are still looked up where scripts/setup_engine.sh put them.
    assert not seen["engine_cache"].is_relative_to(seen["home"])
