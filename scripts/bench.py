#!/usr/bin/env python3
"""cosmos-workflow benchmark: each number measured side by side with its baseline in one run.

    .venv/bin/python scripts/bench.py [--quick] [--only NAME ...] [--json]

Cases (--only takes a name or its letter; a letter selects every case of that letter):

  a  extract-robot     first 2 frames → 320×180 of the 1280×704 robot clip, cold cache, vs a
                       full-clip `ffmpeg -i clip -vf scale=320:180 out.mp4`; and the cache hit
  a  extract-robot-static  the same, both sides with a static ffmpeg build (imageio-ffmpeg's)
  a  extract-1080p     the same on a 10 s 1920×1080 30 fps libx264 testsrc2 clip made here
  a  extract-1080p-static  the same, both sides with the static ffmpeg build
  b  check-100         `cosmos check DIR --json` on 100 specs of 100 distinct generated clips,
                       wall time of the CLI subprocess; phases measured in a second process
  c  bytes-per-prompt  `cosmos upsample` bytes_sent vs the source clip's size (real clips)
  d  ssh-ops           exec + SFTP operations of a batch of 10 and of 100 items
  e  batch-100         wall time of a 100-item `cosmos upsample` over loopback sshd
  f  batch-1000        wall time and peak RSS of a 1,000-item batch, RSS next to 100 items
  g  stage-100         staging 100 distinct generated clips (first 2 frames at 640×360, cold
                       frame cache): FrameCache.frames_many vs one ffmpeg per clip, 4 threads
  h  check-repeat      `cosmos check ONE_SPEC --json` (a real clip), wall time of the CLI
                       subprocess: a repeat (token counts cached) vs the first (cold cache)
  i  warm-server       1 and 20 specs through a warm `vllm serve` (cosmos serve) vs cold jobs,
                       the REAL engine (tiny Pixtral, engine venv); the local part of a warm run
  j  docker-start      1 spec, a cold job with the REAL engine: the Docker runner (the stand-in
                       image of scripts/docker_image.sh) vs the direct runner; a bare docker run

Batches run the real CLI against the test suite's throwaway OpenSSH sshd on 127.0.0.1 with the
stand-in engine (tests/fake_vllm), cold on both sides. The CLI runs this checkout's code
(PYTHONPATH). --quick: fewer repetitions, a 2 s 1080p
clip (x264 ultrafast), no phase split for check-100, batches over 10 distinct clips instead
of 100, and batch-1000 compares the 100-item run with the 10-item one (indicative only: the
goals are for the full run).

Exit code: 0 every case measured (MISS rows included), 1 a case could not be measured,
2 a missing tool or a bad argument.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import (  # noqa: E402
    CLIP_COUNT,
    EXAMPLE1,
    ROBOT,
    BenchError,
    Workspace,
    ffmpeg,
    median_time,
    require_tools,
    run_measured,
    tail,
)

MIB = 1024 * 1024


@dataclass
class Row:
    """One line of the table. `ratio` is baseline/measured for speed-ups, measured/baseline
    otherwise (the case's `ratio_text` says which)."""

    case: str
    name: str
    measured: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    ratio_text: str = ""
    goal: str = "report"
    passed: bool | None = None
    detail: str = ""


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 0.1:
            return f"{value * 1000:.1f} ms"
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g} {unit}".strip()


def speedup(case, name, measured, baseline, goal_x: float | None, detail="") -> Row:
    ratio = baseline / measured
    return Row(
        case, name, measured, "s", baseline, ratio, f"{ratio:.1f}×",
        f"≥{goal_x:g}×" if goal_x else "report", None if goal_x is None else ratio >= goal_x,
        detail,
    )  # fmt: skip


# -- (a) first frames vs a full transcode -------------------------------------------------------


def _extraction_rows(
    ws: Workspace,
    case: str,
    clip: Path,
    label: str,
    goal_x: float,
    reps: int,
    binary: str = "ffmpeg",
):
    from cosmos_workflow.media import FrameCache

    folder = ws.folder(case)
    runs = iter(range(10_000))

    def transcode():
        ffmpeg("-i", str(clip), "-vf", "scale=320:180", str(folder / "full.mp4"), binary=binary)

    def cold():  # a new cache folder each time: hashing + ffmpeg + manifest, no hit
        cache = FrameCache(folder / f"cache-{next(runs)}", ffmpeg=binary)
        prepared = cache.frames(clip, 320, 180, 2)
        if prepared.cached:
            raise BenchError("a fresh frame cache served a hit: the cold timing would be wrong")

    # Interleaved so both sides see the same machine state; medians of `reps`. CPU seconds
    # (this process + ffmpeg) too: the 2-thread transcode's wall time swings with other load.
    base, ours = [], []
    for _ in range(reps):
        base.append(wall_and_cpu(transcode))
        ours.append(wall_and_cpu(cold))
    (base_s, base_cpu), (ours_s, ours_cpu) = map(medians, (base, ours))
    warm = FrameCache(folder / "cache-warm", ffmpeg=binary)
    warm.frames(clip, 320, 180, 2)
    hit_s, _ = median_time(lambda: warm.frames(clip, 320, 180, 2), max(reps, 5))
    size = clip.stat().st_size
    detail = (
        f"{size / MIB:.1f} MiB source; baseline = full-clip transcode; median of {reps}; "
        f"CPU s (with ffmpeg): {ours_cpu:.3f} vs {base_cpu:.3f} = {base_cpu / ours_cpu:.1f}×"
    )
    return [
        speedup(case, f"{label}: 2 frames → 320×180, cold", ours_s, base_s, goal_x, detail),
        speedup(case, f"{label}: cache hit", hit_s, base_s, None),
    ]


def wall_and_cpu(fn) -> tuple[float, float]:
    """Wall seconds of `fn()` and the CPU seconds it took here and in the children it reaped."""

    def cpu() -> float:
        me, kids = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    cpu0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - cpu0


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def case_extract_robot(ws: Workspace) -> list[Row]:
    return _extraction_rows(
        ws, "extract-robot", ROBOT, "robot 1280×704 121 fr", 5, 3 if ws.quick else 7
    )


def static_ffmpeg() -> str:
    """A statically linked ffmpeg (`[ffmpeg] binary` can name one): imageio-ffmpeg's build.

    Debian's ffmpeg spends ~0.1 s resolving ~215 shared libraries at every start; a static
    build starts in ~0.02 s.
    """
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise BenchError("imageio-ffmpeg is not installed (pip install -e '.[dev]')") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def case_extract_robot_static(ws: Workspace) -> list[Row]:
    label = "robot 1280×704 121 fr, static ffmpeg"
    reps = 3 if ws.quick else 7
    rows = _extraction_rows(
        ws, "extract-robot-static", ROBOT, label, 5, reps, binary=static_ffmpeg()
    )
    return rows[:1]


def _clip_1080p(ws: Workspace) -> tuple[Path, str]:
    seconds = 2 if ws.quick else 10
    clip = ws.folder("clip-1080p") / "testsrc2_1080p.mp4"
    label = f"1080p {seconds} s 30 fps" + (" (--quick)" if ws.quick else "")
    if clip.exists():
        return clip, label
    preset = ["-preset", "ultrafast"] if ws.quick else []  # full run: x264's default preset
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-t", str(seconds),
        "-c:v", "libx264", *preset, "-pix_fmt", "yuv420p", str(clip),
    )  # fmt: skip
    # Age it like a clip on disk: the frame cache re-hashes a file modified < 2 s before it was
    # hashed (git's "racy" rule), which would time a re-hash as the cache hit.
    an_hour_ago = time.time() - 3600
    os.utime(clip, (an_hour_ago, an_hour_ago))
    return clip, label


def case_extract_1080p(ws: Workspace) -> list[Row]:
    clip, label = _clip_1080p(ws)
    return _extraction_rows(ws, "extract-1080p", clip, label, 15, 1 if ws.quick else 3)


def case_extract_1080p_static(ws: Workspace) -> list[Row]:
    clip, label = _clip_1080p(ws)
    reps = 1 if ws.quick else 3
    rows = _extraction_rows(
        ws,
        "extract-1080p-static",
        clip,
        label + ", static ffmpeg",
        15,
        reps,
        binary=static_ffmpeg(),
    )
    return rows[:1]


# -- (b) cosmos check on 100 clips -----------------------------------------------------------

PHASES = r"""
import json, sys, time
from pathlib import Path
t = [time.perf_counter()]
import cosmos_workflow.cli
from cosmos_workflow import media, tokens
from cosmos_workflow.workflows import WorkflowOrchestrator
t.append(time.perf_counter())
tokens.text_tokens("load the tokenizer")
t.append(time.perf_counter())
orch = WorkflowOrchestrator()
specs, errors = orch.load_inputs([Path(sys.argv[1])])
t.append(time.perf_counter())
infos = media.probe_many([s.video for s in specs], ffprobe=orch.preflight.ffprobe, min_frames=2)
t.append(time.perf_counter())
for s, info in zip(specs, infos):
    c = tokens.count_prompt_tokens(info.width, info.height, 2, s.prompt)
    tokens.verdict(c.prompt_tokens, 4096, 300)
t.append(time.perf_counter())
names = ["imports", "tokenizer load", "load 100 specs", "probe 100 clips", "count tokens"]
print(json.dumps({n: b - a for n, a, b in zip(names, t, t[1:])}))
"""


def case_check_100(ws: Workspace) -> list[Row]:
    specs = ws.specs(CLIP_COUNT, "check-specs")
    work = ws.folder("check")
    env = ws.env(work / "user")
    argv = [ws.tools["cosmos"], "check", str(specs), "--json"]
    walls = []
    for i in range(1 if ws.quick else 3):
        run = run_measured(argv, cwd=work, env=env, out_prefix=work / f"check{i}")
        if run.exit_code != 0:
            raise BenchError(f"cosmos check exited {run.exit_code}: {tail(run.stderr)}")
        items = run.json()["data"]["items"]
        if len(items) != CLIP_COUNT or any(it["verdict"] != "fits" for it in items):
            raise BenchError("cosmos check: expected 100 items that fit")
        walls.append(run.wall_s)
    wall_s = sorted(walls)[len(walls) // 2]
    detail = f"median of {len(walls)}"
    if not ws.quick:
        start_s, _ = median_time(lambda: subprocess.run([sys.executable, "-c", "pass"]), 3)
        phases = subprocess.run(
            [sys.executable, "-c", PHASES, str(specs)],
            cwd=work, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        parts = {"python start": start_s, **json.loads(phases.stdout)}
        parts["CLI rest (typer, rich, JSON, exit)"] = max(0.0, wall_s - sum(parts.values()))
        detail += "; phases (s, another process): " + ", ".join(
            f"{k} {v:.2f}" for k, v in parts.items()
        )
    return [
        Row("check-100", "cosmos check, 100 distinct clips (wall, subprocess)", wall_s, "s",
            goal="< 5 s", passed=wall_s < 5, detail=detail),
    ]  # fmt: skip


# -- (c) bytes per prompt --------------------------------------------------------------------


def case_bytes_per_prompt(ws: Workspace) -> list[Row]:
    rows = []
    variants = [("office_handover", EXAMPLE1, "640×480"), ("robot_lab_night", ROBOT, "1280×704")]
    extras = [()] if ws.quick else [(), ("--preprocess-videos",)]
    for extra in extras:
        for spec_name, clip, size in variants:
            label = f"{spec_name}{'-pre' if extra else ''}"
            _, record = ws.upsample(ws.seed_spec(spec_name), label, *extra)
            (item,) = record["items"]
            sent, source = record["bytes_sent"], clip.stat().st_size
            ratio = sent / source
            how = " --preprocess-videos" if extra else ""
            rows.append(
                Row("bytes-per-prompt",
                    f"{clip.name} {size}{how} (sent {item['frame_width']}×{item['frame_height']})",
                    sent, "B", source, ratio, f"{ratio:.1%}", "≤ 2%", ratio <= 0.02,
                    "baseline = the whole source clip (the seed project uploaded it)")
            )  # fmt: skip
    return rows


# -- (d, e, f) batches over loopback ---------------------------------------------------------


def _ops(record: dict) -> int:
    return record["ops"]["exec"] + record["ops"]["sftp"]


def case_ssh_ops(ws: Workspace) -> list[Row]:
    (_, small), (_, large) = ws.batch(10), ws.batch(100)
    ops_10, ops_100 = _ops(small), _ops(large)
    return [
        Row("ssh-ops", "SSH exec+SFTP ops, 10 items", ops_10, "ops", goal="≤ 10",
            passed=ops_10 <= 10, detail=f"{small['ops']}"),
        Row("ssh-ops", "SSH exec+SFTP ops, 100 items", ops_100, "ops", ops_10,
            ops_100 / ops_10, f"{ops_100 / ops_10:.2f}× of N=10", "≤ 10, same as N=10",
            ops_100 <= 10 and ops_100 == ops_10, f"{large['ops']}"),
    ]  # fmt: skip


def _timings(record: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in record.get("timings_s", {}).items())


def case_batch_100(ws: Workspace) -> list[Row]:
    run, record = ws.batch(100)
    return [
        Row("batch-100", "cosmos upsample, 100 items, loopback (wall)", run.wall_s, "s",
            detail=f"record timings_s: {_timings(record)}; {record['bytes_sent']:,} B sent"),
    ]  # fmt: skip


def case_batch_1000(ws: Workspace) -> list[Row]:
    # --quick reuses the 10- and 100-item runs of ssh-ops / batch-100 instead of a new one.
    small, count = (10, 100) if ws.quick else (100, 1000)
    small_run, _ = ws.batch(small)
    run, record = ws.batch(count)
    flat = run.hwm_kib / small_run.hwm_kib
    quick = " (--quick)" if ws.quick else ""
    return [
        Row("batch-1000", f"cosmos upsample, {count} items, loopback (wall){quick}", run.wall_s,
            "s", goal="< 60 s", passed=run.wall_s < 60,
            detail=f"record timings_s: {_timings(record)}; {record['bytes_sent']:,} B sent"),
        Row("batch-1000", f"peak RSS of cosmos, {count} items vs {small}", run.hwm_kib / 1024,
            "MiB",
            small_run.hwm_kib / 1024, flat, f"{flat:.2f}×", "≤ 1.2× (flat)", flat <= 1.2,
            f"VmHWM of the cosmos process; wait4 ru_maxrss (with ffmpeg children): "
            f"{run.maxrss_kib / 1024:.1f} vs {small_run.maxrss_kib / 1024:.1f} MiB"),
    ]  # fmt: skip


# -- (g) staging 100 clips: batched vs one ffmpeg per clip ------------------------------------

STAGE_SIZE = (640, 360)  # the generated clips' own size: what a batch of them stages


def case_stage_100(ws: Workspace) -> list[Row]:
    from concurrent.futures import ThreadPoolExecutor

    from cosmos_workflow.media import FrameCache

    clips = ws.clips()
    folder = ws.folder("stage-100")
    requests = [(clip, *STAGE_SIZE) for clip in clips]
    runs = iter(range(10_000))
    made: dict[str, list] = {}

    def one_per_clip():  # UpsampleMixin._stage before frames_many: 4 threads × FrameCache.frames
        cache = FrameCache(folder / f"cache-{next(runs)}")
        with ThreadPoolExecutor(max_workers=4) as pool:
            prepared = list(pool.map(lambda r: cache.frames(*r, 2), requests))
        made["one"] = [p.sha256 for p in prepared]

    def batched():
        cache = FrameCache(folder / f"cache-{next(runs)}")
        prepared = cache.frames_many(requests, 2)
        made["many"] = [getattr(prepared[r], "sha256", prepared[r]) for r in requests]

    base, ours = [], []
    for _ in range(2 if ws.quick else 5):  # interleaved, each on a new (cold) cache
        base.append(wall_and_cpu(one_per_clip))
        ours.append(wall_and_cpu(batched))
        if made["many"] != made["one"]:
            raise BenchError("frames_many wrote other frames than the one-clip path")
    (base_s, base_cpu), (ours_s, ours_cpu) = map(medians, (base, ours))
    detail = (
        f"{len(clips)} clips, cold cache both sides (source hashing included); median of "
        f"{len(base)}, interleaved; same sha256 per frame both sides; CPU s (with ffmpeg): "
        f"{ours_cpu:.2f} vs {base_cpu:.2f}"
    )
    name = f"stage {len(clips)} distinct clips, 2 frames at {STAGE_SIZE[0]}×{STAGE_SIZE[1]}"
    return [speedup("stage-100", name, ours_s, base_s, 3, detail)]


# -- (h) cosmos check of one spec, repeated ------------------------------------------------------


def case_check_repeat(ws: Workspace) -> list[Row]:
    spec = ws.seed_spec("office_handover") / "office_handover.json"
    work = ws.folder("check-repeat")
    argv = [ws.tools["cosmos"], "check", str(spec), "--json"]
    cold, warm, outputs = [], [], set()
    for i in range(3 if ws.quick else 7):
        env = ws.env(work / f"user{i}")  # a new user folder: no count cache, no frame cache
        for kind, walls in (("cold", cold), ("warm", warm)):
            run = run_measured(argv, cwd=work, env=env, out_prefix=work / f"{kind}{i}")
            if run.exit_code != 0:
                raise BenchError(f"cosmos check exited {run.exit_code}: {tail(run.stderr)}")
            outputs.add(run.stdout.read_text("utf-8"))
            walls.append(run.wall_s)
    if len(outputs) != 1:
        raise BenchError("cosmos check printed different results cold and warm")
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    detail = (
        f"{EXAMPLE1.name} 640×480 HEVC; medians of {len(warm)}, each pair in a new user folder; "
        "the first run loads the tokenizer and stores its counts, a repeat reads them"
    )
    return [
        Row("check-repeat", "cosmos check, 1 spec, first run (cold count cache)", cold_s, "s"),
        Row("check-repeat", "cosmos check, 1 spec, repeat", warm_s, "s", cold_s,
            cold_s / warm_s, f"{cold_s / warm_s:.1f}× of the first", "< 0.8 s", warm_s < 0.8,
            detail),
    ]  # fmt: skip


# -- (i) warm server vs cold job (the REAL vLLM engine, tiny Pixtral) ------------------------


REPO = Path(__file__).resolve().parents[1]


def _this_cosmos(ws: Workspace, work: Path) -> tuple[list[str], dict]:
    """This checkout's CLI (the venv's `cosmos` may be another checkout's editable install)."""
    env = ws.env(work / "user")
    env["PYTHONPATH"] = str(REPO)
    return [sys.executable, "-m", "cosmos_workflow"], env


def _engine_upsample(ws: Workspace, work: Path, specs: Path, label: str, *extra: str):
    cosmos, env = _this_cosmos(ws, work)
    argv = [*cosmos, "upsample", str(specs), "--preprocess-videos",
            "--save-dir", str(work / f"out-{label}"), *extra, "--json"]  # fmt: skip
    run = run_measured(argv, cwd=work, env=env, out_prefix=work / label)
    if run.exit_code != 0:
        raise BenchError(f"cosmos upsample {label} exited {run.exit_code}: {tail(run.stderr)}")
    record = run.json()["data"]
    if record["counts"]["ok"] != record["counts"]["total"]:
        raise BenchError(f"cosmos upsample {label}: not every item ok: {record['counts']}")
    return run, record


def _one_prompt(ws: Workspace, words: str) -> Path:
    """A folder with one spec whose prompt ends in `words` (a prompt of its own)."""
    folder = ws.specs(1, "warm-" + words.split()[0].lower(), 1)
    spec_file = next(folder.glob("*.json"))
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps(dict(spec, prompt=f"{spec['prompt']} {words}")))
    return folder


def case_warm_server(ws: Workspace) -> list[Row]:
    """One spec and 20 specs through a warm `vllm serve` vs cold jobs, real engine, one at a
    time (the server is stopped before the jobs run: one vLLM process at once)."""
    from tests.engine import engine_python, tiny_model_dir
    from tests.sshd import free_port
    from tests.upsample_env import real_checkpoint, real_worker, sshd_remote, write_config

    python = engine_python()
    if python is None:
        raise BenchError(
            "no engine venv: run scripts/setup_engine.sh (or set COSMOS_ENGINE_PYTHON)"
        )
    work = ws.folder("warm-server")
    host = work / "host" / "cosmos-transfer1"
    host.mkdir(parents=True)
    write_config(
        work / "config.toml",
        {
            "remote": sshd_remote(ws.sshd()),
            "paths": {"remote_dir": str(host), "cache_dir": str(work / "cache")},
            "worker": real_worker(python, real_checkpoint(work, tiny_model_dir(python)),
                                  work / "engine-work"),
            "server": {"port": free_port()},
        },
    )  # fmt: skip
    one, twenty = ws.specs(1, "warm-1", 1), ws.specs(20, "warm-20", 10)
    cosmos, env = _this_cosmos(ws, work)
    load = run_measured([*cosmos, "serve", "start"], cwd=work, env=env, out_prefix=work / "start")
    if load.exit_code != 0:
        raise BenchError(f"cosmos serve start exited {load.exit_code}: {tail(load.stderr)}")
    fresh, counted = [], []
    try:
        _engine_upsample(ws, work, one, "warmup", "--server")  # frames cached, like a 2nd try
        for n in range(2 if ws.quick else 3):
            # A new prompt each time, as when iterating on one (the same one would be answered
            # from the run's journal): its tokens are counted, loading the tokenizer.
            fresh.append(_engine_upsample(ws, work, _one_prompt(ws, f"Take {n}."), f"warm-new{n}",
                                          "--server"))  # fmt: skip
            # A prompt `cosmos check` counted before (its count is cached).
            spec = _one_prompt(ws, f"Checked {n}.")
            subprocess.run([*cosmos, "check", str(spec)], cwd=work, env=env, capture_output=True)
            counted.append(_engine_upsample(ws, work, spec, f"warm-counted{n}", "--server"))
        warm20, rec20 = _engine_upsample(ws, work, twenty, "warm-20", "--server")
    finally:
        subprocess.run([*cosmos, "serve", "stop"], cwd=work, env=env, capture_output=True)
    job1, _ = _engine_upsample(ws, work, ws.specs(1, "job-1", 1), "job-1", "--no-server")
    job20, _ = _engine_upsample(ws, work, ws.specs(20, "job-20", 10), "job-20", "--no-server")

    def median_run(runs):
        run, record = sorted(runs, key=lambda r: r[0].wall_s)[len(runs) // 2]
        return run.wall_s, record, run.wall_s - record["timings_s"]["generate"]

    new_s, new_rec, new_local = median_run(fresh)
    counted_s, counted_rec, counted_local = median_run(counted)
    r_new, r_counted, r20 = (
        job1.wall_s / new_s,
        job1.wall_s / counted_s,
        job20.wall_s / warm20.wall_s,
    )
    medians = f"median of {len(fresh)}"
    return [
        Row("warm-server", "1 spec, a new prompt: warm server vs cold job (real engine)", new_s,
            "s", job1.wall_s, r_new, f"{r_new:.1f}× faster", "≥ 10×", r_new >= 10,
            f"{medians}; server load (cosmos serve start) {load.wall_s:.1f} s, paid once; warm "
            f"timings_s: {_timings(new_rec)}"),
        Row("warm-server", "1 spec, a prompt `cosmos check` counted before: same", counted_s,
            "s", job1.wall_s, r_counted, f"{r_counted:.1f}× faster", "≥ 10×", r_counted >= 10,
            f"{medians}; warm timings_s: {_timings(counted_rec)}"),
        Row("warm-server", "20 specs: warm server vs cold job", warm20.wall_s, "s",
            job20.wall_s, r20, f"{r20:.1f}× faster", "report",
            detail=f"warm timings_s: {_timings(rec20)}"),
        Row("warm-server", "local part of a warm 1-spec run, a new prompt", new_local, "s",
            goal="< 1 s", passed=new_local < 1.0,
            detail=f"wall {new_s:.2f} s - generation {new_rec['timings_s']['generate']:.2f} s "
            "(CLI start, plan incl. loading the tokenizer to count the new prompt, frames from "
            "the cache, SSH connect + probe + tunnel, outputs, history)"),
        Row("warm-server", "local part of a warm 1-spec run, a prompt counted before",
            counted_local, "s", goal="< 1 s", passed=counted_local < 1.0,
            detail=f"wall {counted_s:.2f} s - generation "
            f"{counted_rec['timings_s']['generate']:.2f} s"),
    ]  # fmt: skip


# -- (j) the Docker runner's cost: one job in the stand-in image vs the same engine directly ---


def case_docker_start(ws: Workspace) -> list[Row]:
    """One spec, a cold job each time, the REAL engine: in a container of the stand-in image
    (scripts/docker_image.sh: the engine venv's own vLLM inside) vs the direct runner with the
    engine venv, interleaved; and a bare `docker run --rm IMAGE true` vs `sh -c true`."""
    import shutil

    from tests.dockerhost import stand_in_image
    from tests.engine import engine_python, tiny_model_dir
    from tests.upsample_env import (
        CHECKPOINT,
        real_checkpoint,
        real_worker,
        sshd_remote,
        write_config,
    )

    python = engine_python()
    if python is None:
        raise BenchError(
            "no engine venv: run scripts/setup_engine.sh (or set COSMOS_ENGINE_PYTHON)"
        )
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        raise BenchError("no Docker engine answers: run scripts/dockerd.sh start")
    image = stand_in_image()
    model = tiny_model_dir(python)
    work = ws.folder("docker-start")
    worker = real_worker(python, real_checkpoint(work / "direct", model), work / "engine-work")
    engine_env = {
        k: v
        for k, v in worker["env"].items()
        if k.startswith(("VLLM_", "HF_", "TRANSFORMERS_", "DO_NOT"))
    }
    engine_env.pop("VLLM_CACHE_ROOT", None)
    engine_env.pop("VLLM_CONFIG_ROOT", None)
    for kind in ("direct", "docker"):
        folder = work / kind
        host = folder / "host" / "cosmos-transfer1"
        host.mkdir(parents=True, exist_ok=True)
        if kind == "docker":
            shutil.copytree(model, host / "checkpoints" / CHECKPOINT, dirs_exist_ok=True)
            section = {
                "runner": "docker",
                "enforce_eager": True,
                "env": engine_env,
                "max_num_seqs": worker.get("max_num_seqs", 2),
            }
        else:
            section = worker
        write_config(
            folder / "config.toml",
            {
                "remote": sshd_remote(ws.sshd()),
                "paths": {"remote_dir": str(host), "cache_dir": str(folder / "cache")},
                "docker": {
                    "image": image,
                    "gpus": "none",
                    "shm_size": "1g",
                    "sudo": False,
                    "hf_cache": str(folder / "hf"),
                    "vllm_cache": str(folder / "vllm"),
                },
                "worker": section,
            },
        )
    runs = {"direct": [], "docker": []}
    for n in range(1 if ws.quick else 2):
        for kind in ("direct", "docker"):
            spec = _one_prompt(ws, f"Docker{n} {kind}.")
            runs[kind].append(_engine_upsample(ws, work / kind, spec, f"{kind}{n}", "--no-server"))
    direct_s = statistics.median(run.wall_s for run, _ in runs["direct"])
    docker_s = statistics.median(run.wall_s for run, _ in runs["docker"])
    bare_docker, _ = median_time(
        lambda: subprocess.run(
            ["docker", "run", "--rm", "--pull", "never", image, "true"],
            capture_output=True,
            check=True,
        ),
        3,
    )
    bare_sh, _ = median_time(lambda: subprocess.run(["sh", "-c", "true"], check=True), 3)
    _, docker_rec = runs["docker"][-1]
    return [
        Row("docker-start", "1 spec, cold job: docker runner vs direct (same engine)", docker_s,
            "s", direct_s, docker_s / direct_s, f"{docker_s / direct_s:.2f}× of direct", "report",
            detail=f"container overhead {docker_s - direct_s:+.1f} s per job; median of "
            f"{len(runs['docker'])}; docker timings_s: {_timings(docker_rec)}"),
        Row("docker-start", "bare `docker run --rm IMAGE true` vs `sh -c true`", bare_docker, "s",
            bare_sh, bare_docker / bare_sh, f"+{bare_docker - bare_sh:.2f} s", "report",
            detail="the container's own start and removal, no Python"),
    ]  # fmt: skip


MEDIA_TOOLS = ("ffmpeg", "ffprobe")
HOST_TOOLS = (*MEDIA_TOOLS, "cosmos", "ssh-keygen", "sshd")
# name: (letter, function, the executables it needs)
CASES = {
    "extract-robot": ("a", case_extract_robot, MEDIA_TOOLS),
    "extract-robot-static": ("a", case_extract_robot_static, MEDIA_TOOLS),
    "extract-1080p": ("a", case_extract_1080p, MEDIA_TOOLS),
    "extract-1080p-static": ("a", case_extract_1080p_static, MEDIA_TOOLS),
    "check-100": ("b", case_check_100, (*MEDIA_TOOLS, "cosmos")),
    "bytes-per-prompt": ("c", case_bytes_per_prompt, HOST_TOOLS),
    "ssh-ops": ("d", case_ssh_ops, HOST_TOOLS),
    "batch-100": ("e", case_batch_100, HOST_TOOLS),
    "batch-1000": ("f", case_batch_1000, HOST_TOOLS),
    "stage-100": ("g", case_stage_100, MEDIA_TOOLS),
    "check-repeat": ("h", case_check_repeat, (*MEDIA_TOOLS, "cosmos")),
    "warm-server": ("i", case_warm_server, HOST_TOOLS),
    "docker-start": ("j", case_docker_start, (*HOST_TOOLS, "docker")),
}


# -- output ----------------------------------------------------------------------------------


def verdict(row: Row) -> str:
    return "-" if row.passed is None else ("PASS" if row.passed else "MISS")


def print_table(rows: list[Row], errors: dict[str, str]) -> None:
    header = ("name", "measured", "baseline", "ratio", "goal", "result")
    lines = [
        (r.name, fmt(r.measured, r.unit), fmt(r.baseline, r.unit), r.ratio_text or "-", r.goal,
         verdict(r))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    for i, line in enumerate([header, *lines]):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    details = [r for r in rows if r.detail]
    if details:
        print()
        for r in details:
            print(f"- {r.name}: {r.detail}")
    for case, message in errors.items():
        print(f"ERROR {case}: {message}")


def machine() -> dict:
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ffmpeg": " ".join(version.split()[:3]),
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
    }


def selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(CASES)
    names = []
    for word in only:
        matches = [n for n, (letter, *_) in CASES.items() if word in (n, letter)]
        if not matches:
            raise SystemExit(f"error: unknown case {word!r}; one of: {', '.join(CASES)}, a-i")
        names += [m for m in matches if m not in names]
    return [n for n in CASES if n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer reps, smaller inputs")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="case names or letters a-i")
    parser.add_argument("--json", action="store_true", help="print JSON to stdout")
    args = parser.parse_args(argv)
    try:
        names = selected(args.only)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        tools = require_tools({tool for name in names for tool in CASES[name][2]})
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rows: list[Row] = []
    errors: dict[str, str] = {}
    load_before = os.getloadavg()[0]
    if load_before > (os.cpu_count() or 1) / 2:
        print(f"bench: warning: load average {load_before:.2f} before starting; other work on "
              "this machine skews the timings", file=sys.stderr)  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cosmos-bench-") as tmp:
        ws = Workspace(Path(tmp), tools, quick=args.quick)
        try:
            for name in names:
                print(f"bench: {name} …", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                try:
                    rows += CASES[name][1](ws)
                except (BenchError, OSError, subprocess.SubprocessError, ValueError) as exc:
                    errors[name] = str(exc)
                    print(f"bench: {name} FAILED: {exc}", file=sys.stderr, flush=True)
                print(f"bench: {name} {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        finally:
            ws.close()
    total_s = time.perf_counter() - started
    if args.json:
        report = {
            "quick": args.quick,
            "total_s": round(total_s, 2),
            "machine": {**machine(), "loadavg_before": load_before},
            "rows": [{**asdict(r), "result": verdict(r)} for r in rows],
            "errors": errors,
        }
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        m = machine()
        print(f"cosmos-workflow benchmark{' (--quick)' if args.quick else ''}: {m['cpus']} CPUs, "
              f"Python {m['python']}, {m['ffmpeg']}; {total_s:.0f} s; load average "
              f"{load_before:.2f} before, {m['loadavg'][0]:.2f} after\n")  # fmt: skip
        print_table(rows, errors)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
