"""Staging a batch (`cosmos upsample`'s local half): frames go through the batched frame cache.

Real ffmpeg behind a wrapper that counts its starts; a dry run stages without any host.
"""

from __future__ import annotations

import json
from pathlib import Path

from cosmos_workflow import media
from cosmos_workflow.config import load_config
from cosmos_workflow.workflows import WorkflowOrchestrator

from .clips import make_clip
from .test_media_batch import counting_ffmpeg, starts


def write_specs(folder: Path, clips: list[Path], count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        spec = {
            "id": f"ps_{i:012x}",
            "name": f"item_{i}",
            "prompt": f"Item {i}: a test pattern.",
            "input_video_path": str(clips[i % len(clips)]),
            "control_inputs": {},
            "is_upsampled": False,
        }
        (folder / f"item_{i}.json").write_text(json.dumps(spec))
    return folder


def test_a_batch_is_staged_several_clips_per_ffmpeg_start_with_the_one_clip_bytes(
    workdir, tmp_path
):
    clips = [make_clip(tmp_path / "clips" / f"c{i}.mp4", 160 + 16 * i, 90, 3) for i in range(6)]
    specs = write_specs(tmp_path / "specs", clips, 8)  # 8 items, 6 distinct clips
    ffmpeg, log = counting_ffmpeg(tmp_path)
    orch = WorkflowOrchestrator(load_config(None, {"ffmpeg.binary": ffmpeg}))

    record = orch.upsample([specs], save_dir=tmp_path / "out", dry_run=True)
    assert [item.status for item in record.items] == ["staged"] * 8
    # Six misses over four workers: groups of two, three ffmpeg starts (one per clip before).
    assert starts(log) == 3
    reference = media.FrameCache(tmp_path / "single")
    for item in record.items:
        one = reference.frames(item.spec.video, item.frame_width, item.frame_height, 2)
        assert item.frame_sha256 == one.sha256
        assert [p.read_bytes() for p in item.frame_files] == [p.read_bytes() for p in one.paths]

    again = orch.upsample([specs], save_dir=tmp_path / "out", dry_run=True)
    assert starts(log) == 3  # every frame from the cache
    assert again.job_id == record.job_id
