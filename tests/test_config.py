"""Config: precedence flag > env > file > user folder > default, and one clear error per mistake."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app
from cosmos_workflow.config import SCHEMA, load_config
from cosmos_workflow.errors import ConfigError

from .conftest import REPO


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_apply_without_any_file(workdir):
    config = load_config()
    assert config.upsampling.max_model_len == 4096
    assert config.upsampling.output_tokens == 300
    assert config.upsampling.safe_resolution == (320, 180)
    assert config.sources == {}


def test_repo_config_toml_sets_every_known_key_validly(workdir):
    config = load_config(REPO / "config.toml")
    from_file = {key for key, source in config.sources.items() if source.endswith("config.toml")}
    # The shipped file documents every key the tool knows.
    assert from_file == {f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys}


def test_precedence_flag_over_env_over_file_over_user_folder(workdir, isolated_user_state):
    user_file = isolated_user_state / "config.toml"
    write(user_file, "[upsampling]\nmax_model_len = 1000\noutput_tokens = 7\n")
    assert load_config().upsampling.max_model_len == 1000

    write(workdir / "config.toml", "[upsampling]\nmax_model_len = 2000\n")
    config = load_config()
    assert config.upsampling.max_model_len == 2000
    assert config.upsampling.output_tokens == 7  # still from the user folder
    assert config.sources["upsampling.output_tokens"].startswith(str(isolated_user_state))

    env = {"COSMOS_UPSAMPLING_MAX_MODEL_LEN": "3000"}
    assert load_config(environ=env).upsampling.max_model_len == 3000

    config = load_config(environ=env, overrides={"upsampling.max_model_len": 4000})
    assert config.upsampling.max_model_len == 4000
    assert config.sources["upsampling.max_model_len"] == "flag --max-model-len"


def test_explicit_config_file_replaces_cwd_file(workdir, tmp_path):
    write(workdir / "config.toml", "[remote]\nhost = 'from-cwd'\n")
    other = write(tmp_path / "other.toml", "[remote]\nhost = 'from-flag'\n")
    assert load_config(other).remote.host == "from-flag"


def test_unknown_key_names_file_key_and_known_keys(workdir):
    path = write(workdir / "config.toml", "[upsampling]\nmax_model_lem = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(path) in info.value.message
    assert "max_model_lem" in info.value.message
    assert "max_model_len" in info.value.hint
    assert info.value.code == "config_unknown_key"


def test_bad_safe_resolution_is_one_clear_error(workdir):
    write(workdir / "config.toml", '[upsampling]\nsafe_resolution = "320by180"\n')
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "safe_resolution" in info.value.message
    assert "'320by180'" in info.value.message
    assert 'like "320x180"' in info.value.message


def test_wrong_type_is_named(workdir):
    write(workdir / "config.toml", '[remote]\nport = "twenty-two"\n')
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config()


def test_bad_env_value_names_the_variable(workdir):
    with pytest.raises(ConfigError, match="COSMOS_UPSAMPLING_AUTO_RESIZE"):
        load_config(environ={"COSMOS_UPSAMPLING_AUTO_RESIZE": "maybe"})


def test_output_tokens_must_leave_room_in_the_context(workdir):
    with pytest.raises(ConfigError, match="output_tokens"):
        load_config(overrides={"upsampling.max_model_len": 300})


def test_relative_remote_dir_is_refused(workdir):
    write(workdir / "config.toml", '[paths]\nremote_dir = "~/cosmos"\n')
    with pytest.raises(ConfigError, match="absolute"):
        load_config()


def test_broken_toml_names_the_file(workdir):
    write(workdir / "config.toml", "[remote\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config()


def test_config_show_json_reports_value_and_source(workdir, monkeypatch):
    write(workdir / "config.toml", "[remote]\nhost = 'gpu-box'\n")
    monkeypatch.setenv("COSMOS_REMOTE_PORT", "2222")
    result = CliRunner().invoke(app, ["config", "show", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    rows = {f"{r['section']}.{r['key']}": r for r in json.loads(result.stdout)["data"]["keys"]}
    assert rows["remote.host"]["value"] == "gpu-box"
    assert rows["remote.host"]["source"].endswith("config.toml")
    assert rows["remote.port"] == {
        "section": "remote",
        "key": "port",
        "value": 2222,
        "source": "environment COSMOS_REMOTE_PORT",
    }
    assert rows["upsampling.max_model_len"]["source"] == "default"


def test_config_error_is_one_line_and_exit_2(workdir):
    write(workdir / "config.toml", "[nope]\nx = 1\n")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "unknown section [nope]" in lines[0]
    assert lines[1].startswith("hint: ")
    assert len(lines) == 2


def test_config_error_as_json_envelope(workdir):
    write(workdir / "config.toml", "[upsampling]\nframe_count = 0\n")
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "config_bad_value"
    assert "frame_count" in error["message"]


# -- the seed project's key names --------------------------------------------------------------


def test_seed_key_names_in_a_file_set_the_new_keys(workdir):
    path = write(
        workdir / "config.toml", "[upsampling]\nmax_tokens = 8192\nframes_to_extract = 3\n"
    )
    config = load_config()
    assert config.upsampling.max_model_len == 8192
    assert config.upsampling.frame_count == 3
    assert config.sources["upsampling.max_model_len"] == f"{path} (as max_tokens)"
    assert config.sources["upsampling.frame_count"] == f"{path} (as frames_to_extract)"
    # One name per meaning: the old names are not attributes of the loaded config.
    assert not hasattr(config.upsampling, "max_tokens")
    assert not hasattr(config.upsampling, "frames_to_extract")


def test_seed_key_names_in_the_environment_set_the_new_keys(workdir):
    env = {"COSMOS_UPSAMPLING_MAX_TOKENS": "8192", "COSMOS_UPSAMPLING_FRAMES_TO_EXTRACT": "1"}
    config = load_config(environ=env)
    assert config.upsampling.max_model_len == 8192
    assert config.upsampling.frame_count == 1
    assert config.sources["upsampling.max_model_len"] == "environment COSMOS_UPSAMPLING_MAX_TOKENS"


def test_seed_key_name_follows_the_usual_precedence(workdir, isolated_user_state):
    write(isolated_user_state / "config.toml", "[upsampling]\nmax_model_len = 1000\n")
    write(workdir / "config.toml", "[upsampling]\nmax_tokens = 2000\n")
    assert load_config().upsampling.max_model_len == 2000
    env = {"COSMOS_UPSAMPLING_MAX_MODEL_LEN": "3000"}
    assert load_config(environ=env).upsampling.max_model_len == 3000


def test_both_names_in_one_file_is_one_clear_error(workdir):
    path = write(workdir / "config.toml", "[upsampling]\nmax_tokens = 4096\nmax_model_len = 8192\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.message.startswith(str(path))
    assert "max_tokens" in info.value.message and "max_model_len" in info.value.message
    assert info.value.hint == "keep only max_model_len (max_tokens is its older name)"


def test_both_names_in_the_environment_is_one_clear_error(workdir):
    env = {"COSMOS_UPSAMPLING_FRAMES_TO_EXTRACT": "2", "COSMOS_UPSAMPLING_FRAME_COUNT": "3"}
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    assert "COSMOS_UPSAMPLING_FRAMES_TO_EXTRACT" in info.value.message
    assert "COSMOS_UPSAMPLING_FRAME_COUNT" in info.value.message
    assert "keep only COSMOS_UPSAMPLING_FRAME_COUNT" in info.value.hint


def test_bad_value_under_a_seed_name_names_the_key_as_written(workdir):
    write(workdir / "config.toml", "[upsampling]\nframes_to_extract = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "[upsampling] frames_to_extract = 0 is not valid" in info.value.message
    assert info.value.hint.startswith("frames_to_extract: the older name of frame_count")


def test_config_show_names_the_seed_key_a_value_came_from(workdir):
    path = write(workdir / "config.toml", "[upsampling]\nmax_tokens = 8192\n")
    result = CliRunner().invoke(app, ["config", "show", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    rows = {f"{r['section']}.{r['key']}": r for r in json.loads(result.stdout)["data"]["keys"]}
    assert rows["upsampling.max_model_len"] == {
        "section": "upsampling",
        "key": "max_model_len",
        "value": 8192,
        "source": f"{path} (as max_tokens)",
    }
    assert "upsampling.max_tokens" not in rows


# -- safe_resolution ---------------------------------------------------------------------------


def test_safe_resolution_is_parsed_once_into_width_and_height(workdir):
    write(workdir / "config.toml", '[upsampling]\nsafe_resolution = "640 X 360"\n')
    size = load_config().upsampling.safe_resolution
    assert (size.width, size.height) == (640, 360)
    width, height = size
    assert (width, height) == (640, 360)


def test_config_show_prints_safe_resolution_as_written_in_a_config(workdir):
    write(workdir / "config.toml", '[upsampling]\nsafe_resolution = "640×360"\n')
    result = CliRunner().invoke(app, ["config", "show", "--json"], catch_exceptions=False)
    rows = {f"{r['section']}.{r['key']}": r for r in json.loads(result.stdout)["data"]["keys"]}
    assert rows["upsampling.safe_resolution"]["value"] == "640x360"


def test_docker_gpus_shm_size_and_extra_args_are_checked_where_they_are_read(workdir):
    config = load_config(
        overrides={
            "docker.gpus": "none",
            "docker.shm_size": "host",
            "docker.extra_args": '-v "/data sets:/data:ro"',
        }
    )
    assert config.docker.gpus == "none" and config.docker.shm_size == "host"
    assert config.docker.extra_args == ("-v", "/data sets:/data:ro")
    assert load_config().docker.gpus == "all"  # a GPU host keeps --gpus all
    for key, bad in (
        ("docker.gpus", "all; rm -rf /"),
        ("docker.shm_size", "8 gigs"),
        ("docker.extra_args", '"unbalanced'),
    ):
        with pytest.raises(ConfigError):
            load_config(overrides={key: bad})
