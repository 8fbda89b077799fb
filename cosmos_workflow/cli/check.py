"""`cosmos check`: exact token preflight, before any run."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import (
    FrameCount,
    Inputs,
    JsonOutput,
    MaxModelLen,
    OutputTokens,
    Recursive,
    orchestrator,
)
from .output import handle_errors, print_json
from .render import render_check_report


@handle_errors
def check(
    ctx: typer.Context,
    inputs: Inputs = None,
    prompt: Annotated[
        str | None, typer.Option(help="Prompt to count (default: each spec's own prompt).")
    ] = None,
    frame_count: FrameCount = None,
    max_model_len: MaxModelLen = None,
    output_tokens: OutputTokens = None,
    resolution: Annotated[
        str, typer.Option(help='"source", "auto", a height like 480, or WxH (kept in aspect).')
    ] = "source",
    recursive: Recursive = False,
    json_output: JsonOutput = False,
) -> None:
    """Count each input's exact prompt tokens and say whether it fits.

    Example: cosmos check inputs/prompts/ --resolution auto

    Exit codes: 0 every item fits; 1 some item is output_cut or too_long;
    2 a spec or argument is bad; 3 a video cannot be read.
    """
    report = orchestrator(ctx).check(
        inputs,
        prompt=prompt,
        frame_count=frame_count,
        max_model_len=max_model_len,
        output_tokens=output_tokens,
        resolution=resolution,
        recursive=recursive,
    )
    if json_output:
        print_json(report.to_dict())
    else:
        render_check_report(report, f"token check (resolution: {resolution})")
    raise typer.Exit(report.exit_code)
