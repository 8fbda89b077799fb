"""`cosmos history …`: the runs recorded in the history database — list, show, search, export."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ..errors import HistoryError, SpecError
from ..fsutil import atomic_write_text
from ..history import History, recover_hint
from ..specs.reading import RUN_RECORD_KIND
from .common import orchestrator
from .output import err, handle_errors, out, print_error_line, print_json, shown_path, styled

app = typer.Typer(
    help="The runs `cosmos upsample` recorded: list, show, search, export.",
    invoke_without_command=True,
)


def open_history(ctx: typer.Context) -> History:
    return History(orchestrator(ctx.find_root()).history_path)


def report_damage(history: History) -> None:
    """stderr notes: a damaged file moved aside now, and earlier ones still kept beside it."""
    if history.set_aside is not None:
        print_error_line(
            "warning",
            f"history database {history.path} was damaged: moved aside to {history.set_aside}; "
            "a new one was started",
        )
    for damaged in history.damaged_files():
        print_error_line(
            "note",
            f"a damaged history database was moved aside to {damaged}: runs recorded in it "
            "are not listed",
            recover_hint(damaged),
        )


def when(stamp: str | None) -> str:
    """A record's UTC time stamp as local time."""
    if not stamp:
        return "-"
    try:
        moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@app.callback()
@handle_errors
def history(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List recorded runs, newest first (with no subcommand).

    Example: cosmos history --limit 5
    """
    if ctx.invoked_subcommand is not None:
        return
    store = open_history(ctx)
    runs = store.runs(limit)
    if json_output:
        print_json(runs)
    else:
        render_runs(store, runs)
    report_damage(store)


def render_runs(store: History, runs: list[dict]) -> None:
    if not runs:
        err.print(f"no runs recorded yet in {store.path}", markup=False, highlight=False)
        return
    table = Table(title=f"history: {shown_path(store.path)}")
    for column in ("run", "started", "mode", "host", "job", "items", "duration", "save folder"):
        table.add_column(column, overflow="fold" if column == "save folder" else "ellipsis")
    for run in runs:
        counts = run["counts"]
        items = Text(f"{counts['ok']} ok")
        if counts["failed"]:
            items.append(f", {counts['failed']} failed", style="red")
        if counts["skipped"]:
            items.append(f", {counts['skipped']} skipped", style="yellow")
        duration = "-" if run["duration_s"] is None else f"{run['duration_s']:.1f} s"
        table.add_row(
            str(run["id"]),
            when(run["started_at"]),
            run["mode"],
            run["host"] or "-",
            run["job_id"] or "-",
            items,
            duration,
            shown_path(run["save_dir"]),
        )
    out.print(table)


@app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help='A run number, a job id, or "latest".')] = "latest",
    json_output: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Show one run: its settings and each item's original and upsampled prompt.

    Example: cosmos history show latest
    """
    store = open_history(ctx)
    found = store.run(run)
    if json_output:
        print_json(found)
    else:
        render_run(found)
    report_damage(store)


def render_run(run: dict) -> None:
    counts = run.get("counts") if isinstance(run.get("counts"), dict) else {}
    out.print(
        Text.assemble(
            (f"run {run['id']}", "bold"),
            f"  {when(run.get('started_at'))}  {run.get('mode')} on {run.get('host')}  "
            f"job {run.get('job_id')}  {counts.get('ok', 0)} ok, {counts.get('failed', 0)} "
            f"failed, {counts.get('skipped', 0)} skipped  in {run.get('duration_s')} s",
        )
    )
    out.print(Text(f"save folder: {run.get('save_dir')}"))
    for item in run["items"]:
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(item["status"], "")
        out.print()
        out.print(
            Text.assemble(
                (item["name"] or item["id"] or "", "bold"), "  ", styled(item["status"], style)
            )
        )
        size = (
            f"{item['frame_count']} × {item['frame_width']}×{item['frame_height']}"
            if item["frame_width"]
            else "-"
        )
        tokens = item["prompt_tokens_engine"] or item["prompt_tokens_local"]
        generated = item["generated_tokens"]
        out.print(
            Text(
                f"  frames {size}; prompt tokens {'-' if tokens is None else tokens}; "
                f"output tokens {'-' if generated is None else generated}; "
                f"finish {item['finish_reason'] or '-'}"
            )
        )
        out.print(Text(f"  input:     {item['input']}"))
        out.print(Text(f"  output:    {item['output'] or '-'}"))
        out.print(Text.assemble(("  original:  ", "dim"), item["original_prompt"] or ""))
        if item["upsampled_prompt"] is not None:
            out.print(Text.assemble(("  upsampled: ", "dim"), item["upsampled_prompt"]))
        if item["finish_reason"] == "length":
            out.print(styled("  output cut: the model stopped at its token limit", "yellow"))
        if item["error"]:
            error = item["error"]
            out.print(styled(f"  error: {error.get('message')}", "red"))
            if error.get("hint"):
                out.print(styled(f"  hint: {error['hint']}", "yellow"))


@app.command("search")
@handle_errors
def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="Words that must all appear in a prompt.")],
    limit: Annotated[int, typer.Option(min=1, help="How many items at most.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find items whose original or upsampled prompt holds every word of TEXT (full-text).

    Example: cosmos history search "forklift warehouse"
    """
    store = open_history(ctx)
    found = store.search(text, limit)
    if json_output:
        print_json(found)
    else:
        render_found(found, text)
    report_damage(store)


def render_found(found: list[dict], text: str) -> None:
    if not found:
        err.print(f"no prompt holds {text!r}", markup=False, highlight=False)
        return
    table = Table(title=f"{len(found)} item(s) matching {text!r}")
    table.add_column("run")
    table.add_column("started")
    table.add_column("item", overflow="fold")
    table.add_column("original prompt", overflow="fold", ratio=1)
    table.add_column("upsampled prompt", overflow="fold", ratio=2)
    for item in found:
        table.add_row(
            str(item["run"]),
            when(item["started_at"]),
            item["name"] or item["id"] or "-",
            item["original_prompt"] or "",
            item["upsampled_prompt"] or "-",
        )
    out.print(table)


@app.command("export")
@handle_errors
def export(
    ctx: typer.Context,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="One run per line as JSON (the only format).")
    ] = True,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write to this file (default: stdout).", dir_okay=False
        ),
    ] = None,
) -> None:
    """Export every run, oldest first, one JSON object per line (as `history show --json`).

    Example: cosmos history export --jsonl -o history.jsonl
    """
    store = open_history(ctx)
    lines = [json.dumps(run, ensure_ascii=False, default=str) + "\n" for run in store.export()]
    if output is None:
        out.file.write("".join(lines))
        out.file.flush()
    else:
        atomic_write_text(output, "".join(lines))
        err.print(f"wrote {len(lines)} run(s) to {output}", markup=False, highlight=False)
    report_damage(store)


@app.command("import")
@handle_errors
def import_runs(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(help="run.json files (a save folder's, or its runs/*.json).")
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add runs from their run.json files (e.g. one a locked database could not take).

    Example: cosmos history import outputs/run.json

    A run already in the history is not added twice.
    """
    records = [(path, _read_run_record(path)) for path in files]
    store = open_history(ctx)
    before = {run["id"] for run in store.runs(None)}
    added = []
    for path, record in records:
        save_dir = path.parent.parent if path.parent.name == "runs" else path.parent
        run_id = store.record_run(record, save_dir=save_dir)
        added.append({"file": str(path), "run": run_id, "new": run_id not in before})
        before.add(run_id)
    if json_output:
        print_json(added)
    else:
        for entry in added:
            state = "added as" if entry["new"] else "already in the history as"
            err.print(f"{entry['file']}: {state} run {entry['run']}", markup=False)
    report_damage(store)


def _read_run_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path} does not exist", "give a run.json from a save folder") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SpecError(
            f"{path} is not a readable run record: {exc}",
            "give a run.json that `cosmos upsample` wrote",
        ) from None
    if not isinstance(record, dict) or record.get("kind") != RUN_RECORD_KIND:
        raise HistoryError(
            f'{path} is not a run record (no "kind": "{RUN_RECORD_KIND}")',
            "give a run.json that `cosmos upsample` wrote (a save folder's, or its runs/*.json)",
            code="not_a_run_record",
        )
    return record
