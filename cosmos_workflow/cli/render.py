"""Everything `cosmos` shows a person: tables, progress, the lines under them.

Command modules call the library, then one renderer here; JSON output (`--json`) is
`output.print_json` of the library's own dicts. Tables go to stdout, progress and problems to
stderr, so `cosmos … > file` keeps only the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .output import (
    err,
    local_time,
    out,
    print_error_line,
    print_json,
    print_warning_event,
    shown_path,
    styled,
)

if TYPE_CHECKING:
    from ..workflows.preflight import CheckItem
    from ..workflows.serve_ops import ServerStatus

# -- check and prepare ------------------------------------------------------------------------

VERDICT_STYLE = {"fits": "green", "output_cut": "yellow", "too_long": "red", "error": "red"}


def size(width, height) -> str:
    return f"{width}×{height}" if width else "-"


def render_items(items: list[CheckItem], title: str) -> None:
    """The per-item table shared by check and prepare (stdout), errors under it (stderr).

    No item (every input failed to load): no table, only the errors the caller prints."""
    if not items:
        return
    table = Table(title=title)
    for column in ("input", "source", "frames", "image", "text", "prompt", "room", "verdict"):
        table.add_column(column, justify="left" if column in ("input", "verdict") else "right")
    table.add_column("fits at")
    for item in items:
        style = VERDICT_STYLE.get(item.verdict, "")
        table.add_row(
            item.name,
            size(item.source_width, item.source_height),
            f"{item.frame_count}×{size(item.frame_width, item.frame_height)}"
            if item.frame_width
            else "-",
            _n(item.image_tokens),
            _n(item.text_tokens),
            _n(item.prompt_tokens),
            _n(item.room_for_output),
            styled(item.verdict, style),
            size(item.recommended_width, item.recommended_height) if item.verdict != "fits" else "",
        )
    out.print(table)
    for item in items:
        if item.error:
            print_error_line(item.name, item.error["message"], item.error.get("hint"))


def _n(value) -> str:
    return "-" if value is None else f"{value:,}"


def render_prepared_item(item: CheckItem) -> None:
    """`cosmos prepare`, as each item is written (stderr)."""
    if item.error is None:
        err.print(f"prepared {item.name} → {item.prepared_dir}")


# -- limits -----------------------------------------------------------------------------------


def render_limits(rows: list[dict]) -> None:
    """The largest size per context size and aspect (stdout)."""
    if not rows:
        return
    first = rows[0]
    table = Table(
        title=f"largest frame size that fits ({first['frame_count']} frames, "
        f"{first['output_tokens']} output tokens kept)"
    )
    for column in ("max_model_len", "aspect", "size", "prompt tokens", "margin"):
        table.add_column(column, justify="right")
    for row in rows:
        fits = row["width"] is not None
        table.add_row(
            f"{row['max_model_len']:,}",
            row["aspect"],
            f"{row['width']}×{row['height']}" if fits else "nothing fits",
            f"{row['prompt_tokens']:,}" if fits else "-",
            f"{row['margin']:,}" if fits else "-",
        )
    out.print(table)


def render_check_report(report, title: str) -> None:
    """`cosmos check`/`prepare`: the items table, then each unreadable input's error line."""
    render_items(report.items, title)
    for error in report.load_errors:
        print_error_line("error", error.message, error.hint)


# -- upsample ---------------------------------------------------------------------------------

# How the table's output column names what happens to an item's output file.
_OUTPUT_ACTIONS = {
    "new": "new",
    "replace": "replaces cosmos' earlier output",
    "keep": "keep: edited",
    "overwrite": "overwrite: edited",
    "unchanged": "unchanged",
    "kept": "kept: edited",
}


def _output_cell(item: dict) -> str:
    action = _OUTPUT_ACTIONS.get(item["output_action"] or "")
    shown = shown_path(item["output"]) if item["output"] else None
    shown = shown or (f"{item['id']}.json" if action else "-")
    return f"{shown} ({action})" if action else shown


def report_passed_over(record) -> None:
    """One stderr line naming the files in input folders that were not taken as inputs."""
    passed = record.passed_over
    if not passed:
        return
    names = ", ".join(p["path"] for p in passed[:3]) + (" …" if len(passed) > 3 else "")
    err.print(
        f"note: passed over {len(passed)} file(s) cosmos wrote (earlier outputs, run "
        f"records), not inputs: {names}; name a file on its own to use it as an input",
        markup=False,
        highlight=False,
    )


def report(record, *, json_output: bool) -> None:
    """The run record: JSON on stdout, or the table and one stderr line per problem."""
    report_passed_over(record)
    if json_output:
        print_json(record.to_dict())
    else:
        render_record(record)


def render_record(record) -> None:
    data = record.to_dict()
    if record.dry_run:
        title = "dry run: nothing sent"
    elif record.mode == "server":
        title = "served by the warm server"
    elif record.job_id:
        title = f"job {record.job_id}"
    else:
        title = "nothing sent: no item could be prepared"
    table = Table(title=title)
    for column in ("item", "status", "frames", "prompt tokens", "output", "detail"):
        # A path cut to "…" cannot be opened: names and paths fold onto more lines instead.
        table.add_column(column, overflow="fold" if column in ("item", "output") else "ellipsis")
    for item in data["items"]:
        frames = (
            f"{item['frame_count']}×{item['frame_width']}×{item['frame_height']}"
            if item["frame_width"]
            else "-"
        )
        tokens = item["prompt_tokens_engine"] or item["prompt_tokens_local"]
        detail = (item["error"] or {}).get("message") or item["finish_reason"] or ""
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(item["status"], "")
        table.add_row(
            item["name"],
            styled(item["status"], style),
            frames,
            "-" if tokens is None else f"{tokens:,}",
            _output_cell(item),
            detail,
        )
    out.print(table)
    for error in data["load_errors"]:
        print_error_line("error", error["message"], error.get("hint"))
    # The table cuts long messages: each item's whole error gets its own line.
    for item in data["items"]:
        if item["error"] and item["status"] in ("failed", "skipped"):
            label = "error" if item["status"] == "failed" else "skipped"
            error = item["error"]
            print_error_line(label, f"{item['name']}: {error['message']}", error.get("hint"))
    if record.dry_run:
        err.print(f"would send up to {record.bytes_to_send:,} bytes of frames")
        if record.remote_command:
            err.print(f"would run: {record.remote_command}", markup=False)
        if record.mode == "auto":
            err.print(
                "(or the warm server, when one is ready on the host with these settings: "
                "`cosmos serve status`)",
                markup=False,
            )
    else:
        counts = data["counts"]
        err.print(
            f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
            f"in {record.duration_s:.1f} s; {record.bytes_sent:,} bytes sent"
        )


class Reporter:
    """Progress on stderr: a live bar on a terminal, plain lines elsewhere (logs, CI, pipes)."""

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed", markup=False),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not self.live,
        )
        self.task = self.progress.add_task("preparing", total=None, failed=0)
        self.last_reported = -1
        self.job_id: str | None = None
        self.mode: str | None = None

    def __enter__(self) -> Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, **data) -> None:
        if kind == "job":
            self.job_id = data["job_id"]
        elif kind == "mode":
            self.mode = data["mode"]
            line = f"mode: {data['mode']} ({data['why']})"
            self.progress.console.print(line, markup=False, highlight=False)
        elif kind == "stage":
            self.progress.update(self.task, description=data["message"])
            if not self.live:
                err.print(data["message"], markup=False, highlight=False)
        elif kind == "progress":
            total, failed = data.get("total") or 0, data.get("failed", 0)
            finished = data.get("done", 0) + failed
            self.progress.update(self.task, total=total, completed=finished, failed=failed)
            # Without a live bar: a line per tenth of the batch, and at the end.
            step = max(1, total // 10)
            if (
                not self.live
                and finished
                and (finished == total or finished // step > self.last_reported // step)
            ):
                err.print(f"{finished}/{total} items finished ({failed} failed)", highlight=False)
                self.last_reported = finished
        elif kind == "warning":
            print_warning_event(kind, **data)
        elif kind == "log":
            self.progress.console.print(data["line"], markup=False, highlight=False)


# -- remote -----------------------------------------------------------------------------------


def _docker_rows(docker: dict) -> list[tuple[str, str]]:
    """The Docker runner's rows: the daemon and how it is reached, the image, GPUs, shm."""
    how = "through sudo -n" if docker.get("sudo") else "as the SSH user"
    rows = [("docker", f"{docker.get('server_version') or 'unknown'} ({how})")]
    image = str(docker.get("image"))
    if docker.get("image_id"):
        size = docker.get("image_size_bytes") or 0
        created = str(docker.get("image_created"))[:19]
        image += f" ({docker['image_id'][:19]}, {size / 2**30:.1f} GiB, {created})"
    rows.append(("image", image))
    gpus = docker.get("gpus")
    rows.append(("--gpus", "not passed (gpus = none)" if gpus == "none" else str(gpus)))
    return rows


def _versions(report: dict) -> list[tuple[str, str]]:
    vllm, torch = report.get("vllm") or {}, report.get("torch") or {}
    rows = _docker_rows(report["docker"]) if report.get("docker") else []
    rows.append(("python", f"{report.get('python')} ({report.get('python_executable')})"))
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
    shm = report.get("shm")
    if shm:
        rows.append(("shm", f"{shm['total_bytes'] / 2**30:.1f} GiB at {shm['path']}"))
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


def render_jobs(report: dict) -> None:
    """`cosmos remote status`: one row per job (stdout), the GPUs (stderr)."""
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


def print_log_line(line: str) -> None:
    out.print(line, markup=False, highlight=False)


# -- config -----------------------------------------------------------------------------------


def render_config(rows: list[dict]) -> None:
    table = Table("key", title="effective configuration")
    for column in ("value", "source"):  # paths whole, never cut to "…"
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(f"{row['section']}.{row['key']}", repr(row["value"]), row["source"])
    out.print(table)


# -- the warm server ---------------------------------------------------------------------------


def _idle(status: ServerStatus) -> str:
    if status.idle_s is None or status.state != "ready":
        return "-"
    left = ""
    if status.idle_timeout_s:
        left = f" (stops after {status.idle_timeout_s / 60:g} min idle)"
    return f"{status.idle_s / 60:.1f} min{left}"


def render_server_status(status: ServerStatus) -> None:
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
    rows += [(f"  {key}", "-" if v is None else str(v)) for key, v in status.settings.items()]
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
