"""Loading the config: files, `COSMOS_*` environment variables, flags, precedence, validation.

Precedence, highest first:

1. command-line flags (passed in as `overrides`),
2. `COSMOS_<SECTION>_<KEY>` environment variables (e.g. `COSMOS_UPSAMPLING_MAX_MODEL_LEN=8192`),
3. the file given with `--config FILE`, else `./config.toml`,
4. `config.toml` in the user config folder (`$COSMOS_USER_DIR`, else the platform convention:
   `$XDG_CONFIG_HOME/cosmos-workflow` or `~/.config/cosmos-workflow` on Linux,
   `~/Library/Application Support/cosmos-workflow` on macOS, `%APPDATA%\\cosmos-workflow` on
   Windows),
5. built-in defaults (`schema.SCHEMA`).

The seed project's key names (`schema.ALIASES`, e.g. `[upsampling] max_tokens`) are accepted in
files and environment variables and stored under the key they stand for; the source then says
which name was used ("config.toml (as max_tokens)"). Both names in one file or in the
environment is an error. Flags use the keys' own names.

Unknown keys, wrong types and bad values raise `ConfigError` naming the source (file,
environment variable or flag), the key and what is expected.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .schema import _SECTION_CLASSES, ALIASES, SCHEMA, Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

APP_NAME = "cosmos-workflow"
ENV_PREFIX = "COSMOS_"
# COSMOS_* variables that are not config values. COSMOS_SERVER_API_KEY is a secret read where
# it is used, never a config value (so `config show` cannot print it).
NOT_CONFIG_ENV = ("COSMOS_USER_DIR", "COSMOS_DEBUG", "COSMOS_SERVER_API_KEY")


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


def user_data_dir() -> Path:
    """Where the run history lives (`COSMOS_USER_DIR`/data, else the platform convention)."""
    if override := os.environ.get("COSMOS_USER_DIR"):
        return Path(override) / "data"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")
        return Path(local) / APP_NAME / "data"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME / "data"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
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


def _apply(
    values: dict,
    section: str,
    key: str,
    raw: Any,
    origin: str,
    sources: dict,
    *,
    origin_names_key: bool = False,
) -> None:
    """Parse one value into `values[section]`, under its own name when `key` is an alias.

    `origin_names_key`: the origin already shows the name used (an environment variable), so
    an alias is not named again in the source.
    """
    if section not in SCHEMA:
        raise ConfigError(
            f"{origin}: unknown section [{section}]",
            "known sections: " + ", ".join(SCHEMA),
            code="config_unknown_key",
        )
    name = ALIASES.get((section, key), key)
    spec = SCHEMA[section].get(name)
    if spec is None:
        raise ConfigError(
            f"{origin}: unknown key '{key}' in [{section}]",
            f"keys in [{section}]: " + ", ".join(SCHEMA[section]),
            code="config_unknown_key",
        )
    try:
        value = spec.parse(raw)
    except ValueError as exc:
        meaning = spec.doc if name == key else f"the older name of {name}, {spec.doc}"
        raise ConfigError(
            f"{origin}: [{section}] {key} = {raw!r} is not valid; expected {exc}",
            f"{key}: {meaning}",
            code="config_bad_value",
        ) from None
    values[section][name] = value
    aliased = name != key and not origin_names_key
    sources[f"{section}.{name}"] = f"{origin} (as {key})" if aliased else origin


def _refuse_both_names(section: str, given: Mapping[str, str], origin: str) -> None:
    """One place (a file's table, the environment) giving a key under both of its names.

    `given` maps each key name used to how it was written there (the key, or the variable).
    """
    for (alias_section, alias), name in ALIASES.items():
        if alias_section == section and alias in given and name in given:
            raise ConfigError(
                f"{origin}: [{section}] gets both {given[name]} and {given[alias]}, which are "
                "the same setting",
                f"keep only {given[name]} ({alias} is its older name)",
                code="config_duplicate_key",
            )


def _apply_file(path: Path, values: dict, sources: dict) -> None:
    data = _read_toml(path)
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: '{section}' must be a [section] table",
                "known sections: " + ", ".join(SCHEMA),
                code="config_unknown_key",
            )
        _refuse_both_names(section, {key: key for key in table}, str(path))
        for key, raw in table.items():
            _apply(values, section, key, raw, str(path), sources)


def _apply_environment(environ: Mapping[str, str], values: dict, sources: dict) -> None:
    by_section: dict[str, dict[str, tuple[str, str]]] = {}  # section -> key -> (name, raw)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SCHEMA if rest.startswith(s + "_")), None)
        if section is None:
            continue  # other COSMOS_* variables (e.g. COSMOS_ENGINE_PYTHON) are not config
        by_section.setdefault(section, {})[rest[len(section) + 1 :]] = (name, raw)
    for section, keys in by_section.items():
        given = {key: name for key, (name, _) in keys.items()}
        _refuse_both_names(section, given, "environment")
        for key, (name, raw) in keys.items():
            origin = f"environment {name}"
            _apply(values, section, key, raw, origin, sources, origin_names_key=True)


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

    _apply_environment(environ, values, sources)

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
    if up.output_tokens >= up.max_model_len:
        raise ConfigError(
            f"[upsampling] output_tokens ({up.output_tokens}) must be smaller than "
            f"max_model_len ({up.max_model_len})",
            "max_model_len is the model's whole context: prompt plus output",
            code="config_bad_value",
        )
    if not config.paths.remote_dir.startswith("/"):
        raise ConfigError(
            f"[paths] remote_dir = {config.paths.remote_dir!r} must be an absolute POSIX path",
            'e.g. remote_dir = "/home/ubuntu/cosmos-transfer1" (no ~: it is not expanded)',
            code="config_bad_value",
        )
