"""A content-addressed cache of extracted frames: a second run needs no ffmpeg at all.

Layout (one entry per source content × size × frame count):

    <root>/<sha256 of the source file>/<W>x<H>-n<N>/frame_000.png …
                                                     manifest.json   (each frame's sha256)
    <root>/.sources/<key>.json                       (source path + stat → its sha256)

An entry is extracted into a temporary folder beside it and renamed into place, so a reader sees
a whole entry or none, and two processes racing on one entry both end up with a whole one.
The manifest carries each PNG's sha256 because frames are uploaded content-addressed.

Hashing a source is the one cost that grows with the file (a 2 GB clip is seconds of reading),
so the source's sha256 is remembered against its path, size, mtime and inode, like git's index;
a file modified within 2 s before it was hashed is hashed again next time (git's "racy" rule).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import MediaError
from ..fsutil import atomic_write_json, sha256_file
from .extract import SCALE_FLAGS, extract_frames
from .tools import check_source

# Changing how frames are made (scaler, naming) must not serve old entries: bump this.
RECIPE = f"first-frames/1 scale={SCALE_FLAGS}"
MANIFEST = "manifest.json"
_RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class PreparedFrames:
    """The first frames of one source at one size, ready to upload."""

    source: Path
    width: int
    height: int
    paths: list[Path]  # frame_000.png … inside the cache entry, in frame order
    sha256: list[str]  # hex sha256 of each PNG, same order
    cached: bool  # True when served from the cache without running ffmpeg
    source_sha256: str = ""


class FrameCache:
    """Frames extracted once per (source content, size, frame count), reused afterwards.

    >>> cache = FrameCache(Path("~/.cache/cosmos/frames").expanduser())
    >>> cache.frames(Path("robot.mp4"), 320, 180, 2).paths
    [.../frame_000.png, .../frame_001.png]
    """

    def __init__(self, root: str | Path, *, ffmpeg: str = "ffmpeg"):
        self.root = Path(root)
        self.ffmpeg = ffmpeg

    def entry_dir(self, source_sha256: str, width: int, height: int, frame_count: int) -> Path:
        return self.root / source_sha256 / f"{width}x{height}-n{frame_count}"

    def frames(
        self, source: str | Path, width: int, height: int, frame_count: int
    ) -> PreparedFrames:
        """The first `frame_count` frames of `source` at width × height, extracted if not cached.

        Raises MediaError as `extract_frames` does (nothing is cached then).
        """
        source = Path(source)
        check_source(source)
        digest = self.source_sha256(source)
        entry = self.entry_dir(digest, width, height, frame_count)
        manifest = _load_manifest(entry, width, height, frame_count)
        cached = manifest is not None
        if manifest is None:
            manifest = self._extract(source, digest, entry, width, height, frame_count)
        return PreparedFrames(
            source=source,
            width=width,
            height=height,
            paths=[entry / f["file"] for f in manifest["frames"]],
            sha256=[f["sha256"] for f in manifest["frames"]],
            cached=cached,
            source_sha256=digest,
        )

    def source_sha256(self, source: str | Path) -> str:
        """sha256 of the source's bytes, remembered against its path and stat."""
        source = Path(source)
        st = source.stat()
        absolute = str(source.resolve())
        key = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        memo_path = self.root / ".sources" / f"{key}.json"
        stamp = {
            "path": absolute,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
        }
        try:
            memo = json.loads(memo_path.read_text("utf-8"))
            if (
                all(memo.get(k) == v for k, v in stamp.items())
                and memo["mtime_ns"] + _RACY_NS <= memo["hashed_ns"]
                and len(memo["sha256"]) == 64
            ):
                return memo["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        hashed_ns = time.time_ns()
        digest = sha256_file(source)
        # A read-only cache still works; it just hashes again next time.
        with contextlib.suppress(OSError):
            atomic_write_json(memo_path, {**stamp, "sha256": digest, "hashed_ns": hashed_ns})
        return digest

    def _extract(self, source, digest, entry: Path, width, height, frame_count) -> dict:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp"))
        except OSError as exc:
            raise self._unwritable(entry, exc) from exc
        try:
            paths = extract_frames(source, tmp, width, height, frame_count, ffmpeg=self.ffmpeg)
            manifest = {
                "recipe": RECIPE,
                "source_sha256": digest,
                "source_bytes": source.stat().st_size,
                "width": width,
                "height": height,
                "frame_count": frame_count,
                "frames": [
                    {"file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
                    for p in paths
                ],
            }
            atomic_write_json(tmp / MANIFEST, manifest)
            _publish(tmp, entry, width, height, frame_count)
        except OSError as exc:
            raise self._unwritable(entry, exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # Whoever won a race, the entry in place is whole; serve what is there.
        published = _load_manifest(entry, width, height, frame_count)
        if published is None:
            raise self._unwritable(entry, None)
        return published

    def _unwritable(self, entry: Path, exc: OSError | None) -> MediaError:
        why = f": {exc.strerror or exc}" if exc is not None else ""
        return MediaError(
            f"cannot write the frame cache entry {entry}{why}",
            f"check that {self.root} is writable (or delete it; it is only a cache)",
            code="media_cache",
        )


def _publish(tmp: Path, entry: Path, width: int, height: int, frame_count: int) -> None:
    """Rename the finished temporary folder to `entry`, replacing a damaged or stale entry."""
    try:
        os.rename(tmp, entry)
        return
    except OSError:
        if not entry.exists():
            raise
    if _load_manifest(entry, width, height, frame_count) is not None:
        return  # another process published the same entry first: keep it
    trash = entry.with_name(f".{entry.name}.{os.getpid()}.{time.time_ns()}.old")
    os.rename(entry, trash)
    try:
        os.rename(tmp, entry)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _load_manifest(entry: Path, width: int, height: int, frame_count: int) -> dict | None:
    """The entry's manifest if the entry is whole and made by this recipe, else None."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text("utf-8"))
        frames = manifest["frames"]
        if (
            manifest.get("recipe") != RECIPE
            or (manifest.get("width"), manifest.get("height")) != (width, height)
            or manifest.get("frame_count") != frame_count
            or len(frames) != frame_count
        ):
            return None
        for frame in frames:
            if (entry / frame["file"]).stat().st_size != frame["bytes"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest
