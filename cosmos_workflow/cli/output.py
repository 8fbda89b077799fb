"""How the CLI speaks: data on stdout, chatter on stderr, one `fail()` for expected errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from ..errors import CosmosError

# Data (tables, JSON) goes to stdout; progress, warnings and errors to stderr. When stdout is not
# a terminal (a pipe, a file, CI logs) tables get room instead of rich's 80-column default.
# Markup and emoji codes are off: names, paths and prompts are data (`x[/].json`, `:cat:`);
# styled text is built explicitly as rich Text.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
_PLAIN = {"soft_wrap": True, "highlight": False, "markup": False, "emoji": False}
out = Console(width=_WIDTH, **_PLAIN)
err = Console(stderr=True, width=_WIDTH, **_PLAIN)


def styled(text: str, style: str) -> Text:
    """A table cell or line in a style, its text taken literally."""
    return Text(str(text), style=style)


def local_time(epoch_s: float | None) -> str:
    """A worker's time stamp (seconds since 1970) as a person reads it: local clock, or "-"."""
    if epoch_s is None:
        return "-"
    try:
        return datetime.fromtimestamp(float(epoch_s)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(epoch_s)


def shown_path(path: str | os.PathLike | None) -> str:
    """A path as a person types it here: relative when under the current folder, or "-"."""
    if not path:
        return "-"
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    return str(path) if outside else relative


def print_error_line(label: str, message: str, hint: str | None = None) -> None:
    """`label: message` (in red) and an optional `hint: …` line, on stderr, literally."""
    err.print(Text.assemble((f"{label}: ", "red"), _one_line(message)))
    if hint:
        err.print(Text.assemble(("hint: ", "yellow"), _one_line(hint)))


def print_warning_event(kind: str, **data) -> None:
    """An `on_event` sink that prints only `warning` events (`warning: …` / `hint: …`)."""
    if kind == "warning":
        print_error_line("warning", data["message"], data.get("hint"))


def print_json(data: Any) -> None:
    """`{"data": …}` on stdout: the envelope every `--json` command prints."""
    sys.stdout.write(json.dumps({"data": data}, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def fail(error: CosmosError, *, as_json: bool = False, exit_code: int | None = None) -> NoReturn:
    """Print one `error:` line (and `hint:`), or the JSON error envelope, and exit."""
    if as_json:
        sys.stdout.write(json.dumps({"error": error.to_dict()}, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        err.print(Text.assemble(("error: ", "bold red"), _one_line(error.message)))
        if error.hint:
            err.print(Text.assemble(("hint: ", "yellow"), _one_line(error.hint)))
    raise typer.Exit(error.exit_code if exit_code is None else exit_code)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def debug_enabled() -> bool:
    return os.environ.get("COSMOS_DEBUG", "") not in ("", "0")


def handle_errors(func: Callable) -> Callable:
    """Turn `CosmosError` into `fail()`; unexpected errors into one line (traceback on debug)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("json_output"))
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except CosmosError as exc:
            if debug_enabled():
                raise
            fail(exc, as_json=as_json)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if debug_enabled():
                raise
            fail(
                CosmosError(
                    f"internal error: {type(exc).__name__}: {exc}",
                    "rerun with COSMOS_DEBUG=1 for a traceback and report it",
                    code="internal",
                ),
                as_json=as_json,
                exit_code=70,
            )

    return wrapper
