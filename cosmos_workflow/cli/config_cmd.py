"""`cosmos config …`: inspect the effective configuration."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..config import load_config
from .output import handle_errors, out, print_json

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
    table = Table("key", title="effective configuration")
    for column in ("value", "source"):  # paths whole, never cut to "…"
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(f"{row['section']}.{row['key']}", repr(row["value"]), row["source"])
    out.print(table)
