"""`cosmos upsample` end to end over a real OpenSSH sshd, with the stand-in engine on the host.

The same flow against the real vLLM engine is in test_upsample_engine.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from typer.testing import CliRunner

from cosmos_workflow.cli import app

from .conftest import ASSETS, PROMPT_SPECS
from .upsample_env import (
    digest_tree,
    engine_events,
    record_of,
    seed_specs,
    sshd_remote,
    upsample,
    write_config,
)

runner = CliRunner()


def test_directory_of_specs_is_one_job_with_lineage(setup, workdir, host):
    prompts = seed_specs(workdir / "prompts")
    before = digest_tree(prompts)
    result = upsample(prompts, "--save-dir", workdir / "out", "--json")
    assert result.exit_code == 0, result.output
    record = record_of(result)
    assert record["counts"] == {"total": 2, "ok": 2, "failed": 0, "skipped": 0}

    # One model load, all items in one chat call.
    loads = engine_events(setup.engine_log, "load")
    generated = engine_events(setup.engine_log)
    assert len(loads) == 1
    assert sorted(e["prompt"] for e in generated) == sorted(
        json.loads(p.read_text())["prompt"] for p in prompts.glob("*.json")
    )
    assert {e["call"] for e in generated} == {1}

    for item in record["items"]:
        output = json.loads(Path(item["output"]).read_text())
        original = json.loads((prompts / f"{item['name']}.json").read_text())
        assert output["is_upsampled"] is True
        assert output["parent_prompt_text"] == original["prompt"]
        assert output["prompt"] == item["upsampled_prompt"] != original["prompt"]
        assert output["id"] != original["id"] and output["id"].startswith("ps_")
    robot = next(i for i in record["items"] if i["name"] == "robot_lab_night")
    # 1280×704 does not fit 4096 with 300 output tokens: auto_resize chose the largest that does.
    assert (robot["frame_width"], robot["frame_height"]) == (928, 510)

    run_json = json.loads((workdir / "out" / "run.json").read_text())
    assert run_json["job_id"] == record["job_id"]
    assert (workdir / "out" / "runs" / f"{record['job_id']}.json").is_file()
    # Constant, small number of SSH operations for the batch.
    assert record["ops"]["exec"] + record["ops"]["sftp"] <= 10
    assert digest_tree(prompts) == before  # inputs untouched
    layout = host / "cosmos_workflow"
    assert (layout / "worker.py").is_file()
    assert len(list((layout / "cache").glob("*.png"))) == 4
    job = layout / "jobs" / record["job_id"]
    assert {p.name for p in job.iterdir()} >= {"batch.json", "results.jsonl", "status.json"}


def test_rerun_finds_the_same_job_and_redoes_nothing(setup, workdir):
    prompts = seed_specs(workdir / "prompts")
    first = record_of(upsample(prompts, "--save-dir", workdir / "out", "--json"))
    second_result = upsample(prompts, "--save-dir", workdir / "out", "--json")
    assert second_result.exit_code == 0
    second = record_of(second_result)
    assert second["job_id"] == first["job_id"]
    assert len(engine_events(setup.engine_log)) == 2  # each item reached the engine once
    assert second["bytes_sent"] == 0  # frames were already in the host's cache


def test_clip_that_does_not_fit_fails_alone_before_any_network(setup, workdir):
    prompts = seed_specs(workdir / "prompts")
    result = upsample(prompts, "--max-resolution", "source", "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 1
    items = {i["name"]: i for i in record_of(result)["items"]}
    robot, office = items["robot_lab_night"], items["office_handover"]
    assert office["status"] == "ok"
    assert robot["status"] == "failed"
    assert robot["error"]["code"] == "too_long"
    assert (
        "4698 prompt + 300 output = 4998 tokens, over max_model_len 4096"
        in (robot["error"]["message"])
    )
    assert "928×510" in robot["error"]["hint"]
    assert robot["output"] is None
    assert [e["prompt"] for e in engine_events(setup.engine_log)] == [office["original_prompt"]]
    assert sorted(p.name for p in (workdir / "o").glob("*.json")) == [
        ".cosmos-outputs.json",  # the ledger of what cosmos wrote there
        "office_handover.json",
        "run.json",
    ]


def test_preprocess_videos_uses_safe_resolution_box(setup, workdir):
    prompts = seed_specs(workdir / "prompts")
    result = upsample(prompts, "--preprocess-videos", "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 0, result.output
    sizes = {i["name"]: (i["frame_width"], i["frame_height"]) for i in record_of(result)["items"]}
    # 320x180 box, aspect kept: 4:3 → 240×180; 1280×704 → 320×176.
    assert sizes == {"office_handover": (240, 180), "robot_lab_night": (320, 176)}


def test_dry_run_sends_nothing(setup, workdir, host):
    prompts = seed_specs(workdir / "prompts")
    result = upsample(prompts, "--dry-run", "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 0, result.output
    record = record_of(result)
    assert record["dry_run"] is True
    assert record["bytes_to_send"] > 0
    assert "worker.py run" in record["remote_command"]
    assert record["job_id"] in record["remote_command"]
    assert not (host / "cosmos_workflow").exists()
    assert not (workdir / "o").exists()
    assert engine_events(setup.engine_log, "load") == []
    # Whether a warm server takes the items is the host's to say, at run time.
    assert record["mode"] == "auto"
    human = upsample(prompts, "--dry-run", "--save-dir", workdir / "o")
    assert "(or the warm server, when one is ready on the host" in human.stderr
    assert record_of(upsample(prompts, "--dry-run", "--no-server", "--json"))["mode"] == "job"


def test_a_run_asks_for_a_server_and_runs_the_job_on_one_ssh_connection(setup, workdir, sshd):
    prompts = seed_specs(workdir / "prompts")
    logins = sshd.log.count("Accepted publickey")
    result = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 0, result.output
    record = record_of(result)
    assert record["mode"] == "job"
    assert "mode: job (no server runs on the host)" in result.stderr
    # The server probe, the upload, the job and its results: one SSH handshake.
    assert sshd.log.count("Accepted publickey") - logins == 1
    assert record["ops"]["connect"] == 1


def test_prompt_with_shell_metacharacters_stays_text(setup, workdir, tmp_path):
    canary = tmp_path / f"canary-{uuid.uuid4().hex}"
    hostile = f"$(touch {canary}) `touch {canary}`; touch {canary} \"q\" 'q'\nline2 ünï 東京 🚧"
    prompts = seed_specs(workdir / "prompts", names=("office_handover",), office_handover=hostile)
    result = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 0, result.output
    (item,) = record_of(result)["items"]
    output = json.loads(Path(item["output"]).read_text(encoding="utf-8"))
    assert output["parent_prompt_text"] == hostile
    assert [e["prompt"] for e in engine_events(setup.engine_log)] == [hostile]
    assert not canary.exists()


def test_already_upsampled_specs_are_skipped_unless_forced(setup, workdir):
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    spec_path = prompts / "office_handover.json"
    spec = json.loads(spec_path.read_text())
    spec["is_upsampled"] = True
    spec_path.write_text(json.dumps(spec))
    skipped = record_of(upsample(prompts, "--save-dir", workdir / "o", "--json"))
    assert skipped["counts"]["skipped"] == 1
    assert engine_events(setup.engine_log, "load") == []
    forced = upsample(prompts, "--save-dir", workdir / "o", "--force", "--json")
    assert forced.exit_code == 0
    assert record_of(forced)["counts"]["ok"] == 1


def test_nvidia_spec_output_only_replaces_the_prompt(setup, workdir):
    spec = ASSETS / "inference_cosmos_transfer1_single_control_edge.json"
    result = upsample(spec, "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 0, result.output
    (item,) = record_of(result)["items"]
    original = json.loads(spec.read_text())
    output = json.loads(Path(item["output"]).read_text())
    assert list(output) == list(original)
    assert {k: v for k, v in output.items() if k != "prompt"} == {
        k: v for k, v in original.items() if k != "prompt"
    }
    assert output["prompt"] == item["upsampled_prompt"]


def test_unknown_host_key_is_refused_and_nothing_is_written(setup, workdir, sshd, tmp_path):
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    setup(remote=sshd_remote(sshd, known_hosts=empty))
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    result = upsample(prompts, "--save-dir", workdir / "o")
    assert result.exit_code == 4
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "host key of" in errors[0]
    assert "cosmos remote trust" in result.stderr.splitlines()[-1]
    assert not list((workdir / "o").glob("*.json"))
    assert empty.read_text() == ""


def test_worker_that_cannot_start_is_one_clear_error(setup, workdir):
    setup(fail_load="CUDA out of memory")
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    result = upsample(prompts, "--save-dir", workdir / "o")
    assert result.exit_code == 5
    assert "worker exited with code 3" in result.stderr
    assert "CUDA out of memory" in result.stderr


def test_broken_spec_in_folder_does_not_sink_the_batch(setup, workdir):
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    (prompts / "broken.json").write_text("{not json")
    result = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 1
    record = record_of(result)
    assert record["counts"]["ok"] == 1
    assert "broken.json" in record["load_errors"][0]["message"]


def test_local_transport_runs_the_same_flow(setup, workdir, host, tmp_path):
    setup(remote={"transport": "local"})
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    result = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 0, result.output
    record = record_of(result)
    assert record["transport"] == "local" and record["host"] == "local"
    assert Path(record["items"][0]["output"]).is_file()


def test_remote_check_reports_the_host(setup):
    result = runner.invoke(app, ["remote", "check", "--json"])
    report = json.loads(result.stdout)["data"]
    assert report["vllm"] == {"version": "0.0-standin", "error": None, "extension_error": None}
    assert report["model"]["ok"] is True
    assert all(size is not None for size in report["model"]["files"].values())
    # The host has everything but, maybe, a GPU (none on a CI machine): that is the only
    # problem it may report, and the exit code says ready exactly when nothing is missing.
    if report["gpus"]:
        assert report["problems"] == []
    else:
        (problem,) = report["problems"]
        assert problem.startswith("no GPU visible: ")
    assert report["ready"] is (not report["problems"])
    assert result.exit_code == (0 if report["ready"] else 1), result.output


def test_remote_trust_records_the_key(workdir, sshd, tmp_path):
    known = tmp_path / "kh"
    known.write_text("")
    write_config(workdir / "config.toml", {"remote": sshd_remote(sshd, known_hosts=known)})
    result = runner.invoke(app, ["remote", "trust", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["data"]
    assert data["fingerprint"] == sshd.host_key_fingerprint
    assert data["recorded"] is True
    assert sshd.known_hosts_name in known.read_text()


def test_spec_prompt_files_in_shared_media_are_read_in_place(setup, workdir):
    """The seed specs work straight from ../shared/media (their relative video paths)."""
    result = upsample(PROMPT_SPECS / "office_handover.json", "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 0, result.output
    (item,) = record_of(result)["items"]
    output = json.loads(Path(item["output"]).read_text())
    assert (
        Path(workdir / "o" / output["input_video_path"]).resolve()
        == (ASSETS / "example1_input_video.mp4").resolve()
    )


def test_worker_dying_mid_batch_keeps_finished_items_and_rerun_resumes(setup, workdir):
    prompts = seed_specs(workdir / "prompts")
    # One item per engine call; the engine process dies when asked for its second item.
    setup(chunk_size=1, exit_after=1)
    first = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert first.exit_code == 1
    record = record_of(first)
    statuses = sorted(i["status"] for i in record["items"])
    assert statuses == ["failed", "ok"]
    failed = next(i for i in record["items"] if i["status"] == "failed")
    assert failed["error"]["code"] == "worker"
    assert "rerun the same command to resume" in failed["error"]["hint"]

    setup(chunk_size=1)  # a healthy engine: the rerun sends only the missing item
    second = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert second.exit_code == 0, second.output
    assert record_of(second)["job_id"] == record["job_id"]
    generated = [e["prompt"] for e in engine_events(setup.engine_log)]
    assert sorted(generated) == sorted({i["original_prompt"] for i in record["items"]})


def test_missing_host_fails_before_any_frame_is_extracted(setup, workdir, isolated_user_state):
    setup(remote={"transport": "ssh", "host": ""})
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))
    result = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "no_host"
    assert not (isolated_user_state / "cache" / "frames").exists()


def test_an_engine_that_fails_to_start_is_named_by_its_root_cause_in_the_first_line(setup, workdir):
    # vLLM V1: the engine process prints why it failed; its client raises "See root cause above".
    cause = (
        "ValueError: Free memory on device (3.2/79.1 GiB) on startup is less than desired GPU "
        "memory utilization (0.98, 77.52 GiB)."
    )
    setup(remote={"transport": "local"}, fail_core=cause)
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))

    result = upsample(prompts, "--save-dir", workdir / "out")

    assert result.exit_code == 5, result.output
    error = " ".join(result.stderr.split("error: ", 1)[1].split("hint: ")[0].split())
    assert error.startswith("the worker exited with code 3: engine failed to start: " + cause)
    assert "root cause above" not in error
    assert "gpu_memory_utilization" in result.stderr  # what to change
    assert not (workdir / "out").exists() or not any((workdir / "out").glob("*.json"))


def test_an_item_the_model_wrote_nothing_for_is_failed_not_written_and_retried(setup, workdir):
    setup(remote={"transport": "local"}, silent_prompt="robot")
    prompts = seed_specs(workdir / "prompts")

    first = upsample(prompts, "--save-dir", workdir / "o", "--json")

    assert first.exit_code == 1, first.output
    items = {i["name"]: i for i in record_of(first)["items"]}
    assert items["robot_lab_night"]["error"]["code"] == "empty_output"
    assert "retries it" in items["robot_lab_night"]["error"]["hint"]
    assert not (workdir / "o" / "robot_lab_night.json").exists()  # never an empty prompt
    assert items["office_handover"]["status"] == "ok"

    setup(remote={"transport": "local"})  # the model speaks this time
    second = upsample(prompts, "--save-dir", workdir / "o", "--json")
    assert second.exit_code == 0, second.output
    written = json.loads((workdir / "o" / "robot_lab_night.json").read_text())
    assert written["prompt"].startswith("standin upsampled: ")


def test_stall_timeout_reaches_the_worker(setup, workdir, host):
    setup(remote={"transport": "local"}, stall_timeout_s=5)
    prompts = seed_specs(workdir / "prompts", names=("office_handover",))

    result = upsample(prompts, "--save-dir", workdir / "o", "--json")

    assert result.exit_code == 0, result.output
    job_id = record_of(result)["job_id"]
    batch = json.loads((host / "cosmos_workflow" / "jobs" / job_id / "batch.json").read_text())
    assert batch["settings"]["stall_timeout_s"] == 5
