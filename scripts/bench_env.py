"""What scripts/bench.py measures with: generated clips and specs, a loopback sshd, timed runs.

Everything is made at bench time inside one temporary folder and removed afterwards; the sshd
is the test suite's (tests/sshd.py helpers), started on 127.0.0.1 and stopped by `Workspace.close`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MEDIA = REPO.parent / "shared" / "media"
ASSETS = MEDIA / "cosmos-transfer1" / "assets"
PROMPT_SPECS = MEDIA / "prompt-specs"
ROBOT = ASSETS / "robot_sample_input.mp4"  # 1280×704 H.264, 24 fps, 121 frames
EXAMPLE1 = ASSETS / "example1_input_video.mp4"  # 640×480 HEVC, 30 fps, 121 frames

CLIP_COUNT = 100  # distinct small clips for `cosmos check` and the batches
CLIP_FRAMES = 12  # each clip: 0.5 s of testsrc2 at 24 fps, 640×360
QUICK_BATCH_CLIPS = 10  # distinct clips behind a --quick batch
RUN_TIMEOUT_S = 300.0


class BenchError(RuntimeError):
    """A benchmark could not measure (a missing tool, a command that failed)."""


INSTALL = {
    "ffmpeg": "apt-get install ffmpeg",
    "ffprobe": "apt-get install ffmpeg",
    "ssh-keygen": "apt-get install openssh-client",
    "sshd": "apt-get install openssh-server",
}


def require_tools(names) -> dict[str, str]:
    """Paths of the executables `names` (INSTALL's keys, "cosmos": the CLI beside this
    Python); BenchError naming every one that is missing and how to install it."""
    found, missing = {}, []
    search = "/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", "")
    for name in sorted(names):
        if name == "cosmos":
            cosmos = Path(sys.executable).with_name("cosmos")
            if cosmos.is_file():
                found[name] = str(cosmos)
            else:
                missing.append(f"{cosmos} (run scripts/install.sh, then use .venv/bin/python)")
            continue
        path = shutil.which(name, path=search)
        if path is None:
            missing.append(f"{name} ({INSTALL[name]})")
        else:
            found[name] = path
    if missing:
        raise BenchError("missing: " + "; ".join(missing))
    return found


def ffmpeg(*args: str, timeout_s: float = RUN_TIMEOUT_S, binary: str = "ffmpeg") -> None:
    """Run ffmpeg quietly; a failure raises BenchError with its last stderr line."""
    result = subprocess.run(
        [binary, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise BenchError(f"ffmpeg {' '.join(args[:6])} … failed: {' '.join(tail)}")


def median_time(fn, reps: int) -> tuple[float, list[float]]:
    """Median wall seconds of `fn()` over `reps` calls, and every sample."""
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples


@dataclass
class Measured:
    """One finished child process: exit code, wall time, peak RSS, its stdout/stderr files."""

    argv: list[str]
    exit_code: int
    wall_s: float
    maxrss_kib: int  # wait4: max RSS of the process and of the children it waited for
    hwm_kib: int  # VmHWM of the process itself, sampled from /proc until it exits
    stdout: Path
    stderr: Path

    def json(self) -> dict:
        return json.loads(self.stdout.read_text("utf-8"))


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_measured(
    argv: list[str], *, cwd: Path, env: dict, out_prefix: Path, timeout_s: float = RUN_TIMEOUT_S
) -> Measured:
    """Run `argv`; wall time from start to reaped exit, peak RSS via wait4 and /proc VmHWM."""
    stdout, stderr = out_prefix.with_suffix(".out"), out_prefix.with_suffix(".err")
    with open(stdout, "wb") as out_f, open(stderr, "wb") as err_f:
        t0 = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f,
            start_new_session=True,
        )  # fmt: skip
    hwm = [0]
    done = threading.Event()

    def sample() -> None:  # VmHWM only grows: the last read before exit is the peak
        while not done.wait(0.02):
            value = _hwm_kib(process.pid)
            if value:
                hwm[0] = max(hwm[0], value)

    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
        done.set()
        sampler.join()
    wall_s = time.perf_counter() - t0
    process.returncode = os.waitstatus_to_exitcode(status)
    if killed.is_set():
        raise BenchError(f"{' '.join(argv[:3])} … killed after {timeout_s:.0f} s")
    return Measured(
        argv, process.returncode, wall_s, usage.ru_maxrss, hwm[0] or usage.ru_maxrss, stdout,
        stderr,
    )  # fmt: skip


def tail(path: Path, lines: int = 3) -> str:
    text = path.read_text("utf-8", errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


@dataclass
class Workspace:
    """The bench's temporary folder and what is made in it on first use."""

    root: Path
    tools: dict[str, str]
    quick: bool = False
    _clips: list[Path] | None = None
    _sshd: object = None
    _runs: dict = field(default_factory=dict)
    _counter: int = 0

    def folder(self, name: str) -> Path:
        self._counter += 1
        path = self.root / f"{self._counter:02d}-{name}"
        path.mkdir(parents=True)
        return path

    # -- inputs ---------------------------------------------------------------------------

    def clips(self) -> list[Path]:
        """CLIP_COUNT distinct 640×360 H.264 clips: consecutive stretches of one testsrc2
        stream (its picture changes every frame), cut by one ffmpeg run's segment muxer."""
        if self._clips is None:
            folder = self.folder("clips")
            seconds = CLIP_FRAMES / 24
            ffmpeg(
                "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=24",
                "-frames:v", str(CLIP_COUNT * CLIP_FRAMES), "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                "-force_key_frames", f"expr:gte(t,n_forced*{seconds})",
                "-f", "segment", "-segment_time", str(seconds), "-reset_timestamps", "1",
                str(folder / "clip_%03d.mp4"),
            )  # fmt: skip
            clips = sorted(folder.glob("clip_*.mp4"))
            if len(clips) != CLIP_COUNT:
                raise BenchError(f"expected {CLIP_COUNT} generated clips, got {len(clips)}")
            self._clips = clips
        return self._clips

    def specs(self, count: int, name: str, distinct: int = CLIP_COUNT) -> Path:
        """`count` seed-format specs with distinct prompts over the first `distinct` generated
        clips (cycled: item i reads clip i % distinct)."""
        clips = self.clips()[:distinct]
        folder = self.folder(name)
        for i in range(count):
            spec = {
                "id": f"ps_{i:012x}",
                "name": f"item_{i:04d}",
                "prompt": f"Item {i}: a colour test pattern with a moving clock face, shot "
                f"{i % 7 + 1} of a calibration series.",
                "negative_prompt": "blurry",
                "input_video_path": str(clips[i % len(clips)]),
                "control_inputs": {},
                "timestamp": "2026-11-26T12:00:00Z",
                "is_upsampled": False,
                "parent_prompt_text": None,
            }
            (folder / f"item_{i:04d}.json").write_text(json.dumps(spec, indent=2))
        return folder

    def seed_spec(self, name: str) -> Path:
        """One of the real seed specs in shared/media, copied with absolute video paths."""
        from tests.upsample_env import seed_specs

        return seed_specs(self.folder(f"seed-{name}"), names=(name,))

    # -- the loopback host ----------------------------------------------------------------

    def sshd(self):
        """The test suite's throwaway OpenSSH sshd on 127.0.0.1 (started once)."""
        if self._sshd is None:
            self._sshd = _start_sshd(self.folder("sshd"), self.tools["sshd"])
        return self._sshd

    def env(self, user_dir: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMOS_", "FAKE_VLLM"))}
        env["COSMOS_USER_DIR"] = str(user_dir)
        # The CLI runs this checkout's code, even when the venv's editable install points at
        # another checkout (a git worktree sharing one venv).
        env["PYTHONPATH"] = str(REPO)
        # As an installed tool runs: from bytecode (compiled once, kept in the bench's folder),
        # not compiling every module at every start (~0.2 s) as PYTHONDONTWRITEBYTECODE makes it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
        return env

    def upsample(self, specs: Path, label: str, *extra: str) -> tuple[Measured, dict]:
        """`cosmos upsample SPECS --json` over loopback with the stand-in engine, cold on both
        sides (a fresh frame cache here, a fresh remote_dir there). Returns (run, record)."""
        from tests.upsample_env import (
            sshd_remote,
            stand_in_checkpoint,
            stand_in_worker,
            write_config,
        )

        server = self.sshd()
        work = self.folder(f"upsample-{label}")
        host = work / "host" / "cosmos-transfer1"
        host.mkdir(parents=True)
        write_config(
            work / "config.toml",
            {
                "remote": sshd_remote(server),
                "paths": {"remote_dir": str(host)},
                "worker": stand_in_worker(work / "engine.jsonl", stand_in_checkpoint(host)),
            },
        )
        argv = [self.tools["cosmos"], "upsample", str(specs), "--save-dir", str(work / "out")]
        run = run_measured(
            [*argv, *extra, "--json"],
            cwd=work,
            env=self.env(work / "user"),
            out_prefix=work / "run",
        )
        if run.exit_code != 0:
            raise BenchError(f"cosmos upsample exited {run.exit_code}: {tail(run.stderr)}")
        record = run.json()["data"]
        if record["counts"]["ok"] != record["counts"]["total"]:
            raise BenchError(f"cosmos upsample: not every item ok: {record['counts']}")
        return run, record

    def batch(self, count: int) -> tuple[Measured, dict]:
        """The `count`-item batch run (made once, shared by the cases that read it)."""
        if count not in self._runs:
            # --quick: fewer distinct clips, as each costs one ffmpeg run while staging.
            distinct = QUICK_BATCH_CLIPS if self.quick else CLIP_COUNT
            specs = self.specs(count, f"specs-{count}", distinct)
            self._runs[count] = self.upsample(specs, f"batch-{count}")
        return self._runs[count]

    def close(self) -> None:
        if self._sshd is not None:
            from tests.sshd import stop_sshd

            server, self._sshd = self._sshd, None
            stop_sshd(server)


def _start_sshd(folder: Path, sshd: str):
    """The same server as tests/sshd.py's `sshd` fixture, outside pytest."""
    from tests.sshd import start_sshd

    try:
        return start_sshd(folder, sshd)
    except RuntimeError as exc:
        raise BenchError(f"sshd did not start: {exc}") from None
