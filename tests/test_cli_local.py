"""The local half through the CLI: check, limits, prepare, version and help, on real media."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .conftest import ASSETS, PROMPT_SPECS, REPO

runner = CliRunner()
OFFICE = PROMPT_SPECS / "office_handover.json"
ROBOT = PROMPT_SPECS / "robot_lab_night.json"
WINDOWS = PROMPT_SPECS / "windows_path_missing_video.json"


def invoke(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=not ok)
    return result


def data(result):
    return json.loads(result.stdout)["data"]


def test_help_lists_every_command_with_a_summary(workdir):
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("check", "limits", "prepare", "upsample", "config", "remote"):
        assert command in result.stdout
    assert "Count each input's exact prompt tokens" in result.stdout


def test_version(workdir):
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("cosmos-workflow ")


@pytest.mark.parametrize("module", ["cosmos_workflow", "cosmos_workflow.cli"])
def test_python_dash_m_runs_the_same_app(module, workdir):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("cosmos-workflow ")


def test_check_real_640x480_spec_fits_with_exact_counts(workdir):
    result = invoke("check", OFFICE, "--json")
    assert result.exit_code == 0, result.output
    # 480/16 = 30 rows of (640/16 + 1) = 41 tokens per frame; 17 = prompt + chat frame.
    assert data(result) == {
        "items": [
            {
                "input": str(OFFICE),
                "frame_width": 640,
                "frame_height": 480,
                "frame_count": 2,
                "image_tokens": 2 * 30 * 41,
                "text_tokens": 17,
                "prompt_tokens": 2460 + 17,
                "max_model_len": 4096,
                "output_tokens": 300,
                "verdict": "fits",
                "recommended_width": None,
                "recommended_height": None,
            }
        ]
    }


def test_check_720p_clip_is_too_long_and_recommends_a_size(workdir):
    result = invoke("check", ROBOT, "--json")
    assert result.exit_code == 1
    (item,) = data(result)["items"]
    assert (item["frame_width"], item["frame_height"]) == (1280, 704)
    # Longer side over 1024: scaled to 1024×563 first, then 36 rows × (64 + 1).
    assert item["image_tokens"] == 2 * 36 * 65
    assert item["verdict"] == "too_long"
    assert (item["recommended_width"], item["recommended_height"]) == (928, 510)
    # The recommended size really fits: check it.
    again = invoke("check", ROBOT, "--resolution", "928x510", "--json")
    assert again.exit_code == 0
    assert data(again)["items"][0]["prompt_tokens"] <= 4096 - 300


def test_check_resolution_auto_fits_and_larger_context_fits_at_source(workdir):
    auto = invoke("check", ROBOT, "--resolution", "auto", "--json")
    assert auto.exit_code == 0
    assert data(auto)["items"][0]["frame_width"] == 928
    big = invoke("check", ROBOT, "--max-model-len", "8192", "--json")
    assert big.exit_code == 0
    assert data(big)["items"][0]["max_model_len"] == 8192


def test_check_output_cut_when_prompt_fits_but_output_would_be_cut(workdir):
    # 4,698 prompt tokens: fits in 4,900 but leaves fewer than 300 for the output.
    result = invoke("check", ROBOT, "--max-model-len", "4900", "--json")
    assert result.exit_code == 1
    assert data(result)["items"][0]["verdict"] == "output_cut"


def test_check_bare_video_with_prompt(workdir):
    video = ASSETS / "example1_input_video.mp4"
    result = invoke("check", video, "--prompt", "", "--frames", "1", "--json")
    assert result.exit_code == 0
    (item,) = data(result)["items"]
    assert item["frame_count"] == 1
    # NVIDIA's default prompt "describe the following images": 4 tokens + BOS/[INST]/[/INST].
    assert item["text_tokens"] == 7
    assert item["prompt_tokens"] == 1230 + 7


def test_check_windows_path_is_one_clear_item_error(workdir):
    result = invoke("check", WINDOWS, OFFICE, "--json")
    assert result.exit_code == 2
    first, second = data(result)["items"]
    assert first["verdict"] == "error"
    assert first["error"]["code"] == "windows_path"
    assert second["verdict"] == "fits"  # the good spec is still checked


def test_check_finds_a_spec_video_in_the_configured_videos_folder(workdir):
    spec = workdir / "specs" / "s.json"
    spec.parent.mkdir()
    spec.write_text(
        json.dumps({"id": "x", "prompt": "p", "input_video_path": "example1_input_video.mp4"})
    )

    # The default videos folder, ./inputs/videos, does not have it: every place is named.
    result = invoke("check", spec, "--json")
    assert result.exit_code == 2
    (item,) = data(result)["items"]
    assert item["error"]["code"] == "video_not_found"
    assert (
        str(workdir / "inputs" / "videos" / "example1_input_video.mp4") in item["error"]["message"]
    )

    (workdir / "config.toml").write_text(f"[paths]\nlocal_videos_dir = {json.dumps(str(ASSETS))}\n")
    result = invoke("check", spec, "--json")
    assert result.exit_code == 0, result.output
    (item,) = data(result)["items"]
    assert (item["frame_width"], item["frame_height"], item["verdict"]) == (640, 480, "fits")


def test_check_missing_input_is_one_line(workdir):
    result = invoke("check", workdir / "nope.mp4")
    assert result.exit_code == 2
    error, hint = result.stderr.strip().splitlines()
    assert error.startswith("error: ") and "no such file or folder" in error
    assert hint.startswith("hint: ")
    assert result.stdout == ""  # no empty table above the error


def test_check_bad_resolution_is_one_line_error(workdir):
    result = invoke("check", OFFICE, "--resolution", "huge")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: resolution 'huge' is not understood",
        'hint: use "source", "auto", a height like "480", or a size like "320x180"',
    ]


def test_check_bad_resolution_as_json_error_envelope(workdir):
    result = invoke("check", OFFICE, "--resolution", "huge", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "bad_resolution"


def test_limits_table_is_exact(workdir):
    result = invoke("limits", "--max-model-len", "4096", "--aspect", "16:9", "--json")
    assert result.exit_code == 0
    assert data(result) == {
        "limits": [
            {
                "max_model_len": 4096,
                "aspect": "16:9",
                "frame_count": 2,
                "output_tokens": 300,
                "width": 910,
                "height": 512,
                "prompt_tokens": 3719,
                "margin": 77,
            }
        ]
    }


def test_limits_human_table_mentions_each_context(workdir):
    result = invoke("limits")
    assert result.exit_code == 0
    for text in ("4,096", "8,192", "16,384", "32,768", "910×512", "1024×576"):
        assert text in result.stdout


def test_limits_bad_aspect_is_one_line(workdir):
    result = invoke("limits", "--aspect", "wide")
    assert result.exit_code == 2
    error, hint = result.stderr.strip().splitlines()
    assert error.startswith("error: ") and "wide" in error
    assert hint.startswith("hint: ")
    assert result.stdout == ""


def test_prepare_writes_frames_hint_video_and_preview(workdir):
    out = workdir / "prepared"
    result = invoke("prepare", ROBOT, "--out", out, "--preview", "--json")
    assert result.exit_code == 0, result.output
    item_dir = out / "robot_lab_night"
    frames = sorted(item_dir.glob("frame_*.png"))
    assert [f.name for f in frames] == ["frame_000.png", "frame_001.png"]
    for frame in frames:
        assert Image.open(frame).size == (928, 510)
    assert (item_dir / "hint.mp4").stat().st_size > 0
    assert Image.open(item_dir / "preview.png").format == "PNG"
    (item,) = data(result)["items"]
    assert item["verdict"] == "fits"

    # A second run is served from the frame cache: identical bytes.
    first = frames[0].read_bytes()
    shutil.rmtree(out)
    again = invoke("prepare", ROBOT, "--out", out, "--json")
    assert again.exit_code == 0
    assert (item_dir / "frame_000.png").read_bytes() == first


def test_prepare_never_modifies_inputs(workdir):
    video = ASSETS / "example1_input_video.mp4"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (OFFICE, video)}
    result = invoke("prepare", OFFICE, "--out", workdir / "p", "--json")
    assert result.exit_code == 0, result.output
    (item,) = data(result)["items"]
    assert item["verdict"] == "fits"
    # It really read and prepared the inputs, so "unchanged" below means something.
    assert len(list((workdir / "p" / "office_handover").glob("frame_*.png"))) == 2
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before


def test_outputs_get_ordinary_file_permissions(workdir):
    """Atomic writes go through mkstemp (0600); finished outputs are shared like any file."""
    out = workdir / "prepared"
    old = os.umask(0o022)
    try:
        assert invoke("prepare", ROBOT, "--out", out, "--preview").exit_code == 0
    finally:
        os.umask(old)
    for name in ("frame_000.png", "hint.mp4", "preview.png"):
        mode = (out / "robot_lab_night" / name).stat().st_mode & 0o777
        assert mode == 0o644, (name, oct(mode))
