"""Prompt specs: both formats read from the real files in ../shared/media, paths, outputs."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cosmos_workflow.errors import SpecError
from cosmos_workflow.fsutil import sha256_file
from cosmos_workflow.specs import (
    HINT_KEYS,
    SpecFormat,
    load_spec,
    load_specs,
    output_names,
    spec_for_video,
    upsampled_spec,
    write_spec,
)

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CHECKOUT = MEDIA / "cosmos-transfer1"
ASSETS = CHECKOUT / "assets"
PROMPT_SPECS = MEDIA / "prompt-specs"
OFFICE = PROMPT_SPECS / "office_handover.json"
ROBOT = PROMPT_SPECS / "robot_lab_night.json"
WINDOWS = PROMPT_SPECS / "windows_path_missing_video.json"
EDGE = ASSETS / "inference_cosmos_transfer1_single_control_edge.json"
SEG = ASSETS / "inference_cosmos_transfer1_single_control_seg.json"
MULTI = ASSETS / "inference_cosmos_transfer1_multi_control.json"
FIXED_NOW = datetime(2026, 11, 27, 9, 30, 15, tzinfo=timezone.utc)
NASTY_PROMPT = (
    'He said "hi"; it\'s $(whoami) && `rm -rf /` | tee > /dev/null\n'
    "\ttabs, \\backslashes\\, ${HOME}, 'single', 東京の夜 🚧🤖, ünïcödé\r\nend  "
)


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really a video")
    return path


# --- reading the real files ----------------------------------------------------------------


def test_seed_spec_resolves_video_and_control_inputs_next_to_the_spec_file(workdir):
    spec = load_spec(OFFICE)

    assert spec.format is SpecFormat.SEED
    assert spec.path == OFFICE
    assert spec.id == "ps_3f9a1c2b7d41"
    assert spec.name == "office_handover"
    assert spec.prompt == "Robot arms hand a coffee cup to a woman across an office counter."
    assert spec.negative_prompt == "blurry, low resolution, cartoonish"
    assert spec.video == (ASSETS / "example1_input_video.mp4").resolve()
    assert spec.video_error is None
    assert spec.control_inputs == {
        "edge": str((ASSETS / "example1_edge.mp4").resolve()),
        "seg": str((ASSETS / "example1_seg.mp4").resolve()),
    }
    assert spec.control_errors == {}
    assert spec.is_upsampled is False
    assert spec.raw == json.loads(OFFICE.read_text(encoding="utf-8"))


def test_seed_spec_without_control_inputs_loads(workdir):
    spec = load_spec(ROBOT)

    assert spec.name == "robot_lab_night"
    assert spec.video == (ASSETS / "robot_sample_input.mp4").resolve()
    assert spec.control_inputs == {}
    assert spec.video_error is None


def test_windows_drive_path_loads_with_a_clear_video_error_and_byte_exact_prompt(workdir):
    spec = load_spec(WINDOWS)

    assert spec.video is None
    assert spec.video_error.code == "windows_path"
    assert "F:/Art/city_scene_20250830_203504/color.mp4" in spec.video_error.message
    assert "Windows path" in spec.video_error.message
    assert str(WINDOWS) in spec.video_error.message
    assert "fix the spec" in spec.video_error.hint
    assert "Windows machine" in spec.video_error.hint
    original = json.loads(WINDOWS.read_bytes().decode("utf-8"))["prompt"]
    assert spec.prompt == original
    assert spec.prompt.encode("utf-8") == original.encode("utf-8")
    for fragment in ('"quoted"', "$(whoami)", "`ls`", "ünïcödé", "東京", "🚧"):
        assert fragment in spec.prompt
    assert spec.name == "destroyed_city_dusk"
    assert spec.control_errors["depth"].code == "video_not_found"
    assert spec.control_inputs["depth"] == "inputs/videos/city_scene/depth.mp4"


@pytest.mark.parametrize(
    "video_path", ["C:\\Users\\me\\clip.mp4", "d:/clips/x.mp4", "\\\\nas\\share\\clip.mp4"]
)
def test_windows_paths_of_every_shape_are_reported_not_crashed_on(tmp_path, video_path):
    path = write_json(tmp_path / "w.json", {"prompt": "p", "input_video_path": video_path})

    spec = load_spec(path)

    assert spec.video is None
    assert spec.video_error.code == "windows_path"
    assert repr(video_path) in spec.video_error.message


@pytest.mark.parametrize("spec_file", [EDGE, SEG], ids=["edge", "seg"])
def test_nvidia_spec_finds_its_video_in_the_checkout_root_not_next_to_the_json(workdir, spec_file):
    spec = load_spec(spec_file)

    assert spec.format is SpecFormat.NVIDIA
    assert spec.id is None
    assert spec.name == spec_file.stem
    assert spec.video == (ASSETS / "example1_input_video.mp4").resolve()
    assert spec.video_error is None
    assert spec.is_upsampled is False
    assert spec.prompt == json.loads(spec_file.read_text(encoding="utf-8"))["prompt"]


def test_nvidia_input_control_is_resolved_like_the_video(workdir):
    assert load_spec(SEG).control_inputs == {"seg": str((ASSETS / "example1_seg.mp4").resolve())}
    assert load_spec(EDGE).control_inputs == {}  # edge is computed from the video by NVIDIA


def test_missing_nvidia_video_error_names_every_place_looked(workdir):
    spec = load_spec(MULTI)

    assert spec.video is None
    error = spec.video_error
    assert error.code == "video_not_found"
    assert "'assets/nurec2.mp4'" in error.message
    assert str(MULTI) in error.message
    looked = [
        ASSETS / "assets" / "nurec2.mp4",  # next to the spec
        workdir / "assets" / "nurec2.mp4",  # current directory
        ASSETS / "nurec2.mp4",  # checkout root / assets/nurec2.mp4
    ]
    positions = [error.message.index(str(place)) for place in looked]
    assert positions == sorted(positions)
    assert "checkout" in error.hint


def test_nvidia_spec_in_a_real_checkout_finds_paths_from_the_package_root(tmp_path, workdir):
    checkout = tmp_path / "cosmos-transfer1"
    (checkout / "cosmos_transfer1").mkdir(parents=True)
    video = touch(checkout / "assets" / "clip.mp4")
    spec_path = write_json(
        checkout / "my_specs" / "deep" / "s.json",
        {"prompt": "p", "input_video_path": "assets/clip.mp4", "edge": {"control_weight": 1}},
    )

    assert load_spec(spec_path).video == video.resolve()


def test_seed_video_next_to_spec_wins_over_current_directory(tmp_path, workdir):
    beside = touch(tmp_path / "specs" / "clips" / "a.mp4")
    touch(workdir / "clips" / "a.mp4")
    spec_path = write_json(
        tmp_path / "specs" / "s.json",
        {"name": "s", "prompt": "p", "input_video_path": "clips/a.mp4"},
    )

    assert load_spec(spec_path).video == beside.resolve()


def test_seed_video_falls_back_to_the_current_directory(tmp_path, workdir):
    in_cwd = touch(workdir / "clips" / "a.mp4")
    spec_path = write_json(
        tmp_path / "specs" / "s.json", {"id": "x", "prompt": "p", "input_video_path": "clips/a.mp4"}
    )

    assert load_spec(spec_path).video == in_cwd.resolve()


# --- [paths] local_videos_dir: the last place a relative path is looked for -------------------


def test_relative_video_not_beside_the_spec_is_found_in_the_videos_folder(tmp_path, workdir):
    video = touch(workdir / "inputs" / "videos" / "robot.mp4")
    edge = touch(workdir / "inputs" / "videos" / "robot_edge.mp4")
    spec_path = write_json(
        tmp_path / "specs" / "s.json",
        {
            "id": "x",
            "prompt": "p",
            "input_video_path": "robot.mp4",
            "control_inputs": {"edge": "robot_edge.mp4"},
        },
    )

    # A relative videos folder is relative to the current directory.
    spec = load_spec(spec_path, videos_dir="inputs/videos")

    assert spec.video == video.resolve()
    assert spec.video_error is None
    assert spec.control_inputs == {"edge": str(edge.resolve())}
    assert load_specs([spec_path.parent], videos_dir="inputs/videos")[0][0].video == spec.video


def test_without_a_videos_folder_no_extra_place_is_looked_in(tmp_path, workdir):
    touch(workdir / "inputs" / "videos" / "robot.mp4")
    spec_path = write_json(
        tmp_path / "specs" / "s.json", {"id": "x", "prompt": "p", "input_video_path": "robot.mp4"}
    )

    error = load_spec(spec_path, videos_dir=None).video_error

    assert error.code == "video_not_found"
    assert "inputs" not in error.message
    assert "local_videos_dir" not in error.hint


def test_video_beside_the_spec_wins_over_the_videos_folder(tmp_path, workdir):
    beside = touch(tmp_path / "specs" / "robot.mp4")
    videos = tmp_path / "videos"
    touch(videos / "robot.mp4")
    spec_path = write_json(
        tmp_path / "specs" / "s.json", {"id": "x", "prompt": "p", "input_video_path": "robot.mp4"}
    )

    assert load_spec(spec_path, videos_dir=videos).video == beside.resolve()


def test_missing_video_error_names_every_place_including_the_videos_folder(tmp_path, workdir):
    videos = tmp_path / "videos"
    videos.mkdir()
    spec_path = write_json(
        tmp_path / "specs" / "s.json", {"id": "x", "prompt": "p", "input_video_path": "robot.mp4"}
    )

    error = load_spec(spec_path, videos_dir=videos).video_error

    assert error.code == "video_not_found"
    looked = error.message.split("looked in: ", 1)[1].split(", ")
    assert looked == [
        str(tmp_path / "specs" / "robot.mp4"),
        str(workdir / "robot.mp4"),
        str(videos / "robot.mp4"),
    ]
    assert "[paths] local_videos_dir" in error.hint


def test_absolute_video_path_is_never_looked_up_in_the_videos_folder(tmp_path, workdir):
    videos = tmp_path / "videos"
    touch(videos / "robot.mp4")
    gone = tmp_path / "elsewhere" / "robot.mp4"
    spec_path = write_json(
        tmp_path / "specs" / "s.json", {"id": "x", "prompt": "p", "input_video_path": str(gone)}
    )

    spec = load_spec(spec_path, videos_dir=videos)

    assert spec.video is None
    assert spec.video_error.message.endswith(f"not found; looked in: {gone}")
    assert "local_videos_dir" not in spec.video_error.hint


def test_output_spec_points_at_the_video_found_in_the_videos_folder(tmp_path, workdir):
    video = touch(tmp_path / "videos" / "robot.mp4")
    spec_path = write_json(
        tmp_path / "specs" / "s.json", {"id": "x", "prompt": "p", "input_video_path": "robot.mp4"}
    )
    out = tmp_path / "out"

    written = write_spec(
        out / "s.json",
        upsampled_spec(load_spec(spec_path, videos_dir=tmp_path / "videos"), "t", out_dir=out),
    )

    assert json.loads(written.read_text())["input_video_path"] == "../videos/robot.mp4"
    assert load_spec(written).video == video.resolve()


def test_missing_seed_video_lists_spec_folder_and_current_directory(tmp_path, workdir):
    spec_path = write_json(
        tmp_path / "specs" / "s.json", {"id": "x", "prompt": "p", "input_video_path": "v.mp4"}
    )

    error = load_spec(spec_path).video_error

    assert error.code == "video_not_found"
    assert str(tmp_path / "specs" / "v.mp4") in error.message
    assert str(workdir / "v.mp4") in error.message
    assert "relative to the spec file" in error.hint


def test_spec_without_video_loads_with_an_error(tmp_path):
    spec = load_spec(write_json(tmp_path / "s.json", {"name": "n", "prompt": "p"}))

    assert spec.video is None
    assert spec.video_error.code == "no_video"


def test_nvidia_unknown_plain_keys_are_kept_and_negative_prompt_is_read(tmp_path):
    obj = {
        "prompt": "p",
        "negative_prompt": "ugly",
        "sigma_max": 80.0,
        "seed": 7,
        "regional_prompts": [{"prompt": "x"}],
        "input_video_path": str(ASSETS / "example1_input_video.mp4"),
        "vis": {"control_weight": 0.5},
    }
    spec = load_spec(write_json(tmp_path / "n.json", obj))

    assert spec.format is SpecFormat.NVIDIA
    assert spec.negative_prompt == "ugly"
    assert spec.raw == obj
    assert spec.video == (ASSETS / "example1_input_video.mp4").resolve()


# --- broken files ----------------------------------------------------------------------------

BROKEN = {
    "malformed": ('{"prompt": "a",\n "input_video_path": }', "not valid JSON (line 2"),
    "prompt_not_string": ('{"prompt": 42, "input_video_path": "v.mp4"}', '"prompt" must be'),
    "missing_prompt": ('{"name": "n", "input_video_path": "v.mp4"}', 'has no "prompt"'),
    "array_root": ('[{"prompt": "p"}]', "must be a JSON object, not list"),
    "not_utf8": (b'{"prompt": "\xff"}', "not UTF-8"),
    "controls_not_object": ('{"id": "x", "prompt": "p", "control_inputs": ["a"]}', "object"),
    "upsampled_not_bool": ('{"id": "x", "prompt": "p", "is_upsampled": "no"}', "true or false"),
    "nvidia_unknown_object": ('{"prompt": "p", "blur": {"control_weight": 1}}', '"blur"'),
    "nvidia_hint_not_object": ('{"prompt": "p", "edge": 1.0}', 'hint "edge"'),
    "lone_surrogate": ('{"prompt": "\\ud83d"}', "surrogate"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_spec_raises_one_line_error_with_its_path(tmp_path, case):
    content, reason = BROKEN[case]
    path = tmp_path / f"{case}.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))

    with pytest.raises(SpecError) as caught:
        load_spec(path)

    assert caught.value.message.startswith(f"{path}: ")
    assert reason in caught.value.message
    assert "\n" not in caught.value.message


def test_missing_spec_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.json")


# --- folders -------------------------------------------------------------------------------


def copy_shared_specs(folder: Path) -> Path:
    """The three seed specs, copied: their `../cosmos-transfer1/...` paths then point nowhere."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(PROMPT_SPECS.glob("*.json")):
        shutil.copy(source, folder / source.name)
    return folder


def test_folder_loads_good_specs_and_reports_the_broken_one(tmp_path):
    folder = copy_shared_specs(tmp_path / "specs")
    (folder / "broken.json").write_text('{"prompt": "unterminated', encoding="utf-8")
    (folder / "notes.txt").write_text("not a spec", encoding="utf-8")

    specs, errors = load_specs([folder])

    assert [s.path.name for s in specs] == [
        "office_handover.json",
        "robot_lab_night.json",
        "windows_path_missing_video.json",
    ]
    assert len(errors) == 1
    assert errors[0].message.startswith(f"{folder / 'broken.json'}: not valid JSON")
    # Copied away from the media folder, the relative videos are missing: loaded anyway.
    assert specs[0].video is None and specs[0].video_error.code == "video_not_found"


def test_folder_in_place_loads_all_real_nvidia_specs_sorted(workdir):
    specs, errors = load_specs([ASSETS])

    assert errors == []
    assert [s.path for s in specs] == sorted([EDGE, MULTI, SEG])
    assert [s.video is not None for s in specs] == [False, True, True]


def test_subfolders_are_loaded_only_when_recursive(tmp_path):
    folder = tmp_path / "specs"
    write_json(folder / "b.json", {"prompt": "b"})
    write_json(folder / "a" / "z.json", {"prompt": "az"})
    write_json(folder / "a" / "y.json", {"prompt": "ay"})
    write_json(folder / ".hidden" / "h.json", {"prompt": "h"})
    write_json(folder / ".draft.json", {"prompt": "d"})

    flat, flat_errors = load_specs([folder])
    deep, deep_errors = load_specs([folder], recursive=True)

    assert [s.prompt for s in flat] == ["b"]
    assert [s.prompt for s in deep] == ["ay", "az", "b"]
    assert flat_errors == deep_errors == []


def test_empty_folder_is_an_error_with_a_hint(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    write_json(tmp_path / "empty" / "sub" / "s.json", {"prompt": "p"})

    specs, errors = load_specs([tmp_path / "empty"])

    assert specs == []
    assert len(errors) == 1
    assert errors[0].code == "no_specs"
    assert str(tmp_path / "empty") in errors[0].message
    assert "--recursive" in errors[0].hint


def test_files_and_folders_mix_in_input_order(tmp_path, workdir):
    folder = tmp_path / "more"
    write_json(folder / "x.json", {"prompt": "x"})

    specs, errors = load_specs([ROBOT, folder, tmp_path / "absent.json"])

    assert [s.name for s in specs] == ["robot_lab_night", "x"]
    assert len(errors) == 1 and "absent.json" in errors[0].message


def test_bare_video_becomes_a_spec_named_after_it(workdir):
    video = ASSETS / "robot_sample_input.mp4"
    spec = spec_for_video(video, NASTY_PROMPT)

    assert spec.path is None
    assert spec.format is SpecFormat.SEED
    assert spec.name == "robot_sample_input"
    assert spec.video == video.resolve()
    assert spec.prompt == NASTY_PROMPT

    missing = spec_for_video(Path("nothing.mp4"), "")
    assert missing.video is None
    assert str(workdir / "nothing.mp4") in missing.video_error.message


# --- writing -------------------------------------------------------------------------------


def test_upsampled_nvidia_spec_changes_only_the_prompt(tmp_path, workdir):
    spec = load_spec(SEG)
    original = json.loads(SEG.read_text(encoding="utf-8"))

    data = upsampled_spec(spec, NASTY_PROMPT, out_dir=tmp_path / "out")

    assert list(data) == list(original)
    assert data["prompt"] == NASTY_PROMPT
    assert {**data, "prompt": original["prompt"]} == original
    # What NVIDIA's loader demands: every object-valued key is a hint key (no lineage objects).
    assert all(k in HINT_KEYS for k, v in data.items() if isinstance(v, dict))
    assert spec.raw["prompt"] == original["prompt"]  # the input record is not modified


def test_written_nvidia_spec_in_the_checkout_loads_back_with_the_same_video(tmp_path, workdir):
    checkout = tmp_path / "cosmos-transfer1"
    (checkout / "cosmos_transfer1").mkdir(parents=True)  # what makes it a checkout
    shutil.copytree(ASSETS, checkout / "assets", ignore=shutil.ignore_patterns("*.mp4"))
    touch(checkout / "assets" / "example1_input_video.mp4")
    spec = load_spec(checkout / "assets" / EDGE.name)

    out = write_spec(
        checkout / "outputs" / "edge.json", upsampled_spec(spec, "new", out_dir=checkout)
    )
    again = load_spec(out)

    assert again.format is SpecFormat.NVIDIA
    assert again.prompt == "new"
    assert again.raw["input_video_path"] == "assets/example1_input_video.mp4"
    assert again.video == spec.video == (checkout / "assets/example1_input_video.mp4").resolve()


def test_upsampled_seed_spec_is_a_new_spec_with_lineage(tmp_path, workdir):
    spec = load_spec(OFFICE)

    data = upsampled_spec(spec, NASTY_PROMPT, out_dir=tmp_path / "out", now=FIXED_NOW)

    assert re.fullmatch(r"ps_[0-9a-f]{12}", data["id"])
    assert data["id"] != spec.id
    assert data["name"] == "office_handover"
    assert data["prompt"] == NASTY_PROMPT
    assert data["is_upsampled"] is True
    assert data["parent_prompt_text"] == spec.prompt
    assert data["negative_prompt"] == spec.negative_prompt
    assert data["timestamp"] == "2026-11-27T09:30:15Z"
    assert list(data)[:9] == [
        "id",
        "name",
        "prompt",
        "negative_prompt",
        "input_video_path",
        "control_inputs",
        "timestamp",
        "is_upsampled",
        "parent_prompt_text",
    ]


def test_new_seed_id_is_deterministic_from_parent_and_text(tmp_path, workdir):
    spec = load_spec(OFFICE)
    out = tmp_path / "out"

    first = upsampled_spec(spec, "text A", out_dir=out, now=FIXED_NOW)["id"]
    later = upsampled_spec(spec, "text A", out_dir=out, now=datetime.now(timezone.utc))["id"]
    other_text = upsampled_spec(spec, "text B", out_dir=out, now=FIXED_NOW)["id"]
    other_parent = upsampled_spec(load_spec(ROBOT), "text A", out_dir=out, now=FIXED_NOW)["id"]

    assert first == later
    assert len({first, other_text, other_parent}) == 3


def test_seed_output_paths_resolve_from_the_output_folder(tmp_path, workdir):
    spec = load_spec(OFFICE)
    out = tmp_path / "out" / "nested"

    written = write_spec(out / "office_handover.json", upsampled_spec(spec, "t", out_dir=out))
    data = json.loads(written.read_text(encoding="utf-8"))
    again = load_spec(written)

    assert not Path(data["input_video_path"]).is_absolute()  # relative in, relative out
    assert again.video == spec.video
    assert again.control_inputs == spec.control_inputs
    assert again.is_upsampled is True
    assert again.raw["parent_prompt_text"] == spec.prompt


def test_unresolvable_seed_paths_keep_their_meaning(tmp_path, workdir):
    spec = load_spec(WINDOWS)
    out = tmp_path / "out"

    data = upsampled_spec(spec, "t", out_dir=out)

    assert data["input_video_path"] == "F:/Art/city_scene_20250830_203504/color.mp4"
    depth = out / data["control_inputs"]["depth"]
    assert depth.resolve() == (PROMPT_SPECS / "inputs/videos/city_scene/depth.mp4").resolve()


def test_absolute_seed_paths_stay_absolute(tmp_path):
    video = str((ASSETS / "example1_input_video.mp4").resolve())
    spec = load_spec(
        write_json(tmp_path / "a.json", {"id": "x", "prompt": "p", "input_video_path": video})
    )

    assert upsampled_spec(spec, "t", out_dir=tmp_path / "o")["input_video_path"] == video


def test_prompt_with_shell_metacharacters_stays_byte_exact_through_write_and_load(tmp_path):
    spec = spec_for_video(ASSETS / "robot_sample_input.mp4", "short")
    path = write_spec(
        tmp_path / "out" / "x.json", upsampled_spec(spec, NASTY_PROMPT, out_dir=tmp_path / "out")
    )

    assert json.loads(path.read_bytes().decode("utf-8"))["prompt"] == NASTY_PROMPT
    assert "東京の夜 🚧🤖".encode() in path.read_bytes()  # written as UTF-8, not \\u escapes
    reloaded = load_spec(path)
    assert reloaded.prompt == NASTY_PROMPT
    assert reloaded.video == (ASSETS / "robot_sample_input.mp4").resolve()
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left


def test_writing_outputs_never_touches_the_inputs(tmp_path, workdir):
    before = {p: sha256_file(p) for p in (OFFICE, SEG)}
    out = tmp_path / "out"
    specs = [load_spec(OFFICE), load_spec(SEG)]

    for spec, name in zip(specs, output_names(specs, out_dir=out), strict=True):
        write_spec(out / name, upsampled_spec(spec, "t", out_dir=out))

    assert {p: sha256_file(p) for p in before} == before
    assert sorted(p.name for p in out.iterdir()) == [
        "inference_cosmos_transfer1_single_control_seg.json",
        "office_handover.json",
    ]


# --- output names --------------------------------------------------------------------------


def named(tmp_path: Path, file_stem: str, name: str):
    return load_spec(write_json(tmp_path / f"{file_stem}.json", {"name": name, "prompt": "p"}))


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "..", ".", "a/../../b", "..\\..\\win", "x\0y", "", "CON"],
)
def test_output_name_never_leaves_the_save_folder(tmp_path, name):
    out = tmp_path / "save"
    [file_name] = output_names([named(tmp_path, "s", name)])

    target = (out / file_name).resolve()

    assert target.parent == out.resolve()
    assert file_name.endswith(".json")
    assert "/" not in file_name and "\\" not in file_name
    assert not file_name.startswith(".")


def test_output_names_keep_plain_and_unicode_names(tmp_path):
    specs = [named(tmp_path, "a", "office_handover"), named(tmp_path, "b", "東京 night")]

    assert output_names(specs) == ["office_handover.json", "東京_night.json"]


def test_output_name_of_nvidia_spec_is_its_file_stem(workdir):
    assert output_names([load_spec(EDGE)]) == [f"{EDGE.stem}.json"]


def test_colliding_output_names_are_an_error_naming_both_specs(tmp_path):
    specs = [named(tmp_path, "one", "scene"), named(tmp_path, "two", "Scene")]

    with pytest.raises(SpecError) as caught:
        output_names(specs)

    assert caught.value.code == "name_collision"
    assert "one.json" in caught.value.message and "two.json" in caught.value.message


def test_names_that_sanitize_to_the_same_file_collide(tmp_path):
    specs = [named(tmp_path, "one", "a/b"), named(tmp_path, "two", "a b")]

    with pytest.raises(SpecError, match="a_b.json"):
        output_names(specs)


def test_saving_into_the_input_folder_would_replace_an_input_and_is_refused(tmp_path):
    spec = named(tmp_path, "scene", "scene")

    with pytest.raises(SpecError) as caught:
        output_names([spec], out_dir=tmp_path)

    assert caught.value.code == "would_overwrite_input"
    assert output_names([spec], out_dir=tmp_path / "out") == ["scene.json"]
