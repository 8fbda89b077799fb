"""Video preprocessing with ffmpeg: probe, first-N-frame extraction, hint videos, previews.

- `find_tool`: ffmpeg / ffprobe on PATH or where the config says; ToolMissingError otherwise.
- `probe` / `probe_many`: the frame size the model sees (rotation applied), frame count, codec,
  duration — from the MP4/MOV index directly when possible, else one ffprobe call.
- `extract_frames` / `make_hint_video`: the first N frames at a target size, one ffmpeg process
  that decodes only those frames; `extract_frames_many`: several clips in one process.
- `FrameCache`: extracted frames by source content hash, with each PNG's sha256;
  `FrameCache.frames_many` serves a whole batch (hits without ffmpeg, misses grouped).
- `contact_sheet`: a labelled PNG grid of the frames, for a human look.

Every expected failure is a MediaError with a stable code: media_not_found, media_not_video,
media_too_few_frames, media_corrupt, media_unreadable, media_timeout, media_cache,
media_bad_request; tool_missing for a missing executable.
"""

from .cache import FrameCache, PreparedFrames
from .extract import (
    even_size,
    extract_frames,
    extract_frames_many,
    frame_name,
    make_hint_video,
    png_size,
)
from .probe import VideoInfo, probe, probe_many, rotation_of
from .sheet import contact_sheet
from .tools import find_tool

__all__ = [
    "FrameCache",
    "PreparedFrames",
    "VideoInfo",
    "contact_sheet",
    "even_size",
    "extract_frames",
    "extract_frames_many",
    "find_tool",
    "frame_name",
    "make_hint_video",
    "png_size",
    "probe",
    "probe_many",
    "rotation_of",
]
