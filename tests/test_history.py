"""The run history: every upsample lands in SQLite (WAL, versioned schema, FTS5), the CLI lists,
shows, searches and exports it, and a locked or damaged database never costs a run.

The end-to-end tests run `cosmos upsample` over the real loopback sshd with the stand-in engine;
the store tests use records made by the real RunRecord/PlannedItem classes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cosmos_workflow.config import load_config, user_data_dir
from cosmos_workflow.history import SCHEMA_VERSION, History
from cosmos_workflow.history.store import migrate

from .history_env import cosmos, data_of, run_record
from .upsample_env import digest_tree, record_of, seed_specs, upsample

REPO = Path(__file__).resolve().parents[1]


def history_db(user_dir: Path) -> Path:
    return user_dir / "data" / "history.db"


# -- where it lives ---------------------------------------------------------------------------


def test_user_data_dir_follows_cosmos_user_dir_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("COSMOS_USER_DIR", str(tmp_path / "u"))
    assert user_data_dir() == tmp_path / "u" / "data"
    monkeypatch.delenv("COSMOS_USER_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_data_dir() == tmp_path / "xdg" / "cosmos-workflow"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_data_dir() == tmp_path / "home" / ".local" / "share" / "cosmos-workflow"


def test_history_db_key_moves_the_database(workdir, tmp_path):
    (workdir / "config.toml").write_text(f'[paths]\nhistory_db = "{tmp_path / "h.db"}"\n')
    assert load_config().paths.history_db == str(tmp_path / "h.db")
    History(tmp_path / "h.db").record_run(run_record({"a": ("a forklift", "A forklift.")}))
    listed = data_of(cosmos("history", "--json"))
    assert [run["job_id"] for run in listed] == ["0123456789abcdef"]


# -- the store --------------------------------------------------------------------------------


def test_database_is_wal_at_the_current_schema_version(tmp_path):
    path = tmp_path / "history.db"
    History(path).record_run(run_record({"a": ("x", "y")}))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "items", "items_fts"} <= names


def test_version_1_database_is_migrated_and_its_runs_become_searchable(tmp_path):
    path = tmp_path / "history.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)  # what the first release wrote: no mode, no full-text index
    conn.execute(
        "INSERT INTO runs (record_sha256, job_id, host, recorded_at, record, total, ok) "
        "VALUES ('x', 'feedfacefeedface', 'old-host', '2024-01-01T00:00:00Z', '{}', 1, 1)"
    )
    conn.execute(
        "INSERT INTO items (run_id, position, item_id, name, status, original_prompt, "
        "upsampled_prompt) VALUES (1, 0, 'fork', 'fork', 'ok', 'the forklift shot', "
        "'A forklift lifts a pallet.')"
    )
    conn.close()

    history = History(path)
    found = history.search("pallet")
    assert [(f["run"], f["name"], f["job_id"]) for f in found] == [(1, "fork", "feedfacefeedface")]
    assert history.schema_version() == 2
    assert history.run("1")["mode"] == "job"  # the new column's default for old runs
    # New runs land beside the migrated ones.
    history.record_run(run_record({"b": ("a pallet", "Two pallets.")}))
    assert sorted(f["run"] for f in history.search("pallet")) == [1, 2]


def test_database_from_a_newer_release_is_refused_and_left_alone(workdir, isolated_user_state):
    path = history_db(isolated_user_state)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = path.read_bytes()
    result = cosmos("history")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith(f"error: history database {path} has schema")
    assert "hint: upgrade cosmos-workflow" in result.stderr
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*.damaged-*"))


def test_a_run_is_stored_once_and_found_by_number_job_id_or_latest(tmp_path):
    history = History(tmp_path / "history.db")
    first = run_record({"a": ("a forklift", "A forklift.")})
    assert history.record_run(first) == history.record_run(first) == 1
    second = run_record({"b": ("b", "B.")}, job_id="fedcba9876543210")
    assert history.record_run(second) == 2
    assert history.run("latest")["job_id"] == "fedcba9876543210"
    assert history.run("1")["job_id"] == "0123456789abcdef"
    assert history.run("0123")["id"] == 1  # a job id's first digits
    assert [run["id"] for run in history.runs()] == [2, 1]
    assert [run["id"] for run in history.runs(limit=1)] == [2]


def test_search_text_is_words_never_fts_syntax(tmp_path):
    history = History(tmp_path / "history.db")
    history.record_run(
        run_record(
            {
                "fork": ("forklift: NEAR the dock", "A forklift near the dock."),
                "robot": ('robot "arm" -lab', "A robot arm in a lab."),
            }
        )
    )
    assert [f["name"] for f in history.search("forklift dock")] == ["fork"]
    assert [f["name"] for f in history.search('"arm" -lab')] == ["robot"]
    # FTS5 syntax (would be an error as a query) is a word like any other.
    assert [f["name"] for f in history.search("NEAR(")] == ["fork"]
    assert history.search("AND OR NOT * :") == []
    assert history.search("   ") == []


def test_reading_an_absent_history_creates_nothing(workdir, isolated_user_state):
    result = cosmos("history")
    assert result.exit_code == 0, result.output
    assert "no runs recorded yet" in result.stderr
    assert data_of(cosmos("history", "--json")) == []
    assert data_of(cosmos("history", "search", "x", "--json")) == []
    assert not history_db(isolated_user_state).exists()
    shown = cosmos("history", "show", "latest")
    assert shown.exit_code == 2
    assert shown.stderr.splitlines()[0].startswith("error: no runs in the history yet")
    assert "hint: `cosmos history` lists the recorded runs" in shown.stderr


RECORDER = """
import sys
from cosmos_workflow.history import History
from tests.history_env import run_record

path, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
history = History(path)
print("ready", flush=True)
sys.stdin.readline()  # "go": both processes start writing together
for n in range(count):
    history.record_run(run_record({f"{who}{n}": (f"{who} prompt {n}", f"{who} upsampled {n}")}))
print("done", flush=True)
"""


def test_two_processes_writing_at_once_both_land(tmp_path):
    path = tmp_path / "history.db"  # absent: both also race to create the schema
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(path), who, "25"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for who in ("alpha", "beta")
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, errors = proc.communicate(timeout=120)
        assert proc.returncode == 0, errors
        assert out.strip() == "done"
    history = History(path)
    names = sorted(item["name"] for run in history.export() for item in run["items"])
    assert names == sorted(f"{who}{n}" for who in ("alpha", "beta") for n in range(25))
    assert len(history.search("alpha upsampled")) == 25


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_lists_shows_searches_and_exports_in_human_and_json_forms(workdir, tmp_path):
    path = tmp_path / "h.db"
    (workdir / "config.toml").write_text(f'[paths]\nhistory_db = "{path}"\n')
    history = History(path)
    history.record_run(
        run_record({"fork": ("the forklift shot", "A yellow forklift."), "bad": ("x", None)}),
        save_dir=tmp_path / "out",
    )
    history.record_run(run_record({"robot": ("a robot", "A robot arm.")}, job_id="f" * 16))

    listed = cosmos("history")
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.stdout.splitlines() if line.startswith("│")]
    assert rows[0].split("│")[1].strip() == "2" and "ffffffffffffffff" in rows[0]
    assert "1 ok, 1 failed" in listed.stdout
    runs = data_of(cosmos("history", "--json", "--limit", "1"))
    assert [(r["id"], r["counts"]["total"]) for r in runs] == [(2, 1)]

    shown = cosmos("history", "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "original:  the forklift shot" in shown.stdout
    assert "upsampled: A yellow forklift." in shown.stdout
    assert "error: too long" in shown.stdout and "hint: shorten it" in shown.stdout
    run = data_of(cosmos("history", "show", "1", "--json"))
    assert run["save_dir"] == str(tmp_path / "out")
    assert run["kind"] == "cosmos-run-record"  # the run record's own shape, plus the history's
    assert run["items"][0]["frame_sha256"] == ["00" * 32, "64" * 32]

    found = cosmos("history", "search", "forklift")
    assert found.exit_code == 0, found.output
    assert "A yellow forklift." in found.stdout and "robot" not in found.stdout
    assert [f["name"] for f in data_of(cosmos("history", "search", "arm", "--json"))] == ["robot"]

    exported = cosmos("history", "export", "--jsonl")
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["id"], len(r["items"])) for r in lines] == [(1, 2), (2, 1)]
    assert lines[0] == run
    to_file = cosmos("history", "export", "-o", tmp_path / "all.jsonl")
    assert to_file.exit_code == 0, to_file.output
    assert (tmp_path / "all.jsonl").read_text() == exported.stdout


def test_import_adds_a_run_json_once_and_refuses_other_files(workdir, tmp_path):
    (workdir / "out").mkdir()
    record = run_record({"fork": ("forklift", "A forklift.")})
    (workdir / "out" / "run.json").write_text(json.dumps(record))
    first = data_of(cosmos("history", "import", workdir / "out" / "run.json", "--json"))
    again = data_of(cosmos("history", "import", workdir / "out" / "run.json", "--json"))
    assert [(e["run"], e["new"]) for e in first + again] == [(1, True), (1, False)]
    assert data_of(cosmos("history", "show", "latest", "--json"))["save_dir"] == str(
        workdir / "out"
    )
    (workdir / "spec.json").write_text('{"prompt": "x"}')
    refused = cosmos("history", "import", workdir / "spec.json")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[0].startswith("error: ")
    assert "is not a run record" in refused.stderr and "hint: " in refused.stderr
    missing = cosmos("history", "import", workdir / "nope.json")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


# -- a real run ---------------------------------------------------------------------------------


def test_upsample_is_recorded_and_found_by_history_search_and_show(
    setup, workdir, isolated_user_state
):
    prompts = seed_specs(workdir / "prompts", office_handover="a forklift by the loading dock")
    record = record_of(upsample(prompts, "--save-dir", workdir / "out", "--json"))
    assert history_db(isolated_user_state).is_file()

    runs = data_of(cosmos("history", "--json"))
    assert len(runs) == 1
    assert runs[0]["job_id"] == record["job_id"] and runs[0]["mode"] == "job"
    assert runs[0]["counts"] == record["counts"] == {"total": 2, "ok": 2, "failed": 0, "skipped": 0}
    assert runs[0]["save_dir"] == str(workdir / "out")

    found = data_of(cosmos("history", "search", "forklift", "--json"))
    assert [f["name"] for f in found] == ["office_handover"]
    assert found[0]["upsampled_prompt"].endswith("a forklift by the loading dock")

    shown = data_of(cosmos("history", "show", "latest", "--json"))
    by_name = {item["name"]: item for item in record["items"]}
    for item in shown["items"]:
        recorded = by_name[item["name"]]
        for key in ("original_prompt", "upsampled_prompt", "frame_sha256", "output", "input"):
            assert item[key] == recorded[key], key
        assert item["prompt_tokens_engine"] == recorded["prompt_tokens_engine"] > 0
        assert len(item["frame_sha256"]) == 2
    # The frames the model saw are the ones in the host's content-addressed cache.
    sent = {p.stem for p in (setup.jobs.parent / "cache").glob("*.png")}
    assert {sha for item in shown["items"] for sha in item["frame_sha256"]} == sent
    assert shown["frame_cache"] == str(isolated_user_state / "cache" / "frames")


def test_remote_results_records_its_run_too(setup, workdir):
    prompts = seed_specs(workdir / "prompts")
    job_id = record_of(upsample(prompts, "--save-dir", workdir / "out", "--json"))["job_id"]
    result = cosmos("remote", "results", job_id, prompts, "--save-dir", workdir / "again")
    assert result.exit_code == 0, result.output
    runs = data_of(cosmos("history", "--json"))
    assert [(r["job_id"], r["save_dir"]) for r in runs] == [
        (job_id, str(workdir / "again")),
        (job_id, str(workdir / "out")),
    ]


LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_locked_history_is_a_warning_and_the_run_still_writes_its_outputs(
    setup, workdir, isolated_user_state
):
    path = history_db(isolated_user_state)
    History(path).record_run(run_record({"old": ("older run", "Older.")}))
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        prompts = seed_specs(workdir / "prompts")
        result = upsample(prompts, "--save-dir", workdir / "out")
    finally:
        holder.communicate("release\n", timeout=30)
    assert result.exit_code == 0, result.output
    assert f"warning: run not recorded in the history: history database {path} is locked" in (
        result.stderr
    )
    assert "hint: the run's outputs and run.json are written" in result.stderr
    assert {p.name for p in (workdir / "out").glob("*.json")} >= {
        "office_handover.json",
        "robot_lab_night.json",
        "run.json",
    }
    assert [r["id"] for r in data_of(cosmos("history", "--json"))] == [1]
    # The recovery the hint names: the run lands from its run.json.
    cosmos("history", "import", workdir / "out" / "run.json")
    latest = data_of(cosmos("history", "show", "latest", "--json"))
    assert latest["job_id"] == json.loads((workdir / "out" / "run.json").read_text())["job_id"]


def test_damaged_history_is_moved_aside_and_history_says_how_to_recover(
    setup, workdir, isolated_user_state
):
    path = history_db(isolated_user_state)
    path.parent.mkdir(parents=True)
    garbage = b"this is no database " * 500
    path.write_bytes(garbage)
    prompts = seed_specs(workdir / "prompts")
    before = digest_tree(prompts)
    result = upsample(prompts, "--save-dir", workdir / "out")
    assert result.exit_code == 0, result.output
    (aside,) = path.parent.glob("history.db.damaged-*")
    assert aside.read_bytes() == garbage  # moved, never deleted or changed
    assert f"warning: history database {path} was damaged: moved aside to {aside}" in (
        result.stderr
    )
    assert (workdir / "out" / "run.json").is_file()
    assert digest_tree(prompts) == before
    # The run landed in the new database…
    assert len(data_of(cosmos("history", "--json"))) == 1
    # …and `cosmos history` keeps saying where the old one is and how to get it back.
    listed = cosmos("history")
    assert listed.exit_code == 0, listed.output
    assert f"note: a damaged history database was moved aside to {aside}" in listed.stderr
    assert f'hint: `sqlite3 {aside} ".recover" | sqlite3 recovered.db`' in listed.stderr


def test_unwritable_history_is_a_warning_not_a_failed_run(setup, workdir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the history's folder should be")
    monkeypatch.setenv("COSMOS_PATHS_HISTORY_DB", str(blocker / "history.db"))
    prompts = seed_specs(workdir / "prompts")
    result = upsample(prompts, "--save-dir", workdir / "out")
    assert result.exit_code == 0, result.output
    assert "warning: run not recorded in the history: cannot open the history database" in (
        result.stderr
    )
    assert (workdir / "out" / "run.json").is_file()


@pytest.mark.parametrize("ref", ["99", "nonsense", "abcdef0123456789"])
def test_show_of_an_unknown_run_is_one_error_with_a_hint(tmp_path, workdir, ref):
    path = tmp_path / "h.db"
    (workdir / "config.toml").write_text(f'[paths]\nhistory_db = "{path}"\n')
    History(path).record_run(run_record({"a": ("x", "y")}))
    result = cosmos("history", "show", ref)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"error: no run {ref} in the history ({path})"
    assert "hint: " in result.stderr


ODD_RECORD = {
    "kind": "cosmos-run-record",
    "job_id": ["not", "text"],
    "host": {"x": 1},
    "duration_s": "NaN",
    "counts": "all of them",
    "settings": ["max_model_len", 4096],
    "timings_s": 7,
    "load_errors": ["not a dict", {"message": "<b>x</b>", "hint": None}],
    "items": [
        "not an item",
        {
            "id": 5,
            "name": {"<script>": 1},
            "status": "ok",
            "original_prompt": "odd forklift",
            "upsampled_prompt": ["a", "list"],
            "frame_width": "wide",
            "frame_height": 1e400,
            "frame_count": True,
            "frame_sha256": "not a list",
            "prompt_tokens_engine": "-5",
            "generated_tokens": {"n": 1},
            "error": "a string error",
        },
    ],
}


def test_a_run_json_with_odd_values_imports_shows_and_reports_without_an_internal_error(
    workdir,
):
    path = workdir / "run.json"
    path.write_text(json.dumps(ODD_RECORD))
    for args in (
        ("history", "import", path),
        ("history",),
        ("history", "show", "latest"),
        ("history", "show", "latest", "--json"),
        ("history", "search", "forklift"),
        ("history", "export"),
        ("report", "-o", workdir / "odd.html"),
    ):
        result = cosmos(*args)
        assert result.exit_code == 0, (args, result.output)
    html = (workdir / "odd.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x" not in html
    assert "token counts unknown" in html
    item = data_of(cosmos("history", "show", "latest", "--json"))["items"][0]
    assert (item["frame_width"], item["frame_count"], item["frame_sha256"]) == (None, None, [])
    assert item["prompt_tokens_engine"] == -5 and item["error"] is None


def test_reading_a_damaged_history_moves_it_aside_and_says_so(workdir, isolated_user_state):
    path = history_db(isolated_user_state)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage" * 600)
    result = cosmos("history", "--json")
    assert result.exit_code == 0, result.output
    assert data_of(result) == []
    (aside,) = path.parent.glob("history.db.damaged-*")
    assert aside.read_bytes() == b"\x00garbage" * 600 and not path.exists()
    assert f"warning: history database {path} was damaged: moved aside to {aside}" in (
        result.stderr
    )
    assert f"note: a damaged history database was moved aside to {aside}" in result.stderr
