"""`cosmos serve …`: the warm server — Pixtral kept loaded on the GPU host between runs."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .common import orchestrator
from .output import err, handle_errors, out, print_json
from .render import render_server_status

app = typer.Typer(
    help="Keep the upsampler loaded on the GPU host: one prompt then takes seconds.",
    no_args_is_help=True,
)


@app.command("start")
@handle_errors
def start(
    ctx: typer.Context,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--idle-timeout",
            min=0.01,
            metavar="MINUTES",
            help="Stop after this long without a request (default \\[server] idle_timeout_min).",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Start the upsampler server on the GPU host and wait until it answers.

    Example: cosmos serve start --idle-timeout 60

    It has the batch job's engine settings and listens on the host's 127.0.0.1.
    The CLI reaches it through its own SSH connection.
    It stops itself after the idle timeout without a request.

    Exit codes: 0 ready (or already running); 2 bad config; 4 SSH failure;
    5 it did not start; 130 interrupted (the server keeps loading on the host).
    """
    orch = orchestrator(ctx)
    t0 = time.monotonic()

    def on_event(kind: str, **data) -> None:
        if kind == "stage":
            err.print(data["message"], markup=False, highlight=False)
        elif kind == "log":
            err.print(data["line"], markup=False, highlight=False, style="dim")

    try:
        status, started = orch.serve_start(idle_timeout_min=idle_timeout, on_event=on_event)
    except KeyboardInterrupt:
        err.print("interrupted: the server keeps loading on the host (it runs detached)")
        err.print("`cosmos serve status` shows it; `cosmos serve stop` stops it")
        raise typer.Exit(130) from None
    if json_output:
        print_json(dict(status.to_dict(), started=started))
        return
    if started:
        err.print(f"server ready in {time.monotonic() - t0:.0f} s")
    else:
        err.print("a server is already running on the host; nothing changed")
    render_server_status(status)


@app.command("status")
@handle_errors
def status(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the server's state, model, settings, requests served and idle time.

    Example: cosmos serve status --json
    """
    result = orchestrator(ctx).serve_status()
    if json_output:
        print_json(result.to_dict())
    else:
        render_server_status(result)


@app.command("logs")
@handle_errors
def logs(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until it stops.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="Lines to show.")] = 200,
) -> None:
    """Show the server's log (the supervisor's lines and vLLM's output).

    Example: cosmos serve logs --follow
    """

    def on_line(line: str) -> None:
        out.print(line, markup=False, highlight=False)

    orchestrator(ctx).serve_logs(follow=follow, lines=lines, on_line=on_line)


@app.command("stop")
@handle_errors
def stop(ctx: typer.Context) -> None:
    """Stop the server (nothing happens when none runs).

    Example: cosmos serve stop
    """
    if orchestrator(ctx).serve_stop():
        err.print("server stopped")
    else:
        err.print("no server was running")
