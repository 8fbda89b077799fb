"""`cosmos remote …`: the GPU host — readiness and host-key trust."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import CosmosError
from .common import FrameCount, MaxModelLen, OutputTokens, Recursive, orchestrator
from .output import err, handle_errors, print_json, print_warning_event
from .render import print_log_line, render_check, render_jobs, report

app = typer.Typer(help="Work with the GPU host: readiness, host keys, jobs.", no_args_is_help=True)


@app.command("check")
@handle_errors
def check(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the host can run the upsampler: vLLM, torch and its GPUs, checkpoint, free disk.

    Example: cosmos remote check

    Runs the worker's check where jobs run (inside [docker] image, or with [worker] python).
    Exit codes: 0 ready (warnings such as low disk included); 1 something is missing (listed);
    4 SSH failure; 5 the check could not run (e.g. sudo asks for a password).
    """
    report = orchestrator(ctx).remote_check()
    if json_output:
        print_json(report)
    else:
        render_check(report)
    raise typer.Exit(0 if report.get("ready") else 1)


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
    orch = orchestrator(ctx)
    if not yes and not json_output:
        info = orch.host_key()
        if info.known:  # nothing to record: no question to ask
            err.print(f"already trusted: {info.host} {info.key_type} {info.fingerprint_sha256}")
            return
        err.print(f"{info.host} presents a {info.key_type} key {info.fingerprint_sha256}")
        if not sys.stdin.isatty():
            # typer.confirm would read EOF from a pipe and abort with a bare "Aborted!".
            raise CosmosError(
                "cannot ask whether to trust this key: standard input is not a terminal",
                "compare the fingerprint above with the one your provider shows, then run "
                "`cosmos remote trust --yes`",
                code="confirmation_needed",
            )
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


@app.command("status")
@handle_errors
def status(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Argument(help="A job id (default: every job).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show jobs on the host: state, counts, whether the worker runs; and the GPUs.

    Example: cosmos remote status 3f9a1c2b7d41e0aa
    """
    report = orchestrator(ctx).remote_status(job)
    if json_output:
        print_json(report)
        return
    render_jobs(report)


@app.command("logs")
@handle_errors
def logs(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until it ends.")] = False,
    lines: Annotated[int, typer.Option(min=1, help="How many last lines.")] = 200,
) -> None:
    """Print a job's worker.log (the last lines, or followed while it runs).

    Example: cosmos remote logs 3f9a1c2b7d41e0aa --follow
    """
    orchestrator(ctx).remote_logs(job, follow=follow, lines=lines, on_line=print_log_line)


@app.command("cancel")
@handle_errors
def cancel(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
) -> None:
    """Stop a job on the host. Finished items are kept; rerunning the command resumes it.

    Example: cosmos remote cancel 3f9a1c2b7d41e0aa
    """
    orchestrator(ctx).remote_cancel(job)
    err.print(f"cancelled job {job}; rerun the same `cosmos upsample` command to resume it")


@app.command("results")
@handle_errors
def results(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="The same specs the job was started with (default: paths.local_prompts_dir).",
            show_default=False,
        ),
    ] = None,
    max_resolution: Annotated[
        str | None, typer.Option(help="As given to `cosmos upsample`.")
    ] = None,
    preprocess_videos: Annotated[
        bool, typer.Option("--preprocess-videos", help="As given to `cosmos upsample`.")
    ] = False,
    frame_count: FrameCount = None,
    max_model_len: MaxModelLen = None,
    output_tokens: OutputTokens = None,
    num_gpu: Annotated[int | None, typer.Option(min=1, help="As given.")] = None,
    save_dir: Annotated[Path | None, typer.Option(help="Where the specs go.")] = None,
    recursive: Recursive = False,
    force: Annotated[bool, typer.Option("--force", help="As given.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace outputs edited since cosmos wrote them.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run record.")] = False,
) -> None:
    """Download a job's results and write the upsampled specs, without running anything.

    Example: cosmos remote results 3f9a1c2b7d41e0aa inputs/prompts/ --save-dir outputs/

    Works for a job started earlier or from another checkout of the same specs: the inputs
    and options must make the same job id.
    """
    record = orchestrator(ctx).upsample(
        inputs,
        save_dir=save_dir,
        preprocess_videos=preprocess_videos,
        max_resolution=max_resolution,
        frame_count=frame_count,
        max_model_len=max_model_len,
        output_tokens=output_tokens,
        num_gpu=num_gpu,
        force=force,
        overwrite=overwrite,
        recursive=recursive,
        collect_job=job,
        on_event=print_warning_event,
    )
    report(record, json_output=json_output)
    raise typer.Exit(record.exit_code)
