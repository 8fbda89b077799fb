"""media: probing, first-frame extraction, hint videos, the frame cache and contact sheets.

Real ffmpeg/ffprobe, NVIDIA's real clips (../shared/media) and clips generated with testsrc2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosmos_workflow import media
from cosmos_workflow.errors import MediaError, ToolMissingError
from cosmos_workflow.fsutil import sha256_file

from .clips import (
    EXAMPLE1,
    ROBOT,
    decode_frames,
    make_audio_only,
    make_clip,
    make_not_a_video,
    make_truncated,
)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).mean())


def ffprobe_stream(path: Path, *extra: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", *extra, "-show_streams", "-of",
         "json", str(path)],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return json.loads(out)["streams"][0]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Generated clips shared by the module (each costs an ffmpeg start, ~0.1 s)."""
    d = tmp_path_factory.mktemp("clips")
    return {
        "h264": make_clip(d / "h264.mp4", 320, 240, 6),
        "hevc": make_clip(d / "hevc.mp4", 320, 240, 4, codec="libx265", fps=30),
        "mov": make_clip(d / "clip.mov", 256, 144, 4, fps=25),
        "odd": make_clip(d / "odd.mp4", 321, 181, 3),
        "rot90": make_clip(d / "rot90.mp4", 320, 240, 3, rotate=90),
        "rot180": make_clip(d / "rot180.mp4", 320, 240, 3, rotate=180),
        "rot270": make_clip(d / "rot270.mp4", 320, 240, 3, rotate=270),
        "mkv": make_clip(d / "clip.mkv", 320, 240, 7),
        "one": make_clip(d / "one.mp4", 320, 240, 1),
    }


# --- finding ffmpeg ---------------------------------------------------------------------------


def test_find_tool_returns_ffmpeg_on_path():
    assert Path(media.find_tool("ffmpeg")).name == "ffmpeg"
    assert media.find_tool("ffprobe", "ffprobe") == shutil.which("ffprobe")


def test_missing_tool_is_one_error_naming_the_install_command(tmp_path):
    with pytest.raises(ToolMissingError) as caught:
        media.find_tool("ffmpeg", "ffmpeg-not-installed-here")
    assert caught.value.code == "tool_missing"
    assert "ffmpeg-not-installed-here" in caught.value.message
    assert (
        "apt-get install ffmpeg" in caught.value.hint or "brew install ffmpeg" in caught.value.hint
    )

    with pytest.raises(ToolMissingError, match=str(tmp_path / "ffprobe")):
        media.find_tool("ffprobe", str(tmp_path / "ffprobe"))


def test_running_a_missing_ffmpeg_or_ffprobe_is_tool_missing(tmp_path, clips):
    with pytest.raises(ToolMissingError):
        media.extract_frames(clips["h264"], tmp_path, 32, 24, 1, ffmpeg="/nonexistent/ffmpeg")
    with pytest.raises(ToolMissingError):  # MKV has no index to read: ffprobe is needed
        media.probe(clips["mkv"], ffprobe="/nonexistent/ffprobe")


# --- probing ----------------------------------------------------------------------------------


def test_probe_reads_the_real_nvidia_clips():
    robot = media.probe(ROBOT, min_frames=2)
    assert (robot.width, robot.height, robot.frame_count, robot.codec) == (1280, 704, 121, "h264")
    assert robot.rotation == 0 and robot.fps == pytest.approx(24.0)
    assert robot.duration_s == pytest.approx(121 / 24, abs=0.01)

    example = media.probe(EXAMPLE1)
    assert (example.width, example.height, example.frame_count) == (640, 480, 121)
    assert example.codec == "hevc" and example.fps == pytest.approx(30.0)


@pytest.mark.parametrize(
    "name", ["h264", "hevc", "mov", "odd", "rot90", "rot180", "rot270", "robot", "example1"]
)
def test_index_reader_agrees_with_ffprobe(clips, name):
    path = {"robot": ROBOT, "example1": EXAMPLE1}.get(name) or clips[name]
    fast, slow = media.probe(path), media.probe(path, fast=False)
    assert fast == replace(slow, duration_s=fast.duration_s, fps=fast.fps)
    assert fast.duration_s == pytest.approx(slow.duration_s, abs=1e-3)
    assert fast.fps == pytest.approx(slow.fps, rel=1e-3)


def test_rotation_swaps_the_size_like_ffmpeg_and_opencv_decode_it(clips, tmp_path):
    info = media.probe(clips["rot90"])
    assert (info.coded_width, info.coded_height) == (320, 240)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (240, 320)
    assert media.probe(clips["rot180"]).rotation == 180
    assert (media.probe(clips["rot180"]).width, media.probe(clips["rot180"]).height) == (320, 240)

    # The extracted frame is the upright picture: the unrotated frame turned by `rotation`.
    [frame] = media.extract_frames(clips["rot90"], tmp_path / "rot", 240, 320, 1)
    assert media.png_size(frame) == (240, 320)
    [plain] = media.extract_frames(clips["h264"], tmp_path / "plain", 320, 240, 1)
    turned = np.rot90(pixels(plain), k=info.rotation // 90)  # numpy turns counter-clockwise
    # Not 0: 4:2:0 chroma is sited differently once turned. The wrong way round is far off.
    assert mean_abs_diff(pixels(frame), turned) < 5.0
    assert mean_abs_diff(pixels(frame), np.rot90(turned, k=2)) > 25.0

    import cv2  # opencv-python-headless, in the dev extra: missing, this test fails

    capture = cv2.VideoCapture(str(clips["rot90"]))
    ok, bgr = capture.read()
    capture.release()
    assert ok and bgr.shape[:2] == (info.height, info.width)


def test_legacy_rotate_tag_is_clockwise_and_display_matrix_wins():
    assert media.rotation_of({"tags": {"rotate": "90"}}) == 270
    assert media.rotation_of({"tags": {"rotate": "270"}}) == 90
    matrix = {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]}
    assert media.rotation_of({**matrix, "tags": {"rotate": "0"}}) == 270
    assert media.rotation_of({"side_data_list": [{"rotation": 45}]}) == 0  # size unchanged
    assert media.rotation_of({}) == 0


def test_odd_source_size_is_probed_exactly(clips):
    info = media.probe(clips["odd"])
    assert (info.width, info.height, info.frame_count) == (321, 181, 3)


def test_matroska_without_a_frame_count_is_counted(clips):
    assert "nb_frames" not in ffprobe_stream(clips["mkv"])
    assert media.probe(clips["mkv"]).frame_count == 7


def test_one_frame_clip_is_too_few_when_two_are_needed(clips, tmp_path):
    assert media.probe(clips["one"], min_frames=1).frame_count == 1
    with pytest.raises(MediaError) as caught:
        media.probe(clips["one"], min_frames=2)
    assert caught.value.code == "media_too_few_frames" and caught.value.hint
    with pytest.raises(MediaError) as caught:  # a clean clip that simply ends
        media.extract_frames(clips["one"], tmp_path, 64, 48, 2)
    assert caught.value.code == "media_too_few_frames"


def test_audio_only_file_is_not_a_video(tmp_path):
    audio = make_audio_only(tmp_path / "voice.m4a")
    with pytest.raises(MediaError, match="audio") as caught:
        media.probe(audio)
    assert caught.value.code == "media_not_video"
    with pytest.raises(MediaError) as caught:
        media.extract_frames(audio, tmp_path / "out", 64, 48, 1)
    assert caught.value.code == "media_not_video"


def test_text_file_named_mp4_is_not_a_video(tmp_path):
    notes = make_not_a_video(tmp_path / "notes.mp4")
    for call in (media.probe, lambda p: media.extract_frames(p, tmp_path / "o", 64, 48, 1)):
        with pytest.raises(MediaError) as caught:
            call(notes)
        assert caught.value.code == "media_not_video"


def test_still_image_is_not_a_video(tmp_path):
    image = tmp_path / "frame.png"
    Image.new("RGB", (64, 48), "red").save(image)
    with pytest.raises(MediaError, match="still image") as caught:
        media.probe(image)
    assert caught.value.code == "media_not_video"


def test_missing_empty_and_folder_paths_get_their_own_codes(tmp_path):
    cases = {
        tmp_path / "absent.mp4": "media_not_found",
        tmp_path: "media_not_video",
    }
    (tmp_path / "empty.mp4").touch()
    cases[tmp_path / "empty.mp4"] = "media_corrupt"
    for path, code in cases.items():
        with pytest.raises(MediaError) as caught:
            media.probe(path)
        assert caught.value.code == code, path
    with pytest.raises(MediaError) as caught:
        media.FrameCache(tmp_path / "cache").frames(tmp_path / "absent.mp4", 64, 48, 2)
    assert caught.value.code == "media_not_found"


def test_real_clip_cut_in_half_has_no_index_and_is_corrupt(tmp_path):
    # robot_sample_input.mp4 keeps its index (moov) at the end: half the file has none, and
    # neither ffprobe nor ffmpeg can open it.
    half = make_truncated(ROBOT, tmp_path / "half.mp4")
    for call in (media.probe, lambda p: media.extract_frames(p, tmp_path / "o", 64, 36, 2)):
        with pytest.raises(MediaError, match="index") as caught:
            call(half)
        assert caught.value.code == "media_corrupt"


def test_truncated_clip_whose_index_survives_fails_only_for_frames_it_lacks(tmp_path):
    # With the index in front, the cut file probes as 121 frames (ffprobe says so too: it reads
    # the index, not the data). The first frames are intact, so extracting those is right; asking
    # for all 121 decodes only the part that is there, which is a MediaError, not short output.
    cut = make_truncated(ROBOT, tmp_path / "cut.mp4", faststart=True)
    assert media.probe(cut, min_frames=121).frame_count == 121
    assert len(media.extract_frames(cut, tmp_path / "first", 64, 36, 2)) == 2
    with pytest.raises(MediaError, match="decoded only") as caught:
        media.extract_frames(cut, tmp_path / "all", 64, 36, 121)
    assert caught.value.code == "media_corrupt"


def test_probe_many_keeps_order_and_returns_each_error(tmp_path, clips):
    notes = make_not_a_video(tmp_path / "notes.mp4")
    results = media.probe_many(
        [ROBOT, tmp_path / "absent.mp4", notes, clips["mkv"], clips["one"]], min_frames=2
    )
    assert isinstance(results[0], media.VideoInfo) and results[0].width == 1280
    assert [getattr(r, "code", None) for r in results[1:]] == [
        "media_not_found",
        "media_not_video",
        None,
        "media_too_few_frames",
    ]
    assert results[3].frame_count == 7
    with pytest.raises(ToolMissingError):  # not a per-file problem: the whole batch fails
        media.probe_many([clips["mkv"], clips["mkv"]], ffprobe="/nonexistent/ffprobe")


def test_probing_100_clips_takes_well_under_a_second():
    paths = [ROBOT, EXAMPLE1] * 50
    start = time.perf_counter()
    results = media.probe_many(paths, min_frames=2)
    elapsed_s = time.perf_counter() - start
    assert all(isinstance(r, media.VideoInfo) for r in results)
    assert [r.width for r in results[:2]] == [1280, 640]
    assert elapsed_s < 1.0, elapsed_s


# --- extraction -------------------------------------------------------------------------------


def test_extracts_exactly_n_frames_matching_a_full_decode(tmp_path):
    paths = media.extract_frames(ROBOT, tmp_path / "out", 320, 180, 2)
    assert [p.name for p in paths] == ["frame_000.png", "frame_001.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "frame_000.png",
        "frame_001.png",
    ]
    assert all(media.png_size(p) == (320, 180) for p in paths)

    # Reference: decode the whole clip, keep frames 0 and 1 at full size, shrink with Pillow.
    refs = decode_frames(ROBOT, tmp_path / "ref", 2)
    for ours, ref in zip(paths, refs, strict=True):
        with Image.open(ref) as full:
            shrunk = np.asarray(full.convert("RGB").resize((320, 180), Image.Resampling.BOX))
        assert mean_abs_diff(pixels(ours), shrunk.astype(np.int16)) < 3.0


def test_frames_come_in_order_at_the_source_size(clips, tmp_path):
    paths = media.extract_frames(clips["h264"], tmp_path / "out", 320, 240, 3)
    refs = decode_frames(clips["h264"], tmp_path / "ref", 3)
    ours, theirs = [pixels(p) for p in paths], [pixels(p) for p in refs]
    for i in range(3):
        # Not 0: our YUV→RGB step interpolates chroma more carefully than ffmpeg's default.
        own = mean_abs_diff(ours[i], theirs[i])
        assert own < 4.0
        for j in set(range(3)) - {i}:  # testsrc2 moves every frame
            assert mean_abs_diff(ours[i], theirs[j]) > 1.5 * own


def test_odd_target_size_is_honoured_exactly(tmp_path):
    paths = media.extract_frames(EXAMPLE1, tmp_path, 321, 181, 3)
    assert len(paths) == 3 and {media.png_size(p) for p in paths} == {(321, 181)}


def test_extraction_reads_only_the_first_frames(tmp_path):
    # A full-clip transcode decodes and encodes all 121 frames; extraction stops after 2. Both
    # pay ffmpeg's start-up (~0.1 s here), so the ratio is bounded; the best of 3 runs each.
    def best_of_3(run) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    extract_s = best_of_3(lambda: media.extract_frames(ROBOT, tmp_path / "x", 320, 180, 2))
    transcode_s = best_of_3(
        lambda: subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-i",
                str(ROBOT),
                "-vf",
                "scale=320:180",
                str(tmp_path / "full.mp4"),
            ],
            check=True,
        )  # fmt: skip
    )
    assert transcode_s / extract_s > 2.5, (extract_s, transcode_s)


# --- hint video -------------------------------------------------------------------------------


def test_hint_video_is_h264_with_exactly_n_frames_and_even_size(tmp_path):
    out = media.make_hint_video(EXAMPLE1, tmp_path / "hints" / "hint.mp4", 321, 181, 2, fps=8)
    stream = ffprobe_stream(out, "-count_frames")
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert (stream["width"], stream["height"]) == media.even_size(321, 181) == (320, 180)
    assert stream["nb_read_frames"] == "2"
    assert stream["avg_frame_rate"] == "8/1"
    assert no_temp_files(tmp_path)


def test_hint_video_at_another_fps_keeps_the_first_frames(clips, tmp_path):
    # 24 fps → 8 fps: resampling would show source frames 0 and 3; re-timing shows 0 and 1.
    out = media.make_hint_video(clips["h264"], tmp_path / "hint.mp4", 320, 240, 2, fps=8)
    pngs = [pixels(p) for p in media.extract_frames(clips["h264"], tmp_path / "png", 320, 240, 2)]
    shown = [pixels(p) for p in decode_frames(out, tmp_path / "shown", 2)]
    for i in range(2):
        own = mean_abs_diff(shown[i], pngs[i])  # not 0: H.264 + 4:2:0 lose a little
        assert own < 4.0 and mean_abs_diff(shown[i], pngs[1 - i]) > 1.5 * own


def test_hint_video_of_a_short_clip_is_an_error_and_leaves_no_file(clips, tmp_path):
    with pytest.raises(MediaError) as caught:
        media.make_hint_video(clips["one"], tmp_path / "hint.mp4", 64, 48, 2)
    assert caught.value.code == "media_too_few_frames"
    assert list(tmp_path.iterdir()) == []


# --- frame cache ------------------------------------------------------------------------------


def test_second_request_is_served_from_cache_without_ffmpeg(tmp_path):
    root = tmp_path / "cache"
    first = media.FrameCache(root).frames(ROBOT, 320, 180, 2)
    assert first.cached is False
    entry = root / sha256_file(ROBOT) / "320x180-n2"
    assert first.paths == [entry / "frame_000.png", entry / "frame_001.png"]
    assert first.sha256 == [sha256_file(p) for p in first.paths]
    manifest = json.loads((entry / "manifest.json").read_text())
    assert [f["sha256"] for f in manifest["frames"]] == first.sha256

    start = time.perf_counter()
    second = media.FrameCache(root, ffmpeg="/nonexistent/ffmpeg").frames(ROBOT, 320, 180, 2)
    assert time.perf_counter() - start < 0.05
    assert second.cached is True
    assert (second.paths, second.sha256) == (first.paths, first.sha256)
    assert no_temp_files(root)


def test_cache_is_keyed_by_content_size_and_count(tmp_path):
    root = tmp_path / "cache"
    copy = tmp_path / "renamed copy.mp4"
    shutil.copyfile(ROBOT, copy)
    original = media.FrameCache(root).frames(ROBOT, 320, 180, 2)
    assert media.FrameCache(root, ffmpeg="/nonexistent").frames(copy, 320, 180, 2).cached
    other = media.FrameCache(root).frames(ROBOT, 320, 180, 1)
    assert other.cached is False and other.paths[0].parent != original.paths[0].parent
    assert other.sha256[0] == original.sha256[0]  # the same first frame, byte for byte


def test_changed_source_gets_a_new_entry(tmp_path):
    root, clip = tmp_path / "cache", tmp_path / "clip.mp4"
    make_clip(clip, 160, 120, 3)
    first = media.FrameCache(root).frames(clip, 80, 60, 2)
    make_clip(clip, 160, 120, 4)  # a different clip under the same name
    second = media.FrameCache(root).frames(clip, 80, 60, 2)
    assert second.cached is False and second.source_sha256 == sha256_file(clip)
    assert second.source_sha256 != first.source_sha256


def test_damaged_cache_entry_is_extracted_again(tmp_path):
    root = tmp_path / "cache"
    first = media.FrameCache(root).frames(EXAMPLE1, 64, 48, 2)
    first.paths[1].write_bytes(b"")  # e.g. a crash before the data reached the disk
    again = media.FrameCache(root).frames(EXAMPLE1, 64, 48, 2)
    assert again.cached is False and again.sha256 == first.sha256
    assert no_temp_files(root)


def test_failed_extraction_caches_nothing(tmp_path):
    root = tmp_path / "cache"
    cut = make_truncated(ROBOT, tmp_path / "cut.mp4", faststart=True)
    with pytest.raises(MediaError):
        media.FrameCache(root).frames(cut, 64, 36, 121)
    digest = sha256_file(cut)
    assert not (root / digest / "64x36-n121").exists()
    assert no_temp_files(root)


# --- contact sheet ----------------------------------------------------------------------------


def test_contact_sheet_shows_the_frames_at_their_size(tmp_path):
    frames = media.extract_frames(ROBOT, tmp_path / "f", 320, 180, 2)
    out = media.contact_sheet(frames, ["320×180 · 504 tokens"] * 2, tmp_path / "p" / "sheet.png")
    with Image.open(out) as sheet:
        assert sheet.format == "PNG"
        assert sheet.width >= 2 * 320 and sheet.height > 180
        first = np.asarray(sheet.convert("RGB"))[8 : 8 + 180, 8 : 8 + 320].astype(np.int16)
    assert mean_abs_diff(first, pixels(frames[0])) == 0.0  # pasted 1:1
    assert no_temp_files(tmp_path / "p")
    with pytest.raises(ValueError):
        media.contact_sheet(frames, ["one label"], tmp_path / "bad.png")
