"""Finding and running the ffmpeg / ffprobe executables, and turning their failures into errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import MediaError, ToolMissingError

# A first-frames extraction takes well under a second; a minute means something is wrong
# (a network mount that stopped answering), and the user is better served by an error.
RUN_TIMEOUT_S = 120.0

# Top-level box types an ISO-BMFF (MP4 / MOV / 3GP) file can start with. ffmpeg picks its
# demuxer by extension too, so a text file named .mp4 fails with the same "moov atom not found"
# as a truncated recording; the first box tells the two apart.
MP4_FIRST_BOXES = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}
)


def install_hint(name: str) -> str:
    """The command that installs ffmpeg (which also provides ffprobe) on this platform."""
    if sys.platform == "darwin":
        command = "brew install ffmpeg"
    elif sys.platform.startswith("win"):
        command = "winget install ffmpeg"
    else:
        command = "sudo apt-get install ffmpeg"
    return (
        f"install ffmpeg (it provides ffmpeg and ffprobe): {command}; "
        f"or point [ffmpeg] {'binary' if name == 'ffmpeg' else name} in config.toml at it"
    )


def find_tool(name: str, configured: str | None = None) -> str:
    """The path of executable `name` (e.g. "ffmpeg"), or ToolMissingError with an install hint.

    `configured` is what the user set (config `[ffmpeg] binary` / `ffprobe`): a bare name is
    looked up on PATH, anything with a folder in it must be an executable file. Without it,
    `name` is looked up on PATH.
    """
    wanted = configured or name
    if os.sep in wanted or (os.altsep and os.altsep in wanted):
        path = Path(wanted).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise ToolMissingError(f"{name} not found at {wanted}", install_hint(name))
    found = shutil.which(wanted)
    if found is None:
        raise ToolMissingError(f"{wanted} not found on PATH", install_hint(name))
    return found


def run_tool(args: list[str], *, what: str, timeout_s: float = RUN_TIMEOUT_S):
    """Run ffmpeg/ffprobe with no stdin; return the CompletedProcess (any exit code).

    A missing executable becomes ToolMissingError, a hang past `timeout_s` a MediaError.
    """
    try:
        return subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError as exc:
        tool = Path(args[0]).name
        raise ToolMissingError(f"{tool} not found: {args[0]}", install_hint(tool)) from exc
    except PermissionError as exc:
        tool = Path(args[0]).name
        raise ToolMissingError(f"{args[0]} is not executable", install_hint(tool)) from exc
    except subprocess.TimeoutExpired as exc:
        raise MediaError(
            f"{what}: {Path(args[0]).name} did not finish within {timeout_s:.0f} s",
            "check that the file is on a local, responsive disk",
            code="media_timeout",
        ) from exc


def check_source(path: Path) -> None:
    """Raise the MediaError for a path that cannot be a readable video file (before ffmpeg)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError(
            f"video not found: {path}",
            "check the path (relative paths in a spec are resolved from the spec's folder)",
            code="media_not_found",
        ) from None
    except OSError as exc:
        raise MediaError(
            f"cannot read {path}: {exc.strerror}", None, code="media_unreadable"
        ) from None
    if path.is_dir():
        raise MediaError(
            f"{path} is a folder, not a video file", "point at a video file", code="media_not_video"
        )
    if not path.is_file():
        raise MediaError(
            f"{path} is not a regular file", "point at a video file", code="media_not_video"
        )
    if st.st_size == 0:
        raise MediaError(
            f"{path} is empty (0 bytes)",
            "the copy or recording was probably interrupted; copy the video again",
            code="media_corrupt",
        )
    if not os.access(path, os.R_OK):
        raise MediaError(
            f"cannot read {path}: permission denied",
            "check the file's permissions",
            code="media_unreadable",
        )


def starts_like_mp4(path: Path) -> bool:
    """True when the file's first box header is an ISO-BMFF (MP4/MOV) top-level box."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] in MP4_FIRST_BOXES


# ffmpeg tags lines with the address of the component that logged them ("[h264 @ 0x55d…]"):
# noise that differs on every run, dropped from messages.
_COMPONENT_ADDRESS = re.compile(r" @ 0x[0-9a-fA-F]+\]")


def last_lines(stderr: bytes | str, count: int = 3) -> str:
    """The last non-empty lines of a tool's stderr, joined for a one-line message."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(_COMPONENT_ADDRESS.sub("]", line) for line in lines[-count:])


def open_failure(path: Path, stderr: bytes | str, *, tool: str) -> MediaError:
    """The MediaError for ffmpeg/ffprobe failing to open `path` (it exists and is not empty)."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    detail = last_lines(text)
    if "moov atom not found" in text and starts_like_mp4(path):
        return MediaError(
            f"{path} is an MP4/MOV without its index (moov atom): truncated or an unfinished "
            "recording",
            "copy the file again, or re-export it from the recorder or editor",
            code="media_corrupt",
        )
    if "moov atom not found" in text or "Invalid data found when processing input" in text:
        return MediaError(
            f"{path} is not a video file ffmpeg can read",
            "pass a video (MP4, MOV, MKV, WebM, …)",
            code="media_not_video",
        )
    if "Permission denied" in text:
        return MediaError(f"cannot read {path}: permission denied", None, code="media_unreadable")
    return MediaError(
        f"{tool} cannot read {path}: {detail or 'no message'}",
        "the file may be damaged; try playing it, or re-export it",
        code="media_corrupt",
    )
