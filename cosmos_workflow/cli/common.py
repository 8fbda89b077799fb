"""Helpers shared by command modules: building the orchestrator from flags."""

from __future__ import annotations

from typing import Any

import typer

from ..config import load_config
from ..workflows import WorkflowOrchestrator


def orchestrator(ctx: typer.Context, overrides: dict[str, Any] | None = None):
    """The orchestrator for this invocation: `--config`, env, files and flag `overrides`."""
    config_file = (ctx.obj or {}).get("config_file") if ctx is not None else None
    return WorkflowOrchestrator(load_config(config_file, overrides))
