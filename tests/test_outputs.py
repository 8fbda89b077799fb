"""Nothing lost in the save folder: `cosmos upsample` replaces only what it wrote itself.

Runs the real CLI with the local transport (the worker runs on this machine, as on a GPU box)
and the stand-in engine; outputs, inputs and hand edits are real files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cosmos_workflow.remote.protocol import parse_results
from cosmos_workflow.specs import load_specs

from .conftest import ASSETS
from .upsample_env import (
    digest_tree,
    engine_events,
    record_of,
    seed_specs,
    stand_in_setup,
    upsample,
)

CLIP = ASSETS / "example1_input_video.mp4"


@pytest.fixture
def local(workdir, host, tmp_path):
    """config.toml for the local transport with the stand-in engine; call it to change controls."""
    return stand_in_setup(workdir, host, tmp_path / "engine.jsonl", lambda: {"transport": "local"})


def by_name(record: dict) -> dict:
    return {item["name"]: item for item in record["items"]}


def generated(local) -> list[str]:
    return sorted(e["prompt"] for e in engine_events(local.engine_log))


def nvidia_spec(folder: Path, stem: str, prompt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"prompt": prompt, "input_video_path": str(CLIP), "edge": {"control_weight": 1.0}}
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


# -- a. an output never replaces a file cosmos did not write ---------------------------------


def test_output_named_like_another_input_spec_is_refused_and_inputs_untouched(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    # office_handover's output would be written as robot_lab_night.json: another input spec.
    office = prompts / "office_handover.json"
    office.write_text(json.dumps(dict(json.loads(office.read_text()), name="robot_lab_night")))
    robot = prompts / "robot_lab_night.json"
    robot.write_text(json.dumps(dict(json.loads(robot.read_text()), name="robot_2")))
    before = digest_tree(prompts)

    result = upsample(prompts, "--save-dir", prompts)

    assert result.exit_code == 2, result.output
    assert (
        f"error: writing robot_lab_night.json into {prompts} would replace the input spec "
        f"{robot}" in " ".join(result.stderr.split())
    )
    assert digest_tree(prompts) == before
    assert engine_events(local.engine_log, "load") == []


def test_existing_file_cosmos_did_not_write_is_never_replaced(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    out = workdir / "out"
    out.mkdir()
    theirs = out / "office_handover.json"
    theirs.write_text('{"mine": "not a cosmos output"}\n')

    for extra in ([], ["--overwrite"], ["--force", "--overwrite"]):
        result = upsample(prompts, "--save-dir", out, "--json", *extra)
        assert result.exit_code == 1, result.output
        items = by_name(record_of(result))
        assert items["robot_lab_night"]["status"] == "ok"
        office = items["office_handover"]
        assert office["status"] == "failed"
        assert office["error"]["code"] == "output_not_ours"
        assert str(theirs) in office["error"]["message"]
        assert "--save-dir" in office["error"]["hint"]
        assert theirs.read_text() == '{"mine": "not a cosmos output"}\n'
    # The refused item never reached the engine.
    assert all("office" not in p for p in generated(local))


def test_output_named_run_json_is_refused_not_clobbered_by_the_run_record(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    spec = prompts / "office_handover.json"
    spec.write_text(json.dumps(dict(json.loads(spec.read_text()), name="run")))
    result = upsample(prompts, "--save-dir", workdir / "out", "--json")
    assert result.exit_code == 1, result.output
    items = by_name(record_of(result))
    assert items["run"]["error"]["code"] == "reserved_output_name"
    assert items["robot_lab_night"]["status"] == "ok"
    assert json.loads((workdir / "out" / "run.json").read_text())["kind"] == "cosmos-run-record"


def test_dry_run_lists_collisions_and_what_each_output_would_do(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    out = workdir / "out"
    out.mkdir()
    theirs = out / "office_handover.json"
    theirs.write_text("{}\n")

    result = upsample(prompts, "--save-dir", out, "--dry-run")

    assert result.exit_code == 1, result.output
    stderr = " ".join(result.stderr.split())
    assert f"error: office_handover: {theirs} exists and was not written by cosmos" in stderr
    assert "robot_lab_night.json (new)" in " ".join(result.stdout.split())
    assert theirs.read_text() == "{}\n"
    assert not (out / "robot_lab_night.json").exists()


def test_recursive_passes_over_earlier_outputs_and_says_so(local, workdir):
    prompts = workdir / "prompts"
    nvidia_spec(prompts, "edge_scene", "a robot arm")
    out = prompts / "upsampled"
    first = upsample(prompts, "--recursive", "--save-dir", out, "--json")
    assert first.exit_code == 0, first.output
    assert record_of(first)["passed_over"] == []

    again = upsample(prompts, "--recursive", "--save-dir", out, "--json")

    assert again.exit_code == 0, again.output
    record = record_of(again)
    assert [i["input"] for i in record["items"]] == [str(prompts / "edge_scene.json")]
    passed = {
        Path(p["path"]).relative_to(out).as_posix(): p["reason"] for p in record["passed_over"]
    }
    assert set(passed) == {"edge_scene.json", "run.json", f"runs/{record['job_id']}.json"}
    assert "written by cosmos upsample" in passed["edge_scene.json"]
    assert "run record" in passed["run.json"]
    assert "passed over 3 file(s) cosmos wrote" in " ".join(again.stderr.split())


def test_folder_load_reports_outputs_listed_in_the_ledger(tmp_path):
    from cosmos_workflow.specs.outputs import LEDGER_NAME

    folder = tmp_path / "specs"
    nvidia_spec(folder, "input", "in")
    nvidia_spec(folder, "output", "out")
    (folder / LEDGER_NAME).write_text(
        json.dumps({"kind": "cosmos-output-ledger", "version": 1, "outputs": {"output.json": []}})
    )
    passed_over: list[dict] = []
    specs, errors = load_specs([folder], passed_over=passed_over)
    assert [s.path.name for s in specs] == ["input.json"] and errors == []
    assert [Path(p["path"]).name for p in passed_over] == ["output.json"]
    # Named on its own, a file is always an input.
    specs, errors = load_specs([folder / "output.json"])
    assert [s.path.name for s in specs] == ["output.json"]


# -- b. a rerun never destroys a hand edit; identical outputs are not rewritten ---------------


def test_rerun_keeps_a_hand_edited_output_and_overwrite_replaces_it(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    out = workdir / "out"
    first = record_of(upsample(prompts, "--save-dir", out, "--json"))
    office = Path(by_name(first)["office_handover"]["output"])
    written = office.read_bytes()
    edited = json.loads(written)
    edited["prompt"] = "my careful hand edit"
    office.write_text(json.dumps(edited))
    hand_edit = office.read_bytes()

    kept = upsample(prompts, "--save-dir", out)
    assert kept.exit_code == 0, kept.output
    assert office.read_bytes() == hand_edit
    stderr = " ".join(kept.stderr.split())
    assert f"skipped: office_handover: {office} was changed since cosmos wrote it" in stderr
    assert "hint: --overwrite replaces it" in stderr

    as_json = record_of(upsample(prompts, "--save-dir", out, "--json"))
    item = by_name(as_json)["office_handover"]
    assert (item["status"], item["error"]["code"]) == ("skipped", "output_edited")
    assert item["output_action"] == "kept"
    assert office.read_bytes() == hand_edit

    replaced = record_of(upsample(prompts, "--save-dir", out, "--overwrite", "--json"))
    item = by_name(replaced)["office_handover"]
    assert (item["status"], item["output_action"]) == ("ok", "written")
    assert json.loads(office.read_bytes())["prompt"] == json.loads(written)["prompt"]
    # Four runs, yet each item reached the engine once: the job's results were reused.
    assert len(generated(local)) == 2
    # Kept again on the next plain rerun? No: it is cosmos' own output again.
    again = record_of(upsample(prompts, "--save-dir", out, "--json"))
    assert by_name(again)["office_handover"]["output_action"] == "unchanged"


def test_rerun_does_not_rewrite_an_identical_output(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    out = workdir / "out"
    first = record_of(upsample(prompts, "--save-dir", out, "--json"))
    outputs = [Path(item["output"]) for item in first["items"]]
    old_ns = 1_000_000_000_000_000_000  # 2001: any rewrite would change it
    for path in outputs:
        os.utime(path, ns=(old_ns, old_ns))
    contents = [path.read_bytes() for path in outputs]

    second = record_of(upsample(prompts, "--save-dir", out, "--json"))

    assert {item["status"] for item in second["items"]} == {"ok"}
    assert [path.stat().st_mtime_ns for path in outputs] == [old_ns, old_ns]
    assert [path.read_bytes() for path in outputs] == contents
    assert {item["output_action"] for item in first["items"]} == {"written"}
    assert {item["output_action"] for item in second["items"]} == {"unchanged"}


def test_dry_run_says_an_edited_output_would_be_kept(local, workdir):
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    out = workdir / "out"
    (item,) = record_of(upsample(prompts, "--save-dir", out, "--json"))["items"]
    Path(item["output"]).write_text("{}\n")
    result = upsample(prompts, "--save-dir", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "office_handover.json (keep: edited)" in " ".join(result.stdout.split())
    plan = record_of(upsample(prompts, "--save-dir", out, "--dry-run", "--overwrite", "--json"))
    assert plan["items"][0]["output_action"] == "overwrite"


# -- c. failed items are retried by the same command; j. one stderr line per failed item -----


def test_failed_item_is_retried_by_the_same_command_and_succeeded_items_are_not(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    local(reject_prompt="robot")
    first = upsample(prompts, "--save-dir", workdir / "out", "--json")
    assert first.exit_code == 1, first.output
    assert by_name(record_of(first))["robot_lab_night"]["status"] == "failed"
    assert not (workdir / "out" / "robot_lab_night.json").exists()

    local()  # the engine now accepts it
    second = upsample(prompts, "--save-dir", workdir / "out", "--json")

    assert second.exit_code == 0, second.output
    record = record_of(second)
    assert record["job_id"] == record_of(first)["job_id"]
    assert {i["status"] for i in record["items"]} == {"ok"}
    assert (workdir / "out" / "robot_lab_night.json").is_file()
    # The office item succeeded in the first run and was not sent again; robot was retried.
    prompt = {p.stem: json.loads(p.read_text())["prompt"] for p in prompts.glob("*.json")}
    assert generated(local) == sorted(prompt.values())


def test_each_failed_item_gets_its_whole_error_on_one_stderr_line(local, workdir):
    prompts = seed_specs(workdir / "prompts")
    local(reject_prompt="robot")
    result = upsample(prompts, "--save-dir", workdir / "out")
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    (at,) = [n for n, line in enumerate(lines) if line.startswith("error: robot_lab_night: ")]
    assert lines[at].endswith("VLLMValidationError: prompt rejected (contains 'robot')")
    assert lines[at + 1].startswith("hint: the engine refused what the local count accepted")


def test_results_prefer_a_success_over_an_earlier_error_of_the_same_item():
    error = {"id": "a", "error": {"type": "X", "message": "first try"}}
    success = {"id": "a", "text": "ok", "error": None}
    later_error = {"id": "b", "error": {"type": "X", "message": "second try"}}
    lines = [error, success, {"id": "b", "error": {"type": "X", "message": "1"}}, later_error]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    results = parse_results(data)
    assert results["a"] == success
    assert results["b"] == later_error
