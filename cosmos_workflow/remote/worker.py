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
    python worker.py check [--model PATH | --checkpoint-dir DIR] [--json]

`run` loads the model once, sends every pending item to vLLM in chunks, and appends a result
line per item as each chunk finishes; running it again skips the items that already have a
successful line (an item whose line is an error is run again). A bad item (too many tokens,
unreadable frame) becomes an error result; the others go on.
Exit codes: 0 job ran (item errors included), 2 bad batch or arguments, 3 the engine could not
start (missing checkpoint, vLLM import or load failure), 4 the engine died during the run or
the worker was interrupted.

Every finished item also prints one line for the CLI, which streams stdout over SSH:

    @@cosmos-progress {"done": 3, "failed": 1, "total": 10, "id": "item-id"}
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

BATCH_VERSION = 1
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
    "max_tokens": 300,
    "frames": 2,
    "enable_prefix_caching": True,
    "enforce_eager": False,
    "chunk_size": 64,
    "seed": None,
}

log = logging.getLogger("cosmos_worker")


class BatchError(Exception):
    """batch.json or the command line is unusable (exit 2)."""


class EngineStartError(Exception):
    """The model or vLLM could not be loaded (exit 3)."""


class EngineDiedError(Exception):
    """The engine stopped working during the run, or the worker was told to stop (exit 4)."""


# ---------------------------------------------------------------------------- batch and model


def load_batch(job_dir: str) -> dict:
    """Read and validate <job_dir>/batch.json; settings are completed with NVIDIA's defaults."""
    path = os.path.join(job_dir, "batch.json")
    try:
        with open(path, encoding="utf-8") as f:
            batch = json.load(f)
    except FileNotFoundError as e:
        raise BatchError(f"{path} not found") from e
    except (OSError, ValueError) as e:
        raise BatchError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(batch, dict):
        raise BatchError(f"{path}: expected a JSON object")
    if batch.get("version") != BATCH_VERSION:
        raise BatchError(f"{path}: version {batch.get('version')!r}, this worker reads 1")
    settings = batch.get("settings") or {}
    items = batch.get("items")
    if not isinstance(settings, dict) or not isinstance(items, list):
        raise BatchError(f"{path}: 'settings' must be an object and 'items' a list")
    merged = dict(DEFAULT_SETTINGS)
    # null means "the default"; unknown keys are left for newer workers.
    merged.update({k: v for k, v in settings.items() if v is not None})
    positive = ("max_model_len", "max_num_seqs", "tensor_parallel_size", "max_tokens", "frames")
    for key in (*positive, "chunk_size"):
        if not isinstance(merged[key], int) or isinstance(merged[key], bool) or merged[key] < 1:
            raise BatchError(f"{path}: settings.{key} must be a positive integer")
    for key in ("enable_prefix_caching", "enforce_eager"):
        if not isinstance(merged[key], bool):
            raise BatchError(f"{path}: settings.{key} must be true or false")
    for key in ("temperature", "gpu_memory_utilization"):
        if not isinstance(merged[key], (int, float)) or isinstance(merged[key], bool):
            raise BatchError(f"{path}: settings.{key} must be a number")
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
        }

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


def start_heartbeat(files: JobFiles, stop: threading.Event) -> threading.Thread:
    """Refresh status.json's heartbeat while the engine loads or runs (long silent stretches)."""

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                files.update_status()
            except OSError as e:
                log.warning("heartbeat: %s", e)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    return thread


def setup_logging(job_dir: str | None) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    handlers = [logging.StreamHandler(sys.stdout)]
    if job_dir:
        handlers.append(logging.FileHandler(os.path.join(job_dir, "worker.log"), encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)


# ---------------------------------------------------------------------------- engine


def import_vllm():
    """Import vLLM the way NVIDIA's instructions want it started."""
    # NVIDIA: vLLM must spawn (not fork) its engine processes once CUDA is initialised.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    import vllm

    return vllm


def load_engine(vllm, model_dir: str, settings: dict):
    """Build the LLM with NVIDIA's upsampler arguments (overridable through batch settings)."""
    return vllm.LLM(
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
        limit_mm_per_prompt={"image": settings["frames"]},
        # Share the KV cache of common prefixes (same frames, same chat frame) across requests.
        enable_prefix_caching=settings["enable_prefix_caching"],
        # One GPU holds the 12B model in bf16 (about 24 GB); more GPUs split it.
        tensor_parallel_size=settings["tensor_parallel_size"],
        # NVIDIA's 0.98: the 12B weights leave little room for KV cache on a 24-40 GB GPU.
        gpu_memory_utilization=settings["gpu_memory_utilization"],
        # CUDA graphs / torch.compile cost start-up time; eager mode starts faster (tests use it).
        enforce_eager=settings["enforce_eager"],
    )


def is_engine_dead(error: BaseException) -> bool:
    # vLLM's EngineDeadError: every later request would fail too, so stop instead of marking the
    # remaining items as failed (a rerun retries them).
    return type(error).__name__ in ("EngineDeadError", "DeadError")


def error_record(item_id: str, error: BaseException, elapsed_s: float) -> dict:
    return {
        "id": item_id,
        "text": None,
        "prompt_tokens": None,
        "output_tokens": None,
        "finish_reason": None,
        "error": {"type": type(error).__name__, "message": str(error)},
        "elapsed_s": round(elapsed_s, 3),
    }


def output_record(item_id: str, output, elapsed_s: float) -> dict:
    completion = output.outputs[0]
    return {
        "id": item_id,
        # NVIDIA strips the generated text before using it as the new prompt.
        "text": (completion.text or "").strip(),
        "prompt_tokens": len(output.prompt_token_ids),
        "output_tokens": len(completion.token_ids),
        "finish_reason": completion.finish_reason,
        "error": None,
        "elapsed_s": round(elapsed_s, 3),
    }


def run_chunk(llm, sampling_params, chunk: list) -> list:
    """Generate for [(item_id, conversation)], all in one chat call when the engine accepts it.

    vLLM validates every request of a call before running any (it aborts the ones already added
    when one fails), so one bad request (too many tokens, an undecodable image) rejects the lot.
    Then the chunk is split in halves and each half tried again, down to single items: the good
    items still run batched, each reaches the engine once, and only the bad ones become error
    results carrying the engine's message.
    """
    started = time.monotonic()
    try:
        outputs = llm.chat([conv for _, conv in chunk], sampling_params, use_tqdm=False)
    except Exception as e:
        if is_engine_dead(e):
            raise EngineDiedError(f"{type(e).__name__}: {e}") from e
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
    return [
        output_record(item_id, out, elapsed_s)
        for (item_id, _), out in zip(chunk, outputs, strict=True)
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
        files.update_status(state="loading")
        start_heartbeat(files, stop_heartbeat)
        log.info("loading %s", model_dir)
        loaded_at = time.monotonic()
        try:
            vllm = import_vllm()
            files.update_status(vllm_version=getattr(vllm, "__version__", None))
            llm = load_engine(vllm, model_dir, settings)
            sampling_params = vllm.SamplingParams(
                temperature=settings["temperature"],
                max_tokens=settings["max_tokens"],
                seed=settings["seed"],
            )
        except Exception as e:
            raise EngineStartError(f"engine failed to start: {type(e).__name__}: {e}") from e
        log.info("engine ready in %.1f s", time.monotonic() - loaded_at)
        files.update_status(state="running")

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
            files.update_status()
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


def check_host(model: str | None, checkpoint_dir: str | None) -> dict:
    """What this host has for running the upsampler; report['ready'] says whether it can."""
    root = os.path.dirname(os.path.abspath(__file__))
    problems = []
    vllm_info = {"version": None, "error": None}
    try:
        vllm_info["version"] = getattr(import_vllm(), "__version__", None)
    except Exception as e:  # a broken install raises more than ImportError (OSError, ...)
        vllm_info["error"] = f"{type(e).__name__}: {e}"
        problems.append(f"vLLM cannot be imported: {vllm_info['error']}")
    gpus, gpu_problem = query_gpus()
    if gpu_problem:
        problems.append(f"no GPU visible: {gpu_problem}")
    model_dir = resolve_model(root, model, checkpoint_dir)
    problem = model_problem(model_dir)
    if problem:
        problems.append(problem)
    usage = shutil.disk_usage(root)
    return {
        "ready": not problems,
        "problems": problems,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "vllm": vllm_info,
        "gpus": gpus,
        "model": {"path": model_dir, "files": model_files(model_dir), "ok": problem is None},
        "disk": {"path": root, "free_bytes": usage.free, "total_bytes": usage.total},
    }


def print_check(report: dict) -> None:
    vllm_info = report["vllm"]
    print(f"python   {report['python']} ({report['python_executable']})")
    print(f"vllm     {vllm_info['version'] or 'not importable: ' + str(vllm_info['error'])}")
    for gpu in report["gpus"]:
        total, used = gpu["memory_total_mib"], gpu["memory_used_mib"]
        print(f"gpu      {gpu['name']}, {total} MiB total, {used} MiB used")
    if not report["gpus"]:
        print("gpu      none")
    print(f"model    {report['model']['path']}")
    for name, size in report["model"]["files"].items():
        print(f"  {name:26} {'missing' if size is None else f'{size} bytes'}")
    print(
        f"disk     {report['disk']['free_bytes'] / 2**30:.1f} GiB free at {report['disk']['path']}"
    )
    for problem in report["problems"]:
        print(f"problem  {problem}")
    print("ready" if report["ready"] else "not ready")


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
        report = check_host(args.model, args.checkpoint_dir)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_check(report)
        return 0 if report["ready"] else 1
    # The CLI cancels a job with SIGTERM: end like Ctrl-C so status.json says "failed".
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return run_job(args.job_dir, args.model)


if __name__ == "__main__":
    sys.exit(main())
