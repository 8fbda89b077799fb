"""`cosmos limits`: the largest frame size that fits, per context size and aspect ratio."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import FrameCount, JsonOutput, OutputTokens, orchestrator
from .output import handle_errors, print_json
from .render import render_limits


@handle_errors
def limits(
    ctx: typer.Context,
    max_model_len: Annotated[
        list[int] | None,
        typer.Option(min=1, help="Context sizes (repeatable; default 4096 8192 16384 32768)."),
    ] = None,
    aspect: Annotated[
        list[str] | None, typer.Option(help="Aspect ratios like 16:9 (repeatable).")
    ] = None,
    frame_count: FrameCount = None,
    prompt_tokens: Annotated[
        int | None,
        typer.Option(min=0, help="Text tokens incl. chat frame (default: NVIDIA's prompt)."),
    ] = None,
    output_tokens: OutputTokens = None,
    json_output: JsonOutput = False,
) -> None:
    """Show the largest frame size that fits each context size, exactly.

    Example: cosmos limits --max-model-len 4096 --aspect 16:9 --aspect 4:3
    """
    rows = orchestrator(ctx).limits(
        max_model_len=max_model_len,
        aspect=aspect,
        frame_count=frame_count,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
    )
    if json_output:
        print_json({"limits": rows})
    else:
        render_limits(rows)
