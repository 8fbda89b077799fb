"""Workflows: the orchestrator and the mixins it is composed of."""

from .orchestrator import WorkflowOrchestrator

__all__ = ["WorkflowOrchestrator"]
