"""`cosmos upsample`: the main job — specs in, upsampled specs out, the model on the GPU host."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import FrameCount, Inputs, MaxModelLen, OutputTokens, Recursive, orchestrator
from .output import err, handle_errors
from .render import Reporter, report


def _interrupted(orch, reporter: Reporter, cancel: bool):
    """Ctrl+C: stop streaming; cancel the remote job if asked (or told to); exit 130."""
    job_id = reporter.job_id
    if reporter.mode == "server":
        err.print("interrupted: the answers that came are kept (nothing was written yet)")
        err.print("resume: run the same command again; only the items without one are sent")
        raise typer.Exit(130)
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
    inputs: Inputs = None,
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
    frame_count: FrameCount = None,
    max_model_len: MaxModelLen = None,
    output_tokens: OutputTokens = None,
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
    recursive: Recursive = False,
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
    """Upsample prompts with Cosmos' Pixtral upsampler on the GPU host.

    Example: cosmos upsample inputs/prompts/ --preprocess-videos --save-dir outputs/

    Uses the warm server (`cosmos serve start`) when one is ready with these settings,
    else a batch job that loads the model; it says which and why.

    Exit codes: 0 all items upsampled; 1 some items failed (see the table or run.json);
    2 bad input; 3 unreadable video; 4 SSH or transfer failure;
    5 the worker or the server failed;
    130 interrupted (a job keeps running on the host unless cancelled).
    """
    orch = orchestrator(ctx)
    reporter = Reporter()
    try:
        with reporter:
            record = orch.upsample(
                inputs,
                save_dir=save_dir,
                preprocess_videos=preprocess_videos,
                max_resolution=max_resolution,
                frame_count=frame_count,
                max_model_len=max_model_len,
                output_tokens=output_tokens,
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
        _interrupted(orch, reporter, cancel_on_interrupt)
    report(record, json_output=json_output)
    raise typer.Exit(record.exit_code)
