"""Configuration: `config.toml` + environment → frozen dataclasses, validated once.

Precedence, highest first:

1. command-line flags (passed in as `overrides`),
2. `COSMOS_<SECTION>_<KEY>` environment variables (e.g. `COSMOS_UPSAMPLING_MAX_TOKENS=8192`),
3. the file given with `--config FILE`, else `./config.toml`,
4. `config.toml` in the user config folder (`$COSMOS_USER_DIR`, else the platform convention:
   `$XDG_CONFIG_HOME/cosmos-workflow` or `~/.config/cosmos-workflow` on Linux,
   `~/Library/Application Support/cosmos-workflow` on macOS, `%APPDATA%\\cosmos-workflow` on
   Windows),
5. built-in defaults (the `Field` table below).

Every key has one definition below: its type, default and meaning. Config keys equal dataclass
field names. Unknown keys, wrong types and bad values raise `ConfigError` naming the source (file,
environment variable or flag), the key and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .tokens import parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

APP_NAME = "cosmos-workflow"
ENV_PREFIX = "COSMOS_"
NOT_CONFIG_ENV = ("COSMOS_USER_DIR", "COSMOS_DEBUG", "COSMOS_SERVER_API_KEY")
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


def _as_size(value: Any) -> str:
    try:
        width, height = parse_size(_as_str(value))
    except ValueError:
        raise ValueError('a frame size like "320x180"') from None
    return f"{width}x{height}"


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
    },
    "docker": {
        "image": Field(
            _as_str, "nvcr.io/ubuntu/cosmos-transfer1:latest", "NVIDIA's cosmos-transfer1 image"
        ),
        "sudo": Field(_as_bool, True, "run docker with sudo (NVIDIA's instructions do)"),
        "shm_size": Field(_as_str, "8g", "--shm-size for the container (vLLM needs shared memory)"),
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
        "max_tokens": Field(
            _as_positive_int, 4096, "the upsampler's max_model_len (prompt + output tokens)"
        ),
        "output_tokens": Field(
            _as_positive_int, 300, "room kept for the upsampled text (NVIDIA's max_tokens)"
        ),
        "safe_resolution": Field(
            _as_size, "320x180", "frame size used when a clip must be resized and none is given"
        ),
        "frames_to_extract": Field(
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
    server: Any = None
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    files: tuple[str, ...] = ()

    def get(self, section: str, key: str) -> Any:
        return getattr(getattr(self, section), key)

    def frame_size(self) -> tuple[int, int]:
        return parse_size(self.upsampling.safe_resolution)

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
                "value": self.get(section, key),
                "source": self.sources.get(f"{section}.{key}", "default"),
            }
            for section, keys in SCHEMA.items()
            for key in keys
        ]


# --- loading ---------------------------------------------------------------------------------


def user_config_dir() -> Path:
    """The per-user folder (`COSMOS_USER_DIR` overrides it, which tests use for isolation)."""
    if override := os.environ.get("COSMOS_USER_DIR"):
        return Path(override)
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP_NAME


def user_cache_dir() -> Path:
    if override := os.environ.get("COSMOS_USER_DIR"):
        return Path(override) / "cache"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")
        return Path(local) / APP_NAME / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_NAME
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / APP_NAME


# A config file is a few hundred bytes; /dev/zero given as --config is not one.
_MAX_CONFIG_BYTES = 1024 * 1024


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb", opener=_open_nonblocking) as f:
            if stat.S_ISFIFO(os.fstat(f.fileno()).st_mode):
                raise ConfigError(
                    f"config file {path} is a named pipe, not a file",
                    "point --config at a config.toml (see config.toml in the repo)",
                )
            # Bounded: /dev/zero (or a huge file) must not be read whole. /dev/null stays fine.
            data = f.read(_MAX_CONFIG_BYTES + 1)
        if len(data) > _MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {path} is over {_MAX_CONFIG_BYTES} bytes: too large for a config",
                "point --config at a config.toml (see config.toml in the repo)",
            )
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", "check the --config path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", "fix the syntax (see config.toml in the repo)"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: not UTF-8 text (byte {exc.start})",
            "save the file as UTF-8 (TOML files must be UTF-8)",
        ) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(
            f"{path} is not valid TOML for a config: nested too deeply",
            "fix the syntax (see config.toml in the repo)",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def _open_nonblocking(path: str, flags: int) -> int:
    """Open without blocking on a named pipe (no writer), so it can be refused by its type."""
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return fd


def _apply(values: dict, section: str, key: str, raw: Any, origin: str, sources: dict) -> None:
    if section not in SCHEMA:
        raise ConfigError(
            f"{origin}: unknown section [{section}]",
            "known sections: " + ", ".join(SCHEMA),
            code="config_unknown_key",
        )
    spec = SCHEMA[section].get(key)
    if spec is None:
        raise ConfigError(
            f"{origin}: unknown key '{key}' in [{section}]",
            f"keys in [{section}]: " + ", ".join(SCHEMA[section]),
            code="config_unknown_key",
        )
    try:
        value = spec.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{origin}: [{section}] {key} = {raw!r} is not valid; expected {exc}",
            f"{key}: {spec.doc}",
            code="config_bad_value",
        ) from None
    values[section][key] = value
    sources[f"{section}.{key}"] = origin


def _apply_file(path: Path, values: dict, sources: dict) -> None:
    data = _read_toml(path)
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: '{section}' must be a [section] table",
                "known sections: " + ", ".join(SCHEMA),
                code="config_unknown_key",
            )
        for key, raw in table.items():
            _apply(values, section, key, raw, str(path), sources)


def load_config(
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Config:
    """Build the effective `Config`.

    `overrides` maps `"section.key"` to a value from a command-line flag (None means "not
    given"). `environ` and `cwd` default to the process's own.
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else Path(cwd)
    values: dict[str, dict[str, Any]] = {s: {} for s in SCHEMA}
    sources: dict[str, str] = {}
    files: list[str] = []

    user_file = user_config_dir() / "config.toml"
    if user_file.is_file():
        _apply_file(user_file, values, sources)
        files.append(str(user_file))

    project_file = Path(config_file) if config_file else cwd / "config.toml"
    if config_file or project_file.is_file():
        _apply_file(project_file, values, sources)
        files.append(str(project_file))

    for name, raw in environ.items():
        # COSMOS_SERVER_API_KEY is a secret read where it is used, never a config value (so
        # `config show` cannot print it).
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SCHEMA if rest.startswith(s + "_")), None)
        if section is None:
            continue  # other COSMOS_* variables (e.g. COSMOS_ENGINE_PYTHON) are not config
        _apply(values, section, rest[len(section) + 1 :], raw, f"environment {name}", sources)

    for dotted, raw in (overrides or {}).items():
        if raw is None:
            continue
        section, key = dotted.split(".", 1)
        flag = "--" + key.replace("_", "-")
        _apply(values, section, key, raw, f"flag {flag}", sources)

    sections = {}
    for section, cls in _SECTION_CLASSES.items():
        merged = {key: spec.default for key, spec in SCHEMA[section].items()}
        merged.update(values[section])
        if isinstance(merged.get("known_hosts"), str):
            merged["known_hosts"] = os.path.expanduser(merged["known_hosts"])
        sections[section] = cls(**merged)

    config = Config(**sections, sources=sources, files=tuple(files))
    _validate(config)
    return config


def _validate(config: Config) -> None:
    """Checks that involve more than one key."""
    up = config.upsampling
    if up.output_tokens >= up.max_tokens:
        raise ConfigError(
            f"[upsampling] output_tokens ({up.output_tokens}) must be smaller than "
            f"max_tokens ({up.max_tokens})",
            "max_tokens is the model's whole context: prompt plus output",
            code="config_bad_value",
        )
    if not config.paths.remote_dir.startswith("/"):
        raise ConfigError(
            f"[paths] remote_dir = {config.paths.remote_dir!r} must be an absolute POSIX path",
            'e.g. remote_dir = "/home/ubuntu/cosmos-transfer1" (no ~: it is not expanded)',
            code="config_bad_value",
        )
