"""`cosmos prepare`: write the frames the model will see, hint videos and previews."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..sizing import Resolution
from .check import render_items
from .common import orchestrator
from .output import err, handle_errors, print_json


@handle_errors
def prepare(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path], typer.Argument(help="Spec .json files, folders of specs, or videos.")
    ],
    resolution: Annotated[
        str, typer.Option(help='"auto" (largest that fits), "source", a height, or WxH.')
    ] = "auto",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: hint_video_dir).")
    ] = None,
    preview: Annotated[
        bool, typer.Option("--preview", help="Also write a labelled contact sheet.")
    ] = False,
    frames: Annotated[int | None, typer.Option(min=1, help="Frames per item.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt to count.")] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Descend into sub-folders.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Write each item's model frames (PNG) and hint video (H.264) at the chosen size.

    Example: cosmos prepare inputs/prompts/ --out inputs/hint_videos --preview

    Layout: OUT/<name>/frame_000.png …, OUT/<name>/hint.mp4, OUT/<name>/preview.png.
    """
    orch = orchestrator(ctx, {"upsampling.frame_count": frames})
    target = Path(out_dir or orch.config.upsampling.hint_video_dir)

    def on_item(item) -> None:
        if not json_output and item.error is None:
            err.print(f"prepared {item.name} → {target / item.name}")

    report = orch.prepare(
        inputs,
        out_dir=target,
        resolution=Resolution.parse(resolution),
        preview=preview,
        recursive=recursive,
        prompt=prompt,
        on_item=on_item,
    )
    if json_output:
        print_json({"out_dir": str(target), **report.to_dict()})
    else:
        render_items(report.items, f"prepared into {target}")
    raise typer.Exit(report.exit_code)
