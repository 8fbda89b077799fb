"""`cosmos prepare`: write the frames the model will see, hint videos and previews."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import FrameCount, Inputs, JsonOutput, Recursive, orchestrator
from .output import handle_errors, print_json
from .render import render_check_report, render_prepared_item


@handle_errors
def prepare(
    ctx: typer.Context,
    inputs: Inputs = None,
    resolution: Annotated[
        str, typer.Option(help='"auto" (largest that fits), "source", a height, or WxH.')
    ] = "auto",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: hint_video_dir).")
    ] = None,
    preview: Annotated[
        bool, typer.Option("--preview", help="Also write a labelled contact sheet.")
    ] = False,
    frame_count: FrameCount = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt to count.")] = None,
    recursive: Recursive = False,
    json_output: JsonOutput = False,
) -> None:
    """Write each item's model frames (PNG) and hint video (H.264) at the chosen size.

    Example: cosmos prepare inputs/prompts/ --out inputs/hint_videos --preview

    Layout: OUT/<name>/frame_000.png …, OUT/<name>/hint.mp4, OUT/<name>/preview.png.
    """
    report = orchestrator(ctx).prepare(
        inputs,
        out_dir=out_dir,
        resolution=resolution,
        preview=preview,
        frame_count=frame_count,
        prompt=prompt,
        recursive=recursive,
        on_item=None if json_output else render_prepared_item,
    )
    if json_output:
        print_json(report.to_dict())
    else:
        render_check_report(report, f"prepared into {report.out_dir}")
    raise typer.Exit(report.exit_code)
