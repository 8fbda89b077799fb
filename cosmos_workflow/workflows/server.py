"""The warm server as an executor of `UpsamplePipeline` (pipeline.py describes the seam).

`ServerExecutor.execute(record, staged, on_event)` returns results shaped exactly like the
worker's results.jsonl lines (`id`, `text`, `prompt_tokens`, `generated_tokens`,
`finish_reason`, `error` {type, message}, `elapsed_s`), so collecting them is the same.
`ModeChoice` is the executor `cosmos upsample` starts with: once the run is planned it asks the
host for a server (on the run's own SSH connection) and hands over to the server or the job.

Each item is one chat request with the worker's message (frames first, then the text) and
`max_tokens` = the output budget; up to `max_num_seqs` go at once. Over SSH the frames are
uploaded to the host's content-addressed cache, as for a job, and sent as file:// URLs the
server reads there, when the host's mistral_common reads them (the server's state says:
`image_urls`); otherwise, and to an `--endpoint`, they go inline as base64 data URLs. The
prompt tokens the server reports must equal the local preflight's count, or the item fails.

Answers are journalled locally as they come (`<cache>/server-results/<job id>.jsonl`): after a
server died mid-batch, the same command sends only the items still without an answer.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import CosmosError, ServerError, SSHError
from ..remote import protocol
from ..remote.protocol import SERVER_LOST, TOKEN_MISMATCH, EngineSettings
from ..remote.transfer import upload_to_cache
from ..remote.tunnel import Target, Unreachable, request_json, shown_url
from ..tokens import effective_prompt
from .batchjob import JobExecutor
from .follow import reconnecting
from .gpuhost import GpuHost
from .jobs import PlannedItem, RunRecord
from .serve_ops import ServerStatus, read_status

Events = Callable[..., None]

API_KEY_ENV = "COSMOS_SERVER_API_KEY"
# Seconds one request may take: generation of 300 tokens is seconds on a GPU; a queue of
# concurrent runs (other users of the same server) adds to it.
REQUEST_TIMEOUT_S = 600.0


def build_messages(frame_urls: list[str], prompt: str) -> list[dict]:
    """One user message, frames first then the text: worker.build_conversation's, exactly."""
    content = [{"type": "image_url", "image_url": {"url": url}} for url in frame_urls]
    content.append({"type": "text", "text": effective_prompt(prompt)})
    return [{"role": "user", "content": content}]


def chat_request(model: str, messages: list[dict], engine: EngineSettings) -> dict:
    """The chat-completion body. `max_tokens` always: without it the server gives an answer
    the room left in max_model_len, and a prompt over it comes back as "max_tokens must be at
    least 1" instead of the length error."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": engine.output_tokens,
        "temperature": engine.temperature,
    }
    if engine.seed is not None:
        body["seed"] = engine.seed
    return body


def _result(item_id: str, started: float, *, text=None, error=None, **counts) -> dict:
    """A results.jsonl-shaped result (protocol.result_line's keys)."""
    return {
        "id": item_id,
        "text": text,
        "prompt_tokens": counts.get("prompt_tokens"),
        "generated_tokens": counts.get("generated_tokens"),
        "finish_reason": counts.get("finish_reason"),
        "error": error,
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def _error(item_id: str, started: float, kind: str, message: str, **counts) -> dict:
    return _result(item_id, started, error={"type": kind, "message": message}, **counts)


def result_from_response(item: PlannedItem, status: int, body, started: float) -> dict:
    """A chat-completion answer → the worker's result shape, with the token check."""
    if status != 200:
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = body["error"].get("message")  # OpenAI's error envelope
        text = " ".join(str(message or body).split())[:400]
        return _error(item.id, started, protocol.SERVER_REJECTED, f"HTTP {status}: {text}")
    try:
        choice = body["choices"][0]
        text = (choice["message"].get("content") or "").strip()
        usage = body["usage"]
        counts = {
            "prompt_tokens": usage["prompt_tokens"],
            "generated_tokens": usage.get("completion_tokens"),
            "finish_reason": choice.get("finish_reason"),
        }
    except (KeyError, IndexError, TypeError, AttributeError):
        return _error(
            item.id, started, protocol.SERVER_REJECTED, f"not a chat completion: {str(body)[:200]}"
        )
    if counts["prompt_tokens"] != item.prompt_tokens_local:
        message = (
            f"the server counted {counts['prompt_tokens']} prompt tokens, the local preflight "
            f"{item.prompt_tokens_local}"
        )
        return _error(item.id, started, TOKEN_MISMATCH, message, **counts)
    if not text:
        message = (
            f"the model wrote no text ({counts['generated_tokens']} tokens, finish reason "
            f"{counts['finish_reason']})"
        )
        return _error(item.id, started, "EmptyOutput", message, **counts)
    return _result(item.id, started, text=text, **counts)


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _settings(engine: EngineSettings) -> dict:
    return {key: getattr(engine, key) for key in JobExecutor.RECORDED_SETTINGS}


class ServerExecutor:
    """Sends staged items to a ready server: the host's (through an SSH tunnel) or an endpoint.

    Over SSH (or the local transport): `host` and the server's `status` (port, media root).
    To an endpoint: `target` (frames go inline) and `endpoint` (the URL, for the record).
    """

    mode = "server"

    def __init__(
        self,
        *,
        engine: EngineSettings,
        model: str,
        journal_dir: Path,
        host: GpuHost | None = None,
        status: ServerStatus | None = None,
        target: Target | None = None,
        endpoint: str | None = None,
    ):
        self.engine = engine
        self.model = model
        self.journal_dir = Path(journal_dir)
        self.host = host
        self.status = status
        self.target = target
        self.endpoint = endpoint
        self._lock = threading.Lock()

    # -- the seam ---------------------------------------------------------------------------

    def describe(self) -> dict:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            return {
                "host": parts.hostname or self.endpoint,
                "transport": parts.scheme,
                "runner": "endpoint",
                "settings": _settings(self.engine),
            }
        return JobExecutor(self.host, self.engine).describe()

    def ready(self, on_event: Events) -> ServerExecutor:
        return self

    def job_id(self, staged: list[PlannedItem]) -> str:
        """The job's id: the journal of answers is kept under it."""
        return protocol.job_id_for([item.batch_entry() for item in staged], self.engine)

    def command(self, job_id: str) -> str:
        if self.endpoint is not None:
            return (
                f"POST {shown_url(self.endpoint)}/chat/completions "
                f"(up to {self.engine.max_num_seqs} at once)"
            )
        return (
            f"POST /v1/chat/completions to 127.0.0.1:{self.status.port} on the host through the "
            f"SSH connection (up to {self.engine.max_num_seqs} at once)"
        )

    def execute(
        self,
        record: RunRecord,
        staged: list[PlannedItem],
        on_event: Events,
        *,
        launch: bool = True,
    ) -> tuple[dict[str, dict], Exception | None]:
        journal = self.journal_dir / f"{record.job_id}.jsonl"
        ids = {item.id for item in staged}
        earlier = protocol.parse_results(journal.read_bytes()) if journal.exists() else {}
        results = {k: v for k, v in earlier.items() if k in ids and not v.get("error")}
        if results:
            on_event("stage", message=f"{len(results)} item(s) already answered by the server")
        pending = [item for item in staged if item.id not in results]
        progress = {"done": len(results), "failed": 0, "total": len(staged)}
        on_event("progress", **progress)
        inline = self.target is not None or self.status.image_urls != "file"
        if inline:  # an endpoint, or a server whose mistral_common reads no file:// URL
            urls = {item.id: [data_url(p) for p in item.frame_files] for item in pending}
        if self.target is not None:
            t0 = time.monotonic()
            self._send(self.target, pending, urls, results, journal, progress, on_event)
            record.timings_s["generate"] = round(time.monotonic() - t0, 3)
            return results, None
        attempts = self.host.config.remote.reconnect_attempts
        with self.host.connect() as conn:
            if not inline:  # frames into the host's cache, read there by file:// URL
                t0 = time.monotonic()
                self._upload(conn, record, pending, on_event, attempts)
                record.timings_s["ship"] = round(time.monotonic() - t0, 3)
                media = self.status.media_root
                urls = {
                    item.id: [
                        f"file://{posixpath.join(media, f'{sha}.png')}" for sha in item.frame_sha256
                    ]
                    for item in pending
                }
            port = self.status.port

            def open_socket():
                return conn.open_tunnel(port, timeout_s=REQUEST_TIMEOUT_S)

            target = Target(open_socket=open_socket)

            def send_rest() -> None:
                conn.connect()  # again after a dropped connection
                rest = [item for item in pending if item.id not in results]
                self._send(target, rest, urls, results, journal, progress, on_event, conn)

            if not pending:
                return results, None
            t0 = time.monotonic()  # the requests alone: what the server spends generating
            on_event("stage", message=f"sending {len(pending)} item(s) to the server")
            reconnecting(send_rest, attempts=attempts, on_event=on_event, give_up=_tunnel_gave_up)
            record.timings_s["generate"] = round(time.monotonic() - t0, 3)
            record.ops = dict(conn.counters.as_dict())
        return results, None

    # -- running ----------------------------------------------------------------------------

    def _append(self, path: Path, result: dict) -> None:
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(result, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _upload(self, conn, record, pending, on_event, attempts: int) -> None:
        frames = {}
        for item in pending:
            frames.update(zip(item.frame_sha256, item.frame_files, strict=True))
        if not frames:
            return
        root = self.host.runner_settings().root

        def ship() -> None:
            on_event("stage", message=f"uploading {len(frames)} frame(s)")
            upload = upload_to_cache(
                conn, [(path, sha) for sha, path in frames.items()], posixpath.join(root, "cache")
            )
            record.bytes_sent += upload.bytes_sent

        reconnecting(ship, attempts=attempts, on_event=on_event, give_up=_tunnel_gave_up)

    def _send(self, target, items, urls, results, journal, progress, on_event, conn=None):
        """Send `items` (at most max_num_seqs at once); raise SSHError "connection_lost" when
        the SSH connection dropped (the caller reconnects and sends what is left)."""
        lost: list[SSHError] = []
        server_gone: list[str] = []

        def connection_dropped() -> bool:
            return conn is not None and not getattr(conn, "is_connected", True)

        def one(item: PlannedItem) -> None:
            body = chat_request(
                self.model, build_messages(urls[item.id], item.spec.prompt), self.engine
            )
            started = time.monotonic()
            try:
                status, answer = request_json(
                    target, "POST", "/chat/completions", body, timeout_s=REQUEST_TIMEOUT_S
                )
            except SSHError as exc:
                if exc.code == "connection_lost":
                    lost.append(exc)
                    return
                server_gone.append(exc.message)
                return
            except (Unreachable, ServerError) as exc:
                if connection_dropped():  # the tunnel went with the SSH connection
                    lost.append(SSHError("the SSH connection dropped", code="connection_lost"))
                    return
                server_gone.append(str(getattr(exc, "message", exc)))
                return
            result = result_from_response(item, status, answer, started)
            if not result["error"]:
                self._append(journal, result)
            with self._lock:
                results[item.id] = result
                progress["done" if not result["error"] else "failed"] += 1
                snapshot = dict(progress, id=item.id)
            on_event("progress", **snapshot)

        with ThreadPoolExecutor(max_workers=max(1, self.engine.max_num_seqs)) as pool:
            list(pool.map(one, items))
        if server_gone and not lost and target.open_socket is not None:
            # A request cut mid-way: the server died, or the SSH connection under the tunnel
            # did (paramiko closes channels before it marks the transport dead). A new tunnel
            # tells which: "connection_lost" means reconnect and send the rest.
            try:
                target.open_socket().close()
            except SSHError as exc:
                if exc.code == "connection_lost":
                    lost.append(exc)
            except (CosmosError, OSError):
                pass
        if lost:
            raise lost[0]
        for item in items:
            if item.id not in results and server_gone:
                message = f"the server gave no answer: {server_gone[0]}"
                results[item.id] = _error(item.id, time.monotonic(), SERVER_LOST, message)


def _gave_up(exc: SSHError, tries: int) -> SSHError:
    return SSHError(f"{exc.message} (after {tries} attempt(s))", exc.hint, code=exc.code)


def _tunnel_gave_up(exc: SSHError, tries: int) -> SSHError:
    return SSHError(
        f"{exc.message} (after {tries} attempt(s))",
        "run the same command again: items the server answered are kept",
        code=exc.code,
    )


def api_key() -> str | None:
    """The endpoint's API key, from the environment only (never config, logs or records)."""
    return os.environ.get(API_KEY_ENV) or None


def endpoint_model(target: Target) -> str:
    """The model an OpenAI-compatible endpoint serves (the first of `GET /models`)."""
    try:
        status, body = request_json(target, "GET", "/models", timeout_s=30.0)
    except Unreachable as exc:
        raise ServerError(
            f"the endpoint {shown_url(target.url + target.base_path)} does not answer: {exc}",
            "check [server] endpoint (or --endpoint) and that the server runs",
            code="endpoint_unreachable",
        ) from None
    if status == 401 or status == 403:
        raise ServerError(
            f"the endpoint refused the request (HTTP {status})",
            f"set {API_KEY_ENV} to the server's API key",
            code="endpoint_auth",
        )
    models = body.get("data") if isinstance(body, dict) else None
    if status != 200 or not models or not isinstance(models[0], dict) or "id" not in models[0]:
        raise ServerError(
            f"the endpoint's /models answered HTTP {status} without a model",
            "the endpoint must be an OpenAI-compatible base URL, e.g. http://gpu:8000/v1",
            code="endpoint_unreachable",
        )
    return models[0]["id"]


def choose_mode(use_server: bool | None, status_of: Callable[[], ServerStatus]):
    """("server" | "job", why, status). `use_server`: None auto, True --server, False --no-server.

    Auto uses a server only when it is ready and has this run's settings; `--server` fails
    (ServerError) otherwise. A host that cannot be reached is the run's error (SSHError); a
    host that cannot answer the question otherwise makes auto go the job's way.
    """
    if use_server is False:
        return "job", "--no-server", None
    try:
        status = status_of()
    except SSHError:
        raise  # the host cannot be reached: a job could not run either
    except CosmosError as exc:
        if use_server:
            raise
        return "job", f"could not ask the host for a server ({exc.message})", None
    if status.usable:
        return (
            "server",
            f"ready on the host with this run's settings, port {status.port}",
            status,
        )
    if status.state == "ready" and status.differences:
        why = "the server on the host has other settings: " + "; ".join(status.differences)
    elif status.state == "starting":
        why = "the server on the host is still loading the model"
    elif status.state == "failed":
        why = f"the server on the host failed ({status.error})"
    else:
        why = "no server runs on the host"
    if use_server:
        raise ServerError(
            f"--server: {why}",
            "`cosmos serve start` starts one with this config's settings; `cosmos serve "
            "status` shows the running one",
            code="no_usable_server",
        )
    return "job", why, status


class ModeChoice:
    """The executor `cosmos upsample` starts with: the warm server or a batch job.

    Until the run is ready to go (a dry run never is) it plans as the job would, and says
    mode "auto" (or "job" with --no-server, "server" with --server or an endpoint). `ready()`
    asks the host (or the endpoint) and returns the executor that runs the items; it says which
    and why in a "mode" event. `use_server`: None auto, True --server, False --no-server.
    """

    def __init__(
        self,
        job: JobExecutor,
        *,
        use_server: bool | None,
        endpoint: str,
        journal_dir: Path,
    ):
        self.job = job
        self.use_server = use_server
        self.endpoint = endpoint if use_server is not False else ""
        self.journal_dir = journal_dir

    @property
    def mode(self) -> str:
        if self.use_server is False:
            return "job"
        return "server" if self.use_server or self.endpoint else "auto"

    def describe(self) -> dict:
        return self.job.describe()

    def job_id(self, staged: list[PlannedItem]) -> str:
        return self.job.job_id(staged)

    def command(self, job_id: str) -> str:
        if self.endpoint:
            return f"POST {shown_url(self.endpoint)}/chat/completions"
        if self.mode == "server":
            return "POST /v1/chat/completions to the warm server on the host"
        return self.job.command(job_id)

    def ready(self, on_event: Events):
        engine = self.job.engine
        if self.endpoint:
            try:
                target = Target.for_url(self.endpoint, api_key())
            except ValueError as exc:
                raise ServerError(
                    str(exc), "give a base URL such as http://gpu:8000/v1", code="bad_endpoint"
                ) from None
            model = endpoint_model(target)
            why = f"the endpoint {shown_url(self.endpoint)} serves {model}"
            on_event("mode", mode="server", why=why)
            return ServerExecutor(
                engine=engine,
                model=model,
                journal_dir=self.journal_dir,
                target=target,
                endpoint=self.endpoint,
            )
        host = self.job.host
        if host.config.remote.transport == "ssh":
            host.host_settings()  # "no GPU host configured": no host to ask, no job either

        def probe() -> ServerStatus:
            with host.connect() as conn:
                conn.connect()  # again after a dropped connection
                return read_status(conn, self.job.runner, engine)

        def status_of() -> ServerStatus:
            attempts = host.config.remote.reconnect_attempts
            return reconnecting(probe, attempts=attempts, on_event=on_event, give_up=_gave_up)

        mode, why, status = choose_mode(self.use_server, status_of)
        on_event("mode", mode=mode, why=why)
        if mode == "job":
            return self.job.ready(on_event)
        return ServerExecutor(
            engine=engine,
            model=status.model,
            journal_dir=self.journal_dir,
            host=host,
            status=status,
        )
