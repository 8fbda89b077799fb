"""Hostile input that used to reach an internal error (exit 70), and hints that echo a value.

Each input here once raised something other than a `CosmosError` (RecursionError, ValueError,
UnicodeDecodeError, OSError) and came out as `error: internal error: …`. Now each is one clear
line (or that item's / that spec's error while the others go on), never exit 70, no traceback.
A hint that suggests a shell command quotes what it echoes: a POSIX shell parsing that command
gives back the exact path or user@host, and runs nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cosmos_workflow.cli import app
from cosmos_workflow.config import SCHEMA
from cosmos_workflow.errors import SpecError
from cosmos_workflow.specs import load_spec, load_specs

from .clips import EXAMPLE1
from .upsample_env import sshd_remote, write_config

runner = CliRunner()

# 100 000 nested arrays: json.loads raises RecursionError long before the end.
DEEP = "[" * 100_000 + "]" * 100_000


def cosmos(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_error(result) -> tuple[str, str | None]:
    """The one `error:` line (and its `hint:`) of a whole-command failure, last on stderr."""
    lines = result.stderr.splitlines()
    errors = [n for n, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    n = errors[0]
    hint = lines[n + 1][len("hint: ") :] if n + 1 < len(lines) else None
    assert lines[n + 2 :] == [], result.stderr
    return lines[n][len("error: ") :], hint


def assert_no_internal_error(result) -> None:
    assert result.exit_code != 70, result.stderr
    assert "internal error" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)


def good_spec(folder: Path, name: str = "good") -> Path:
    video = folder / "clip.mp4"
    if not video.exists():
        shutil.copyfile(EXAMPLE1, video)
    path = folder / f"{name}.json"
    path.write_text(
        json.dumps({"name": name, "prompt": "A robot arm.", "input_video_path": "clip.mp4"})
    )
    return path


# --- specs: one spec's error, the others go on -----------------------------------------------


def test_deeply_nested_spec_is_that_specs_error_and_the_others_still_check(workdir):
    folder = workdir / "prompts"
    folder.mkdir()
    good_spec(folder)
    deep = folder / "deep.json"
    deep.write_text(DEEP)
    deep_value = folder / "deep_value.json"
    deep_value.write_text('{"prompt": "a", "extra": ' + DEEP + "}")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    result = cosmos("check", folder, "--json")
    assert_no_internal_error(result)
    assert result.exit_code == 2  # a spec could not be read
    data = json.loads(result.stdout)["data"]
    assert [(i["input"], i["verdict"]) for i in data["items"]] == [
        (str(folder / "good.json"), "fits")
    ]
    message = "nested more than 64 levels deep; a prompt spec is a flat object"
    hint = 'a spec file holds one object: {"prompt": ..., "input_video_path": ...}'
    assert data["load_errors"] == [
        {"code": "bad_json", "message": f"{deep}: {message}", "hint": hint},
        {"code": "bad_json", "message": f"{deep_value}: {message}", "hint": hint},
    ]

    human = cosmos("check", folder)
    assert_no_internal_error(human)
    assert f"error: {deep}: {message}" in human.stderr.splitlines()
    assert "good" in human.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_deeply_nested_spec_through_the_library(tmp_path):
    good = good_spec(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    specs, errors = load_specs([tmp_path])
    assert [s.path for s in specs] == [good]
    assert [(e.code, e.message) for e in errors] == [
        ("bad_json", f"{deep}: nested more than 64 levels deep; a prompt spec is a flat object")
    ]
    with pytest.raises(SpecError) as caught:
        load_spec(deep)
    assert caught.value.hint


def test_spec_nested_65_levels_is_refused_before_anything_recurses_into_it(tmp_path):
    # json.loads reads this fine; writing it back with json.dumps(indent=…) recurses in Python.
    nested = {"prompt": "a", "input_video_path": "clip.mp4", "extra": [[[]]]}
    inner: list = []
    nested["extra"] = inner
    for _ in range(63):  # the spec object is level 1, "extra" level 2, … → 65 levels
        inner.append([])
        inner = inner[0]
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(nested))
    with pytest.raises(SpecError, match="nested more than 64 levels deep"):
        load_spec(path)
    shallow = dict(nested, extra=[[[1]]])
    path.write_text(json.dumps(shallow))
    assert load_spec(path).raw["extra"] == [[[1]]]


def test_integer_over_4300_digits_is_that_specs_error(workdir):
    folder = workdir / "prompts"
    folder.mkdir()
    good_spec(folder)
    big = folder / "big.json"
    big.write_text('{"prompt": "a", "seed": 1' + "0" * 5000 + "}")

    result = cosmos("check", folder, "--json")
    assert_no_internal_error(result)
    assert result.exit_code == 2
    data = json.loads(result.stdout)["data"]
    assert [i["verdict"] for i in data["items"]] == ["fits"]
    assert data["load_errors"] == [
        {
            "code": "bad_json",
            "message": f"{big}: holds a number JSON cannot hold sensibly (Exceeds the limit "
            "(4300 digits) for integer string conversion)",
            "hint": "a spec holds text and paths; remove the oversized number",
        }
    ]


@pytest.mark.parametrize(
    "video, message",
    [
        ("x" * 300 + ".mp4", "cannot be looked up: File name too long"),
        ("videos/" + "y" * 5000, "cannot be looked up: File name too long"),
        ("clip\x00.mp4", "holds a NUL character, which no file name can"),
    ],
    ids=["name_over_255_bytes", "path_over_path_max", "nul"],
)
def test_video_path_no_file_can_have_is_that_items_error(workdir, video, message):
    folder = workdir / "prompts"
    folder.mkdir()
    good_spec(folder)
    bad = folder / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "prompt": "a", "input_video_path": video}))

    result = cosmos("check", folder, "--json")
    assert_no_internal_error(result)
    items = {i["input"]: i for i in json.loads(result.stdout)["data"]["items"]}
    assert items[str(folder / "good.json")]["verdict"] == "fits"
    error = items[str(bad)]["error"]
    assert error["message"] == f"{bad}: input_video_path {video!r} {message}"
    assert error["hint"] == "fix input_video_path to the path of a video file"
    assert error["code"] == "bad_path"


@pytest.mark.parametrize("command", ["check", "upsample"])
def test_input_whose_name_is_over_255_bytes_is_one_clear_line(workdir, command):
    name = "z" * 300
    args = [command, name] + (["--dry-run"] if command == "upsample" else [])
    result = cosmos(*args)
    assert_no_internal_error(result)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    at = lines.index(f"error: {name}: cannot be looked up (File name too long)")
    assert lines[at + 1] == "hint: give a spec .json, a folder of specs or a video"


# --- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "9" * 5000])
def test_resolution_that_int_refuses_is_not_understood(workdir, value):
    spec = good_spec(workdir)
    result = cosmos("check", spec, "--resolution", value)
    assert_no_internal_error(result)
    assert result.exit_code == 2
    assert one_error(result) == (
        f"resolution {value!r} is not understood",
        'use "source", "auto", a height like "480", or a size like "320x180"',
    )


@pytest.mark.parametrize(
    "out, reason",
    [
        (Path("/dev/null"), "it is a file, not a folder"),
        (Path("/dev/null/frames"), "Not a directory"),
        (Path("o" * 300), "File name too long"),
    ],
    ids=["a_device", "below_a_file", "name_over_255_bytes"],
)
def test_prepare_out_folder_that_cannot_be_written_is_one_clear_line(workdir, out, reason):
    spec = good_spec(workdir)
    before = sorted(p.name for p in workdir.iterdir())
    result = cosmos("prepare", spec, "--out", out)
    assert_no_internal_error(result)
    assert result.exit_code == 2
    assert one_error(result) == (
        f"cannot write to --out {out}: {reason}",
        "choose a folder you can write to",
    )
    assert sorted(p.name for p in workdir.iterdir()) == before


# --- config: every key, hostile values --------------------------------------------------------

HOSTILE_TOML_VALUES = [
    "0",
    "-1",
    "9" * 30,  # TOML integers are 64-bit: tomllib refuses this one
    "1e999",  # inf
    "nan",
    "-inf",
    '""',
    '"\\u0000"',
    '"caf\\u00e9 \\u202e"',
    '"' + "9" * 5000 + '"',
    '"-oProxyCommand=touch /tmp/x"',
    "true",
    "[1, 2]",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
]


@pytest.mark.parametrize("dotted", [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys])
def test_every_config_key_takes_hostile_values_without_an_internal_error(workdir, dotted):
    section, key = dotted.split(".")
    seen_codes = set()
    for value in HOSTILE_TOML_VALUES:
        (workdir / "config.toml").write_text(f"[{section}]\n{key} = {value}\n")
        result = cosmos("config", "show", "--json")
        assert_no_internal_error(result)
        assert result.exit_code in (0, 2), (value, result.stdout)
        if result.exit_code == 2:
            error = json.loads(result.stdout)["error"]
            assert error["code"] in ("config", "config_bad_value"), (value, error)
            assert "\n" not in error["message"]
            seen_codes.add(error["code"])
    assert "config_bad_value" in seen_codes  # every key refuses something


@pytest.fixture
def deadline():
    """A read that blocks (a named pipe) fails the test after 20 s instead of hanging it."""

    def expired(signum, frame):
        raise TimeoutError("still running after 20 s: something blocks")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def config_file_case(workdir: Path, kind: str) -> Path:
    path = workdir / f"{kind}.toml"
    if kind == "not_utf8":
        path.write_bytes(b"[remote]\nhost = '\xa5\xff'\n")
    elif kind == "utf16":
        path.write_bytes("[remote]\nhost = 'gpu'\n".encode("utf-16"))
    elif kind == "nested_arrays":
        path.write_text("[worker]\nenv = " + "[" * 100_000 + "]" * 100_000 + "\n")
    elif kind == "nested_tables":
        path.write_text("[remote]\nhost = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n")
    elif kind == "named_pipe":
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    elif kind == "too_large":
        with open(path, "wb") as f:
            f.truncate(2 * 1024 * 1024)  # sparse
    return path


@pytest.mark.parametrize(
    "kind, error, hint",
    [
        (
            "not_utf8",
            "{path} is not valid TOML: not UTF-8 text (byte 17)",
            "save the file as UTF-8 (TOML files must be UTF-8)",
        ),
        (
            "utf16",
            "{path} is not valid TOML: not UTF-8 text (byte 0)",
            "save the file as UTF-8 (TOML files must be UTF-8)",
        ),
        (
            "nested_arrays",
            "{path} is not valid TOML for a config: nested too deeply",
            "fix the syntax (see config.toml in the repo)",
        ),
        (
            "nested_tables",
            "{path} is not valid TOML for a config: nested too deeply",
            "fix the syntax (see config.toml in the repo)",
        ),
        (
            "named_pipe",
            "config file {path} is a named pipe, not a file",
            "point --config at a config.toml (see config.toml in the repo)",
        ),
        (
            "too_large",
            "config file {path} is over 1048576 bytes: too large for a config",
            "point --config at a config.toml (see config.toml in the repo)",
        ),
    ],
)
def test_config_file_that_is_no_config_is_one_clear_line(workdir, deadline, kind, error, hint):
    path = config_file_case(workdir, kind)
    both = [["--config", path, "config", "show"], ["config", "show"]]
    # ./config.toml is read only when it is a regular file: a pipe there is passed over.
    for args in both[:1] if kind == "named_pipe" else both:
        if args[0] == "config":  # the same file as ./config.toml
            (workdir / "config.toml").unlink(missing_ok=True)
            (workdir / "config.toml").symlink_to(path)
            error = error.replace("{path}", "{cwd_path}")
        result = cosmos(*args)
        assert_no_internal_error(result)
        assert result.exit_code == 2
        shown = error.format(path=path, cwd_path=workdir / "config.toml")
        assert one_error(result) == (shown, hint)


def test_dev_null_is_still_an_empty_config(workdir):
    result = cosmos("--config", "/dev/null", "config", "show", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["data"]["files"] == ["/dev/null"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("COSMOS_UPSAMPLING_MAX_TOKENS", "9" * 5000),
        ("COSMOS_UPSAMPLING_SAFE_RESOLUTION", "9" * 5000 + "x180"),
        ("COSMOS_REMOTE_PORT", "nan"),
        ("COSMOS_REMOTE_CONNECT_TIMEOUT_S", "1e400"),
        ("COSMOS_REMOTE_USER", "-l root"),
        ("COSMOS_WORKER_ENV", "=x"),
    ],
)
def test_hostile_environment_values_are_one_config_error(workdir, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    result = cosmos("config", "show")
    assert_no_internal_error(result)
    assert result.exit_code == 2
    error, hint = one_error(result)
    assert error.startswith(f"environment {name}: [")
    assert " is not valid; expected " in error
    assert hint


# --- SSH keys through `cosmos remote check` --------------------------------------------------


def remote_check_with(workdir, sshd, **remote):
    write_config(
        workdir / "config.toml",
        {"remote": sshd_remote(sshd, **remote), "paths": {"remote_dir": str(workdir / "host")}},
    )
    return cosmos("remote", "check")


def test_key_file_of_random_bytes_is_one_clear_line_naming_it(workdir, sshd):
    key = workdir / "id_random"
    key.write_bytes(os.urandom(4096))
    key.chmod(0o600)
    result = remote_check_with(workdir, sshd, ssh_key=str(key))
    assert_no_internal_error(result)
    assert result.exit_code == 4  # as for every other key error
    assert one_error(result) == (
        f"SSH key {key} is not a private key paramiko can read",
        "point [remote] ssh_key at your private key, in OpenSSH or PEM format",
    )


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 64, "-----BEGIN OPENSSH PRIVATE KEY-----\n".encode("utf-16")],
    ids=["empty", "nul_bytes", "utf16"],
)
def test_key_file_that_is_no_key_is_one_clear_line_naming_it(workdir, sshd, content):
    key = workdir / "id_bad"
    key.write_bytes(content)
    key.chmod(0o600)
    result = remote_check_with(workdir, sshd, ssh_key=str(key))
    assert_no_internal_error(result)
    assert result.exit_code == 4
    assert one_error(result)[0] == f"SSH key {key} is not a private key paramiko can read"


# --- hints quote what they echo ----------------------------------------------------------------


def hint_command(hint: str, cwd: Path) -> list[str]:
    """The argv a POSIX shell makes of the command in a hint (between backticks, or after
    "run: "): the shell itself parses it, with `printf` standing in for the command."""
    match = re.search(r"`([^`]+)`", hint) or re.search(r"run: (.+)$", hint)
    assert match, hint
    command = match.group(1)
    shown = subprocess.run(
        ["sh", "-c", 'printf "%s\\0" ' + command], cwd=cwd, capture_output=True, check=True
    ).stdout
    assert not (cwd / "canary").exists(), "the hint ran a command it only echoes"
    return shown.decode().split("\0")[:-1]


HOSTILE_DIR = "keys $(touch canary) 'q' ;"


def test_chmod_hint_quotes_the_key_path_and_running_it_touches_only_the_key(workdir, sshd):
    folder = workdir / HOSTILE_DIR
    folder.mkdir()
    key = folder / "id_ed25519"
    shutil.copyfile(sshd.key, key)
    key.chmod(0o644)
    result = remote_check_with(workdir, sshd, ssh_key=str(key))
    assert result.exit_code == 4
    error, hint = one_error(result)
    assert error == f"SSH key {key} has permissions 0644: others can read it, so it is refused"
    assert hint_command(hint, workdir) == ["chmod", "600", str(key)]

    # Pasted into a shell, the hint does what it says and nothing else.
    subprocess.run(["sh", "-c", hint[len("run: ") :]], cwd=workdir, check=True)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert not (workdir / "canary").exists()


def test_ssh_hint_quotes_user_and_host_it_echoes(workdir, sshd):
    user = "nobody;touch${IFS}canary"  # one word: a valid user name to refuse at login only
    result = remote_check_with(workdir, sshd, user=user)
    assert result.exit_code == 4
    error, hint = one_error(result)
    assert error.startswith(f"{user}@{sshd.host}:{sshd.port} refused our login")
    assert hint_command(hint, workdir) == ["ssh", "-p", str(sshd.port), f"{user}@{sshd.host}"]


def test_ssh_add_hint_quotes_the_locked_key_path(workdir, sshd, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    folder = workdir / HOSTILE_DIR
    folder.mkdir()
    key = folder / "id_locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(key)], check=True
    )
    result = remote_check_with(workdir, sshd, ssh_key=str(key))
    assert result.exit_code == 4
    error, hint = one_error(result)
    assert (
        error == f"the SSH key for {sshd.user}@{sshd.host}:{sshd.port} is protected by a passphrase"
    )
    assert hint_command(hint, workdir) == ["ssh-add", str(key)]


def test_ssh_keygen_hint_quotes_the_known_hosts_path(workdir, sshd, other_host_key):
    folder = workdir / HOSTILE_DIR
    folder.mkdir()
    known = folder / "known_hosts"
    known.write_text(f"{sshd.known_hosts_name} {other_host_key}\n")
    result = remote_check_with(workdir, sshd, known_hosts=known)
    assert result.exit_code == 4
    error, hint = one_error(result)
    assert error.startswith(f"HOST KEY OF {sshd.known_hosts_name} HAS CHANGED")
    assert hint_command(hint, workdir) == [
        "ssh-keygen",
        "-R",
        sshd.known_hosts_name,
        "-f",
        str(known),
    ]


@pytest.mark.parametrize("port", ["99999999999999999999", "abc", "0"])
def test_ssh_config_port_that_is_no_port_is_one_clear_line(workdir, sshd, monkeypatch, port):
    home = workdir / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host gpu\n  HostName 127.0.0.1\n  Port {port}\n")
    monkeypatch.setenv("HOME", str(home))  # ~/.ssh/config is where the alias is looked up
    remote = sshd_remote(sshd, host="gpu")
    del remote["port"]  # from the ssh config
    write_config(workdir / "config.toml", {"remote": remote})
    result = cosmos("remote", "check")
    assert_no_internal_error(result)
    assert result.exit_code == 4
    assert one_error(result) == (
        f"Port {port!r} for gpu in the ssh config is not a port number",
        "fix the Port line of your ssh config (1 to 65535), or set [remote] port",
    )
