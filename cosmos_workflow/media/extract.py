"""The first N frames of a clip at a target size: as PNGs (what the model reads) or a hint video.

One ffmpeg process per call (`extract_frames_many`: one for several clips), and it stops after
N frames: `-frames:v N` ends the output, and with one decoder thread ffmpeg reads only the
packets those frames need — the rest of the clip is never decoded (nor read: MP4 indexes let it
seek). ffmpeg applies rotation metadata before our filters (autorotate), as OpenCV does, so
frames come out the way the clip plays.

Scaling uses swscale's `area` filter: it averages every source pixel that falls in a target
pixel, which is right for the usual 2–6× downscale (720p → 320×180) — no aliasing, no ringing —
and `accurate_rnd+full_chroma_int` keep colour edges exact when it also converts YUV → RGB in
the same pass (the PNG encoder needs RGB, so format negotiation puts that conversion here).
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ffmpeg as ffmpeg_python

from ..errors import MediaError, ToolMissingError
from ..fsutil import set_default_mode
from .mp4 import read_mp4
from .tools import RUN_TIMEOUT_S, check_source, last_lines, open_failure, run_tool

SCALE_FLAGS = "area+accurate_rnd+full_chroma_int"
FRAME_PATTERN = "frame_%03d.png"
# A batch's time limit grows with its clips: the one-clip limit plus this much per clip.
BATCH_TIMEOUT_PER_CLIP_S = 10.0

# Lines ffmpeg prints (at -loglevel error) when the data itself is damaged, as opposed to a clip
# that simply ends: they decide between media_corrupt and media_too_few_frames.
_DAMAGE = re.compile(
    r"partial file|Invalid data|error while decoding|Invalid NAL|corrupt|missing picture"
    r"|concealing|Error splitting|decode_slice|Packet corrupt|truncat",
    re.IGNORECASE,
)


def frame_name(index: int) -> str:
    """The file name of frame `index` (0-based): frame_000.png, frame_001.png, …"""
    return FRAME_PATTERN % index


def _check_request(width: int, height: int, frame_count: int) -> None:
    if width < 1 or height < 1:
        raise MediaError(f"invalid frame size {width}×{height}", None, code="media_bad_request")
    if frame_count < 1:
        raise MediaError(f"invalid frame count {frame_count}", None, code="media_bad_request")


def _first_frames(path: Path, width: int, height: int, frame_count: int):
    """The filter chain: first video stream (no cover art), scaled exactly to width × height."""
    # One decoder thread: frame threading would decode (threads + 1) frames ahead before the first
    # comes out, and for the 2 frames the upsampler reads that is pure overhead.
    stream = ffmpeg_python.input(str(path), threads=1)["V:0"]
    return stream.filter("scale", width, height, flags=SCALE_FLAGS)


def _png_output(path: Path, out_dir: Path, width: int, height: int, frame_count: int):
    """The first frames of `path` as out_dir/frame_000.png …: the sequence stops after N."""
    return _first_frames(path, width, height, frame_count).output(
        str(out_dir / FRAME_PATTERN),
        f="image2",
        start_number=0,
        **{"frames:v": frame_count},
    )


def _run(node, ffmpeg_cmd: str, *, what: str, timeout_s: float = RUN_TIMEOUT_S):
    args = node.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y").compile(
        cmd=ffmpeg_cmd
    )
    return run_tool(args, what=what, timeout_s=timeout_s)


# Lines ffmpeg prints only after it opened the file, when the data of the frames is damaged or
# missing (a cut file whose index survived). Without them, a failure is one to open the file.
_DECODE_DAMAGE = re.compile(
    r"partial file|Error while decoding stream|Invalid NAL|Error splitting the input"
    r"|missing picture|Packet corrupt|decode_slice|concealing",
    re.IGNORECASE,
)


def _failure(path: Path, stderr: bytes, *, got: int, wanted: int) -> MediaError:
    """The MediaError for ffmpeg exiting non-zero after writing `got` of `wanted` frames."""
    text = stderr.decode("utf-8", "replace")
    if "matches no streams" in text:
        return MediaError(
            f"{path} has no video stream",
            "pass a video file; the upsampler reads its first frames",
            code="media_not_video",
        )
    if _DECODE_DAMAGE.search(text):
        # ffmpeg's last line then is often "Invalid data found when processing input", which
        # open_failure would read as "not a video": the file is a video, with damaged data.
        return _shortfall(path, got, wanted, stderr)
    return open_failure(path, stderr, tool="ffmpeg")


def _shortfall(path: Path, got: int, wanted: int, stderr: bytes) -> MediaError:
    detail = last_lines(stderr, 2)
    if _DAMAGE.search(stderr.decode("utf-8", "replace")):
        return MediaError(
            f"{path}: decoded only {got} of the first {wanted} frames; the file is truncated or "
            f"damaged ({detail})",
            "copy the video again, or re-export it",
            code="media_corrupt",
        )
    return MediaError(
        f"{path} yields only {got} frame(s); {wanted} are needed",
        "use a longer clip, or ask for fewer frames (--num-frames)",
        code="media_too_few_frames",
    )


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk (24 bytes read, no decode)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        raise MediaError(f"{path} is not a PNG", None, code="media_corrupt")
    return struct.unpack(">II", head[16:24])


def extract_frames(
    path: str | Path,
    out_dir: str | Path,
    width: int,
    height: int,
    frame_count: int,
    *,
    ffmpeg: str = "ffmpeg",
) -> list[Path]:
    """Write the first `frame_count` frames of `path`, scaled to exactly width × height, as PNGs.

    Files are `out_dir/frame_000.png …` (an existing file of those names is replaced). One
    ffmpeg process; the rest of the clip is not decoded. Returns the paths in frame order.

    Raises MediaError when the clip cannot be opened or yields fewer frames than asked:
    media_too_few_frames for a clip that simply ends, media_corrupt when ffmpeg reports damaged
    data (a truncated file whose index still promises the frames).
    """
    path, out_dir = Path(path), Path(out_dir)
    _check_request(width, height, frame_count)
    check_source(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = [out_dir / frame_name(i) for i in range(frame_count)]
    for stale in expected:  # so a shortfall cannot be hidden by an earlier run's files
        stale.unlink(missing_ok=True)

    node = _png_output(path, out_dir, width, height, frame_count)
    result = _run(node, ffmpeg, what=f"extracting frames of {path}")
    got = sum(1 for p in expected if p.is_file())
    if result.returncode != 0:
        raise _failure(path, result.stderr, got=got, wanted=frame_count)
    if got < frame_count:
        raise _shortfall(path, got, frame_count, result.stderr)
    for frame in expected:
        if png_size(frame) != (width, height):
            raise MediaError(
                f"ffmpeg wrote {frame.name} at {png_size(frame)}, not {width}×{height}",
                None,
                code="media_corrupt",
            )
    return expected


def extract_frames_many(
    requests: Sequence[tuple[str | Path, str | Path, int, int]],
    frame_count: int,
    *,
    ffmpeg: str = "ffmpeg",
) -> list[list[Path] | MediaError]:
    """`extract_frames` for several (clip, out_dir, width, height) at once, in one ffmpeg process.

    Most of a first-frames extraction is ffmpeg starting up (~0.1 s with a distro build: it
    resolves a couple of hundred shared libraries), so one process with N inputs — each
    `-frames`-limited and scaled by the same filter into its own image sequence — costs about
    one start-up instead of N. The frames are byte for byte those `extract_frames` writes.

    Returns one result per request, in order: the frame paths, or the MediaError for that clip.
    A clip that yields fewer (or wrongly sized) frames, and every clip of the batch when the
    process fails as a whole (ffmpeg stops at the first input it cannot open), is extracted
    again on its own with `extract_frames`, so each error is the one-clip error naming its clip.
    ToolMissingError (no ffmpeg) is raised, as by `extract_frames`.
    """
    results: list[list[Path] | MediaError | None] = [None] * len(requests)
    batch = []  # (index, path, out_dir, width, height, expected frame paths)
    for index, (path, out_dir, width, height) in enumerate(requests):
        path, out_dir = Path(path), Path(out_dir)
        try:
            _check_request(width, height, frame_count)
            check_source(path)
        except MediaError as exc:
            results[index] = exc
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        expected = [out_dir / frame_name(i) for i in range(frame_count)]
        for stale in expected:
            stale.unlink(missing_ok=True)
        batch.append((index, path, out_dir, width, height, expected))

    again = []
    if len(batch) == 1:
        again = batch
    elif batch:
        outputs = [
            _png_output(path, out_dir, width, height, frame_count)
            for _, path, out_dir, width, height, _ in batch
        ]
        try:
            result = _run(
                ffmpeg_python.merge_outputs(*outputs),
                ffmpeg,
                what=f"extracting frames of {len(batch)} clips",
                timeout_s=RUN_TIMEOUT_S + BATCH_TIMEOUT_PER_CLIP_S * len(batch),
            )
            failed = result.returncode != 0
        except ToolMissingError:
            raise
        except MediaError:  # a timeout: one of the clips, but which one is unknown
            failed = True
        for job in batch:
            index, _, _, width, height, expected = job
            if failed or not _whole(expected, width, height):
                again.append(job)
            else:
                results[index] = expected
    for index, path, out_dir, width, height, _ in again:
        try:
            results[index] = extract_frames(
                path, out_dir, width, height, frame_count, ffmpeg=ffmpeg
            )
        except ToolMissingError:
            raise
        except MediaError as exc:
            results[index] = exc
    return results


def _whole(expected: list[Path], width: int, height: int) -> bool:
    """Every expected frame is there, at width × height."""
    try:
        return all(png_size(frame) == (width, height) for frame in expected)
    except (OSError, MediaError):
        return False


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size a yuv420p H.264 hint video gets: each side rounded down to even (min 2)."""
    return max(2, width - width % 2), max(2, height - height % 2)


def make_hint_video(
    path: str | Path,
    out_path: str | Path,
    width: int,
    height: int,
    frame_count: int,
    *,
    ffmpeg: str = "ffmpeg",
    fps: float | None = None,
) -> Path:
    """Write the first `frame_count` frames at width × height as an H.264 (yuv420p) MP4.

    The same frames, scaled the same way, as `extract_frames` writes: the hint video shows
    what the model reads. yuv420p needs even sides, so an odd side loses its last pixel row or
    column (cropped after scaling, so the other pixels stay the ones in the PNGs). `fps=None`
    keeps the source's frame timing; `fps` re-times the same frames to that rate. Written
    atomically (a temporary file, then rename).
    """
    path, out_path = Path(path), Path(out_path)
    _check_request(width, height, frame_count)
    check_source(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    stream = _first_frames(path, width, height, frame_count)
    even_w, even_h = even_size(width, height)
    if (even_w, even_h) != (width, height):
        stream = stream.filter("crop", even_w, even_h, 0, 0)
    options = {
        "f": "mp4",
        "vcodec": "libx264",
        "pix_fmt": "yuv420p",
        "movflags": "+faststart",
        "an": None,
        "frames:v": frame_count,
    }
    if fps is not None:
        # Re-time rather than resample: output frame i is source frame i, shown at `fps`. (With
        # -r alone, depending on muxer and ffmpeg version, frames may be dropped or repeated.)
        stream = stream.filter("setpts", f"N/({fps:g}*TB)")
        options["r"] = f"{fps:g}"
    node = stream.output(str(tmp), **options)
    try:
        result = _run(node, ffmpeg, what=f"writing a hint video of {path}")
        written = read_mp4(tmp)  # the frame count from the file's own index, no ffprobe
        got = written.frame_count if written else 0
        if result.returncode != 0:
            raise _failure(path, result.stderr, got=got, wanted=frame_count)
        if got < frame_count:
            raise _shortfall(path, got, frame_count, result.stderr)
        set_default_mode(tmp)
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
