"""`cosmos remote …`: the GPU host — readiness and host-key trust."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import orchestrator
from .output import err, handle_errors, out, print_json

app = typer.Typer(help="Work with the GPU host.", no_args_is_help=True)


@app.command("check")
@handle_errors
def check(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the host can run the upsampler: Python, vLLM, GPUs, checkpoint, free disk.

    Example: cosmos remote check

    Exit codes: 0 ready; 1 something is missing (listed); 4 SSH failure.
    """
    report = orchestrator(ctx.find_root()).remote_check()
    if json_output:
        print_json(report)
    else:
        table = Table("what", "found", title="GPU host readiness")
        for key, value in report.items():
            if key != "exit_code":
                table.add_row(key, str(value))
        out.print(table)
        err.print("ready" if report["exit_code"] == 0 else "not ready: see the table above")
    raise typer.Exit(0 if report["exit_code"] == 0 else 1)


@app.command("trust")
@handle_errors
def trust(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Record without asking.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the host's key fingerprint and record it in known_hosts.

    Example: cosmos remote trust   (compare the fingerprint with the one your provider shows)
    """
    orch = orchestrator(ctx.find_root())
    if not yes and not json_output:
        info = orch.host_key()
        err.print(f"{info.host} presents a {info.key_type} key {info.fingerprint_sha256}")
        if not typer.confirm("Trust this key and record it in known_hosts?", err=True):
            raise typer.Exit(1)
    info = orch.trust_host()
    if json_output:
        print_json(
            {
                "host": info.host,
                "key_type": info.key_type,
                "fingerprint": info.fingerprint_sha256,
                "recorded": info.recorded,
            }
        )
    else:
        state = "recorded" if info.recorded else "already trusted"
        err.print(f"{state}: {info.host} {info.key_type} {info.fingerprint_sha256}")
