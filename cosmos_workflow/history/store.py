"""The run history: every upsample run and its items in one SQLite file, searchable.

`<user data folder>/history.db` (`[paths] history_db` moves it). Tables (schema version 2):

    runs       one row per run: who, where, when, settings, counts, the whole run record (JSON)
    items      one row per item: prompts, tokens, frame size and hashes, finish reason, error
    items_fts  FTS5 index over the original and upsampled prompts (external content: items)

Why it is built this way:

- WAL journal: `cosmos history` reads while a run writes; a run's write is one short
  transaction, and a second writer waits for it (`BUSY_TIMEOUT_S`), so two runs writing at once
  both land.
- `PRAGMA user_version` is the schema version; `MIGRATIONS[n]` takes version n to n + 1, inside
  one IMMEDIATE transaction (two processes creating the file at once: one migrates, the other
  sees the result). A file from a newer cosmos-workflow is refused, never downgraded.
- A damaged file ("not a database", "malformed") is moved aside beside it, never deleted, and a
  new one started: the history never costs a run (`record_run_or_warn`).
- A run is stored once: a record's sha256 is unique, so importing a run.json twice adds it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from ..errors import HistoryError

# How long a write waits for another process's write to finish before giving up (a warning).
BUSY_TIMEOUT_S = 5.0
DAMAGED_INFIX = ".damaged-"

MIGRATIONS: list[list[str]] = [
    # 0 → 1: runs and their items.
    [
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            record_sha256 TEXT NOT NULL UNIQUE,
            job_id TEXT,
            host TEXT,
            transport TEXT,
            runner TEXT,
            model TEXT,
            started_at TEXT,
            finished_at TEXT,
            duration_s REAL,
            total INTEGER NOT NULL DEFAULT 0,
            ok INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            save_dir TEXT,
            recorded_at TEXT NOT NULL,
            record TEXT NOT NULL
        )""",
        "CREATE INDEX runs_job_id ON runs(job_id)",
        """CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            item_id TEXT,
            name TEXT,
            status TEXT,
            input TEXT,
            output TEXT,
            video TEXT,
            original_prompt TEXT,
            upsampled_prompt TEXT,
            frame_width INTEGER,
            frame_height INTEGER,
            frames INTEGER,
            frame_sha256 TEXT,
            prompt_tokens_local INTEGER,
            prompt_tokens_engine INTEGER,
            output_tokens INTEGER,
            finish_reason TEXT,
            error TEXT
        )""",
        "CREATE INDEX items_run_id ON items(run_id)",
    ],
    # 1 → 2: the run's mode (job | server), where its frames were cached, full-text search.
    [
        "ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'job'",
        "ALTER TABLE runs ADD COLUMN frame_cache TEXT",
        """CREATE VIRTUAL TABLE items_fts USING fts5(
            original_prompt, upsampled_prompt, content='items', content_rowid='id'
        )""",
        """CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN
            INSERT INTO items_fts(rowid, original_prompt, upsampled_prompt)
            VALUES (new.id, new.original_prompt, new.upsampled_prompt);
        END""",
        """CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN
            INSERT INTO items_fts(items_fts, rowid, original_prompt, upsampled_prompt)
            VALUES ('delete', old.id, old.original_prompt, old.upsampled_prompt);
        END""",
        # Items recorded before this version become searchable too.
        "INSERT INTO items_fts(items_fts) VALUES ('rebuild')",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_ITEM_COLUMNS = (
    "item_id",
    "name",
    "status",
    "input",
    "output",
    "video",
    "original_prompt",
    "upsampled_prompt",
    "frame_width",
    "frame_height",
    "frames",
    "frame_sha256",
    "prompt_tokens_local",
    "prompt_tokens_engine",
    "output_tokens",
    "finish_reason",
    "error",
)
_SUMMARY_COLUMNS = (
    "id, job_id, mode, host, transport, runner, model, started_at, finished_at, duration_s, "
    "total, ok, failed, skipped, save_dir"
)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the open database to schema version `target`; returns the version it had.

    `conn` must be in autocommit mode (isolation_level=None): each migration step runs inside
    the one IMMEDIATE transaction opened here.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= target:
        return version
    with _write(conn):
        # Another process may have migrated between the read above and the lock.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in MIGRATIONS[version:target]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(target)}")
    return version


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One IMMEDIATE write transaction on an autocommit connection: committed when the block
    ends (returns included), rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def record_sha256(record: dict) -> str:
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _damaged(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file is not (or no longer) a whole database."""
    name = getattr(exc, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(exc)
    return "not a database" in text or "malformed" in text


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class History:
    """The history database at `path`: record runs, list, show, search and export them.

    >>> history = History(Path("~/.local/share/cosmos-workflow/history.db").expanduser())
    >>> history.run("latest")["items"][0]["upsampled_prompt"]

    Reading an absent file finds no runs and creates nothing. Every sqlite3 failure becomes a
    `HistoryError` saying what happened to the file and what to do.
    """

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        self.timeout_s = timeout_s
        # Where a damaged file was moved during this object's life (for the caller to report).
        self.set_aside: Path | None = None

    # -- opening ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"history database {self.path} has schema version {version}; this "
                    f"cosmos-workflow knows up to {SCHEMA_VERSION}",
                    "upgrade cosmos-workflow, or point [paths] history_db at another file",
                    code="history_too_new",
                )
            _use_wal(conn, self.timeout_s)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, action: Callable[[sqlite3.Connection], object], *, create: bool):
        """`action(conn)` on the open database; a damaged file is moved aside and `action`
        retried once on a new one. Without `create`, an absent file gives None."""
        if not create and not self.path.exists():
            return None
        for attempt in (1, 2):
            conn = None
            try:
                if create:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = self._connect()
                return action(conn)
            except sqlite3.Error as exc:
                if attempt == 1 and _damaged(exc):
                    if conn is not None:
                        conn.close()
                        conn = None
                    self.set_aside = self._move_aside()
                    if not create:
                        return None
                    continue
                raise self._error(exc) from exc
            except OSError as exc:
                raise HistoryError(
                    f"cannot open the history database {self.path}: {exc.strerror or exc}",
                    "check that its folder is writable, or set [paths] history_db to another file",
                    code="history_unwritable",
                ) from exc
            finally:
                if conn is not None:
                    conn.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _move_aside(self) -> Path:
        """Rename the damaged file (and its -wal/-shm companions) beside it; never delete."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}{DAMAGED_INFIX}{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}{DAMAGED_INFIX}{stamp}-{n}")
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                companion = Path(f"{self.path}{suffix}")
                if companion.exists():
                    os.replace(companion, f"{aside}{suffix}")
        except OSError as exc:
            raise HistoryError(
                f"history database {self.path} is damaged and cannot be moved aside: "
                f"{exc.strerror or exc}",
                "move it away yourself (cosmos starts a new one) and recover it with "
                f'`sqlite3 {self.path} ".recover" | sqlite3 recovered.db`',
                code="history_damaged",
            ) from exc
        return aside

    def _error(self, exc: sqlite3.Error) -> HistoryError:
        text = str(exc)
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith("SQLITE_BUSY") or "locked" in text:
            return HistoryError(
                f"history database {self.path} is locked: another process held it for more "
                f"than {self.timeout_s:g} s",
                "the run's outputs and run.json are written; add the run later with "
                "`cosmos history import <save dir>/run.json`",
                code="history_locked",
            )
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            return HistoryError(
                f"history database {self.path}: the disk is full",
                "free some space; the run's outputs and run.json are written: add the run "
                "later with `cosmos history import <save dir>/run.json`",
                code="history_full",
            )
        return HistoryError(
            f"history database {self.path}: {text}",
            "check that the file and its folder are writable, or set [paths] history_db to "
            "another file",
            code="history",
        )

    # -- writing ----------------------------------------------------------------------------

    def record_run(
        self,
        record: dict,
        *,
        save_dir: str | os.PathLike | None = None,
        frame_cache: str | os.PathLike | None = None,
    ) -> int:
        """Store a run record (the shape of `RunRecord.to_dict()`); returns the run's number.

        A record stored before (same content) is not stored again: its number is returned.
        """
        digest = record_sha256(record)
        counts = record.get("counts") if isinstance(record.get("counts"), dict) else {}

        def insert(conn: sqlite3.Connection) -> int:
            with _write(conn):
                row = conn.execute(
                    "SELECT id FROM runs WHERE record_sha256 = ?", (digest,)
                ).fetchone()
                if row is not None:
                    return row[0]
                cursor = conn.execute(
                    "INSERT INTO runs (record_sha256, job_id, host, transport, runner, model, "
                    "mode, started_at, finished_at, duration_s, total, ok, failed, skipped, "
                    "save_dir, frame_cache, recorded_at, record) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        digest,
                        _text(record.get("job_id")),
                        _text(record.get("host")),
                        _text(record.get("transport")),
                        _text(record.get("runner")),
                        _text(record.get("model")),
                        _text(record.get("mode")) or "job",
                        _text(record.get("started_at")),
                        _text(record.get("finished_at")),
                        _float_or_none(record.get("duration_s")),
                        _int_or_none(counts.get("total")) or 0,
                        _int_or_none(counts.get("ok")) or 0,
                        _int_or_none(counts.get("failed")) or 0,
                        _int_or_none(counts.get("skipped")) or 0,
                        None if save_dir is None else str(Path(save_dir).absolute()),
                        None if frame_cache is None else str(Path(frame_cache).absolute()),
                        _utc_now(),
                        json.dumps(record, ensure_ascii=False, default=str),
                    ),
                )
                run_id = cursor.lastrowid
                conn.executemany(
                    f"INSERT INTO items (run_id, position, {', '.join(_ITEM_COLUMNS)}) "
                    f"VALUES (?, ?, {', '.join('?' * len(_ITEM_COLUMNS))})",
                    [
                        (run_id, position, *_item_row(item))
                        for position, item in enumerate(_items_of(record))
                    ],
                )
            return run_id

        return self._run(insert, create=True)

    # -- reading ----------------------------------------------------------------------------

    def runs(self, limit: int | None = 20) -> list[dict]:
        """Run summaries, newest first."""

        def query(conn):
            sql = f"SELECT {_SUMMARY_COLUMNS} FROM runs ORDER BY id DESC"
            params: tuple = ()
            if limit is not None:
                sql += " LIMIT ?"
                params = (limit,)
            return [_summary(row) for row in conn.execute(sql, params)]

        return self._run(query, create=False) or []

    def run(self, ref: str | int) -> dict:
        """One run (`latest`, its number, or a job id: that job's latest run) with its items:
        the run record as run.json has it, plus `id`, `mode`, `save_dir`, `frame_cache`."""

        def query(conn):
            row = _find_run(conn, str(ref))
            if row is None:
                return None
            return _full_run(conn, row)

        found = self._run(query, create=False)
        if found is None:
            raise HistoryError(
                f"no run {ref} in the history ({self.path})"
                if str(ref) != "latest"
                else f"no runs in the history yet ({self.path})",
                "`cosmos history` lists the recorded runs; `cosmos upsample` records one",
                code="run_not_found",
            )
        return found

    def search(self, text: str, limit: int = 50) -> list[dict]:
        """Items whose original or upsampled prompt holds every word of `text`, best first."""
        query_text = _fts_query(text)
        if not query_text:
            return []

        def query(conn):
            rows = conn.execute(
                "SELECT items.*, runs.started_at AS run_started_at, runs.job_id AS job_id, "
                "runs.host AS host FROM items_fts "
                "JOIN items ON items.id = items_fts.rowid "
                "JOIN runs ON runs.id = items.run_id "
                "WHERE items_fts MATCH ? ORDER BY items_fts.rank, items.run_id DESC LIMIT ?",
                (query_text, limit),
            )
            return [
                {
                    "run": row["run_id"],
                    "job_id": row["job_id"],
                    "started_at": row["run_started_at"],
                    "host": row["host"],
                    **_item_dict(row),
                }
                for row in rows
            ]

        return self._run(query, create=False) or []

    def export(self) -> Iterator[dict]:
        """Every run as `run()` gives it, oldest first."""

        def query(conn):
            rows = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
            return [_full_run(conn, row) for row in rows]

        yield from self._run(query, create=False) or []

    def schema_version(self) -> int | None:
        return self._run(
            lambda conn: conn.execute("PRAGMA user_version").fetchone()[0], create=False
        )

    def damaged_files(self) -> list[Path]:
        """Damaged history files moved aside earlier (kept until the user deletes them)."""
        pattern = f"{self.path.name}{DAMAGED_INFIX}*"
        return sorted(
            p
            for p in self.path.parent.glob(pattern)
            if not p.name.endswith(("-wal", "-shm")) and p.is_file()
        )


def recover_hint(damaged: Path) -> str:
    """How to get back what a damaged history file still holds."""
    return (
        f'`sqlite3 {damaged} ".recover" | sqlite3 recovered.db` saves what is readable; '
        f"delete {damaged.name} when done (cosmos never deletes it)"
    )


def record_run_or_warn(
    path: str | os.PathLike,
    record: dict,
    *,
    save_dir: str | os.PathLike | None = None,
    frame_cache: str | os.PathLike | None = None,
    on_event: Callable[..., None],
) -> int | None:
    """`History(path).record_run(...)` for the end of a run: it never raises into the run.

    A failure (locked, full, unwritable, damaged beyond moving aside, or a bug) becomes one
    `on_event("warning", message=..., hint=...)`; a damaged file moved aside is one too.
    """
    history = History(path)
    try:
        run_id = history.record_run(record, save_dir=save_dir, frame_cache=frame_cache)
    except HistoryError as exc:
        message = f"run not recorded in the history: {exc.message}"
        on_event("warning", message=message, hint=exc.hint)
        return None
    except Exception as exc:  # noqa: BLE001 - the history must never cost a run
        on_event(
            "warning",
            message=f"run not recorded in the history: {type(exc).__name__}: {exc}",
            hint="the run's outputs are written; rerun with COSMOS_DEBUG=1 and report it",
        )
        return None
    finally:
        if history.set_aside is not None:
            on_event(
                "warning",
                message=f"history database {history.path} was damaged: moved aside to "
                f"{history.set_aside}; a new one was started",
                hint=recover_hint(history.set_aside),
            )
    return run_id


def _use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch the file to WAL mode (once per file). Two processes creating the file at once:
    SQLite answers "locked" to the switch at once, without waiting on its busy timeout, so the
    switch is retried until `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


# -- rows → dicts -------------------------------------------------------------------------------


_INT_COLUMNS = frozenset(
    {
        "frame_width",
        "frame_height",
        "frames",
        "prompt_tokens_local",
        "prompt_tokens_engine",
        "output_tokens",
    }
)


def _int_or_none(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def _float_or_none(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is None or math.isfinite(number) else None


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# Columns named as in the first run records; the record's key today, then its older name.
_RECORD_KEYS = {
    "item_id": ("id",),
    "frames": ("frame_count", "frames"),
    "output_tokens": ("generated_tokens", "output_tokens"),
}


def _record_value(item: dict, column: str):
    for key in _RECORD_KEYS.get(column, (column,)):
        if key in item:
            return item[key]
    return None


def _item_row(item: dict) -> tuple:
    """An item's column values; what a record from elsewhere (an imported run.json) holds in
    the wrong type is stored as the reader expects it: numbers or NULL, text, lists, dicts."""
    values = []
    for column in _ITEM_COLUMNS:
        value = _record_value(item, column)
        if column in _INT_COLUMNS:
            value = _int_or_none(value)
        elif column == "frame_sha256":
            hashes = value if isinstance(value, list) else []
            value = json.dumps([h for h in hashes if isinstance(h, str)])
        elif column == "error":
            value = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None
        else:
            value = _text(value)
        values.append(value)
    return tuple(values)


def _items_of(record: dict) -> list[dict]:
    items = record.get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _item_dict(row: sqlite3.Row) -> dict:
    item = {_RECORD_KEYS.get(c, (c,))[0]: row[c] for c in _ITEM_COLUMNS}
    item["frame_sha256"] = json.loads(row["frame_sha256"]) if row["frame_sha256"] else []
    item["error"] = json.loads(row["error"]) if row["error"] else None
    return item


def _summary(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "job_id": row["job_id"],
        "mode": row["mode"],
        "host": row["host"],
        "transport": row["transport"],
        "runner": row["runner"],
        "model": row["model"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_s": row["duration_s"],
        "counts": {k: row[k] for k in ("total", "ok", "failed", "skipped")},
        "save_dir": row["save_dir"],
    }


def _full_run(conn: sqlite3.Connection, row: sqlite3.Row) -> dict:
    try:
        record = json.loads(row["record"])
    except ValueError:
        record = {}
    items = conn.execute(
        "SELECT * FROM items WHERE run_id = ? ORDER BY position", (row["id"],)
    ).fetchall()
    return {
        **record,
        "id": row["id"],
        "mode": row["mode"],
        "save_dir": row["save_dir"],
        "frame_cache": row["frame_cache"],
        "recorded_at": row["recorded_at"],
        # The stored columns, not the JSON: what search and the report see.
        "items": [_item_dict(item) for item in items],
    }


def _find_run(conn: sqlite3.Connection, ref: str) -> sqlite3.Row | None:
    ref = ref.strip()
    if ref == "latest":
        return conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    if ref.isdigit() and len(ref) < 16:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(ref),)).fetchone()
        if row is not None:
            return row
    if len(ref) >= 4 and all(c in "0123456789abcdef" for c in ref.lower()):
        # A job id or its first digits: that job's latest run.
        return conn.execute(
            "SELECT * FROM runs WHERE job_id LIKE ? ORDER BY id DESC LIMIT 1",
            (ref.lower() + "%",),
        ).fetchone()
    return None


def _fts_query(text: str) -> str:
    """Each word of `text` as an FTS5 phrase (all must match): the user's text is data, never
    FTS5 syntax (`-`, `:`, `"`, `NEAR`, `*` stay words)."""
    words = text.split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)
