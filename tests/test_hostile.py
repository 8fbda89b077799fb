"""Hostile input for `cosmos upsample`, end to end through the CLI, a real sshd and the stand-in
engine: broken specs and videos, bad config, keys and hosts that must be refused, a host that
fails, and text that must travel as plain data.

Every failure case asserts the exact `error:` line and `hint:` line (or the failed item's exact
`{code, message, hint}` in the run record), the exit code, the same error as the `--json`
envelope, and that no input changed (sha256 of every file) and no output was written.
Exit codes: 0 ok, 1 some item failed, 2 bad input/config/spec, 3 media, 4 SSH / host key /
transfer, 5 worker failed, 70 internal error (always a bug).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from typer.testing import CliRunner

from cosmos_workflow import tokens
from cosmos_workflow.cli import app
from cosmos_workflow.config import SCHEMA
from cosmos_workflow.media.tools import install_hint
from cosmos_workflow.specs.outputs import LEDGER_NAME

from .clips import EXAMPLE1, make_clip, make_not_a_video, make_truncated
from .isolation import REAL_HOME
from .sshd import SSHServer, free_port, keygen
from .upsample_env import (
    CHECKPOINT,
    engine_events,
    stand_in_checkpoint,
    stand_in_worker,
    write_config,
)

runner = CliRunner()

# A prompt that fits locally (tekken packs a run of dashes into few tokens) but that the stand-in
# engine, which counts a token per 4 bytes, rejects as longer than max_model_len: an item the
# engine refuses after the preflight passed it.
ENGINE_REJECTS = "-" * 12000


class CaseTimedOut(BaseException):
    """Raised by the deadline alarm; a BaseException so no `except Exception` can swallow it."""


@pytest.fixture(autouse=True)
def deadline():
    """A case that blocks (a pipe read, a connect without timeout) fails after 60 s, not never."""

    def expired(signum, frame):
        raise CaseTimedOut("still running after 60 s: something blocks")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- the world a case runs in ------------------------------------------------------------------


@dataclass
class World:
    """Paths of one test: the user's folder (cwd), the GPU host's remote_dir, the sshd."""

    tmp: Path
    work: Path  # cwd: config.toml, prompts/, videos/
    save: Path  # --save-dir (absent unless a case makes it)
    host: Path  # [paths] remote_dir, reached through sshd
    sshd: SSHServer
    engine_log: Path
    canary: Path  # a file a hostile string tries to create on the host
    monkeypatch: pytest.MonkeyPatch
    # Set by the table-driven test for the cases that need them:
    silent_port: int = 0  # listening, never accepting, never answering
    full_port: int = 0  # its backlog is full: a connect never completes
    other_host_key: str = ""  # "<type> <base64>" of a key the sshd does not have
    read_only: Callable[[Path], None] | None = None  # makes a folder unwritable, even for root

    @property
    def config(self) -> Path:
        return self.work / "config.toml"

    @property
    def prompts(self) -> Path:
        return self.work / "prompts"

    def remote(self, **extra) -> dict:
        sshd = self.sshd
        values = {
            "transport": "ssh",
            "host": sshd.host,
            "port": sshd.port,
            "user": sshd.user,
            "ssh_key": str(sshd.key),
            "known_hosts": str(sshd.known_hosts),
            "connect_timeout_s": 5.0,
        }
        values.update(extra)
        return {k: v for k, v in values.items() if v is not None}

    def configure(
        self, remote=None, paths=None, checkpoint_dir=None, extra=None, env=None, **controls
    ):
        """config.toml: the sshd host, remote_dir = self.host, the stand-in engine.

        `env` adds to [worker] env; `controls` are the stand-in engine's FAKE_VLLM_* knobs.
        """
        worker = stand_in_worker(
            self.engine_log, checkpoint_dir or stand_in_checkpoint(self.host), **controls
        )
        worker["env"].update(env or {})
        sections = {
            "remote": remote if remote is not None else self.remote(),
            "paths": {"remote_dir": str(self.host), **(paths or {})},
            "worker": worker,
        }
        sections.update(extra or {})
        write_config(self.config, sections)

    def video(self, name: str = "clip.mp4") -> Path:
        """A copy of NVIDIA's 640×480 example clip under videos/."""
        path = self.work / "videos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            shutil.copyfile(EXAMPLE1, path)
        return path

    def spec(self, name: str = "scene", *, file_name: str | None = None, **fields) -> Path:
        """A seed spec under prompts/ (a copy of the example clip as its video by default)."""
        data = {
            "id": f"ps_{name}"[:40],
            "name": name,
            "prompt": "A robot arm hands a cup across a counter.",
            "input_video_path": None,
        }
        data.update(fields)
        if data["input_video_path"] is None:
            data["input_video_path"] = str(self.video())
        path = self.prompts / (file_name or f"{safe(name)}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    def raw_spec(self, file_name: str, content: str | bytes) -> Path:
        path = self.prompts / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path


def safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "spec"


@pytest.fixture
def world(workdir, sshd, tmp_path, monkeypatch) -> World:
    host = tmp_path / "host" / "cosmos-transfer1"
    host.mkdir(parents=True)
    w = World(
        tmp=tmp_path,
        work=workdir,
        save=workdir / "out",
        host=host,
        sshd=sshd,
        engine_log=tmp_path / "engine.jsonl",
        canary=tmp_path / f"canary-{uuid.uuid4().hex}",
        monkeypatch=monkeypatch,
    )
    w.configure()
    return w


# --- snapshots and assertions ----------------------------------------------------------------


def snapshot(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `root` (symlinks as their target text), folders in `skip` out."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        if path.is_symlink():
            found[str(path)] = "link:" + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def files_under(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def upsample(*args: object):
    return runner.invoke(app, ["upsample", *map(str, args)])


def error_and_hint(stderr: str) -> tuple[str | None, str | None]:
    """The one `error:` line and the `hint:` line right after it (None when absent)."""
    lines = stderr.splitlines()
    errors = [n for n, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) <= 1, f"more than one error line:\n{stderr}"
    if not errors:
        return None, None
    n = errors[0]
    hint = lines[n + 1] if n + 1 < len(lines) and lines[n + 1].startswith("hint:") else None
    # Nothing may follow: the error (and its hint) is the last thing said.
    assert lines[n + 1 + (hint is not None) :] == [], f"output after the error:\n{stderr}"
    error = lines[n][len("error: ") :]
    return error, None if hint is None else hint[len("hint: ") :]


def same(actual, expected) -> bool:
    if isinstance(expected, re.Pattern):
        return actual is not None and expected.fullmatch(actual) is not None
    return actual == expected


# --- the table of failures -------------------------------------------------------------------


@dataclass
class Expect:
    """What a hostile case must produce.

    Whole-command failures give `code`, `error`, `hint` (exact text, or a compiled pattern that
    must match all of it). Item failures give `items`: each failed item's exact error, by
    item name; the command then exits 1 with a run record. `saved` lists what the save folder
    holds afterwards (`runs/JOB.json` stands for the run record of the job).
    """

    exit_code: int
    code: str | None = None
    error: str | re.Pattern | None = None
    hint: str | re.Pattern | None = None
    items: dict[str, dict] = field(default_factory=dict)  # name -> exact error of a failed item
    ok_items: tuple[str, ...] = ()  # items that must still succeed
    saved: frozenset[str] = frozenset()
    network: bool = False  # True: the failure happens on or after contact with the host


CASES: dict[str, Callable[[World], tuple[list, Expect]]] = {}


def case(name: str):
    def register(build):
        CASES[name] = build
        return build

    return register


def item_error(code: str, message: str, hint: str | None) -> dict:
    return {"code": code, "message": message, "hint": hint}


# Specs ----------------------------------------------------------------------------------------


@case("malformed_json")
def _(w: World):
    spec = w.raw_spec("broken.json", '{"name": "x", "prompt": "a",\n "input_video_path": }')
    return [spec], Expect(
        2,
        "bad_json",
        f"{spec}: not valid JSON (line 2 column 22: Expecting value)",
        "fix the JSON syntax (a missing comma or quote is the usual cause)",
    )


@case("prompt_of_wrong_type")
def _(w: World):
    spec = w.raw_spec("typed.json", json.dumps({"name": "x", "prompt": 42}))
    return [spec], Expect(
        2,
        "bad_spec",
        f'{spec}: "prompt" must be a string, not int',
        'write "prompt" as a JSON string, in double quotes',
    )


@case("is_upsampled_of_wrong_type")
def _(w: World):
    spec = w.spec("flagged", is_upsampled="no")
    return [spec], Expect(
        2,
        "bad_spec",
        f'{spec}: "is_upsampled" must be true or false',
        "write true or false, without quotes",
    )


@case("spec_is_a_list")
def _(w: World):
    spec = w.raw_spec("list.json", '[{"prompt": "a"}]')
    return [spec], Expect(
        2,
        "bad_spec",
        f"{spec}: a spec must be a JSON object, not list",
        'a spec file holds one object: {"prompt": ..., "input_video_path": ...}',
    )


@case("spec_not_utf8")
def _(w: World):
    spec = w.raw_spec("latin1.json", '{"prompt": "café"}'.encode("latin-1"))
    return [spec], Expect(
        2,
        "bad_json",
        f"{spec}: is not UTF-8 text (byte 15)",
        "save the file as UTF-8 (JSON files must be UTF-8)",
    )


@case("missing_prompt")
def _(w: World):
    spec = w.raw_spec("noprompt.json", json.dumps({"name": "x", "input_video_path": "v.mp4"}))
    return [spec], Expect(
        2,
        "bad_spec",
        f'{spec}: has no "prompt"',
        'add a "prompt" string (an empty one lets the upsampler describe the video)',
    )


@case("prompt_with_a_lone_surrogate_escape")
def _(w: World):
    spec = w.raw_spec("half_emoji.json", '{"name": "x", "prompt": "robot \\ud83d"}')
    return [spec], Expect(
        2,
        "bad_spec",
        f'{spec}: "prompt" holds an unpaired UTF-16 surrogate (\\ud8xx escape)',
        "an emoji written as \\u escapes needs both halves of its surrogate pair",
    )


@case("spec_too_large")
def _(w: World):
    spec = w.raw_spec("huge.json", b"")
    with open(spec, "wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)  # sparse: no 16 MB written
    return [spec], Expect(
        2,
        "bad_spec",
        f"{spec}: too large for a prompt spec ({16 * 1024 * 1024 + 1} bytes)",
        "a spec is a small JSON file; is this the right file?",
    )


@case("spec_is_a_named_pipe")
def _(w: World):
    w.prompts.mkdir()
    pipe = w.prompts / "scene.json"
    os.mkfifo(pipe)  # reading it would block forever
    return [w.prompts], Expect(
        2,
        "bad_spec",
        f"{pipe}: is not a regular file (a device, pipe or socket)",
        "give a spec .json file",
    )


@case("nvidia_spec_with_unknown_object")
def _(w: World):
    spec = w.raw_spec("nv.json", json.dumps({"prompt": "p", "blur": {"control_weight": 1}}))
    return [spec], Expect(
        2,
        "bad_spec",
        f'{spec}: unknown key "blur" holds an object; NVIDIA\'s transfer.py rejects it',
        "hint keys are vis, edge, depth, seg, keypoint, upscale, hdmap, lidar; rename or "
        "remove 'blur'",
    )


@case("empty_directory")
def _(w: World):
    w.prompts.mkdir()
    return [w.prompts], Expect(
        2,
        "no_specs",
        f"{w.prompts}: no *.json prompt specs in this folder (subfolders not searched)",
        "put spec .json files there, give another folder, or use --recursive",
    )


@case("spec_file_missing")
def _(w: World):
    spec = w.prompts / "absent.json"
    return [spec], Expect(
        2,
        "spec_not_found",
        f"{spec}: no such file",
        "check the path; give a spec .json, a folder of specs or a video",
    )


@case("two_specs_write_the_same_output_name")
def _(w: World):
    first = w.spec("Scene", file_name="a.json")
    second = w.spec("scene", file_name="b.json")
    return [first, second], Expect(
        2,
        "name_collision",
        f"{second} and {first} would both be written as scene.json",
        "give the specs distinct names, or upsample them into separate folders",
    )


@case("same_spec_given_twice")
def _(w: World):
    spec = w.spec("scene")
    return [spec, w.prompts], Expect(
        2,
        "duplicate_input",
        f"{spec} is given twice (on its own, or also through its folder)",
        "give each spec once",
    )


@case("spec_is_a_link_to_dev_zero")
def _(w: World):
    w.prompts.mkdir()
    spec = w.prompts / "scene.json"
    spec.symlink_to("/dev/zero")  # endless: reading it whole would never finish
    return [spec], Expect(
        2,
        "bad_spec",
        f"{spec}: is not a regular file (a device, pipe or socket)",
        "give a spec .json file",
    )


@case("names_that_collide_once_made_safe")
def _(w: World):
    first = w.spec("../scene", file_name="a.json")
    second = w.spec("scene/", file_name="b.json")
    return [first, second], Expect(
        2,
        "name_collision",
        f"{second} and {first} would both be written as scene.json",
        "give the specs distinct names, or upsample them into separate folders",
    )


@case("save_dir_is_the_input_folder")
def _(w: World):
    spec = w.spec("scene")
    return [spec, "--save-dir", w.prompts], Expect(
        2,
        "would_overwrite_input",
        f"writing scene.json into {w.prompts} would replace the input spec {spec}",
        "choose another --save-dir: input specs are never modified",
    )


@case("max_resolution_of_5000_digits")
def _(w: World):
    spec = w.spec("scene")
    height = "9" * 5000  # over int()'s 4300-digit limit: was a ValueError, exit 70
    return [spec, "--max-resolution", height], Expect(
        2,
        "bad_resolution",
        f"resolution {height!r} is not understood",
        'use "source", "auto", a height like "480", or a size like "320x180"',
    )


@case("save_dir_with_a_name_over_255_bytes")
def _(w: World):
    save = w.work / ("x" * 300)
    return [w.spec("scene"), "--save-dir", save], Expect(
        2,
        "save_dir_not_writable",
        f"cannot write to --save-dir {save}: File name too long",
        "choose a folder you can write to",
    )


@case("save_dir_below_a_file")
def _(w: World):
    notes = w.work / "notes.txt"
    notes.write_text("notes\n")
    return [w.spec("scene"), "--save-dir", notes / "out"], Expect(
        2,
        "save_dir_not_writable",
        f"cannot write to --save-dir {notes / 'out'}: Not a directory",
        "choose a folder you can write to",
    )


@case("bad_max_resolution")
def _(w: World):
    spec = w.spec("scene")
    return [spec, "--max-resolution", "big"], Expect(
        2,
        "bad_resolution",
        "resolution 'big' is not understood",
        'use "source", "auto", a height like "480", or a size like "320x180"',
    )


# Videos (per item: the batch goes on, the command exits 1) -----------------------------------


@case("video_missing")
def _(w: World):
    video = w.work / "videos" / "gone.mp4"
    spec = w.spec("scene", input_video_path=str(video))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "video_not_found",
                f"{spec}: input_video_path '{video}' not found; looked in: {video}",
                "seed specs name paths relative to the spec file; fix the path or put the file "
                "in one of those places",
            )
        },
    )


@case("video_is_a_folder")
def _(w: World):
    folder = w.work / "videos"
    folder.mkdir()
    spec = w.spec("scene", input_video_path=str(folder))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "video_not_a_file",
                f"{spec}: input_video_path '{folder}' is a folder, not a video file",
                "point input_video_path at the video file itself",
            )
        },
    )


@case("video_is_a_named_pipe")
def _(w: World):
    pipe = w.work / "clip.mp4"
    os.mkfifo(pipe)  # opening it for reading would block forever
    spec = w.spec("scene", input_video_path=str(pipe))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "video_not_a_file",
                f"{spec}: input_video_path '{pipe}' is not a regular file (a device, pipe or "
                "socket)",
                "point input_video_path at the video file itself",
            )
        },
    )


@case("video_is_a_text_file")
def _(w: World):
    notes = make_not_a_video(w.work / "notes.mp4")
    spec = w.spec("scene", input_video_path=str(notes))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "media_not_video",
                f"{notes} is not a video file ffmpeg can read",
                "pass a video (MP4, MOV, MKV, WebM, …)",
            )
        },
    )


@case("video_is_empty")
def _(w: World):
    empty = w.work / "empty.mp4"
    empty.write_bytes(b"")
    spec = w.spec("scene", input_video_path=str(empty))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "media_corrupt",
                f"{empty} is empty (0 bytes)",
                "the copy or recording was probably interrupted; copy the video again",
            )
        },
    )


@case("video_has_one_frame")
def _(w: World):
    clip = make_clip(w.work / "one.mp4", 64, 48, 1)
    spec = w.spec("scene", input_video_path=str(clip))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "media_too_few_frames",
                f"{clip} has only 1 frame(s); 2 are needed",
                "use a longer clip, or ask for fewer frames (--num-frames)",
            )
        },
    )


@case("video_truncated_without_index")
def _(w: World):
    cut = make_truncated(EXAMPLE1, w.work / "cut.mp4", keep=0.5)
    spec = w.spec("scene", input_video_path=str(cut))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "media_corrupt",
                f"{cut} is an MP4/MOV without its index (moov atom): truncated or an unfinished "
                "recording",
                "copy the file again, or re-export it from the recorder or editor",
            )
        },
    )


@case("video_truncated_before_its_first_frames")
def _(w: World):
    # The index sits in front and survives; the data of the very first frames does not.
    cut = make_truncated(EXAMPLE1, w.work / "cut.mp4", keep=0.02, faststart=True)
    spec = w.spec("scene", input_video_path=str(cut))
    return [spec], Expect(
        1,
        items={
            "scene": item_error(
                "media_corrupt",
                re.compile(
                    re.escape(
                        f"{cut}: decoded only 0 of the first 2 frames; the file is "
                        "truncated or damaged ("
                    )
                    + r"[^\n@]+\)"
                ),
                "copy the video again, or re-export it",
            )
        },
    )


@case("windows_path_in_a_real_seed_spec")
def _(w: World):
    source = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "prompt-specs"
    spec = source / "windows_path_missing_video.json"
    return [spec], Expect(
        1,
        items={
            "destroyed_city_dusk": item_error(
                "windows_path",
                f"{spec}: input_video_path 'F:/Art/city_scene_20250830_203504/color.mp4' is a "
                "Windows path, which does not exist on this machine",
                "fix the spec to point at the file on this machine (relative to the spec file), "
                "or run cosmos on the Windows machine that has it",
            )
        },
    )


@case("prompt_of_100_kb_fits_at_no_size")
def _(w: World):
    prompt = "x " * 51_200
    spec = w.spec("long", prompt=prompt)
    count = tokens.count_prompt_tokens(640, 480, 2, prompt)
    return [spec], Expect(
        1,
        items={
            "long": item_error(
                "too_long",
                f"640×480 × 2 frames needs {count.prompt_tokens} prompt + 300 output = "
                f"{count.prompt_tokens + 300} tokens, over max_model_len 4096",
                "no frame size fits: shorten the prompt or raise [upsampling] max_model_len",
            )
        },
    )


@case("prompt_leaving_no_room_for_any_frame")
def _(w: World):
    # Text alone fits, but not with even the smallest frames plus 300 output tokens.
    prompt = "word " * 3790
    text = tokens.text_tokens(prompt)
    assert 4096 - 300 - 8 < text < 4096 - 300, text  # below the budget, above it with frames
    spec = w.spec("wordy", prompt=prompt)
    count = tokens.count_prompt_tokens(640, 480, 2, prompt)
    return [spec], Expect(
        1,
        items={
            "wordy": item_error(
                "too_long",
                f"640×480 × 2 frames needs {count.prompt_tokens} prompt + 300 output = "
                f"{count.prompt_tokens + 300} tokens, over max_model_len 4096",
                "no frame size fits: shorten the prompt or raise [upsampling] max_model_len",
            )
        },
    )


@case("one_bad_video_does_not_sink_the_batch")
def _(w: World):
    good = w.spec("good")
    notes = make_not_a_video(w.work / "notes.mp4")
    bad = w.spec("bad", input_video_path=str(notes))
    return [good, bad], Expect(
        1,
        items={
            "bad": item_error(
                "media_not_video",
                f"{notes} is not a video file ffmpeg can read",
                "pass a video (MP4, MOV, MKV, WebM, …)",
            )
        },
        ok_items=("good",),
        saved=frozenset({"good.json", "run.json", "runs/JOB.json"}),
        network=True,
    )


# Config ----------------------------------------------------------------------------------------


@case("unknown_config_key")
def _(w: World):
    w.configure(remote=w.remote(hots="gpu-box"))
    spec = w.spec("scene")
    return [spec], Expect(
        2,
        "config_unknown_key",
        f"{w.config}: unknown key 'hots' in [remote]",
        "keys in [remote]: " + ", ".join(SCHEMA["remote"]),
    )


@case("unknown_config_section")
def _(w: World):
    w.configure(extra={"gpu": {"count": 1}})
    spec = w.spec("scene")
    return [spec], Expect(
        2,
        "config_unknown_key",
        f"{w.config}: unknown section [gpu]",
        "known sections: " + ", ".join(SCHEMA),
    )


@case("unknown_key_in_the_environment")
def _(w: World):
    w.monkeypatch.setenv("COSMOS_REMOTE_HOTS", "gpu-box")
    return [w.spec("scene")], Expect(
        2,
        "config_unknown_key",
        "environment COSMOS_REMOTE_HOTS: unknown key 'hots' in [remote]",
        "keys in [remote]: " + ", ".join(SCHEMA["remote"]),
    )


@case("no_host_configured")
def _(w: World):
    w.configure(remote=w.remote(host=""))
    return [w.spec("scene")], Expect(
        2,
        "no_host",
        "no GPU host configured",
        'set [remote] host in config.toml (or COSMOS_REMOTE_HOST), or transport = "local"',
    )


@case("connect_timeout_not_above_zero")
def _(w: World):
    w.configure(remote=w.remote(connect_timeout_s=-1.0))
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        f"{w.config}: [remote] connect_timeout_s = -1.0 is not valid; expected a number above 0",
        "connect_timeout_s: seconds to wait for the SSH connection",
    )


@case("reconnect_attempts_negative")
def _(w: World):
    w.configure(remote=w.remote(reconnect_attempts=-1))
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        f"{w.config}: [remote] reconnect_attempts = -1 is not valid; expected an integer, 0 or "
        "more",
        "reconnect_attempts: reconnects (1, 2, 4 … s apart) when the connection drops during a "
        "run (upload, worker, download)",
    )


@case("host_smuggling_an_ssh_option")
def _(w: World):
    host = f"127.0.0.1 -oProxyCommand=touch {w.canary}"
    w.configure(remote=w.remote(host=host))
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        f"{w.config}: [remote] host = {host!r} is not valid; expected a host name, address or "
        "ssh config alias (no spaces or control characters, not starting with -)",
        "host: host name, address or ~/.ssh/config alias of the GPU host",
    )


@case("host_that_reads_as_an_ssh_option")
def _(w: World):
    host = f"-oProxyCommand=touch${{IFS}}{w.canary}"  # one word: no space to refuse it by
    w.configure(remote=w.remote(host=host))
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        f"{w.config}: [remote] host = {host!r} is not valid; expected a host name, address or "
        "ssh config alias (no spaces or control characters, not starting with -)",
        "host: host name, address or ~/.ssh/config alias of the GPU host",
    )


@case("user_smuggling_an_ssh_option")
def _(w: World):
    user = f"ubuntu -oProxyCommand=touch {w.canary}"
    w.configure(remote=w.remote(user=user))
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        f"{w.config}: [remote] user = {user!r} is not valid; expected a user name (no spaces or "
        "control characters, not starting with -)",
        "user: SSH user (empty: from ~/.ssh/config, else your login)",
    )


@case("user_that_reads_as_an_ssh_option")
def _(w: World):
    user = f"-oProxyCommand=touch${{IFS}}{w.canary}"
    w.configure(remote=w.remote(user=user))
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        f"{w.config}: [remote] user = {user!r} is not valid; expected a user name (no spaces or "
        "control characters, not starting with -)",
        "user: SSH user (empty: from ~/.ssh/config, else your login)",
    )


@case("user_with_a_newline_in_the_environment")
def _(w: World):
    w.monkeypatch.setenv("COSMOS_REMOTE_USER", "ubuntu\nroot")
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        "environment COSMOS_REMOTE_USER: [remote] user = 'ubuntu\\nroot' is not valid; expected "
        "a user name (no spaces or control characters, not starting with -)",
        "user: SSH user (empty: from ~/.ssh/config, else your login)",
    )


@case("host_name_with_a_label_over_63_characters")
def _(w: World):
    host = "gpu-" + "x" * 60 + ".example"  # refused by IDNA before any DNS lookup
    w.configure(remote=w.remote(host=host))
    return [w.spec("scene")], Expect(
        4,
        "dns",
        f"cannot resolve host {host!r}: not a valid host name",
        "check [remote] host, or the HostName in your ssh config",
    )


@case("worker_env_value_with_nul")
def _(w: World):
    w.configure(env={"HF_TOKEN": "abc\x00def"})
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        re.compile(
            re.escape(f"{w.config}: [worker] env = {{")
            + r".*"
            + re.escape(
                '} is not valid; expected a table like { NAME = "value" } of environment '
                "variables (names of letters, digits and _, not starting with a digit; values "
                "without NUL)"
            )
        ),
        "env: extra environment variables for the worker, a TOML table",
    )


@case("worker_env_name_not_a_shell_name")
def _(w: World):
    w.configure(env={"1ST-TRY": "yes"})
    return [w.spec("scene")], Expect(
        2,
        "config_bad_value",
        re.compile(
            re.escape(f"{w.config}: [worker] env = {{")
            + r".*'1ST-TRY': 'yes'.*"
            + re.escape('} is not valid; expected a table like { NAME = "value" }')
            + r".*"
        ),
        "env: extra environment variables for the worker, a TOML table",
    )


@case("config_value_of_wrong_type")
def _(w: World):
    w.configure(remote=w.remote(port="twenty-two"))
    spec = w.spec("scene")
    return [spec], Expect(
        2,
        "config_bad_value",
        f"{w.config}: [remote] port = 'twenty-two' is not valid; expected an integer",
        "port: SSH port",
    )


@case("config_not_toml")
def _(w: World):
    w.config.write_text('[remote]\nhost = "unterminated\n')
    spec = w.spec("scene")
    return [spec], Expect(
        2,
        "config",
        f"{w.config} is not valid TOML: Illegal character '\\n' (at line 2, column 21)",
        "fix the syntax (see config.toml in the repo)",
    )


@case("remote_dir_relative")
def _(w: World):
    w.configure(paths={"remote_dir": "~/cosmos-transfer1"})
    spec = w.spec("scene")
    return [spec], Expect(
        2,
        "config_bad_value",
        "[paths] remote_dir = '~/cosmos-transfer1' must be an absolute POSIX path",
        'e.g. remote_dir = "/home/ubuntu/cosmos-transfer1" (no ~: it is not expanded)',
    )


@case("ffprobe_missing")
def _(w: World):
    w.configure(extra={"ffmpeg": {"ffprobe": str(w.tmp / "bin" / "ffprobe")}})
    return [w.spec("scene")], Expect(
        3,
        "tool_missing",
        f"ffprobe not found at {w.tmp / 'bin' / 'ffprobe'}",
        install_hint("ffprobe"),
    )


@case("ffmpeg_missing")
def _(w: World):
    w.configure(extra={"ffmpeg": {"binary": "no-such-ffmpeg"}})
    return [w.spec("scene")], Expect(
        3, "tool_missing", "no-such-ffmpeg not found on PATH", install_hint("ffmpeg")
    )


# Keys and hosts --------------------------------------------------------------------------------


@case("ssh_key_missing")
def _(w: World):
    key = w.tmp / "keys" / "id_absent"
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_missing",
        f"SSH key {key} does not exist",
        "fix [remote] ssh_key, or leave it empty to use ~/.ssh/config or ssh-agent",
    )


@case("ssh_key_with_loose_permissions")
def _(w: World):
    key = w.tmp / "keys" / "id_loose"
    key.parent.mkdir()
    shutil.copyfile(w.sshd.key, key)
    key.chmod(0o644)
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_permissions",
        f"SSH key {key} has permissions 0644: others can read it, so it is refused",
        f"run: chmod 600 {key}",
    )


@case("ssh_key_is_a_folder")
def _(w: World):
    key = w.tmp / "keys"
    key.mkdir()
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_invalid",
        f"SSH key {key} is not a file",
        "point [remote] ssh_key at your private key file (e.g. ~/.ssh/id_ed25519)",
    )


@case("ssh_key_is_not_a_key")
def _(w: World):
    key = w.tmp / "id_garbage"
    key.write_text("this is not a key\n")
    key.chmod(0o600)
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_invalid",
        f"SSH key {key} is not a private key paramiko can read",
        "point [remote] ssh_key at your private key, in OpenSSH or PEM format",
        network=True,
    )


@case("ssh_key_is_the_public_key")
def _(w: World):
    key = w.tmp / "id_ed25519.pub"
    shutil.copyfile(f"{w.sshd.key}.pub", key)
    key.chmod(0o600)
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_invalid",
        f"SSH key {key} is a public key",
        "point [remote] ssh_key at the private key, not the public one (.pub)",
        network=True,
    )


@case("ssh_key_with_a_passphrase_and_no_agent")
def _(w: World):
    w.monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = w.tmp / "id_locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(key)], check=True
    )
    w.configure(remote=w.remote(ssh_key=str(key)))
    s = w.sshd
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_passphrase",
        f"the SSH key for {s.user}@{s.host}:{s.port} is protected by a passphrase",
        f"load it into ssh-agent with `ssh-add {key}`",
        network=True,
    )


@case("ssh_key_in_pem_with_a_passphrase_and_no_agent")
def _(w: World):
    # paramiko tries the file as RSA, ECDSA, then Ed25519 and re-raised the last parse error,
    # "encountered RSA key, expected OPENSSH key", as a failed handshake.
    w.monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = w.tmp / "id_rsa locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "correct horse"]
        + ["-f", str(key)],
        check=True,
    )
    w.configure(remote=w.remote(ssh_key=str(key)))
    s = w.sshd
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_passphrase",
        f"the SSH key for {s.user}@{s.host}:{s.port} is protected by a passphrase",
        f"load it into ssh-agent with `ssh-add '{key}'`",
        network=True,
    )


@case("ssh_key_of_random_bytes")
def _(w: World):
    key = w.tmp / "id_random"
    key.write_bytes(bytes((n * 167 + 13) % 256 for n in range(2048)))  # 0xa5… is no UTF-8
    key.chmod(0o600)
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_invalid",
        f"SSH key {key} is not a private key paramiko can read",
        "point [remote] ssh_key at your private key, in OpenSSH or PEM format",
        network=True,
    )


@case("ssh_key_of_utf16_text")
def _(w: World):
    key = w.tmp / "id_utf16"
    key.write_bytes("-----BEGIN OPENSSH PRIVATE KEY-----\n".encode("utf-16"))
    key.chmod(0o600)
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_invalid",
        f"SSH key {key} is not a private key paramiko can read",
        "point [remote] ssh_key at your private key, in OpenSSH or PEM format",
        network=True,
    )


@case("ssh_key_far_too_large")
def _(w: World):
    key = w.tmp / "id_huge"
    with open(key, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: nothing written, paramiko would read it all
    key.chmod(0o600)
    w.configure(remote=w.remote(ssh_key=str(key)))
    return [w.spec("scene")], Expect(
        4,
        "ssh_key_invalid",
        f"SSH key {key} is {64 * 1024 * 1024} bytes: too large to be a private key",
        "point [remote] ssh_key at your private key file (e.g. ~/.ssh/id_ed25519)",
    )


@case("ecdsa_key_not_authorized_on_the_host")
def _(w: World):
    # Was "SSH handshake … failed: Invalid key" (paramiko's Ed25519 parse of an ECDSA file).
    key = w.tmp / "id_ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(key)], check=True)
    w.configure(remote=w.remote(ssh_key=str(key)))
    s = w.sshd
    return [w.spec("scene")], Expect(
        4,
        "auth_failed",
        f"{s.user}@{s.host}:{s.port} refused our login (keys tried: {key})",
        f"check the user and that the key is in the host's authorized_keys; try "
        f"`ssh -p {s.port} {s.user}@{s.host}`",
        network=True,
    )


@case("known_hosts_is_a_folder")
def _(w: World):
    known = w.tmp / "known_hosts.d"
    known.mkdir()
    w.configure(remote=w.remote(known_hosts=str(known)))
    return [w.spec("scene")], Expect(
        4,
        "known_hosts_read",
        f"cannot read known_hosts {known}: Is a directory",
        "set [remote] known_hosts to a readable file (OpenSSH's known_hosts format)",
    )


@case("ssh_key_not_authorized_on_the_host")
def _(w: World):
    key = keygen(w.tmp / "id_stranger", "stranger")
    w.configure(remote=w.remote(ssh_key=str(key)))
    s = w.sshd
    return [w.spec("scene")], Expect(
        4,
        "auth_failed",
        f"{s.user}@{s.host}:{s.port} refused our login (keys tried: {key})",
        f"check the user and that the key is in the host's authorized_keys; try "
        f"`ssh -p {s.port} {s.user}@{s.host}`",
        network=True,
    )


@case("connection_refused")
def _(w: World):
    port = free_port()
    w.configure(remote=w.remote(port=port))
    return [w.spec("scene")], Expect(
        4,
        "connection_refused",
        f"127.0.0.1:{port} refused the connection",
        "is sshd running there, and is the port right?",
        network=True,
    )


@case("host_that_accepts_but_never_speaks")
def _(w: World):
    port = w.silent_port
    w.configure(remote=w.remote(port=port, connect_timeout_s=0.5))
    return [w.spec("scene")], Expect(
        4,
        "connect_timeout",
        f"127.0.0.1:{port} accepted the connection but did not speak SSH within 0.5 s",
        "is this the SSH port? raise [remote] connect_timeout_s for slow links",
        network=True,
    )


@case("host_whose_backlog_is_full_never_completes_tcp")
def _(w: World):
    port = w.full_port
    w.configure(remote=w.remote(port=port, connect_timeout_s=0.5))
    return [w.spec("scene")], Expect(
        4,
        "connect_timeout",
        f"no answer from 127.0.0.1:{port} within 0.5 s",
        "check the address, the firewall and that the host is up; raise [remote] "
        "connect_timeout_s for slow links",
        network=True,
    )


def _fingerprint(public_key_line: str) -> str:
    key_type, b64 = public_key_line.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(b64)).fingerprint


@case("unknown_host_key_is_refused_by_default")
def _(w: World):
    known = w.tmp / "known_hosts_empty"
    known.write_text("")
    remote = w.remote(known_hosts=str(known))
    assert "host_key_policy" not in remote  # the default policy
    w.configure(remote=remote)
    s = w.sshd
    return [w.spec("scene")], Expect(
        4,
        "host_key_unknown",
        f"host key of {s.known_hosts_name} is not in {known} (ssh-ed25519 "
        f"{s.host_key_fingerprint})",
        "check the fingerprint with the host's owner, then run `cosmos remote trust`; or set "
        'host_key_policy = "accept-new" to record new hosts on first connect',
        network=True,
    )


@case("unknown_host_without_a_known_hosts_file_is_refused_and_none_is_created")
def _(w: World):
    known = w.tmp / "ssh" / "known_hosts"  # neither the file nor its folder exists
    w.configure(remote=w.remote(known_hosts=str(known)))
    s = w.sshd
    return [w.spec("scene")], Expect(
        4,
        "host_key_unknown",
        f"host key of {s.known_hosts_name} is not in {known} (ssh-ed25519 "
        f"{s.host_key_fingerprint})",
        "check the fingerprint with the host's owner, then run `cosmos remote trust`; or set "
        'host_key_policy = "accept-new" to record new hosts on first connect',
        network=True,
    )


def _changed(w: World, policy: str):
    other = w.other_host_key
    known = w.tmp / "known_hosts_changed"
    known.write_text(f"{w.sshd.known_hosts_name} {other}\n")
    w.configure(remote=w.remote(known_hosts=str(known), host_key_policy=policy))
    s = w.sshd
    name = s.known_hosts_name
    return [w.spec("scene")], Expect(
        4,
        "host_key_changed",
        f"HOST KEY OF {name} HAS CHANGED: {known} has ssh-ed25519 {_fingerprint(other)}, the "
        f"server offers ssh-ed25519 {s.host_key_fingerprint}; refusing to connect (possible "
        "man-in-the-middle attack)",
        f"if the host was really reinstalled, remove the old key with `ssh-keygen -R "
        f"'{name}' -f {known}` and run `cosmos remote trust`",
        network=True,
    )


@case("changed_host_key_is_refused")
def _(w: World):
    return _changed(w, "strict")


@case("changed_host_key_is_refused_even_with_accept_new")
def _(w: World):
    return _changed(w, "accept-new")


# The host and the worker -----------------------------------------------------------------------


@case("remote_dir_not_writable")
def _(w: World):
    w.read_only(w.host)
    root = f"{w.host}/cosmos_workflow"
    return [w.spec("scene")], Expect(
        4,
        "remote_permission",
        re.compile(
            re.escape(f"cannot create {root} on the host: ")
            + r"(Permission denied|Operation not permitted)"
        ),
        f"[paths] remote_dir ({w.host}) must be a folder the SSH user can write: fix its "
        "permissions or choose another remote_dir",
        network=True,
    )


@case("checkpoint_missing_on_the_host")
def _(w: World):
    missing = w.tmp / "no-checkpoints"
    w.configure(checkpoint_dir=missing)
    model = missing / CHECKPOINT
    return [w.spec("scene")], Expect(
        5,
        "worker",
        f"the worker exited with code 3: model folder {model} does not exist",
        re.compile(
            re.escape(f"see {w.host}/cosmos_workflow/jobs/")
            + r"[0-9a-f]{16}"
            + re.escape(
                "/worker.log on the host; rerun the same command to resume (finished items "
                "are kept); `cosmos remote check` tells whether the host is ready"
            )
        ),
        network=True,
    )


@case("worker_crash_mid_batch")
def _(w: World):
    w.configure(chunk_size=1, exit_after=1)  # the engine process dies on the second item
    first, second = w.spec("first"), w.spec("second", prompt="A second, different prompt.")
    return [first, second], Expect(
        1,
        items={
            "second": item_error(
                "worker",
                "the worker was killed by SIGKILL (exit code 137)",
                re.compile(
                    re.escape(f"see {w.host}/cosmos_workflow/jobs/")
                    + r"[0-9a-f]{16}"
                    + re.escape(
                        "/worker.log on the host; rerun the same command to resume (finished "
                        "items are kept); `cosmos remote check` tells whether the host is ready"
                    )
                ),
            )
        },
        ok_items=("first",),
        saved=frozenset({"first.json", "run.json", "runs/JOB.json"}),
        network=True,
    )


@case("item_the_engine_rejects")
def _(w: World):
    good = w.spec("good")
    rejected = w.spec("rejected", prompt=ENGINE_REJECTS)
    image = 2 * tokens.image_tokens_per_frame(640, 480)
    engine_count = 3 + len(ENGINE_REJECTS) // 4 + 1 + image  # the stand-in's own arithmetic
    return [good, rejected], Expect(
        1,
        items={
            "rejected": item_error(
                "engine_rejected",
                "VLLMValidationError: This model's maximum context length is 4096 tokens. "
                f"However, your prompt contains {engine_count} input tokens. Please reduce the "
                "length of the input prompt.",
                "the engine refused what the local count accepted: try a smaller "
                "--max-resolution or a shorter prompt, and check [upsampling] max_model_len "
                "matches the engine; the same command again retries only failed items",
            )
        },
        ok_items=("good",),
        saved=frozenset({"good.json", "run.json", "runs/JOB.json"}),
        network=True,
    )


@case("save_dir_is_a_file")
def _(w: World):
    w.save.write_text("notes\n")
    return [w.spec("scene")], Expect(
        2,
        "save_dir_not_writable",
        f"cannot write to --save-dir {w.save}: it is a file, not a folder",
        "choose a folder you can write to",
    )


@case("save_dir_read_only")
def _(w: World):
    w.save.mkdir()
    w.read_only(w.save)
    return [w.spec("scene")], Expect(
        2,
        "save_dir_not_writable",
        re.compile(
            re.escape(f"cannot write to --save-dir {w.save}: ")
            + r"(Permission denied|Operation not permitted)"
        ),
        "choose a folder you can write to",
    )


# --- helpers the cases need from the test: sockets, read-only folders --------------------------


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (kernel backlog) but never accepts nor answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def full_port():
    """A port whose one-connection backlog is taken: new SYNs are dropped, connect hangs."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        yield port


@pytest.fixture
def read_only():
    """Make a folder unwritable, even for root (`chattr +i`); undone at teardown."""
    made: list[Path] = []

    def make(folder: Path) -> None:
        folder.chmod(0o555)
        made.append(folder)
        if os.geteuid() == 0:  # root ignores modes; an immutable folder stops it (ext4, xfs…)
            subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        probe = folder / ".probe"
        try:
            probe.touch()
        except OSError:
            return
        probe.unlink()
        pytest.skip(f"cannot make {folder} read-only here")

    yield make
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


# --- the table-driven test ------------------------------------------------------------------


def _params():
    for name in CASES:
        yield pytest.param(name, id=name)


def _record_of(result) -> dict:
    assert result.stdout.lstrip().startswith("{"), (result.stdout, result.stderr)
    envelope = json.loads(result.stdout)
    assert "data" in envelope, envelope
    return envelope["data"]


@pytest.mark.parametrize("name", list(_params()))
def test_hostile_input_fails_with_one_clear_error_and_writes_nothing(
    name, world, silent_port, full_port, read_only, other_host_key
):
    world.silent_port, world.full_port = silent_port, full_port
    world.read_only, world.other_host_key = read_only, other_host_key
    args, expect = CASES[name](world)
    untouched = (world.host, world.save, world.engine_log)
    inputs_before = snapshot(world.tmp, skip=untouched)
    known_hosts_before = world.sshd.known_hosts.read_bytes()
    host_before = snapshot(world.host)

    if "--save-dir" not in args:
        args = [*args, "--save-dir", world.save]
    result = upsample(*args, "--json")
    assert result.exit_code == expect.exit_code, (result.stdout, result.stderr)
    assert result.exit_code != 70
    assert "Traceback" not in result.stderr

    if expect.items:
        record = _record_of(result)
        by_name = {item["name"]: item for item in record["items"]}
        for item_name, error in expect.items.items():
            item = by_name[item_name]
            assert item["status"] == "failed", item
            assert item["output"] is None
            assert set(item["error"]) == {"code", "message", "hint"}, item["error"]
            for key in ("code", "message", "hint"):
                assert same(item["error"][key], error[key]), (key, item["error"][key])
            assert "\n" not in item["error"]["message"]
        for item_name in expect.ok_items:
            assert by_name[item_name]["status"] == "ok", by_name[item_name]
        assert record["counts"]["failed"] == len(expect.items)
        if not expect.network:
            # A human sees the table and a summary; rendering the failure must not crash.
            human = upsample(*args)
            assert human.exit_code == expect.exit_code, human.stderr
            summary = human.stderr.splitlines()[-1]
            assert re.fullmatch(rf"0 ok, {len(expect.items)} failed, 0 skipped in .*", summary)
    else:
        lines = result.stdout.splitlines()
        assert len(lines) == 1, result.stdout
        envelope = json.loads(lines[0])
        assert set(envelope) == {"error"}
        assert envelope["error"]["code"] == expect.code
        assert same(envelope["error"]["message"], expect.error), envelope["error"]["message"]
        assert same(envelope["error"]["hint"], expect.hint), envelope["error"]["hint"]
        assert not any(line.startswith("error:") for line in result.stderr.splitlines())

        # The same failure for a human: one error line, one hint line, last on stderr.
        human = upsample(*args)
        assert human.exit_code == expect.exit_code, human.stderr
        error, hint = error_and_hint(human.stderr)
        assert same(error, expect.error), human.stderr
        assert same(hint, expect.hint), human.stderr
        assert human.stdout == ""
        # A host that cannot be reached is said once, not first as "no server there".
        assert "could not ask the host" not in human.stderr

    saved = {
        re.sub(r"^runs/[0-9a-f]{16}\.json$", "runs/JOB.json", p) for p in files_under(world.save)
    }
    # Where an output spec was written, so was the ledger of what cosmos wrote.
    wrote_specs = set(expect.saved) - {"run.json", "runs/JOB.json"}
    assert saved == set(expect.saved) | ({LEDGER_NAME} if wrote_specs else set())
    assert snapshot(world.tmp, skip=untouched) == inputs_before
    assert world.sshd.known_hosts.read_bytes() == known_hosts_before
    if not expect.network:
        assert snapshot(world.host) == host_before  # failed before any network traffic
        assert engine_events(world.engine_log, "load") == []


# --- hostile text that is valid: it must travel as plain data --------------------------------


def _metacharacters(canary: Path) -> str:
    return (
        f"$(touch {canary}) `touch {canary}`; touch {canary} | touch {canary} && "
        f"touch {canary} > {canary} $HOME ${{IFS}} * ? ~ \\ #"
    )


# name of the case -> (prompt, spec name, expected output file name). METACHARACTERS stands for
# shell code aimed at the canary, CANARY_NAME for the canary's file name.
HOSTILE_TEXT = {
    "shell_metacharacters": ("METACHARACTERS", "scene", "scene.json"),
    "quotes": ("He said \"don't\" and 'won't' \\\"x\\\" \\' \"\"\" '''", "scene", "scene.json"),
    "newlines_and_tabs": ("line one\nline two\r\nline\tthree\n\n", "scene", "scene.json"),
    "nul_byte": ("before\x00after", "scene", "scene.json"),
    "emoji_and_cjk": (
        "東京の夜、ロボット🤖が🚧を越える café 한국어 👩‍👩‍👧 שלום",
        "scene",
        "scene.json",
    ),
    "name_climbing_out_with_dotdot": ("a prompt", "../../../escape", "escape.json"),
    "name_with_path_separators": ("a prompt", "a/b\\c:d", "a_b_c_d.json"),
    "name_that_is_shell_code": (
        "a prompt",
        "$(touch CANARY_NAME);`id`",
        "touch_CANARY_NAME_id.json",
    ),
    "name_in_cjk_with_emoji": ("a prompt", "東京🤖", "東京.json"),
    # 100 KB never fits NVIDIA's 4096 tokens (see prompt_of_100_kb_fits_at_no_size); with a
    # context that holds it, it must reach the engine whole (it travels in batch.json, not argv).
    "prompt_of_100_kb": ("LONG", "scene", "scene.json"),
}


@pytest.mark.parametrize("case_name", list(HOSTILE_TEXT))
def test_hostile_text_travels_as_plain_data(case_name, world):
    prompt, name, output_name = HOSTILE_TEXT[case_name]
    if prompt == "METACHARACTERS":
        prompt = _metacharacters(world.canary)
    elif prompt == "LONG":
        prompt = "A robot arm, 東京, 🤖; " * 4096  # 100 KB of UTF-8
        assert len(prompt.encode("utf-8")) >= 100_000
        world.configure(extra={"upsampling": {"max_model_len": 131072}})
    name = name.replace("CANARY_NAME", world.canary.name)
    output_name = output_name.replace("CANARY_NAME", world.canary.name)
    spec = world.spec(name, file_name="input.json", prompt=prompt)
    inputs_before = snapshot(world.tmp, skip=(world.host, world.save, world.engine_log))

    result = upsample(spec, "--save-dir", world.save, "--json")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    (item,) = _record_of(result)["items"]
    assert item["status"] == "ok"
    assert item["original_prompt"] == prompt
    assert Path(item["output"]) == world.save / output_name
    output = json.loads((world.save / output_name).read_text(encoding="utf-8"))
    assert output["parent_prompt_text"] == prompt  # byte-exact, whatever it holds
    assert output["name"] == name
    assert [e["prompt"] for e in engine_events(world.engine_log)] == [prompt]
    assert files_under(world.save) == {
        output_name,
        LEDGER_NAME,
        "run.json",
        f"runs/{item_job(result)}.json",
    }
    assert snapshot(world.tmp, skip=(world.host, world.save, world.engine_log)) == inputs_before
    # Executed, the shell code would create a file of exactly the canary's name somewhere.
    assert not list(world.tmp.rglob(world.canary.name))
    for home in (Path.home(), REAL_HOME):  # sshd runs commands in the real home
        assert not (home / world.canary.name).exists()


def item_job(result) -> str:
    return _record_of(result)["job_id"]


def test_hostile_file_names_and_remote_dir_never_run_on_the_host(world):
    """Shell code in the spec's file name, the video's file name and in remote_dir stays text."""
    remote_dir = world.tmp / "host" / f"it's $(touch {world.canary}) `id` dir"
    remote_dir.mkdir(parents=True)
    world.host = remote_dir
    world.configure()
    video = world.video(f"$(touch {world.canary.name});clip's `id`.mp4")
    spec = world.spec(
        "scene", file_name=f"$(touch {world.canary.name}) x.json", input_video_path=str(video)
    )

    result = upsample(spec, "--save-dir", world.save, "--json")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    (item,) = _record_of(result)["items"]
    assert item["status"] == "ok"
    assert (remote_dir / "cosmos_workflow" / "worker.py").is_file()  # the quoted path was used
    assert not world.canary.exists()
    for where in (world.tmp, world.work, Path.home(), REAL_HOME):
        assert not (where / world.canary.name).exists()


def test_output_symlink_in_the_save_dir_is_neither_written_through_nor_replaced(world):
    victim = world.tmp / "victim.txt"
    victim.write_text("must not change\n")
    world.save.mkdir()
    (world.save / "scene.json").symlink_to(victim)
    spec = world.spec("scene")

    result = upsample(spec, "--save-dir", world.save, "--json", "--overwrite")

    # cosmos did not put the link there: it is someone's file, never replaced (issue 7 §2a).
    assert result.exit_code == 1, (result.stdout, result.stderr)
    (item,) = _record_of(result)["items"]
    assert item["error"]["code"] == "output_not_ours"
    assert victim.read_text() == "must not change\n"
    assert (world.save / "scene.json").readlink() == victim


def test_accept_new_records_an_unknown_host_once_and_runs(world):
    """The positive control for the refusals above: accept-new is what lets a new host in."""
    known = world.tmp / "known_hosts_new"
    world.configure(remote=world.remote(known_hosts=str(known), host_key_policy="accept-new"))
    result = upsample(world.spec("scene"), "--save-dir", world.save, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    key_type, key_b64 = world.sshd.host_pub_fields()
    assert known.read_text() == f"{world.sshd.known_hosts_name} {key_type} {key_b64}\n"


# --- secrets -----------------------------------------------------------------------------------


def _key_body_lines(private_key: Path) -> list[str]:
    lines = private_key.read_text().splitlines()
    body = [line.strip() for line in lines if line.strip() and not line.startswith("-----")]
    assert body and all(len(line) > 20 for line in body)
    return body


def test_no_key_material_in_json_logs_or_run_records(world):
    stranger = keygen(world.tmp / "id_stranger", "stranger")
    secrets = _key_body_lines(world.sshd.key) + _key_body_lines(stranger)
    texts: dict[str, str] = {}

    good = world.spec("good")
    rejected = world.spec("rejected", prompt=ENGINE_REJECTS)
    ran = upsample(good, rejected, "--save-dir", world.save, "--json")
    assert ran.exit_code == 1, ran.stderr  # one item rejected: the failure path ran too
    job = _record_of(ran)["job_id"]
    texts.update(run_stdout=ran.stdout, run_stderr=ran.stderr)
    texts["run.json"] = (world.save / "run.json").read_text()
    texts["runs/job.json"] = (world.save / "runs" / f"{job}.json").read_text()
    job_dir = world.host / "cosmos_workflow" / "jobs" / job
    for name in ("worker.log", "status.json", "stdout.log", "results.jsonl", "batch.json"):
        texts[name] = (job_dir / name).read_text()
    assert "VLLMValidationError" in texts["worker.log"]

    world.configure(remote=world.remote(ssh_key=str(stranger)))
    for flags in ((), ("--json",)):
        refused = upsample(good, "--save-dir", world.tmp / "out2", *flags)
        assert refused.exit_code == 4, refused.stderr
        texts[f"refused{flags}"] = refused.stdout + refused.stderr
    assert "refused our login" in texts["refused()"]

    for where, text in texts.items():
        for line in secrets:
            assert line not in text, f"private key material in {where}"
        assert "PRIVATE KEY" not in text, where


# --- what the terminal shows: text is printed as text ------------------------------------------


def test_error_line_prints_a_path_verbatim_even_when_it_holds_an_emoji_code(world):
    folder = world.work / "shots:cat:2"
    folder.mkdir()
    broken = folder / "scene.json"
    broken.write_text("{oops")
    result = upsample(broken, "--save-dir", world.save)
    assert result.exit_code == 2
    error, hint = error_and_hint(result.stderr)
    assert error == (
        f"{broken}: not valid JSON (line 1 column 2: Expecting property name enclosed in double "
        "quotes)"
    )
    assert hint == "fix the JSON syntax (a missing comma or quote is the usual cause)"


def test_load_error_of_a_file_named_like_markup_is_printed_verbatim_with_its_hint(world):
    notes = make_not_a_video(world.work / "notes.mp4")
    world.spec("scene", input_video_path=str(notes))  # fails locally: no network
    broken = world.raw_spec("x[bold].json", "{oops")
    result = upsample(world.prompts, "--save-dir", world.save)
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.splitlines()
    error = (
        f"error: {broken}: not valid JSON (line 1 column 2: Expecting property name enclosed in "
        "double quotes)"
    )
    assert error in lines, result.stderr
    assert lines[lines.index(error) + 1] == (
        "hint: fix the JSON syntax (a missing comma or quote is the usual cause)"
    )


@pytest.mark.parametrize("command", ["upsample", "check"])
def test_spec_name_that_looks_like_markup_is_shown_verbatim_not_a_crash(world, command):
    notes = make_not_a_video(world.work / "notes.mp4")
    spec = world.spec("[bold]a[/]b[/]", file_name="scene.json", input_video_path=str(notes))
    args = [command, str(spec)] + (["--save-dir", str(world.save)] if command == "upsample" else [])
    result = runner.invoke(app, args)
    assert result.exit_code == (1 if command == "upsample" else 3), result.stderr
    assert "[bold]a[/]b[/]" in result.stdout + result.stderr
    assert "internal error" not in result.stderr


def test_deeply_nested_spec_fails_alone_and_its_folder_still_upsamples(world):
    good = world.spec("good")
    deep = world.raw_spec("deep.json", "[" * 100_000 + "]" * 100_000)  # RecursionError in json
    inputs_before = snapshot(world.prompts)

    result = upsample(world.prompts, "--save-dir", world.save, "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)  # the batch ran; a spec failed
    record = _record_of(result)
    assert [(i["name"], i["status"]) for i in record["items"]] == [("good", "ok")]
    assert record["load_errors"] == [
        {
            "code": "bad_json",
            "message": f"{deep}: nested more than 64 levels deep; a prompt spec is a flat object",
            "hint": 'a spec file holds one object: {"prompt": ..., "input_video_path": ...}',
        }
    ]
    assert "good.json" in files_under(world.save)
    assert (
        json.loads((world.save / "good.json").read_text())["parent_prompt_text"]
        == (json.loads(good.read_text())["prompt"])
    )
    assert snapshot(world.prompts) == inputs_before
