"""The config's shape: sections, keys, their parsers, defaults and meaning, and `Config`.

Every key has one definition here (`SCHEMA`): its type, default and meaning. Config keys equal
dataclass field names. `ALIASES` lists the seed project's older key names that loading still
accepts (`load.py` maps them); the `Config` object only has the names below.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..sizing import parse_size

# What a POSIX shell accepts as a variable name (the worker's environment is set through one).
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- value types -----------------------------------------------------------------------------


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    if "\x00" in value:
        # No path, host or command can hold NUL: the OS would cut the string there.
        raise ValueError("a string without NUL characters")
    return value


def _ssh_word(value: Any, what: str) -> str:
    """A host or user name: one word that no ssh command line could read as an option."""
    text = _as_str(value)
    if text.startswith("-") or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{what} (no spaces or control characters, not starting with -)")
    return text


def _as_host(value: Any) -> str:
    return _ssh_word(value, "a host name, address or ssh config alias")


def _as_user(value: Any) -> str:
    return _ssh_word(value, "a user name")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError("an integer") from None
    if not isinstance(value, int):
        raise ValueError("an integer")
    return value


def _as_positive_int(value: Any) -> int:
    number = _as_int(value)
    if number < 1:
        raise ValueError("a positive integer")
    return number


def _as_count(value: Any) -> int:
    number = _as_int(value)
    if number < 0:
        raise ValueError("an integer, 0 or more")
    return number


def _as_port(value: Any) -> int:
    number = _as_int(value)
    if not 1 <= number <= 65535:
        raise ValueError("a port number from 1 to 65535")
    return number


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError("a number")
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return float(value)


def _as_positive_float(value: Any) -> float:
    number = _as_float(value)
    if number <= 0:
        raise ValueError("a number above 0")
    return number


def _as_non_negative_float(value: Any) -> float:
    number = _as_float(value)
    if number < 0:
        raise ValueError("a number, 0 or more")
    return number


def _as_fraction(value: Any) -> float:
    number = _as_float(value)
    if not 0 < number <= 1:
        raise ValueError("a number above 0 and at most 1")
    return number


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise ValueError("true or false")


def _as_path(value: Any) -> str:
    """A local path; `~` is expanded. Kept as a string so `config show` prints what was given."""
    return os.path.expanduser(_as_str(value))


class FrameSize(NamedTuple):
    """A frame size in pixels; `str()` gives the config's own spelling, "320x180"."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def _as_size(value: Any) -> FrameSize:
    try:
        return FrameSize(*parse_size(_as_str(value)))
    except ValueError:
        raise ValueError('a frame size like "320x180"') from None


def _as_env(value: Any) -> dict:
    """Environment for the worker: a TOML table, or `"K=V K2=V2"` from an env var or flag."""
    if isinstance(value, str):
        pairs = {}
        for word in value.split():
            name, sep, val = word.partition("=")
            if not sep or not name:
                raise ValueError('a table like { NAME = "value" } or "NAME=value NAME2=value"')
            pairs[name] = val
        value = pairs
    if not isinstance(value, dict) or not all(
        isinstance(k, str)
        and _ENV_NAME_RE.fullmatch(k)
        and isinstance(v, (str, int, float))
        and "\x00" not in str(v)
        for k, v in value.items()
    ):
        raise ValueError(
            'a table like { NAME = "value" } of environment variables (names of letters, digits '
            "and _, not starting with a digit; values without NUL)"
        )
    return {k: str(v) for k, v in value.items()}


# docker's --gpus values: all, a count, device=<ids> (in docker's own quotes or not), or none.
_GPUS_RE = re.compile(r'all|none|[0-9]+|"?device=[A-Za-z0-9,:._-]+"?')
# docker's size syntax: a number with an optional unit (b, k, m, g).
_DOCKER_SIZE_RE = re.compile(r"[0-9]+(\.[0-9]+)?[bkmgBKMG]?")


def _as_gpus(value: Any) -> str:
    text = _as_str(value).strip()
    if not _GPUS_RE.fullmatch(text):
        raise ValueError('"all", "none", a number of GPUs, or "device=0,1"')
    return text


def _as_shm_size(value: Any) -> str:
    text = _as_str(value).strip()
    if text != "host" and not _DOCKER_SIZE_RE.fullmatch(text):
        raise ValueError('a size like "8g" or "512m", or "host"')
    return text


def _as_args(value: Any) -> tuple[str, ...]:
    """Command-line words: a TOML list of strings, or one string split as a shell would."""
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError:
            raise ValueError("words a shell can split (unbalanced quotes)") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError('a list of strings, e.g. ["-v", "/data:/data:ro"]')
    return tuple(_as_str(v) for v in value)


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError("one of " + ", ".join(f'"{o}"' for o in options))
        return value

    parse.__name__ = "choice"
    return parse


# --- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    # How `config show` prints the value: as it would be written in config.toml.
    show: Callable[[Any], Any] = lambda value: value


SCHEMA: dict[str, dict[str, Field]] = {
    "remote": {
        "transport": Field(
            _choice("ssh", "local"),
            "ssh",
            '"ssh" to a GPU host, or "local" to run on this machine (you are on the GPU box)',
        ),
        "host": Field(_as_host, "", "host name, address or ~/.ssh/config alias of the GPU host"),
        "user": Field(_as_user, "", "SSH user (empty: from ~/.ssh/config, else your login)"),
        "port": Field(_as_port, 22, "SSH port"),
        "ssh_key": Field(_as_path, "", "private key file (empty: ~/.ssh/config or ssh-agent)"),
        "known_hosts": Field(_as_path, "~/.ssh/known_hosts", "where trusted host keys are kept"),
        "host_key_policy": Field(
            _choice("strict", "accept-new"),
            "strict",
            '"strict" refuses unknown hosts; "accept-new" records a new host\'s key on first '
            "connect (a changed key is always refused)",
        ),
        "connect_timeout_s": Field(
            _as_positive_float, 15.0, "seconds to wait for the SSH connection"
        ),
        "reconnect_attempts": Field(
            _as_count,
            5,
            "reconnects (1, 2, 4 … s apart) when the connection drops during a run "
            "(upload, worker, download)",
        ),
    },
    "paths": {
        "remote_dir": Field(
            _as_str,
            "/home/ubuntu/cosmos-transfer1",
            "absolute path of the cosmos-transfer1 checkout on the host (our files go to "
            "<remote_dir>/cosmos_workflow)",
        ),
        "local_prompts_dir": Field(_as_path, "inputs/prompts", "where your prompt specs live"),
        "local_videos_dir": Field(_as_path, "inputs/videos", "where your videos live"),
        "local_outputs_dir": Field(_as_path, "outputs", "default --save-dir for upsampled specs"),
        "cache_dir": Field(
            _as_path, "", "local cache of extracted frames (empty: the user cache folder)"
        ),
        "history_db": Field(
            _as_path, "", "SQLite history of runs (empty: history.db in the user data folder)"
        ),
    },
    "docker": {
        "image": Field(
            _as_str, "nvcr.io/ubuntu/cosmos-transfer1:latest", "NVIDIA's cosmos-transfer1 image"
        ),
        "sudo": Field(_as_bool, True, "run docker with sudo (NVIDIA's instructions do)"),
        "gpus": Field(
            _as_gpus,
            "all",
            'docker --gpus: "all", a count, "device=0,1", or "none" for no --gpus (a CPU image, '
            "a host without the NVIDIA runtime); [worker] cuda_visible_devices picks devices "
            'when "all"',
        ),
        "shm_size": Field(
            _as_shm_size,
            "8g",
            'the container\'s /dev/shm (vLLM needs shared memory), e.g. "8g"; "host" shares the '
            "host's (--ipc=host)",
        ),
        "hf_cache": Field(
            _as_str,
            "~/.cache/huggingface",
            "host folder mounted as the container's Hugging Face cache",
        ),
        "vllm_cache": Field(
            _as_str,
            "~/.cache/vllm",
            "host folder mounted as the container's vLLM cache, so compiled kernels outlive "
            "the --rm container (empty: not mounted, every job compiles again)",
        ),
        "extra_args": Field(
            _as_args,
            (),
            'more `docker run` arguments, a list of words, e.g. ["-v", "/data:/data:ro"]',
            show=list,
        ),
    },
    "worker": {
        "runner": Field(
            _choice("docker", "direct"),
            "docker",
            '"docker" runs the worker inside [docker] image; "direct" uses [worker] python',
        ),
        "python": Field(
            _as_str, "python3", "host Python with vLLM, for the direct runner (conda env or venv)"
        ),
        "checkpoint_dir": Field(
            _as_str, "", "checkpoints folder on the host (empty: <remote_dir>/checkpoints)"
        ),
        "num_gpu": Field(_as_positive_int, 1, "GPUs for the model (vLLM tensor_parallel_size)"),
        "cuda_visible_devices": Field(_as_str, "", "CUDA_VISIBLE_DEVICES on the host (empty: all)"),
        "max_num_seqs": Field(
            _as_positive_int,
            2,
            "sequences the engine runs at once; NVIDIA's 2 keeps a 12B model within one GPU",
        ),
        "temperature": Field(
            _as_non_negative_float, 0.6, "sampling temperature (NVIDIA's upsampler: 0.6)"
        ),
        "chunk_size": Field(
            _as_positive_int,
            64,
            "items per engine call; results are saved after each call, so a smaller chunk "
            "loses less work if the host dies",
        ),
        "enforce_eager": Field(
            _as_bool, False, "skip CUDA-graph capture: faster engine start, slower generation"
        ),
        "gpu_memory_utilization": Field(
            _as_fraction,
            0.98,
            "share of GPU memory vLLM may take (NVIDIA's 0.98); lower it when the GPU is shared",
        ),
        "stall_timeout_s": Field(
            _as_positive_int,
            900,
            "seconds without progress after which a job shows as stalled (a hung engine)",
        ),
        "min_free_disk_gib": Field(
            _as_non_negative_float,
            10.0,
            "`cosmos remote check` warns when the host has less free disk than this (GiB)",
        ),
        "env": Field(_as_env, {}, "extra environment variables for the worker, a TOML table"),
    },
    "upsampling": {
        "max_model_len": Field(
            _as_positive_int,
            4096,
            "the upsampler's context size in tokens: prompt plus output (vLLM's max_model_len)",
        ),
        "output_tokens": Field(
            _as_positive_int,
            300,
            "room kept for the upsampled text (vLLM's sampling max_tokens; NVIDIA: 300)",
        ),
        "safe_resolution": Field(
            _as_size,
            FrameSize(320, 180),
            "frame size used when a clip must be resized and none is given",
            show=str,
        ),
        "frame_count": Field(
            _as_positive_int, 2, "first frames of each clip the model sees (NVIDIA: 2)"
        ),
        "auto_resize": Field(
            _as_bool, True, "resize clips that do not fit to the largest size that does"
        ),
        "hint_video_dir": Field(
            _as_path, "./inputs/hint_videos", "where `cosmos prepare` writes frames and hint videos"
        ),
    },
    "server": {
        "idle_timeout_min": Field(
            _as_positive_float,
            30.0,
            "the warm server (`cosmos serve start`) stops itself after this many minutes "
            "without a request, so a forgotten one does not hold a rented GPU",
        ),
        "port": Field(_as_port, 8765, "the warm server's port on the host's loopback (127.0.0.1)"),
        "endpoint": Field(
            _as_str,
            "",
            "an OpenAI-compatible server you run yourself, e.g. http://gpu:8000/v1: `cosmos "
            "upsample` sends every item there (API key: COSMOS_SERVER_API_KEY)",
        ),
    },
    "ffmpeg": {
        "binary": Field(_as_str, "ffmpeg", "ffmpeg executable (name on PATH or a path)"),
        "ffprobe": Field(_as_str, "ffprobe", "ffprobe executable (name on PATH or a path)"),
    },
}

# The seed project's key names, still accepted when loading (file keys and COSMOS_* variables):
# (section, old key) -> key. Giving both names in one place is an error.
ALIASES: dict[tuple[str, str], str] = {
    ("upsampling", "max_tokens"): "max_model_len",
    ("upsampling", "frames_to_extract"): "frame_count",
}


def _section_class(section: str) -> type:
    fields = [(key, type(spec.default), spec.default) for key, spec in SCHEMA[section].items()]
    return dataclasses.make_dataclass(
        section.capitalize() + "Config",
        [
            (
                name,
                typ,
                dataclasses.field(default_factory=lambda d=default: dict(d))
                if isinstance(default, dict)
                else dataclasses.field(default=default),
            )
            for name, typ, default in fields
        ],
        frozen=True,
    )


RemoteConfig = _section_class("remote")
PathsConfig = _section_class("paths")
DockerConfig = _section_class("docker")
WorkerConfig = _section_class("worker")
UpsamplingConfig = _section_class("upsampling")
FfmpegConfig = _section_class("ffmpeg")
ServerConfig = _section_class("server")
_SECTION_CLASSES = {
    "remote": RemoteConfig,
    "paths": PathsConfig,
    "docker": DockerConfig,
    "worker": WorkerConfig,
    "upsampling": UpsamplingConfig,
    "ffmpeg": FfmpegConfig,
    "server": ServerConfig,
}


@dataclass(frozen=True)
class Config:
    """The effective configuration, plus where each value came from (for `config show`)."""

    remote: Any
    paths: Any
    docker: Any
    worker: Any
    upsampling: Any
    ffmpeg: Any
    server: Any
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    files: tuple[str, ...] = ()

    def get(self, section: str, key: str) -> Any:
        return getattr(getattr(self, section), key)

    def remote_root(self) -> str:
        """Absolute POSIX folder on the host that holds our worker, cache and jobs."""
        return self.paths.remote_dir.rstrip("/") + "/cosmos_workflow"

    def checkpoint_dir(self) -> str:
        return self.worker.checkpoint_dir or self.paths.remote_dir.rstrip("/") + "/checkpoints"

    def as_rows(self) -> list[dict]:
        """One row per key: section, key, value, source — the shape of `config show --json`."""
        return [
            {
                "section": section,
                "key": key,
                "value": spec.show(self.get(section, key)),
                "source": self.sources.get(f"{section}.{key}", "default"),
            }
            for section, keys in SCHEMA.items()
            for key, spec in keys.items()
        ]
