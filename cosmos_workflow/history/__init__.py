"""The run history (SQLite, searchable) and the HTML report of a run."""

from .store import (
    SCHEMA_VERSION,
    History,
    record_run_or_warn,
    recover_hint,
)

__all__ = ["SCHEMA_VERSION", "History", "record_run_or_warn", "recover_hint"]
