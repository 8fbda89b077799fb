"""Wiring: the Typer app, global options, and one module per command or group."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from . import check, config_cmd, history, limits, prepare, remote, report, serve, upsample

app = typer.Typer(
    name="cosmos",
    help="Prepare prompts for NVIDIA Cosmos-Transfer1: exact token checks, video preprocessing "
    "and prompt upsampling on a GPU host.",
    no_args_is_help=True,
    add_completion=False,
    # Never print local variables in tracebacks: they would include SSH settings.
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cosmos-workflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Config file to use instead of ./config.toml.", dir_okay=False
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    ctx.obj = {"config_file": config}
    # paramiko logs transport errors ("Socket exception: …") through logging's last-resort
    # handler onto stderr; we report each failure once, as one `error:` line.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())


app.command("check")(check.check)
app.command("limits")(limits.limits)
app.command("prepare")(prepare.prepare)
app.command("upsample")(upsample.upsample)
app.add_typer(remote.app, name="remote")
app.add_typer(config_cmd.app, name="config")
app.add_typer(history.app, name="history")
app.command("report")(report.report)
app.add_typer(serve.app, name="serve")


def main() -> None:
    app(prog_name="cosmos")
