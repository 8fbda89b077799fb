"""`cosmos check`: exact token preflight, before any run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..sizing import Resolution
from ..workflows.resolution import CheckItem
from .common import orchestrator
from .output import handle_errors, out, print_error_line, print_json, styled

VERDICT_STYLE = {"fits": "green", "output_cut": "yellow", "too_long": "red", "error": "red"}


def size(width, height) -> str:
    return f"{width}×{height}" if width else "-"


def render_items(items: list[CheckItem], title: str) -> None:
    """The per-item table shared by check and prepare (stdout), errors under it (stderr).

    No item (every input failed to load): no table, only the errors the caller prints."""
    if not items:
        return
    table = Table(title=title)
    for column in ("input", "source", "frames", "image", "text", "prompt", "room", "verdict"):
        table.add_column(column, justify="left" if column in ("input", "verdict") else "right")
    table.add_column("fits at")
    for item in items:
        style = VERDICT_STYLE.get(item.verdict, "")
        table.add_row(
            item.name,
            size(item.source_width, item.source_height),
            f"{item.frames}×{size(item.frame_width, item.frame_height)}"
            if item.frame_width
            else "-",
            _n(item.image_tokens),
            _n(item.text_tokens),
            _n(item.prompt_tokens),
            _n(item.room_for_output),
            styled(item.verdict, style),
            size(item.recommended_width, item.recommended_height) if item.verdict != "fits" else "",
        )
    out.print(table)
    for item in items:
        if item.error:
            print_error_line(item.name, item.error["message"], item.error.get("hint"))


def _n(value) -> str:
    return "-" if value is None else f"{value:,}"


@handle_errors
def check(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path], typer.Argument(help="Spec .json files, folders of specs, or videos.")
    ],
    prompt: Annotated[
        str | None, typer.Option(help="Prompt to count (default: each spec's own prompt).")
    ] = None,
    frames: Annotated[
        int | None, typer.Option(min=1, help="Frames per item (default: upsampling.frame_count).")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(min=1, help="Context size (default: upsampling.max_model_len).")
    ] = None,
    output_tokens: Annotated[
        int | None, typer.Option(min=0, help="Room for the output (default: 300).")
    ] = None,
    resolution: Annotated[
        str, typer.Option(help='"source", "auto", a height like 480, or WxH (kept in aspect).')
    ] = "source",
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Descend into sub-folders.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Count each input's exact prompt tokens and say whether it fits.

    Example: cosmos check inputs/prompts/ --resolution auto

    Exit codes: 0 every item fits; 1 some item is output_cut or too_long;
    2 a spec or argument is bad; 3 a video cannot be read.
    """
    orch = orchestrator(
        ctx,
        {
            "upsampling.max_model_len": max_model_len,
            "upsampling.output_tokens": output_tokens,
            "upsampling.frame_count": frames,
        },
    )
    report = orch.check(
        inputs, prompt=prompt, resolution=Resolution.parse(resolution), recursive=recursive
    )
    if json_output:
        print_json(report.to_dict())
    else:
        render_items(report.items, f"token check (resolution: {resolution})")
        for error in report.load_errors:
            print_error_line("error", error.message, error.hint)
    raise typer.Exit(report.exit_code)
