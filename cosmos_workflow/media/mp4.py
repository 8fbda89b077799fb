"""Read a video's stream facts straight from an MP4/MOV index (the `moov` box), without ffprobe.

Why: on this kind of machine an ffprobe process costs ~100 ms before it reads a byte (Debian's
ffmpeg links ~200 shared libraries, all bound at start-up), so 100 clips cost ~6 s of probing even
in parallel. Nearly every input is an MP4/MOV, whose `moov` box holds exactly what ffprobe would
report from it — sample count (ffprobe's `nb_frames`), sample-entry size, codec four-cc, the track
display matrix — and reading it takes well under a millisecond.

The reader only answers when it is sure: one enabled-or-not video track, a known codec, no
fragments, an index whose counts agree, a 90°-multiple rotation. Anything else returns None and
the caller asks ffprobe. tests/test_media.py checks it against ffprobe on the real and generated
clips.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .tools import MP4_FIRST_BOXES

# moov boxes are a few KB to a few MB (one entry per sample); past this, let ffprobe do it.
_MAX_MOOV_BYTES = 64 << 20

# ffmpeg's codec_name for the sample-entry four-cc; only unambiguous ones (mp4v may be MPEG-4
# part 2 or MPEG-2 depending on the esds box: left to ffprobe).
_CODECS = {
    b"avc1": "h264",
    b"avc3": "h264",
    b"hvc1": "hevc",
    b"hev1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
}

_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts")


@dataclass(frozen=True)
class Mp4Video:
    """What ffprobe would say about the first video stream of an MP4/MOV file."""

    codec: str
    coded_width: int
    coded_height: int
    rotation: int  # counter-clockwise degrees, as ffprobe's display-matrix `rotation`: 0/90/180/270
    frame_count: int
    duration_s: float | None
    fps: float | None


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield (type, payload_start, payload_end) for the boxes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise ValueError("short box header")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError("box overruns its parent")
        yield kind, pos + header, pos + size
        pos += size


def _children(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    found: dict[bytes, list[tuple[int, int]]] = {}
    for kind, a, b in _boxes(data, start, end):
        found.setdefault(kind, []).append((a, b))
    return found


def _find_moov(path: Path) -> bytes | None:
    """The payload of the top-level moov box, or None (not ISO-BMFF, fragmented, no moov)."""
    with open(path, "rb") as f:
        file_size = f.seek(0, 2)
        pos = 0
        first = True
        while pos + 8 <= file_size:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack_from(">I4s", head, 0)
            if first and kind not in MP4_FIRST_BOXES:
                return None
            first = False
            header = 8
            if size == 1:
                size = struct.unpack_from(">Q", head, 8)[0]
                header = 16
            elif size == 0:
                size = file_size - pos
            if size < header:
                return None
            if kind == b"moof":
                return None  # fragmented: sample counts live in the fragments
            if kind == b"moov":
                if pos + size > file_size or size > _MAX_MOOV_BYTES:
                    return None
                f.seek(pos + header)
                return f.read(size - header)
            pos += size
    return None


def _rotation(matrix: tuple[int, ...]) -> int | None:
    """ffprobe's display-matrix rotation (ccw degrees) for a 16.16 tkhd matrix, or None if odd."""
    a, b, _u, c, d, _v = matrix[:6]
    if a * d - b * c <= 0:
        return None  # a mirror image (or degenerate): leave it to ffprobe
    # libavutil's av_display_rotation_get: -atan2 of the column-normalised b and a.
    degrees = -math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))
    nearest = round(degrees / 90) * 90
    if abs(degrees - nearest) > 1.0:
        return None
    return nearest % 360


def read_mp4(path: Path) -> Mp4Video | None:
    """The first video track's facts from an MP4/MOV index, or None when unsure (use ffprobe)."""
    try:
        moov = _find_moov(path)
        if moov is None:
            return None
        return _read_moov(moov)
    except (ValueError, KeyError, IndexError, struct.error, OSError):
        return None  # a missing or short box: not an index we understand


def _read_moov(moov: bytes) -> Mp4Video | None:
    top = _children(moov, 0, len(moov))
    if b"mvex" in top or b"cmov" in top:
        return None  # fragmented, or a compressed QuickTime header
    mvhd = top.get(b"mvhd")
    if not mvhd:
        return None
    a, _ = mvhd[0]
    # mvhd: version/flags, times, timescale, duration; then rate, volume, reserved, matrix.
    matrix_at = a + (4 + 8 + 8 + 4 + 8 if moov[a] == 1 else 4 + 4 + 4 + 4 + 4) + 4 + 2 + 10
    if struct.unpack_from(">9i", moov, matrix_at)[:5] != (65536, 0, 0, 0, 65536):
        return None  # a movie-level transform: rare, and ffmpeg composes it with the track's
    videos = []
    for ta, tb in top.get(b"trak", []):
        trak = _children(moov, ta, tb)
        mdia = _children(moov, *trak[b"mdia"][0]) if b"mdia" in trak else {}
        hdlr = mdia.get(b"hdlr")
        if hdlr and moov[hdlr[0][0] + 8 : hdlr[0][0] + 12] == b"vide":
            videos.append((trak, mdia))
    if len(videos) != 1:
        return None  # none (audio only: ffprobe words the error) or several (chapters, angles)
    trak, mdia = videos[0]
    return _read_video_trak(moov, trak, mdia)


def _read_video_trak(moov: bytes, trak: dict, mdia: dict) -> Mp4Video | None:
    ta, _ = trak[b"tkhd"][0]
    matrix_at = ta + (4 + 32 if moov[ta] == 1 else 4 + 20) + 8 + 8
    rotation = _rotation(struct.unpack_from(">9i", moov, matrix_at))
    if rotation is None:
        return None

    ma, _ = mdia[b"mdhd"][0]
    if moov[ma] == 1:
        timescale, duration = struct.unpack_from(">IQ", moov, ma + 4 + 16)
    else:
        timescale, duration = struct.unpack_from(">II", moov, ma + 4 + 8)
    minf = _children(moov, *mdia[b"minf"][0])
    stbl = _children(moov, *minf[b"stbl"][0])

    sa, sb = stbl[b"stsd"][0]
    entries = list(_boxes(moov, sa + 8, sb))
    if len(entries) != 1:
        return None
    fourcc, ea, _ = entries[0]
    codec = _CODECS.get(fourcc)
    if codec is None:
        return None
    # VisualSampleEntry: 6 reserved + 2 data-ref index + 16 pre-defined/reserved, then w, h.
    coded_width, coded_height = struct.unpack_from(">HH", moov, ea + 24)
    if coded_width == 0 or coded_height == 0:
        return None

    if b"stsz" not in stbl or b"stts" not in stbl:
        return None
    za, _ = stbl[b"stsz"][0]
    sample_count = struct.unpack_from(">I", moov, za + 8)[0]
    xa, _ = stbl[b"stts"][0]
    (stts_entries,) = struct.unpack_from(">I", moov, xa + 4)
    stts = struct.iter_unpack(">II", moov[xa + 8 : xa + 8 + 8 * stts_entries])
    counted = 0
    total_delta = 0
    for count, delta in stts:
        counted += count
        total_delta += count * delta
    if counted != sample_count:
        return None

    duration_s = duration / timescale if timescale and duration else None
    fps = sample_count * timescale / total_delta if timescale and total_delta else None
    return Mp4Video(
        codec=codec,
        coded_width=coded_width,
        coded_height=coded_height,
        rotation=rotation,
        frame_count=sample_count,
        duration_s=duration_s,
        fps=fps,
    )
