"""`cosmos serve …`: the warm server — Pixtral kept loaded on the GPU host between runs."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from ..workflows.serve_ops import ServerStatus
from .common import orchestrator
from .output import err, handle_errors, local_time, out, print_error_line, print_json

app = typer.Typer(
    help="Keep the upsampler loaded on the GPU host: one prompt then takes seconds.",
    no_args_is_help=True,
)


def _idle(status: ServerStatus) -> str:
    if status.idle_s is None or status.state != "ready":
        return "-"
    left = ""
    if status.idle_timeout_s:
        left = f" (stops after {status.idle_timeout_s / 60:g} min idle)"
    return f"{status.idle_s / 60:.1f} min{left}"


def render_status(status: ServerStatus) -> None:
    table = Table("what", title=f"server: {status.state}")
    table.add_column("value", overflow="fold")
    where = f"container {status.container}" if status.container else f"pid {status.pid}"
    rows = [
        ("state", status.state),
        ("model", status.model or "-"),
        ("vLLM", status.vllm_version or "-"),
        ("port", f"127.0.0.1:{status.port} on the host" if status.port else "-"),
        ("process", where if status.alive else "-"),
        ("started", local_time(status.started_at)),
        ("ready", local_time(status.ready_at)),
        ("requests served", str(status.requests_served)),
        ("idle for", _idle(status)),
    ]
    rows += [(f"  {key}", str(value)) for key, value in status.settings.items()]
    if status.stop_reason:
        rows.append(("stopped", f"{local_time(status.stopped_at)}: {status.stop_reason}"))
    for what, value in rows:
        table.add_row(what, value)
    out.print(table)
    if status.error:
        print_error_line("error", status.error)
    if status.differences:
        print_error_line(
            "note",
            "its settings differ from this config's, so `cosmos upsample` runs jobs instead: "
            + "; ".join(status.differences),
            "`cosmos serve stop`, then `cosmos serve start` with this config",
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
    5 it did not start.
    """
    orch = orchestrator(ctx)
    t0 = time.monotonic()

    def on_event(kind: str, **data) -> None:
        if kind == "stage":
            err.print(data["message"], markup=False, highlight=False)
        elif kind == "log":
            err.print(data["line"], markup=False, highlight=False, style="dim")

    status, started = orch.serve_start(idle_timeout_min=idle_timeout, on_event=on_event)
    if json_output:
        print_json(dict(status.to_dict(), started=started))
        return
    if started:
        err.print(f"server ready in {time.monotonic() - t0:.0f} s")
    else:
        err.print("a server is already running on the host; nothing changed")
    render_status(status)


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
        render_status(result)


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
