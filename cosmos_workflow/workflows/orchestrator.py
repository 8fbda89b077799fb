"""`WorkflowOrchestrator`: the library entry point the CLI is a skin over.

It holds the effective `Config` and two components, and mixes in one thin face per concern:

- `ResolutionMixin` (resolution.py): check, limits, prepare — over `Preflight` (preflight.py);
- `UpsampleMixin` (upsample.py): upsample — `UpsamplePipeline` (pipeline.py) over `Preflight`
  and an executor (the batch job of batchjob.py, on `GpuHost`);
- `RemoteMixin` (remote_ops.py): host readiness, host keys, jobs — over `GpuHost` (gpuhost.py);
- `ServeMixin` (serving.py): the warm server — `serve_ops` on `GpuHost`; the server's executor
  (server.py) plugs into `UpsamplePipeline` next to the batch job.

No mixin calls another: each reaches only `config`, `preflight` and `gpu_host`.
"""

from __future__ import annotations

from ..config import Config, load_config
from .gpuhost import GpuHost
from .preflight import Preflight
from .remote_ops import RemoteMixin
from .resolution import ResolutionMixin
from .serving import ServeMixin
from .upsample import UpsampleMixin


class WorkflowOrchestrator(ResolutionMixin, UpsampleMixin, RemoteMixin, ServeMixin):
    """Everything `cosmos` does, callable from Python.

    >>> orchestrator = WorkflowOrchestrator()          # ./config.toml, env, defaults
    >>> report = orchestrator.check([Path("inputs/prompts")], resolution="auto")
    """

    def __init__(self, config: Config | None = None):
        self.config = config or load_config()
        self.preflight = Preflight(self.config)
        self.gpu_host = GpuHost(self.config)
