"""`cosmos report`: one self-contained HTML page for a recorded run."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from ..errors import HistoryError
from ..fsutil import atomic_write_text
from ..history import History
from ..history.report import build_report, is_report
from .common import orchestrator
from .history import report_damage
from .output import err, handle_errors, print_json


@handle_errors
def report(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help='A run number, a job id, or "latest".')] = "latest",
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the report in the web browser.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print what was written.")] = False,
) -> None:
    """Write one self-contained HTML page for a run: frames, prompts side by side, tokens.

    Example: cosmos report latest -o report.html --open

    The page loads nothing from anywhere: frames are embedded from the frame cache (the page
    says when they are no longer there). An existing file is replaced only if it is a report.
    """
    orch = orchestrator(ctx.find_root())
    if output.is_dir():
        raise HistoryError(
            f"{output} is a folder",
            "give the report a file name, e.g. -o report.html",
            code="report_output",
        )
    if output.exists() and not is_report(output):
        raise HistoryError(
            f"{output} exists and is not a cosmos report: not replaced",
            "choose another -o file name, or move that file away",
            code="report_output",
        )
    store = History(orch.history_path)
    found = store.run(run)
    page = build_report(found, [orch.preflight.cache_dir / "frames"])
    try:
        atomic_write_text(output, page.html)
    except OSError as exc:
        raise HistoryError(
            f"cannot write {output}: {exc.strerror or exc}",
            "choose a writable folder with -o",
            code="report_output",
        ) from exc
    summary = {
        "path": str(output.absolute()),
        "run": found["id"],
        "items": len(found["items"]),
        "frames_shown": page.frames_shown,
        "frames_missing": page.frames_missing,
    }
    if json_output:
        print_json(summary)
    else:
        err.print(
            f"wrote {output} (run {found['id']}, {summary['items']} item(s), "
            f"{page.frames_shown} frame(s) shown)",
            markup=False,
            highlight=False,
        )
        if page.frames_missing:
            err.print(
                f"note: {page.frames_missing} frame(s) are no longer in the frame cache",
                markup=False,
                highlight=False,
            )
    report_damage(store)
    if open_it:
        webbrowser.open(output.absolute().as_uri())
