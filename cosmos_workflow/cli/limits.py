"""`cosmos limits`: the largest frame size that fits, per context size and aspect ratio."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..errors import CosmosError
from .common import orchestrator
from .output import handle_errors, out, print_json


@handle_errors
def limits(
    ctx: typer.Context,
    max_model_len: Annotated[
        list[int] | None,
        typer.Option(min=1, help="Context sizes (repeatable; default 4096 8192 16384 32768)."),
    ] = None,
    frames: Annotated[int | None, typer.Option(min=1, help="Frames per item.")] = None,
    aspect: Annotated[
        list[str] | None, typer.Option(help="Aspect ratios like 16:9 (repeatable).")
    ] = None,
    prompt_tokens: Annotated[
        int | None,
        typer.Option(min=0, help="Text tokens incl. chat frame (default: NVIDIA's prompt)."),
    ] = None,
    output_tokens: Annotated[
        int | None, typer.Option(min=0, help="Room for the output (default: 300).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the largest frame size that fits each context size, exactly.

    Example: cosmos limits --max-model-len 4096 --aspect 16:9 --aspect 4:3
    """
    orch = orchestrator(
        ctx,
        {"upsampling.output_tokens": output_tokens, "upsampling.frame_count": frames},
    )
    up = orch.config.upsampling
    try:
        rows = orch.limits(
            max_model_len or [4096, 8192, 16384, 32768],
            aspect or ["16:9", "4:3"],
            frames=up.frame_count,
            prompt_tokens=prompt_tokens,
            output_tokens=up.output_tokens,
        )
    except ValueError as exc:
        raise CosmosError(
            str(exc), 'use an aspect like "16:9" or "1.78"', code="bad_aspect"
        ) from None
    if json_output:
        print_json({"limits": rows})
        return
    table = Table(
        title=f"largest frame size that fits ({up.frame_count} frames, "
        f"{up.output_tokens} output tokens kept)"
    )
    for column in ("max_model_len", "aspect", "size", "prompt tokens", "margin"):
        table.add_column(column, justify="right")
    for row in rows:
        fits = row["width"] is not None
        table.add_row(
            f"{row['max_model_len']:,}",
            row["aspect"],
            f"{row['width']}×{row['height']}" if fits else "nothing fits",
            f"{row['prompt_tokens']:,}" if fits else "-",
            f"{row['margin']:,}" if fits else "-",
        )
    out.print(table)
