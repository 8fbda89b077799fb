"""`cosmos config …`: inspect the effective configuration."""

from __future__ import annotations

from typing import Annotated

import typer

from ..config import load_config
from .output import handle_errors, print_json
from .render import render_config

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every config key's effective value and where it came from.

    Example: cosmos config show --json
    """
    config_file = (ctx.find_root().obj or {}).get("config_file")
    config = load_config(config_file)
    rows = config.as_rows()
    if json_output:
        print_json({"files": list(config.files), "keys": rows})
        return
    render_config(rows)
