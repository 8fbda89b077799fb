"""Serve mixin: the warm server on the host (`cosmos serve`), faces over `serve_ops`."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Config
from . import serve_ops
from .gpuhost import GpuHost
from .pipeline import Events, quiet
from .preflight import Preflight
from .serve_ops import ServerStatus


class ServeMixin:
    """Mixed into `WorkflowOrchestrator`: needs `config`, `preflight` and `gpu_host`.

    The server runs with the engine settings a run of this config would have (the budget of
    `[upsampling]`, the `[worker]` section): `cosmos upsample` uses it only when they match.
    """

    config: Config
    preflight: Preflight
    gpu_host: GpuHost

    def _server_parts(self):
        host = self.gpu_host
        return host.runner_settings(), host.engine_settings(self.preflight.budget())

    def serve_start(
        self, *, idle_timeout_min: float | None = None, on_event: Events = quiet
    ) -> tuple[ServerStatus, bool]:
        """Start the server detached and wait until it answers: (status, started by this call).

        A running server is left as it is (started False); one still loading is waited for.
        `idle_timeout_min`: default `[server] idle_timeout_min`.
        """
        runner, engine = self._server_parts()
        minutes = (
            self.config.server.idle_timeout_min if idle_timeout_min is None else idle_timeout_min
        )
        return serve_ops.serve_start(
            self.gpu_host.connect,
            runner,
            engine,
            port=self.config.server.port,
            idle_timeout_s=minutes * 60,
            ensure_worker=self.gpu_host.ensure_worker,
            on_event=on_event,
        )

    def serve_status(self) -> ServerStatus:
        """The server's state, settings (and how they differ from this config's), idle time."""
        runner, engine = self._server_parts()
        return serve_ops.serve_status(self.gpu_host.connect, runner, engine)

    def serve_logs(
        self,
        *,
        follow: bool = False,
        lines: int = 200,
        on_line: Callable[[str], None] | None = None,
    ) -> list[str]:
        """server.log: the last `lines`, or followed until the server stops."""
        runner, _ = self._server_parts()
        return serve_ops.serve_logs(
            self.gpu_host.connect, runner, follow=follow, lines=lines, on_line=on_line
        )

    def serve_stop(self) -> bool:
        """Stop the server; True when one was running (idempotent)."""
        runner, _ = self._server_parts()
        return serve_ops.serve_stop(self.gpu_host.connect, runner)
