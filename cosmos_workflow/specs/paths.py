"""Where a spec's media paths point: lookup order, Windows paths, rewriting for outputs.

The lookup order is documented in the package docstring (`cosmos_workflow.specs`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import SpecError
from .model import PromptSpec, SpecFormat

# `F:/Art/...`, `C:\...`, `C:relative` and UNC `\\server\share`.
_WINDOWS_PATH_RE = re.compile(r"^(?:[A-Za-z]:|\\\\)")


def is_windows_path(text: str) -> bool:
    return os.name != "nt" and bool(_WINDOWS_PATH_RE.match(text))


def checkout_roots(spec_dir: Path, relative: PurePosixPath) -> list[Path]:
    """The cosmos-transfer1 checkout(s) an NVIDIA spec in `spec_dir` may belong to."""
    roots: list[Path] = []
    ancestors = [spec_dir, *spec_dir.parents]
    for folder in ancestors:
        if (folder / "cosmos_transfer1").is_dir():
            roots.append(folder)
            break
    first = relative.parts[0] if len(relative.parts) > 1 else None
    for folder in ancestors:
        if first is not None and folder.name == first and folder.parent != folder:
            roots.append(folder.parent)
            break
    return roots


def resolve_media(
    text: str,
    *,
    key: str,
    spec_path: Path | None,
    spec_format: SpecFormat,
    videos_dir: Path | None = None,
) -> tuple[Path | None, SpecError | None]:
    """(absolute existing path, None) or (None, why not); the order is in the package docstring.

    `spec_path` None means a path given on the command line: relative to the current folder.
    `videos_dir` (`[paths] local_videos_dir`; relative to the current folder when relative) is
    the last place a relative path is looked for; None: no such place.
    """
    where = f"{spec_path}: " if spec_path is not None else ""
    if not text.strip():
        return None, SpecError(f"{where}{key} is empty", "give the path of a video file")
    if "\x00" in text:
        return None, SpecError(
            f"{where}{key} {text!r} holds a NUL character, which no file name can",
            f"fix {key} to the path of a video file",
            code="bad_path",
        )
    if is_windows_path(text):
        return None, SpecError(
            f"{where}{key} {text!r} is a Windows path, which does not exist on this machine",
            "fix the spec to point at the file on this machine (relative to the spec file), "
            "or run cosmos on the Windows machine that has it",
            code="windows_path",
        )
    # A spec written on Windows may use backslashes in relative paths too.
    relative = PurePosixPath(PureWindowsPath(text).as_posix()) if "\\" in text else None
    written = Path(os.path.expanduser(text)) if relative is None else Path(relative)
    if written.is_absolute():
        candidates = [written]
    else:
        spec_dir = spec_path.parent if spec_path is not None else Path.cwd()
        candidates = [spec_dir / written, Path.cwd() / written]
        if spec_format is SpecFormat.NVIDIA and spec_path is not None:
            posix = PurePosixPath(written.as_posix())
            candidates += [root / written for root in checkout_roots(spec_dir, posix)]
        if videos_dir is not None:
            candidates.append(Path(videos_dir) / written)
    looked: list[Path] = []
    not_files: list[Path] = []  # exist, but are folders, devices, pipes or sockets
    for candidate in candidates:
        absolute = Path(os.path.abspath(candidate))
        if absolute in looked:
            continue
        looked.append(absolute)
        try:
            if absolute.is_file():
                return absolute.resolve(), None
            if absolute.exists():
                not_files.append(absolute)
        except OSError as exc:  # a name over 255 bytes, a path over PATH_MAX, …
            return None, SpecError(
                f"{where}{key} {text!r} cannot be looked up: {exc.strerror or exc}",
                f"fix {key} to the path of a video file",
                code="bad_path",
            )
    if not_files:
        # "not found" would be wrong (the path exists) and send the user looking elsewhere.
        # A pipe or device is refused here, before anything could block reading it.
        found = not_files[0]
        shown = "" if str(found) == text else f" ({found})"
        if found.is_dir():
            what = "a folder, not a video file"
        else:
            what = "not a regular file (a device, pipe or socket)"
        return None, SpecError(
            f"{where}{key} {text!r}{shown} is {what}",
            f"point {key} at the video file itself",
            code="video_not_a_file",
        )
    if spec_path is None:
        rule = "a video on the command line is relative to the current directory"
    elif spec_format is SpecFormat.NVIDIA:
        rule = "NVIDIA specs name paths relative to the cosmos-transfer1 checkout"
    else:
        rule = "seed specs name paths relative to the spec file"
    if videos_dir is not None and not written.is_absolute():
        rule += ", else to [paths] local_videos_dir"
    return None, SpecError(
        f"{where}{key} {text!r} not found; looked in: {', '.join(map(str, looked))}",
        f"{rule}; fix the path or put the file in one of those places",
        code="video_not_found",
    )


def rewrite_path(text: str, resolved: Path | None, spec: PromptSpec, out_dir: Path) -> str:
    """A media path as it must be written in a spec saved in `out_dir`.

    Relative paths are rewritten relative to `out_dir`; absolute paths stay absolute; paths
    that could not be resolved keep their meaning (a Windows path stays as written).
    """
    written_absolute = Path(os.path.expanduser(text)).is_absolute()
    if resolved is None:
        if is_windows_path(text) or written_absolute or spec.path is None:
            return text
        # Keep its meaning "next to the spec file", the first place it was looked for.
        resolved = spec.path.parent / PureWindowsPath(text).as_posix()
    if written_absolute:
        return str(resolved)
    try:
        return Path(os.path.relpath(os.path.abspath(resolved), out_dir)).as_posix()
    except ValueError:  # Windows: another drive has no relative path
        return str(resolved)
