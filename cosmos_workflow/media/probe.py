"""Probing: the frame size the model will see, the frame count, codec and duration of a video."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from ..errors import MediaError, ToolMissingError
from .mp4 import read_mp4
from .tools import check_source, install_hint, open_failure, run_tool


@dataclass(frozen=True)
class VideoInfo:
    """One video stream as a decoder delivers it.

    `width` × `height` is the display size: what ffmpeg (and OpenCV) decode to once the rotation
    metadata is applied, so 90 and 270 swap the coded size. `rotation` is counter-clockwise
    degrees (ffprobe's display-matrix convention), one of 0, 90, 180, 270.
    """

    path: Path
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    frame_count: int
    codec: str
    duration_s: float | None
    fps: float | None


def rotation_of(stream: dict) -> int:
    """Counter-clockwise rotation (0/90/180/270) of an ffprobe stream dict.

    The display matrix side data wins; the legacy `rotate` tag (clockwise degrees, written by
    phones and exported by ffmpeg before 5.0) is the fallback. Angles that are not near a multiple
    of 90° count as 0: ffmpeg then keeps the frame size (it uses the rotate filter, same size).
    """
    degrees = None
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            degrees = float(side["rotation"])
            break
    if degrees is None:
        tag = (stream.get("tags") or {}).get("rotate")
        if tag is None:
            return 0
        try:
            degrees = -float(tag)
        except ValueError:
            return 0
    nearest = round(degrees / 90) * 90
    if abs(degrees - nearest) > 2.0:
        return 0
    return int(nearest) % 360


def _display_size(coded_width: int, coded_height: int, rotation: int) -> tuple[int, int]:
    if rotation in (90, 270):
        return coded_height, coded_width
    return coded_width, coded_height


def _ratio(text: str | None) -> float | None:
    if not text or text in ("0/0", "N/A"):
        return None
    try:
        num, _, den = text.partition("/")
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def _is_still_image(fmt: dict) -> bool:
    name = fmt.get("format_name", "")
    return name == "image2" or name.endswith("_pipe")


def _count_packets(path: Path, ffprobe: str) -> int | None:
    """Frame count by counting the video packets (demux only, no decode): for MKV/WebM & co."""
    result = run_tool(
        [
            ffprobe, "-v", "error", "-select_streams", "V:0", "-count_packets",
            "-show_entries", "stream=nb_read_packets", "-of", "json", str(path),
        ],
        what=f"counting frames of {path}",
    )  # fmt: skip
    if result.returncode != 0:
        return None
    try:
        streams = json.loads(result.stdout or b"{}").get("streams") or []
        return int(streams[0]["nb_read_packets"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _probe_with_ffprobe(path: Path, ffprobe: str) -> VideoInfo:
    try:
        data = ffmpeg.probe(str(path), cmd=ffprobe, v="error")
    except ffmpeg.Error as exc:
        raise open_failure(path, exc.stderr or b"", tool="ffprobe") from None
    except (FileNotFoundError, PermissionError) as exc:
        raise ToolMissingError(f"ffprobe not found: {ffprobe}", install_hint("ffprobe")) from exc
    except ValueError:  # not JSON: ffprobe printed something unexpected
        raise MediaError(
            f"ffprobe gave no readable answer for {path}", None, code="media_corrupt"
        ) from None
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not video or _is_still_image(fmt):
        kinds = sorted({s.get("codec_type", "?") for s in streams})
        what = "a still image" if video else f"only {', '.join(kinds)}" if kinds else "no streams"
        raise MediaError(
            f"{path} has no video stream ({what})",
            "pass a video file; the upsampler reads its first frames",
            code="media_not_video",
        )
    stream = video[0]
    coded_width, coded_height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if coded_width <= 0 or coded_height <= 0:
        raise MediaError(
            f"{path}: the video stream has no frame size ({stream.get('codec_name', '?')})",
            "the file may be damaged; try playing it, or re-export it",
            code="media_corrupt",
        )
    frame_count = None
    if stream.get("nb_frames") not in (None, "", "N/A"):
        frame_count = int(stream["nb_frames"])
    else:  # Matroska/WebM and raw streams carry no frame count in the header
        frame_count = _count_packets(path, ffprobe)
    rotation = rotation_of(stream)
    width, height = _display_size(coded_width, coded_height, rotation)
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        coded_width=coded_width,
        coded_height=coded_height,
        rotation=rotation,
        frame_count=frame_count or 0,
        codec=stream.get("codec_name") or "unknown",
        duration_s=_float(stream.get("duration")) or _float(fmt.get("duration")),
        fps=_ratio(stream.get("avg_frame_rate")) or _ratio(stream.get("r_frame_rate")),
    )


def probe(
    path: str | Path, *, ffprobe: str = "ffprobe", min_frames: int = 1, fast: bool = True
) -> VideoInfo:
    """Probe one video: display size (rotation applied), frame count, codec, duration, fps.

    MP4/MOV files are read from their index directly (see mp4.py: same facts as ffprobe, without
    its ~100 ms start-up); other files, or MP4s the reader is unsure of, take one ffprobe call
    (two for containers without a frame count, e.g. MKV). `fast=False` always asks ffprobe.

    Raises MediaError: media_not_found, media_not_video (no video stream, a still image, not a
    media file), media_corrupt (empty, truncated index, unreadable stream), media_too_few_frames
    (fewer than `min_frames`); ToolMissingError when ffprobe is needed and missing.

    >>> probe("robot.mp4", min_frames=2).width
    1280
    """
    path = Path(path)
    check_source(path)
    info = None
    if fast:
        found = read_mp4(path)
        if found is not None:
            width, height = _display_size(found.coded_width, found.coded_height, found.rotation)
            info = VideoInfo(
                path=path,
                width=width,
                height=height,
                coded_width=found.coded_width,
                coded_height=found.coded_height,
                rotation=found.rotation,
                frame_count=found.frame_count,
                codec=found.codec,
                duration_s=found.duration_s,
                fps=found.fps,
            )
    if info is None:
        info = _probe_with_ffprobe(path, ffprobe)
    if info.frame_count < max(1, min_frames):
        have = "no frames" if info.frame_count == 0 else f"only {info.frame_count} frame(s)"
        raise MediaError(
            f"{path} has {have}; {max(1, min_frames)} are needed",
            "use a longer clip, or ask for fewer frames (--num-frames)",
            code="media_too_few_frames",
        )
    return info


def probe_many(
    paths: Iterable[str | Path],
    *,
    ffprobe: str = "ffprobe",
    min_frames: int = 1,
    workers: int = 4,
    fast: bool = True,
) -> list[VideoInfo | MediaError]:
    """Probe many videos in a small thread pool; results in input order.

    Each entry is the VideoInfo or the MediaError for that path, so one bad file does not sink the
    batch. A missing ffprobe is not about one file: ToolMissingError is raised.
    """
    paths = [Path(p) for p in paths]

    def one(path: Path) -> VideoInfo | MediaError:
        try:
            return probe(path, ffprobe=ffprobe, min_frames=min_frames, fast=fast)
        except ToolMissingError:
            raise
        except MediaError as exc:
            return exc

    if len(paths) <= 1:
        return [one(p) for p in paths]
    # Threads, not processes: the work is waiting on ffprobe children or on small reads.
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths)))) as pool:
        return list(pool.map(one, paths))
