"""The warm server as an executor: staged items in, one result dict per item out.

`ServerExecutor.execute(record, staged, on_event)` has the batch job's interface and returns
results shaped exactly like the worker's results.jsonl lines (`id`, `text`, `prompt_tokens`,
`output_tokens`, `finish_reason`, `error` {type, message}), so collecting them is the same.

Each item is one chat request with the worker's message (frames first, then the text) and
`max_tokens` = the output budget; up to `max_num_seqs` go at once. Over SSH the frames are
uploaded to the host's content-addressed cache, as for a job, and sent as file:// URLs the server
reads there; to an `--endpoint` they go inline as base64 data URLs. The prompt tokens the server
reports must equal the local preflight's count, or the item fails.

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

from ..errors import CosmosError, ServerError, SSHError
from ..remote.transfer import upload_to_cache
from ..remote.tunnel import Target, Unreachable, request_json
from ..tokens import effective_prompt
from .follow import reconnecting
from .jobs import EngineSettings, PlannedItem, parse_results
from .serve_ops import ServerStatus

API_KEY_ENV = "COSMOS_SERVER_API_KEY"
# Seconds one request may take: generation of 300 tokens is seconds on a GPU; a queue of
# concurrent runs (other users of the same server) adds to it.
REQUEST_TIMEOUT_S = 600.0

# Result error types the run record maps to codes and hints (upsample._engine_item_error).
SERVER_LOST = "ServerUnavailable"
TOKEN_MISMATCH = "TokenCountMismatch"
REJECTED = "ServerRejected"


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
        "max_tokens": engine.max_tokens,
        "temperature": engine.temperature,
    }
    if engine.seed is not None:
        body["seed"] = engine.seed
    return body


def _error(item_id: str, kind: str, message: str, **extra) -> dict:
    return {
        "id": item_id,
        "text": None,
        "prompt_tokens": extra.get("prompt_tokens"),
        "output_tokens": extra.get("output_tokens"),
        "finish_reason": extra.get("finish_reason"),
        "error": {"type": kind, "message": message},
    }


def result_from_response(item: PlannedItem, status: int, body) -> dict:
    """A chat-completion answer → the worker's result shape, with the token check."""
    if status != 200:
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = body["error"].get("message")  # OpenAI's error envelope
        text = " ".join(str(message or body).split())[:400]
        return _error(item.id, REJECTED, f"HTTP {status}: {text}")
    try:
        choice = body["choices"][0]
        text = (choice["message"].get("content") or "").strip()
        usage = body["usage"]
        prompt_tokens, output_tokens = usage["prompt_tokens"], usage.get("completion_tokens")
        finish_reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return _error(item.id, REJECTED, f"not a chat completion: {str(body)[:200]}")
    counts = {
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "finish_reason": finish_reason,
    }
    if prompt_tokens != item.prompt_tokens_local:
        return _error(
            item.id,
            TOKEN_MISMATCH,
            f"the server counted {prompt_tokens} prompt tokens, the local preflight "
            f"{item.prompt_tokens_local}",
            **counts,
        )
    if not text:
        message = f"the model wrote no text ({output_tokens} tokens, finish reason {finish_reason})"
        return _error(item.id, "EmptyOutput", message, **counts)
    return {"id": item.id, "text": text, "error": None, **counts}


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


class ServerExecutor:
    """Sends staged items to a ready server; `mode` is recorded in the run record."""

    mode = "server"

    def __init__(
        self,
        *,
        engine: EngineSettings,
        model: str,
        journal_dir: Path,
        connect: Callable[[], object] | None = None,
        root: str | None = None,
        status: ServerStatus | None = None,
        target: Target | None = None,
        attempts: int = 5,
    ):
        """Over SSH/local: `connect`, `root` and the server's `status` (port, media root).
        To an endpoint: `target` (frames inline)."""
        self.engine = engine
        self.model = model
        self.journal_dir = Path(journal_dir)
        self.connect = connect
        self.root = root
        self.status = status
        self.target = target
        self.attempts = attempts
        self._lock = threading.Lock()

    # -- journal ----------------------------------------------------------------------------

    def _journal(self, job_id: str) -> Path:
        return self.journal_dir / f"{job_id}.jsonl"

    def _append(self, path: Path, result: dict) -> None:
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(result, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())

    # -- running ----------------------------------------------------------------------------

    def execute(self, record, staged: list[PlannedItem], on_event) -> dict[str, dict]:
        journal = self._journal(record.job_id)
        ids = {item.id for item in staged}
        earlier = parse_results(journal.read_bytes()) if journal.exists() else {}
        results = {k: v for k, v in earlier.items() if k in ids and not v.get("error")}
        if results:
            on_event("stage", message=f"{len(results)} item(s) already answered by the server")
        pending = [item for item in staged if item.id not in results]
        progress = {"done": len(results), "failed": 0, "total": len(staged)}
        on_event("progress", **progress)
        if self.target is not None:  # an endpoint: frames inline
            urls = {item.id: [data_url(p) for p in item.frame_files] for item in pending}
            t0 = time.monotonic()
            self._send(self.target, pending, urls, results, journal, progress, on_event)
            record.timings_s["generate"] = round(time.monotonic() - t0, 3)
            return results
        with self.connect() as conn:
            self._upload(conn, record, pending, on_event)
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

            t0 = time.monotonic()  # the requests alone: what the server spends generating
            reconnecting(
                send_rest,
                attempts=self.attempts,
                on_event=on_event,
                give_up=_tunnel_gave_up,
            )
            record.timings_s["generate"] = round(time.monotonic() - t0, 3)
            record.ops = dict(conn.counters.as_dict())
        return results

    def _upload(self, conn, record, pending, on_event) -> None:
        frames = {}
        for item in pending:
            frames.update(zip(item.frame_sha256, item.frame_files, strict=True))
        if not frames:
            return

        def ship() -> None:
            on_event("stage", message=f"uploading {len(frames)} frame(s)")
            upload = upload_to_cache(
                conn,
                [(path, sha) for sha, path in frames.items()],
                posixpath.join(self.root, "cache"),
            )
            record.bytes_sent += upload.bytes_sent

        reconnecting(ship, attempts=self.attempts, on_event=on_event, give_up=_tunnel_gave_up)

    def _send(self, target, items, urls, results, journal, progress, on_event, conn=None):
        """Send `items` (at most max_num_seqs at once); raise SSHError "connection_lost" when
        the SSH connection dropped (the caller reconnects and sends what is left)."""
        lost: list[SSHError] = []

        def connection_dropped() -> bool:
            return conn is not None and not getattr(conn, "is_connected", True)

        server_gone: list[str] = []

        def one(item: PlannedItem) -> None:
            body = chat_request(
                self.model, build_messages(urls[item.id], item.spec.prompt), self.engine
            )
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
            result = result_from_response(item, status, answer)
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
                results[item.id] = _error(
                    item.id,
                    SERVER_LOST,
                    f"the server gave no answer: {server_gone[0]}",
                )


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
            f"the endpoint {target.url}{target.base_path} does not answer: {exc}",
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
    (ServerError) otherwise. Asking the host may fail (it is unreachable): auto then goes the
    job's way, which reports the failure as it always has.
    """
    if use_server is False:
        return "job", "--no-server", None
    try:
        status = status_of()
    except CosmosError as exc:
        if use_server:
            raise
        return "job", f"could not ask the host for a server ({exc.message})", None
    if status.usable:
        return (
            "server",
            f"a ready server on the host has this run's settings (port {status.port})",
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


def select_executor(
    *,
    use_server: bool | None,
    endpoint: str,
    connect: Callable[[], object],
    runner,
    engine: EngineSettings,
    journal_dir: Path,
    attempts: int,
    on_event,
) -> ServerExecutor | None:
    """The executor for this run: a ServerExecutor, or None for the batch job. Says which and
    why (an event). `endpoint` (a URL) wins unless `use_server` is False (--no-server)."""
    from .serve_ops import read_status

    if endpoint and use_server is not False:
        try:
            target = Target.for_url(endpoint, api_key())
        except ValueError as exc:
            raise ServerError(
                str(exc), "give a base URL such as http://gpu:8000/v1", code="bad_endpoint"
            ) from None
        model = endpoint_model(target)
        on_event("stage", message=f"mode: server at {endpoint} (model {model})")
        return ServerExecutor(engine=engine, model=model, journal_dir=journal_dir, target=target)

    def status_of() -> ServerStatus:
        with connect() as conn:
            return read_status(conn, runner, engine)

    mode, why, status = choose_mode(use_server, status_of)
    on_event("stage", message=f"mode: {mode} ({why})")
    if mode == "job":
        return None
    return ServerExecutor(
        engine=engine,
        model=status.model,
        journal_dir=journal_dir,
        connect=connect,
        root=runner.root,
        status=status,
        attempts=attempts,
    )
