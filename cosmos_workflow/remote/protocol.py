"""Every format the CLI and the worker exchange, each builder next to its parser.

The worker (`remote/worker.py`) runs on the GPU host with only the standard library and vLLM,
so it keeps its own copy of the formats and defaults below; `tests/test_protocol.py` runs the
real worker, parses everything it writes with this module and checks the defaults are equal.

What travels, in the order a job sees it:

- `batch.json`  (CLI → worker): `{"version": 2, "job_id", "settings": EngineSettings, "items":
  [{"id", "prompt", "frames": ["cache/<sha256>.png", …]}]}`; `frames` are paths (relative to
  the remote root), their number is `settings.frame_count`.
- stdout lines (worker → CLI, streamed): `@@cosmos-progress {"done", "failed", "total", "id"}`;
  then, from the job's wrapper (`jobctl`), `@@cosmos-exit <code|lost|cancelled>`.
- `results.jsonl` (worker → CLI): one line per finished item `{"id", "text", "prompt_tokens",
  "generated_tokens", "finish_reason", "error": {"type", "message"} | null, "elapsed_s"}`.
- `status.json` (worker → `cosmos remote status`), one row per job from `jobctl.status`:
  `<job_id>\\t<alive|dead>\\t<cancelled|->\\t<status.json on one line>`, then `@@gpu <csv>`.
- `worker.py check --json`: its report on a last line `@@cosmos-check {json}`.
- the warm server (`worker.py serve`, `servectl`): `server/request.json` (CLI → supervisor:
  `{"version": 1, "settings": EngineSettings, "port", "idle_timeout_s"}`), `server/state.json`
  (supervisor → CLI), printed by `servectl.probe` as `@@cosmos-server-state {json}` and
  `@@cosmos-server-alive yes|no`. A run uses a server only when its `SERVER_SETTINGS` equal the
  run's; `output_tokens` (as `max_tokens`), `temperature` and `seed` go with each request.

Names are the same from flag to worker: `max_model_len` (context: prompt + output),
`output_tokens` (room for the output; vLLM's `max_tokens` only at the `SamplingParams` call),
`frame_count` (frames per item).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable
from dataclasses import asdict, dataclass

BATCH_VERSION = 2
# NVIDIA's upsampler checkpoint, relative to cosmos-transfer1's checkpoints/ folder.
UPSAMPLER_MODEL = "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"
PROGRESS_PREFIX = "@@cosmos-progress "
EXIT_PREFIX = "@@cosmos-exit "
CHECK_PREFIX = "@@cosmos-check "
GPU_PREFIX = "@@gpu "
# `jobctl.cancel` prints this (and changes nothing) for a job the host does not have.
NO_JOB = "@@cosmos-no-job"
# `jobctl.logs` exits with this when the job folder does not exist (tail itself exits 1).
NO_JOB_EXIT = 3


# -- batch.json -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineSettings:
    """`batch.json` "settings": the engine and sampling settings of one job.

    The defaults are NVIDIA's production values (cosmos_transfer1's upsampler), equal to the
    worker's DEFAULT_SETTINGS and to the config's defaults (tests/test_protocol.py).
    """

    max_model_len: int = 4096
    output_tokens: int = 300
    frame_count: int = 2
    temperature: float = 0.6
    max_num_seqs: int = 2
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    gpu_memory_utilization: float = 0.98
    checkpoint_dir: str | None = None
    model: str | None = None
    chunk_size: int = 64
    seed: int | None = None
    stall_timeout_s: int = 900  # status.json says "stalled" after this long without progress


def batch_item(item_id: str, prompt: str, frame_sha256: Iterable[str]) -> dict:
    """One item of batch.json: its frames are content-addressed in the host's cache."""
    return {
        "id": item_id,
        "prompt": prompt,
        "frames": [posixpath.join("cache", f"{sha}.png") for sha in frame_sha256],
    }


def job_id_for(items: list[dict], settings: EngineSettings) -> str:
    """16 hex digits of SHA-256 over the batch items and the engine settings.

    Running the same command again makes the same job, so it finds the job on the host.
    """
    canonical = json.dumps(
        {"items": items, "settings": asdict(settings)}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def batch_json(job_id: str, items: list[dict], settings: EngineSettings) -> bytes:
    batch = {
        "version": BATCH_VERSION,
        "job_id": job_id,
        "settings": asdict(settings),
        "items": items,
    }
    return (json.dumps(batch, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def parse_batch(data: bytes) -> dict:
    """batch.json as the CLI wrote it (the worker validates its own copy: `load_batch`)."""
    batch = json.loads(data)
    if not isinstance(batch, dict) or batch.get("version") != BATCH_VERSION:
        raise ValueError(f"not a version {BATCH_VERSION} batch")
    return batch


# -- stdout lines -----------------------------------------------------------------------------


def progress_line(done: int, failed: int, total: int, item_id: str) -> str:
    progress = {"done": done, "failed": failed, "total": total, "id": item_id}
    return PROGRESS_PREFIX + json.dumps(progress, ensure_ascii=False)


def parse_progress(line: str) -> dict | None:
    """A `@@cosmos-progress {json}` line as a dict; None for ordinary log lines."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        progress = json.loads(line[len(PROGRESS_PREFIX) :])
    except json.JSONDecodeError:
        return None
    return progress if isinstance(progress, dict) else None


def exit_line(code: str) -> str:
    """What the job's wrapper prints when the worker ended (`jobctl` builds it in shell)."""
    return f"{EXIT_PREFIX}{code}"


def parse_exit(line: str) -> str | None:
    """The worker's exit from a `@@cosmos-exit` line: digits, "lost" or "cancelled"; or None."""
    if not line.startswith(EXIT_PREFIX):
        return None
    return line[len(EXIT_PREFIX) :].strip()


def check_line(report: dict) -> str:
    return CHECK_PREFIX + json.dumps(report, ensure_ascii=False)


def parse_check_report(stdout: str) -> dict | None:
    """The report on the last `@@cosmos-check {json}` line of `worker.py check --json`.

    Whatever ran before it (the Docker image's entrypoint banner, vLLM's log) may have printed
    on stdout too.
    """
    for line in reversed(stdout.splitlines()):
        if line.startswith(CHECK_PREFIX):
            try:
                report = json.loads(line[len(CHECK_PREFIX) :])
            except json.JSONDecodeError:
                return None
            return report if isinstance(report, dict) else None
    return None


# -- results.jsonl ----------------------------------------------------------------------------

# `error.type` of a result from the warm server (the worker's are Python exception names and
# "EmptyOutput"): no answer (the server died), a prompt count that differs from the local
# preflight's, an HTTP error.
SERVER_LOST = "ServerUnavailable"
TOKEN_MISMATCH = "TokenCountMismatch"
SERVER_REJECTED = "ServerRejected"


def result_line(
    item_id: str,
    *,
    text: str | None,
    prompt_tokens: int | None,
    generated_tokens: int | None,
    finish_reason: str | None,
    error: dict | None,
    elapsed_s: float,
) -> str:
    result = {
        "id": item_id,
        "text": text,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated_tokens,
        "finish_reason": finish_reason,
        "error": error,
        "elapsed_s": round(elapsed_s, 3),
    }
    return json.dumps(result, ensure_ascii=False)


def parse_results(data: bytes) -> dict[str, dict]:
    """`results.jsonl` → {item id: result}; a torn last line (killed mid-write) is ignored.

    A rerun of the job retries the items whose result was an error and appends their new
    line: an item's first success wins, otherwise its latest error. A line from a version 1
    worker names the generated count `output_tokens`; it is read as `generated_tokens`.
    """
    results: dict[str, dict] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict) and isinstance(result.get("id"), str):
            if "generated_tokens" not in result and "output_tokens" in result:
                result["generated_tokens"] = result.pop("output_tokens")
            earlier = results.get(result["id"])
            if earlier is None or earlier.get("error"):
                results[result["id"]] = result
    return results


# -- status rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    """One job as `jobctl.status` lists it: its folder name, process, and status.json."""

    job_id: str
    alive: bool
    cancelled: bool
    status: dict


def status_row(job_id: str, alive: bool, cancelled: bool, status: dict) -> str:
    """A row as `jobctl.status` prints it (built there in shell; here for tests)."""
    flags = ("alive" if alive else "dead", "cancelled" if cancelled else "-")
    return "\t".join((job_id, *flags, json.dumps(status)))


def parse_status(stdout: str) -> tuple[list[JobRow], list[str]]:
    """`jobctl.status` output → (job rows, GPU CSV lines). A status.json being rewritten
    (unreadable) reads as {}."""
    rows: list[JobRow] = []
    gpus: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(GPU_PREFIX):
            gpus.append(line[len(GPU_PREFIX) :].strip())
            continue
        parts = line.split("\t", 3)
        if len(parts) < 4:
            continue
        name, alive, cancelled, status_text = parts
        try:
            status = json.loads(status_text) if status_text.strip() else {}
        except json.JSONDecodeError:
            status = {}
        if not isinstance(status, dict):
            status = {}
        rows.append(JobRow(name, alive == "alive", cancelled == "cancelled", status))
    return rows, gpus


# -- the warm server --------------------------------------------------------------------------

SERVER_REQUEST_VERSION = 1
SERVER_STATE_PREFIX = "@@cosmos-server-state "
SERVER_ALIVE_PREFIX = "@@cosmos-server-alive "
SERVER_LAUNCHED = "@@cosmos-server-launched"
SERVER_RUNNING = "@@cosmos-server-running"
# `servectl.logs` exits with this when no server was ever started on the host.
NO_SERVER_EXIT = 3
# The settings that shape the loaded engine (the worker's SERVER_SETTINGS): a run uses a running
# server only when these are its own.
SERVER_SETTINGS = (
    "model",
    "checkpoint_dir",
    "max_model_len",
    "max_num_seqs",
    "frame_count",
    "tensor_parallel_size",
    "enable_prefix_caching",
    "gpu_memory_utilization",
    "enforce_eager",
)


def server_settings(engine: EngineSettings) -> dict:
    """The engine settings a server is started with and compared on."""
    settings = asdict(engine)
    return {key: settings[key] for key in SERVER_SETTINGS}


def server_request_json(engine: EngineSettings, port: int, idle_timeout_s: float) -> bytes:
    request = {
        "version": SERVER_REQUEST_VERSION,
        "settings": asdict(engine),
        "port": port,
        "idle_timeout_s": idle_timeout_s,
    }
    return (json.dumps(request, indent=1) + "\n").encode("utf-8")


def parse_server_probe(stdout: str) -> tuple[dict | None, bool]:
    """`servectl.probe` output → (state.json as a dict or None, the supervisor is alive)."""
    state, alive = None, False
    for line in stdout.splitlines():
        if line.startswith(SERVER_STATE_PREFIX):
            try:
                state = json.loads(line[len(SERVER_STATE_PREFIX) :])
            except json.JSONDecodeError:
                state = None
        elif line.startswith(SERVER_ALIVE_PREFIX):
            alive = line[len(SERVER_ALIVE_PREFIX) :].strip() == "yes"
    return (state if isinstance(state, dict) else None), alive
