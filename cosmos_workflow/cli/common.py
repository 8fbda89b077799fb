"""What command modules share: the orchestrator for this invocation, and shared options.

Every flag maps 1:1 to a keyword argument of the library call it feeds (same name, the
value as given; None means "the config's").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import load_config
from ..workflows import WorkflowOrchestrator


def orchestrator(ctx: typer.Context) -> WorkflowOrchestrator:
    """The orchestrator for this invocation: `--config`, env and the config files."""
    root = ctx.find_root() if ctx is not None else None
    config_file = (root.obj or {}).get("config_file") if root is not None else None
    return WorkflowOrchestrator(load_config(config_file))


# Options more than one command takes, spelled once.
Inputs = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Spec .json files, folders of specs, or videos (default: paths.local_prompts_dir).",
        show_default=False,
    ),
]
FrameCount = Annotated[
    int | None,
    typer.Option(
        "--num-frames",
        "--frames",
        min=1,
        help="Frames the model sees per item (default: upsampling.frame_count, 2).",
    ),
]
MaxModelLen = Annotated[
    int | None,
    typer.Option(min=1, help="Context size, prompt + output (default: upsampling.max_model_len)."),
]
OutputTokens = Annotated[
    int | None,
    typer.Option(min=0, help="Room kept for the output (default: upsampling.output_tokens)."),
]
Recursive = Annotated[bool, typer.Option("--recursive", help="Descend into sub-folders.")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON.")]
