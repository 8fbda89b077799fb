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
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import MediaError, ToolMissingError
from ..fsutil import atomic_write_json, sha256_file
from .extract import SCALE_FLAGS, extract_frames_many
from .tools import check_source

# Changing how frames are made (scaler, naming) must not serve old entries: bump this.
RECIPE = f"first-frames/1 scale={SCALE_FLAGS}"
MANIFEST = "manifest.json"
_RACY_NS = 2_000_000_000
# frames_many: ffmpeg processes at a time, and clips per process. A few processes overlap one
# another's start-up and file reads even on two cores; 16 clips per process bound the open
# inputs and what one bad clip costs (its group is extracted again one clip per process).
BATCH_WORKERS = 4
BATCH_GROUP_SIZE = 16


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
        return _prepared(source, entry, manifest, cached, digest)

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

    def frames_many(
        self,
        requests: Iterable[tuple[str | Path, int, int]],
        frame_count: int,
        *,
        workers: int = BATCH_WORKERS,
        group_size: int = BATCH_GROUP_SIZE,
    ) -> dict[tuple[Path, int, int], PreparedFrames | MediaError]:
        """`frames` for many (source, width, height) at once: {(Path(source), w, h): result}.

        Cache hits need no ffmpeg. Misses are extracted several clips per ffmpeg process
        (`extract_frames_many`), up to `group_size` clips each, `workers` processes at a time,
        and written exactly as `frames` writes them (same entries, same frame bytes). A clip
        that fails gets its own MediaError (the one `frames` raises); the others are unaffected.
        Two requests for the same content and size (a copy of a clip under another name) are
        extracted once.
        """
        results: dict[tuple[Path, int, int], PreparedFrames | MediaError] = {}
        misses: dict[Path, list] = {}  # entry → [source, digest, width, height, keys…]
        for source, width, height in requests:
            key = (Path(source), width, height)
            if key in results:
                continue
            try:
                check_source(key[0])
                digest = self.source_sha256(key[0])
            except MediaError as exc:
                results[key] = exc
                continue
            entry = self.entry_dir(digest, width, height, frame_count)
            if entry in misses:
                misses[entry].append(key)
                continue
            manifest = _load_manifest(entry, width, height, frame_count)
            if manifest is None:
                misses[entry] = [key[0], digest, width, height, key]
            else:
                results[key] = _prepared(key[0], entry, manifest, True, digest)
        jobs = list(misses.items())
        if not jobs:
            return results
        per_group = max(1, min(group_size, math.ceil(len(jobs) / max(1, workers))))
        groups = [jobs[i : i + per_group] for i in range(0, len(jobs), per_group)]

        def run(group) -> list:
            return self._extract_group([(entry, *job[:4]) for entry, job in group], frame_count)

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(groups)))) as pool:
            done = list(pool.map(run, groups))
        for group, outcomes in zip(groups, done, strict=True):
            for (entry, job), outcome in zip(group, outcomes, strict=True):
                source, digest, width, height, *keys = job
                for key in keys:
                    if isinstance(outcome, MediaError):
                        results[key] = outcome
                    else:
                        results[key] = _prepared(key[0], entry, outcome, False, digest)
        return results

    def _extract(self, source, digest, entry: Path, width, height, frame_count) -> dict:
        (outcome,) = self._extract_group([(entry, source, digest, width, height)], frame_count)
        if isinstance(outcome, MediaError):
            raise outcome
        return outcome

    def _extract_group(self, jobs: list[tuple], frame_count: int) -> list[dict | MediaError]:
        """Extract (entry, source, digest, width, height) jobs into their entries; for each,
        the published manifest or the MediaError (`extract_frames_many`: one ffmpeg process)."""
        outcomes: list[dict | MediaError | None] = [None] * len(jobs)
        temps: list[Path | None] = [None] * len(jobs)
        try:
            for i, (entry, *_rest) in enumerate(jobs):
                try:
                    temps[i] = self._temp_dir(entry)
                except MediaError as exc:
                    outcomes[i] = exc
            todo = [i for i in range(len(jobs)) if temps[i] is not None]
            try:
                extracted = extract_frames_many(
                    [(jobs[i][1], temps[i], jobs[i][3], jobs[i][4]) for i in todo],
                    frame_count,
                    ffmpeg=self.ffmpeg,
                )
            except ToolMissingError as exc:  # no ffmpeg: every clip's error, as `frames` raises
                extracted = [exc] * len(todo)
            for i, paths in zip(todo, extracted, strict=True):
                if isinstance(paths, MediaError):
                    outcomes[i] = paths
                    continue
                entry, source, digest, width, height = jobs[i]
                try:
                    outcomes[i] = self._commit(
                        temps[i], paths, entry, source, digest, width, height, frame_count
                    )
                except MediaError as exc:
                    outcomes[i] = exc
        finally:
            for tmp in temps:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
        return outcomes

    def _temp_dir(self, entry: Path) -> Path:
        """A new temporary folder beside `entry`, to extract into and rename into place."""
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp"))
        except OSError as exc:
            raise self._unwritable(entry, exc) from exc

    def _commit(
        self, tmp: Path, paths, entry: Path, source: Path, digest, width, height, frame_count
    ) -> dict:
        """Write the manifest of the frames in `tmp`, publish `tmp` as `entry`; its manifest."""
        try:
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


def _prepared(source: Path, entry: Path, manifest: dict, cached: bool, digest: str):
    return PreparedFrames(
        source=source,
        width=manifest["width"],
        height=manifest["height"],
        paths=[entry / f["file"] for f in manifest["frames"]],
        sha256=[f["sha256"] for f in manifest["frames"]],
        cached=cached,
        source_sha256=digest,
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
