"""`cosmos remote …`: the GPU host — readiness and host-key trust."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import CosmosError
from .common import orchestrator
from .output import (
    err,
    handle_errors,
    local_time,
    out,
    print_error_line,
    print_json,
    print_warning_event,
)

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
    report = orchestrator(ctx.find_root()).remote_check()
    if json_output:
        print_json(report)
    else:
        render_check(report)
    raise typer.Exit(0 if report.get("ready") else 1)


def _versions(report: dict) -> list[tuple[str, str]]:
    vllm, torch = report.get("vllm") or {}, report.get("torch") or {}
    rows = [("python", f"{report.get('python')} ({report.get('python_executable')})")]
    if vllm.get("error"):
        rows.append(("vllm", f"not importable: {vllm['error']}"))
    else:
        extension = "does not load" if vllm.get("extension_error") else "loads"
        rows.append(("vllm", f"{vllm.get('version')} (compiled extension {extension})"))
    if torch.get("error"):
        rows.append(("torch", f"not importable: {torch['error']}"))
    else:
        cuda = "CUDA available" if torch.get("cuda_available") else "no CUDA"
        devices = torch.get("cuda_device_count")
        rows.append(("torch", f"{torch.get('version')}, {cuda}, {devices} device(s)"))
    transformers = (report.get("transformers") or {}).get("version")
    rows.append(("transformers", transformers or "not installed"))
    visible = report.get("cuda_visible_devices")
    rows.append(("CUDA_VISIBLE_DEVICES", "unset" if visible is None else repr(visible)))
    return rows


def render_check(report: dict) -> None:
    """The check report as a table (stdout), then warnings, problems and the verdict (stderr).

    A report without the worker's findings (the check could not run there, e.g. remote_dir is
    missing) is only its problems and the verdict.
    """
    if "python" in report:
        _render_check_table(report)
    for warning in report.get("warnings") or []:
        print_error_line("warning", warning)
    for problem in report.get("problems") or []:
        print_error_line("problem", problem)
    err.print("ready" if report.get("ready") else "not ready: see the problems above")


def _render_check_table(report: dict) -> None:
    table = Table("what", title="GPU host readiness")
    table.add_column("found", overflow="fold")  # paths whole, never cut to "…"
    for what, found in _versions(report):
        table.add_row(what, found)
    for gpu in report.get("gpus") or []:
        total, used = gpu.get("memory_total_mib"), gpu.get("memory_used_mib")
        table.add_row("gpu", f"{gpu.get('name')}, {total} MiB total, {used} MiB used")
    if not report.get("gpus"):
        table.add_row("gpu", "none")
    model = report.get("model") or {}
    table.add_row("model", str(model.get("path")))
    for name, size in (model.get("files") or {}).items():
        table.add_row(f"  {name}", "missing" if size is None else f"{size:,} bytes")
    disk = report.get("disk") or {}
    if disk.get("free_bytes") is not None:
        free = f"{disk['free_bytes'] / 2**30:.1f} GiB free at {disk.get('path')}"
        table.add_row("disk", free + (" (low)" if disk.get("low") else ""))
    out.print(table)


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
    report = orchestrator(ctx.find_root()).remote_status(job)
    if json_output:
        print_json(report)
        return
    table = Table("job", "state", "done", "failed", "pending", "total", "started", "error")
    for row in report["jobs"]:
        # Every cell a string: status.json holds numbers (counts, epoch seconds), and rich
        # renders only text.
        table.add_row(
            row["job_id"],
            row["state"],
            *(
                "-" if row[k] is None else str(row[k])
                for k in ("done", "failed", "pending", "total")
            ),
            local_time(row["started_at"]),
            str(row["error"] or "")[:60],
        )
    out.print(table)
    for gpu in report["gpus"]:
        err.print(f"GPU {gpu}", markup=False)
    if not report["gpus"]:
        err.print("no GPU visible to nvidia-smi on the host")


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

    def on_line(line: str) -> None:
        out.print(line, markup=False, highlight=False)

    orchestrator(ctx.find_root()).remote_logs(job, follow=follow, lines=lines, on_line=on_line)


@app.command("cancel")
@handle_errors
def cancel(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
) -> None:
    """Stop a job on the host. Finished items are kept; rerunning the command resumes it.

    Example: cosmos remote cancel 3f9a1c2b7d41e0aa
    """
    orchestrator(ctx.find_root()).remote_cancel(job)
    err.print(f"cancelled job {job}; rerun the same `cosmos upsample` command to resume it")


@app.command("results")
@handle_errors
def results(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job id.")],
    inputs: Annotated[list[Path], typer.Argument(help="The same specs the job was started with.")],
    max_resolution: Annotated[
        str | None, typer.Option(help="As given to `cosmos upsample`.")
    ] = None,
    preprocess_videos: Annotated[
        bool, typer.Option("--preprocess-videos", help="As given to `cosmos upsample`.")
    ] = False,
    num_frames: Annotated[int | None, typer.Option(min=1, help="As given.")] = None,
    num_gpu: Annotated[int | None, typer.Option(min=1, help="As given.")] = None,
    save_dir: Annotated[Path | None, typer.Option(help="Where the specs go.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", help="As given.")] = False,
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
    from .upsample import report

    record = orchestrator(ctx.find_root()).upsample(
        inputs,
        save_dir=save_dir,
        preprocess=preprocess_videos,
        max_resolution=max_resolution,
        num_frames=num_frames,
        num_gpu=num_gpu,
        force=force,
        overwrite=overwrite,
        recursive=recursive,
        collect_job=job,
        on_event=print_warning_event,
    )
    report(record, json_output=json_output)
    raise typer.Exit(record.exit_code)
