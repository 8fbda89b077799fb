"""`WorkflowOrchestrator`: the library entry point the CLI is a skin over.

It holds the effective `Config` and mixes in one mixin per concern:

- `ResolutionMixin` (resolution.py): exact token checks, the limits table, frame preparation;
- `UpsampleMixin` (upsample.py): plan → stage → ship → run the worker → collect;
- `RemoteMixin` (remote_ops.py): host readiness and host-key trust.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from .. import media
from ..config import Config, load_config, user_cache_dir, user_data_dir
from .remote_ops import RemoteMixin
from .resolution import ResolutionMixin
from .upsample import UpsampleMixin


class WorkflowOrchestrator(ResolutionMixin, UpsampleMixin, RemoteMixin):
    """Everything `cosmos` does, callable from Python.

    >>> orchestrator = WorkflowOrchestrator()          # ./config.toml, env, defaults
    >>> report = orchestrator.check([Path("inputs/prompts")])
    """

    def __init__(self, config: Config | None = None):
        self.config = config or load_config()

    @cached_property
    def ffmpeg(self) -> str:
        return media.find_tool("ffmpeg", self.config.ffmpeg.binary)

    @cached_property
    def ffprobe(self) -> str:
        return media.find_tool("ffprobe", self.config.ffmpeg.ffprobe)

    @property
    def cache_dir(self) -> Path:
        return Path(self.config.paths.cache_dir or user_cache_dir())

    @property
    def history_path(self) -> Path:
        return Path(self.config.paths.history_db or user_data_dir() / "history.db")

    def frame_cache(self) -> media.FrameCache:
        return media.FrameCache(self.cache_dir / "frames", ffmpeg=self.ffmpeg)
