"""`cosmos upsample`: the main job — specs in, upsampled specs out, the model on the GPU host."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import orchestrator
from .output import err, handle_errors, out, print_error_line, print_json, shown_path, styled

# How the table's output column names what happens to an item's output file.
_OUTPUT_ACTIONS = {
    "new": "new",
    "replace": "replaces cosmos' earlier output",
    "keep": "keep: edited",
    "overwrite": "overwrite: edited",
    "unchanged": "unchanged",
    "kept": "kept: edited",
}


def _output_cell(item: dict) -> str:
    action = _OUTPUT_ACTIONS.get(item["output_action"] or "")
    shown = shown_path(item["output"]) if item["output"] else None
    shown = shown or (f"{item['id']}.json" if action else "-")
    return f"{shown} ({action})" if action else shown


def report_passed_over(record) -> None:
    """One stderr line naming the files in input folders that were not taken as inputs."""
    passed = record.passed_over
    if not passed:
        return
    names = ", ".join(p["path"] for p in passed[:3]) + (" …" if len(passed) > 3 else "")
    err.print(
        f"note: passed over {len(passed)} file(s) cosmos wrote (earlier outputs, run "
        f"records), not inputs: {names}; name a file on its own to use it as an input",
        markup=False,
        highlight=False,
    )


def report(record, *, json_output: bool) -> None:
    """The run record: JSON on stdout, or the table and one stderr line per problem."""
    report_passed_over(record)
    if json_output:
        print_json(record.to_dict())
    else:
        render_record(record)


def render_record(record) -> None:
    data = record.to_dict()
    if record.dry_run:
        title = "dry run: nothing sent"
    elif record.mode == "server":
        title = "served by the warm server"
    elif record.job_id:
        title = f"job {record.job_id}"
    else:
        title = "nothing sent: no item could be prepared"
    table = Table(title=title)
    for column in ("item", "status", "frames", "prompt tokens", "output", "detail"):
        # A path cut to "…" cannot be opened: names and paths fold onto more lines instead.
        table.add_column(column, overflow="fold" if column in ("item", "output") else "ellipsis")
    for item in data["items"]:
        frames = (
            f"{item['frames']}×{item['frame_width']}×{item['frame_height']}"
            if item["frame_width"]
            else "-"
        )
        tokens = item["prompt_tokens_engine"] or item["prompt_tokens_local"]
        detail = (item["error"] or {}).get("message") or item["finish_reason"] or ""
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(item["status"], "")
        table.add_row(
            item["name"],
            styled(item["status"], style),
            frames,
            "-" if tokens is None else f"{tokens:,}",
            _output_cell(item),
            detail,
        )
    out.print(table)
    for error in data["load_errors"]:
        print_error_line("error", error["message"], error.get("hint"))
    # The table cuts long messages: each item's whole error gets its own line.
    for item in data["items"]:
        if item["error"] and item["status"] in ("failed", "skipped"):
            label = "error" if item["status"] == "failed" else "skipped"
            error = item["error"]
            print_error_line(label, f"{item['name']}: {error['message']}", error.get("hint"))
    if record.dry_run:
        err.print(f"would send up to {record.bytes_to_send:,} bytes of frames")
        if record.remote_command:
            err.print(f"would run: {record.remote_command}", markup=False)
    else:
        counts = data["counts"]
        err.print(
            f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
            f"in {record.duration_s:.1f} s; {record.bytes_sent:,} bytes sent"
        )


class _Reporter:
    """Progress on stderr: a live bar on a terminal, plain lines elsewhere (logs, CI, pipes)."""

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed", markup=False),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not self.live,
        )
        self.task = self.progress.add_task("preparing", total=None, failed=0)
        self.last_reported = -1
        self.job_id: str | None = None

    def __enter__(self) -> _Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, **data) -> None:
        if kind == "job":
            self.job_id = data["job_id"]
        elif kind == "stage":
            self.progress.update(self.task, description=data["message"])
            if not self.live:
                err.print(data["message"], markup=False, highlight=False)
        elif kind == "progress":
            total, failed = data.get("total") or 0, data.get("failed", 0)
            finished = data.get("done", 0) + failed
            self.progress.update(self.task, total=total, completed=finished, failed=failed)
            # Without a live bar: a line per tenth of the batch, and at the end.
            step = max(1, total // 10)
            if (
                not self.live
                and finished
                and (finished == total or finished // step > self.last_reported // step)
            ):
                err.print(f"{finished}/{total} items finished ({failed} failed)", highlight=False)
                self.last_reported = finished
        elif kind == "log":
            self.progress.console.print(data["line"], markup=False, highlight=False)


def _interrupted(orch, job_id: str | None, cancel: bool):
    """Ctrl+C: stop streaming; cancel the remote job if asked (or told to); exit 130."""
    if job_id is None:
        err.print("interrupted before anything was started on the host")
        raise typer.Exit(130)
    if not cancel and sys.stdin.isatty():
        try:
            cancel = typer.confirm(f"\nCancel job {job_id} on the host?", default=False, err=True)
        except (KeyboardInterrupt, typer.Abort):
            cancel = False
    if cancel:
        orch.remote_cancel(job_id)
        err.print(f"cancelled job {job_id}; finished items are kept on the host")
        err.print("resume: run the same command again")
    else:
        err.print(f"job {job_id} keeps running on the host")
        err.print(
            f"reattach: run the same command again; or `cosmos remote status {job_id}`, "
            f"`cosmos remote logs {job_id} --follow`"
        )
    raise typer.Exit(130)


@handle_errors
def upsample(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Spec .json files or folders of specs.")],
    preprocess_videos: Annotated[
        bool,
        typer.Option(
            "--preprocess-videos",
            help="Resize clips to safe_resolution (or --max-resolution) first.",
        ),
    ] = False,
    max_resolution: Annotated[
        str | None,
        typer.Option(help='Frame size: a height like 480, WxH (kept in aspect), or "auto".'),
    ] = None,
    num_frames: Annotated[
        int | None, typer.Option(min=1, help="Frames the model sees (default 2).")
    ] = None,
    num_gpu: Annotated[
        int | None, typer.Option(min=1, help="GPUs for the model (tensor parallel).")
    ] = None,
    save_dir: Annotated[
        Path | None,
        typer.Option(help="Where upsampled specs go (default: local_outputs_dir)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; send nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Upsample specs already upsampled too.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace outputs edited since cosmos wrote them (other files never are).",
        ),
    ] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Descend into sub-folders.")
    ] = False,
    cancel_on_interrupt: Annotated[
        bool,
        typer.Option(
            "--cancel-on-interrupt", help="On Ctrl+C, cancel the job on the host without asking."
        ),
    ] = False,
    server: Annotated[
        bool | None,
        typer.Option(
            "--server/--no-server",
            help="Require the warm server (`cosmos serve start`) / force a batch job. "
            "Default: the server when one is ready with this run's settings, else a job.",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="An OpenAI-compatible server of your own, e.g. http://gpu:8000/v1 "
            "(API key: COSMOS_SERVER_API_KEY). Default: \\[server] endpoint.",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run record.")] = False,
) -> None:
    """Upsample prompts with Cosmos' Pixtral upsampler on the GPU host, in one batch.

    Example: cosmos upsample inputs/prompts/ --preprocess-videos --save-dir outputs/

    Exit codes: 0 all items upsampled; 1 some items failed (see the table or run.json);
    2 bad input; 3 unreadable video; 4 SSH or transfer failure; 5 the worker failed;
    130 interrupted (the job keeps running on the host unless cancelled).
    """
    orch = orchestrator(ctx)
    reporter = _Reporter()
    try:
        with reporter:
            record = orch.upsample(
                inputs,
                save_dir=save_dir,
                preprocess=preprocess_videos,
                max_resolution=max_resolution,
                num_frames=num_frames,
                num_gpu=num_gpu,
                dry_run=dry_run,
                force=force,
                overwrite=overwrite,
                recursive=recursive,
                server=server,
                endpoint=endpoint,
                on_event=reporter,
            )
    except KeyboardInterrupt:
        _interrupted(orch, reporter.job_id, cancel_on_interrupt)
    report(record, json_output=json_output)
    raise typer.Exit(record.exit_code)
