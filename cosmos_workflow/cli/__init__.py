"""The `cosmos` command line: a thin Typer skin over `WorkflowOrchestrator`."""

from .app import app, main

__all__ = ["app", "main"]
