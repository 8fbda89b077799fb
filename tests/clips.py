"""Test clips made with the real ffmpeg at test time (import these from any test).

All clips come from ffmpeg's `testsrc2` source, whose picture moves from frame to frame, so
tests can tell frames apart. Each helper returns the path it wrote.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "media" / "cosmos-transfer1" / "assets"
ROBOT = ASSETS / "robot_sample_input.mp4"  # 1280×704 H.264, 24 fps, 121 frames, moov at the end
EXAMPLE1 = ASSETS / "example1_input_video.mp4"  # 640×480 HEVC, 30 fps, 121 frames


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; a failure raises with its stderr (a broken helper, not a test result)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        capture_output=True,
    )


def make_clip(
    path: str | Path,
    width: int,
    height: int,
    frames: int,
    *,
    rotate: int | None = None,
    codec: str = "libx264",
    fps: int = 24,
    pix_fmt: str | None = None,
) -> Path:
    """A `frames`-frame testsrc2 clip of coded size width × height; the suffix picks the container.

    Odd sizes are encoded as yuv444p (yuv420p needs even sides). `rotate` adds rotation
    metadata the way phones do, without re-encoding: ffmpeg's `rotate` stream tag, which its MP4
    muxer stores as the track's display matrix (ffmpeg 5.1 has no `-display_rotation`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if pix_fmt is None:
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    extra = ["-x265-params", "log-level=error"] if codec == "libx265" else []
    target = path.with_name(f".unrotated.{path.name}") if rotate is not None else path
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps},format={pix_fmt}",
        "-frames:v", str(frames), "-c:v", codec, *extra, str(target),
    )  # fmt: skip
    if rotate is not None:
        ffmpeg("-i", str(target), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", str(path))
        target.unlink()
    return path


def make_audio_only(path: str | Path, duration_s: float = 0.5) -> Path:
    """An AAC audio file with no video stream (an .m4a, or whatever suffix `path` has)."""
    path = Path(path)
    ffmpeg("-f", "lavfi", "-i", f"sine=duration={duration_s}", "-c:a", "aac", str(path))
    return path


def make_truncated(
    src: str | Path, dst: str | Path, *, keep: float = 0.5, faststart: bool = False
) -> Path:
    """The first `keep` fraction of `src`'s bytes, as an interrupted copy or download leaves it.

    With `faststart`, the MP4 index (moov) is first moved to the front (stream copy), so the
    cut file still has an index promising every frame while the data for the later ones is gone.
    """
    src, dst = Path(src), Path(dst)
    if faststart:
        whole = dst.with_name(f".faststart.{dst.name}")
        ffmpeg("-i", str(src), "-c", "copy", "-movflags", "+faststart", str(whole))
        data = whole.read_bytes()
        whole.unlink()
    else:
        data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def make_not_a_video(path: str | Path) -> Path:
    """A text file under a video's name (e.g. notes.mp4)."""
    path = Path(path)
    path.write_text("This is a shot list, not a video.\nscene 1: robot picks up the cup\n")
    return path


def decode_frames(path: str | Path, out_dir: str | Path, count: int) -> list[Path]:
    """The first `count` frames at the clip's own (display) size, as PNGs, from a full decode.

    Every frame of the clip is decoded (`select` drops all but the first `count`), so this is
    an independent reference for an extraction that stops early.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-i", str(path), "-vf", f"select=lt(n\\,{count})", "-fps_mode", "passthrough",
        "-start_number", "0", str(out_dir / "ref_%03d.png"),
    )  # fmt: skip
    return sorted(out_dir.glob("ref_*.png"))
