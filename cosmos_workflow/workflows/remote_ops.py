"""Remote mixin: host readiness, host-key trust and jobs, faces over `GpuHost`."""

from __future__ import annotations

from collections.abc import Callable

from ..remote.hostkeys import HostKeyInfo
from .gpuhost import GpuHost


class RemoteMixin:
    """Mixed into `WorkflowOrchestrator`: needs `gpu_host`."""

    gpu_host: GpuHost

    def remote_check(self) -> dict:
        """`worker.py check` on the host: vLLM, torch and its GPUs, the checkpoint, free disk."""
        return self.gpu_host.check()

    def host_key(self) -> HostKeyInfo:
        """The host's key type and fingerprint, without logging in or recording anything."""
        return self.gpu_host.host_key()

    def trust_host(self) -> HostKeyInfo:
        """Fetch the host's key (no login) and record it in known_hosts."""
        return self.gpu_host.trust_host()

    def remote_status(self, job_id: str | None = None) -> dict:
        """Jobs on the host (state, counts, alive, cancelled) and the host's GPUs."""
        return self.gpu_host.job_status(job_id)

    def remote_logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        lines: int = 200,
        on_line: Callable[[str], None] | None = None,
    ) -> list[str]:
        """The job's worker.log: the last `lines`, or followed until the worker ends."""
        return self.gpu_host.job_logs(job_id, follow=follow, lines=lines, on_line=on_line)

    def remote_cancel(self, job_id: str) -> None:
        """Stop a job on the host; its finished items stay, a rerun resumes the rest."""
        self.gpu_host.cancel_job(job_id)
