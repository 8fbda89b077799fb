"""media: a batch of clips through `FrameCache.frames_many` / `extract_frames_many`.

The batched path must write exactly what the one-clip path writes (frame bytes are the
content address the host cache and job ids use), give each bad clip its own one-clip error, and
need no ffmpeg for cache hits. Real ffmpeg, NVIDIA's real clips and testsrc2 clips.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from cosmos_workflow import media
from cosmos_workflow.errors import MediaError
from cosmos_workflow.fsutil import sha256_file

from .clips import (
    EXAMPLE1,
    ROBOT,
    make_audio_only,
    make_clip,
    make_not_a_video,
    make_truncated,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("batch-clips")
    return {
        "h264": make_clip(d / "h264.mp4", 320, 240, 4),
        "hevc": make_clip(d / "hevc.mp4", 320, 240, 3, codec="libx265", fps=30),
        "odd": make_clip(d / "odd.mp4", 321, 181, 3),
        "rot90": make_clip(d / "rot90.mp4", 320, 240, 3, rotate=90),
        "mkv": make_clip(d / "clip.mkv", 320, 240, 3),
        "one": make_clip(d / "one.mp4", 320, 240, 1),
        "robot": ROBOT,
        "example1": EXAMPLE1,
    }


def counting_ffmpeg(folder: Path) -> tuple[str, Path]:
    """A real ffmpeg behind a wrapper that appends one line per process start to a log."""
    log = folder / "ffmpeg-starts.log"
    wrapper = folder / "ffmpeg"
    real = shutil.which("ffmpeg")
    wrapper.write_text(f'#!/bin/sh\necho start >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper), log


def starts(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` (but the source-hash memos) → its sha256."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in root.rglob("*")
        if p.is_file() and ".sources" not in p.parts
    }


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]


GOOD = [
    ("h264", 160, 120),
    ("h264", 161, 121),  # odd target size
    ("hevc", 96, 72),
    ("odd", 321, 181),  # odd source size, kept
    ("odd", 107, 61),
    ("rot90", 120, 160),  # rotation applied before scaling
    ("mkv", 64, 48),
    ("robot", 320, 176),
    ("robot", 455, 251),
    ("example1", 320, 240),
    ("example1", 63, 47),
]


def test_batched_frames_and_entries_are_byte_identical_to_the_one_clip_path(clips, tmp_path):
    single_root, batch_root = tmp_path / "single", tmp_path / "batch"
    single = {
        (clips[name], w, h): media.FrameCache(single_root).frames(clips[name], w, h, 2)
        for name, w, h in GOOD
    }
    # Groups of 3: several multi-input ffmpeg processes, run side by side.
    batched = media.FrameCache(batch_root).frames_many(
        [(clips[name], w, h) for name, w, h in GOOD], 2, group_size=3, workers=2
    )
    assert set(batched) == set(single)
    for key, one in single.items():
        many = batched[key]
        assert not isinstance(many, MediaError), (key, many)
        assert many.sha256 == one.sha256, key
        assert [p.relative_to(batch_root) for p in many.paths] == [
            p.relative_to(single_root) for p in one.paths
        ]
        assert (many.width, many.height, many.cached) == (key[1], key[2], False)
        assert many.source_sha256 == one.source_sha256 == sha256_file(key[0])
    # The whole cache layout, manifests included, is the same file for file.
    assert tree(batch_root) == tree(single_root)
    assert len(tree(batch_root)) == 3 * len(GOOD)
    assert no_temp_files(batch_root)


def test_each_bad_clip_gets_its_own_one_clip_error_and_the_others_succeed(clips, tmp_path):
    bad = {
        "short": clips["one"],  # ends after 1 frame: ffmpeg succeeds with a short sequence
        "text": make_not_a_video(tmp_path / "notes.mp4"),  # ffmpeg cannot open it at all
        "audio": make_audio_only(tmp_path / "voice.m4a"),  # no video stream
        "half": make_truncated(ROBOT, tmp_path / "half.mp4"),  # no index: cannot be opened
        "absent": tmp_path / "absent.mp4",  # caught before ffmpeg
    }
    (tmp_path / "empty.mp4").touch()
    bad["empty"] = tmp_path / "empty.mp4"
    good = [(clips["h264"], 64, 48), (ROBOT, 128, 70), (EXAMPLE1, 64, 48)]
    requests = [*good[:2], *((path, 64, 48) for path in bad.values()), good[2]]

    root = tmp_path / "cache"
    results = media.FrameCache(root).frames_many(requests, 2, group_size=len(requests))

    for name, path in bad.items():
        error = results[(path, 64, 48)]
        assert isinstance(error, MediaError), name
        with pytest.raises(MediaError) as one_clip:
            media.FrameCache(tmp_path / f"single-{name}").frames(path, 64, 48, 2)
        assert (error.code, error.message) == (one_clip.value.code, one_clip.value.message)
        assert str(path) in error.message
    codes = {name: results[(path, 64, 48)].code for name, path in bad.items()}
    assert codes == {
        "short": "media_too_few_frames",
        "text": "media_not_video",
        "audio": "media_not_video",
        "half": "media_corrupt",
        "absent": "media_not_found",
        "empty": "media_corrupt",
    }
    for path, w, h in good:
        prepared = results[(path, w, h)]
        assert not isinstance(prepared, MediaError), prepared
        assert prepared.sha256 == media.FrameCache(tmp_path / "ref").frames(path, w, h, 2).sha256
    assert no_temp_files(root)
    # Nothing was cached for the bad clips.
    assert {p.parent.parent.name for p in root.glob("*/*/manifest.json")} == {
        sha256_file(path) for path, _, _ in good
    }


def test_misses_share_ffmpeg_processes_and_hits_need_none(clips, tmp_path):
    ffmpeg, log = counting_ffmpeg(tmp_path)
    root = tmp_path / "cache"
    first = [(clips["h264"], 64, 48), (clips["hevc"], 64, 48), (clips["mkv"], 64, 48)]
    first += [(clips["odd"], 64, 36), (ROBOT, 64, 36), (EXAMPLE1, 64, 48)]
    results = media.FrameCache(root, ffmpeg=ffmpeg).frames_many(first, 2, group_size=3, workers=1)
    assert all(not isinstance(r, MediaError) and not r.cached for r in results.values())
    assert starts(log) == 2  # six clips, three per process

    # Again, with two new requests: the six are hits, the two misses share one process.
    again = [*first, (clips["h264"], 32, 24), (ROBOT, 32, 18)]
    results = media.FrameCache(root, ffmpeg=ffmpeg).frames_many(again, 2, group_size=3, workers=1)
    assert [results[k].cached for k in again] == [True] * 6 + [False] * 2
    assert starts(log) == 3

    # All hits: not one ffmpeg start (a missing ffmpeg does not matter).
    cached = media.FrameCache(root, ffmpeg="/nonexistent/ffmpeg").frames_many(again, 2)
    assert all(r.cached for r in cached.values())
    assert [cached[k].sha256 for k in again] == [results[k].sha256 for k in again]


def test_misses_are_spread_over_the_workers_in_groups_of_at_most_group_size(clips, tmp_path):
    ffmpeg, log = counting_ffmpeg(tmp_path)
    requests = [(clips["h264"], w, 48) for w in range(40, 50)]  # ten distinct entries
    cache = media.FrameCache(tmp_path / "cache", ffmpeg=ffmpeg)
    cache.frames_many(requests[:4], 2, workers=4)  # fewer misses than workers: one each
    assert starts(log) == 4
    cache.frames_many(requests, 2, workers=2, group_size=4)  # six misses: two groups of 3
    assert starts(log) == 4 + 2


def test_a_bad_clip_in_a_group_costs_one_retry_per_clip_of_that_group_only(clips, tmp_path):
    ffmpeg, log = counting_ffmpeg(tmp_path)
    notes = make_not_a_video(tmp_path / "notes.mp4")
    # Group 1: h264, notes, hevc (fails as a whole → 3 one-clip retries); group 2: mkv, odd.
    requests = [(clips["h264"], 64, 48), (notes, 64, 48), (clips["hevc"], 64, 48)]
    requests += [(clips["mkv"], 64, 48), (clips["odd"], 64, 36)]
    results = media.FrameCache(tmp_path / "cache", ffmpeg=ffmpeg).frames_many(
        requests, 2, group_size=3, workers=1
    )
    assert results[(notes, 64, 48)].code == "media_not_video"
    assert sum(isinstance(r, MediaError) for r in results.values()) == 1
    assert starts(log) == 2 + 3


def test_one_content_under_two_names_is_extracted_once(clips, tmp_path):
    ffmpeg, log = counting_ffmpeg(tmp_path)
    copy = tmp_path / "copy of h264.mp4"
    shutil.copyfile(clips["h264"], copy)
    requests = [(clips["h264"], 64, 48), (copy, 64, 48), (str(clips["h264"]), 64, 48)]
    results = media.FrameCache(tmp_path / "cache", ffmpeg=ffmpeg).frames_many(requests, 2)
    assert set(results) == {(clips["h264"], 64, 48), (copy, 64, 48)}  # keys are Paths
    original, duplicate = results[(clips["h264"], 64, 48)], results[(copy, 64, 48)]
    assert duplicate.source == copy and original.source == clips["h264"]
    assert duplicate.paths == original.paths and duplicate.sha256 == original.sha256
    assert starts(log) == 1


def test_a_missing_ffmpeg_is_each_clips_tool_missing_error(clips, tmp_path):
    requests = [(clips["h264"], 64, 48), (clips["hevc"], 64, 48), (clips["mkv"], 64, 48)]
    root = tmp_path / "cache"
    results = media.FrameCache(root, ffmpeg=str(tmp_path / "no-ffmpeg")).frames_many(requests, 2)
    assert [results[k].code for k in requests] == ["tool_missing"] * 3
    assert no_temp_files(root)


def test_an_unwritable_cache_entry_is_that_clips_media_cache_error(clips, tmp_path):
    root = tmp_path / "cache"
    media.FrameCache(root).frames(clips["h264"], 64, 48, 2)  # one entry, served as it is
    (root / sha256_file(clips["mkv"])).write_text("a file where the clip's folder goes")
    requests = [(clips["h264"], 64, 48), (clips["mkv"], 64, 48), (clips["hevc"], 64, 48)]
    results = media.FrameCache(root).frames_many(requests, 2)
    assert results[requests[0]].cached
    assert results[requests[1]].code == "media_cache"
    assert str(root) in results[requests[1]].hint
    assert results[requests[2]].cached is False and results[requests[2]].sha256


def test_extract_frames_many_keeps_order_and_matches_extract_frames(clips, tmp_path):
    requests = [
        (clips["robot"], tmp_path / "a", 91, 51),
        (clips["one"], tmp_path / "b", 64, 48),
        (clips["rot90"], tmp_path / "c", 60, 80),
    ]
    results = media.extract_frames_many(requests, 2)
    assert results[1].code == "media_too_few_frames"
    for (path, _, w, h), paths in zip(requests[::2], results[::2], strict=True):
        ref = media.extract_frames(path, tmp_path / f"ref-{path.stem}", w, h, 2)
        assert [p.name for p in paths] == ["frame_000.png", "frame_001.png"]
        assert [sha256_file(p) for p in paths] == [sha256_file(p) for p in ref]
    assert results[0] == [tmp_path / "a" / "frame_000.png", tmp_path / "a" / "frame_001.png"]
