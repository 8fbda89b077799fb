"""`cosmos serve start|status|logs|stop`: the warm server on the host, as library functions.

Each takes what it needs (a connection factory, the runner and engine settings, the [server]
settings) instead of reaching into the orchestrator. The host side is `worker.py serve`
(remote/worker.py): it starts vLLM's OpenAI-compatible server with the batch job's engine
arguments and writes `<root>/server/state.json`, which everything here reads.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..errors import CosmosError, ServerError
from ..remote import protocol, servectl
from ..remote import runner as runners
from ..remote.base import ShellCommand
from ..remote.protocol import EngineSettings, server_settings

# Seconds between looks at a starting server.
START_POLL_S = 1.0
START_TIMEOUT_S = 1800.0  # a 12B model on a slow disk loads in minutes, never half an hour
# A supervisor that has stopped its server exits within its grace period (worker.py).
EXIT_WAIT_S = 60.0

Events = Callable[..., None]


def _quiet(kind: str, **data) -> None:
    """Default event sink: the library never prints."""


def settings_differences(running: dict | None, wanted: dict) -> list[str]:
    """`key: server VALUE, this run VALUE` for each setting that differs."""
    running = running or {}
    return [
        f"{key}: server {running.get(key)!r}, this run {wanted[key]!r}"
        for key in protocol.SERVER_SETTINGS
        if running.get(key) != wanted[key]
    ]


@dataclass
class ServerStatus:
    """What `cosmos serve status` reports (and `--json` prints)."""

    state: str  # starting | ready | stopped | failed
    alive: bool = False
    model: str | None = None
    port: int | None = None
    pid: int | None = None
    container: str | None = None
    settings: dict = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)  # from this config's settings
    started_at: float | None = None
    ready_at: float | None = None
    stopped_at: float | None = None
    requests_served: int = 0
    idle_s: float | None = None
    idle_timeout_s: float | None = None
    vllm_version: str | None = None
    media_root: str | None = None  # the frame cache as the server reads it (file:// URLs)
    image_urls: str | None = None  # "file": frames from the host's cache; "data": inline
    log: str | None = None
    error: str | None = None
    stop_reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.state == "ready" and self.alive and not self.differences

    def to_dict(self) -> dict:
        return asdict(self)


def parse_probe(stdout: str, wanted: dict, container: str | None) -> ServerStatus:
    """servectl.probe's output → the status (a live-less "starting"/"ready" is "failed")."""
    state, alive = protocol.parse_server_probe(stdout)
    if state is None:
        return ServerStatus(state="starting" if alive else "stopped", alive=alive)
    name = state.get("state") or "stopped"
    error = state.get("error")
    if not alive and name in ("starting", "ready"):
        name = "failed"
        error = error or "the server's supervisor is gone (killed, or the host rebooted)"
    status = ServerStatus(
        state=name,
        alive=alive,
        model=state.get("model"),
        port=state.get("port"),
        pid=state.get("pid"),
        container=container if alive else None,
        settings=state.get("settings") or {},
        started_at=state.get("started_at"),
        ready_at=state.get("ready_at"),
        stopped_at=state.get("stopped_at"),
        requests_served=state.get("requests_served") or 0,
        idle_s=state.get("idle_s"),
        idle_timeout_s=state.get("idle_timeout_s"),
        vllm_version=state.get("vllm_version"),
        media_root=state.get("media_root"),
        image_urls=state.get("image_urls"),
        log=state.get("log"),
        error=error,
        stop_reason=state.get("stop_reason"),
    )
    if name in ("starting", "ready"):
        status.differences = settings_differences(status.settings, wanted)
    return status


def _container(runner: runners.RunnerSettings) -> str | None:
    return runners.server_container(runner) if runner.kind == "docker" else None


def read_status(conn, runner: runners.RunnerSettings, engine: EngineSettings) -> ServerStatus:
    """The server's status, in one command on the host."""
    folder = servectl.server_dir(runner.root)
    result = conn.run(ShellCommand(servectl.probe(folder)), check=False)
    return parse_probe(result.stdout, server_settings(engine), _container(runner))


def serve_status(connect, runner, engine) -> ServerStatus:
    with connect() as conn:
        return read_status(conn, runner, engine)


def serve_start(
    connect,
    runner: runners.RunnerSettings,
    engine: EngineSettings,
    *,
    port: int,
    idle_timeout_s: float,
    ensure_worker: Callable[[object, str, str], object],
    on_event: Events = _quiet,
    timeout_s: float = START_TIMEOUT_S,
) -> tuple[ServerStatus, bool]:
    """Start the server (detached) and wait until it answers; (status, started by this call).

    A server that is already running is left as it is (`started` False; its `differences`
    say how its settings differ from these); one still loading is waited for. Raises
    ServerError with the root cause when the model does not load, the port is taken, or the
    supervisor dies.
    """
    folder = servectl.server_dir(runner.root)
    with connect() as conn:
        current = read_status(conn, runner, engine)
        # A supervisor that wrote "failed" or "stopped" is on its way out: wait for it to go,
        # then start anew (it would otherwise read as "already running").
        deadline = time.monotonic() + EXIT_WAIT_S
        while current.alive and current.state in ("failed", "stopped"):
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the server {current.state} but its supervisor does not exit",
                    "`cosmos serve stop` ends it; then start again",
                    code="server_stuck",
                )
            time.sleep(0.2)
            current = read_status(conn, runner, engine)
        if current.alive and current.state != "starting":
            return current, False
        started = False
        if current.alive:  # another start is loading it (or this one, before a dropped link)
            on_event("stage", message="the server is already loading on the host: waiting")
        else:
            ensure_worker(conn, runner.root, folder)
            conn.write_bytes(
                posixpath.join(folder, "request.json"),
                protocol.server_request_json(engine, port, idle_timeout_s),
            )
            on_event("stage", message="starting the server on the host")
            command = servectl.launch(folder, runners.server_command(runner))
            result = conn.run(ShellCommand(command))
            started = servectl.LAUNCHED in result.stdout.split()
        deadline = time.monotonic() + timeout_s
        offset = 0
        while True:
            offset = _stream_log(conn, folder, offset, on_event)
            status = read_status(conn, runner, engine)
            if status.state == "ready":
                break
            if status.state in ("failed", "stopped"):
                # Return once its supervisor is gone too: nothing is left running, and a
                # status or start right after sees it stopped, not "already running".
                exit_deadline = time.monotonic() + EXIT_WAIT_S
                while status.alive and time.monotonic() < exit_deadline:
                    time.sleep(0.1)
                    status = read_status(conn, runner, engine)
                break
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the server did not answer within {timeout_s:g} s",
                    "`cosmos serve logs` shows what it is doing; `cosmos serve stop` stops it",
                    code="server_start_timeout",
                )
            on_event("stage", message=f"loading the model ({status.state})")
            time.sleep(START_POLL_S)
        if status.state != "ready" and status.error is None:
            # Ended without a word of its own: the launch (sudo, docker) may have said why.
            log = posixpath.join(folder, "stdout.log")
            output = conn.run(["tail", "-n", "20", log], check=False)
            failure = runners.launch_error(output.stdout.splitlines())
            if failure is not None:
                raise failure
    if status.state != "ready":
        raise start_failed(status, port)
    return status, started


def start_failed(status: ServerStatus, port: int) -> ServerError:
    error = status.error or f"the server {status.state} without saying why"
    if "already in use" in error:
        hint = (
            f"another program listens on port {port} of the host: set [server] port to a free one"
        )
    elif "lacks" in error or "does not exist" in error:
        hint = "check [worker] checkpoint_dir (`cosmos remote check` lists the model files)"
    else:
        hint = "`cosmos serve logs` shows the server's output; `cosmos remote check` the host"
    return ServerError(f"the server did not start: {error}", hint, code="server_start_failed")


def _stream_log(conn, folder: str, offset: int, on_event: Events) -> int:
    """Send the supervisor's new log lines (from byte `offset`) as events; the new offset."""
    log = posixpath.join(folder, "server.log")
    result = conn.run(["tail", "-c", f"+{offset + 1}", log], check=False)
    if not result.ok:
        return offset
    data = result.stdout
    complete = data[: data.rfind("\n") + 1]
    for line in complete.splitlines():
        on_event("log", line=line)
    return offset + len(complete.encode("utf-8"))


def serve_stop(connect, runner: runners.RunnerSettings) -> bool:
    """Stop the server; True when one was running (idempotent: False otherwise)."""
    folder = servectl.server_dir(runner.root)
    command = servectl.stop(folder, _container(runner), docker=runner.docker)
    with connect() as conn:
        result = conn.run(ShellCommand(command))
    return "stopped" in result.stdout.split()


def serve_logs(connect, runner, *, follow: bool = False, lines: int = 200, on_line=None):
    """server.log: the last `lines`, or followed until the server stops."""
    folder = servectl.server_dir(runner.root)
    collected: list[str] = []
    with connect() as conn:
        result = conn.run(
            ShellCommand(servectl.logs(folder, follow=follow, lines=lines)),
            check=False,
            on_stdout=on_line or collected.append,
        )
    if result.exit_code == servectl.NO_SERVER_EXIT:
        raise CosmosError(
            "no server was ever started on the host",
            "`cosmos serve start` starts one",
            code="no_server",
        )
    return collected
