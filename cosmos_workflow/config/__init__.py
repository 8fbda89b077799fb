"""Configuration: `config.toml` + environment → frozen dataclasses, validated once.

`schema` says what the keys are (type, default, meaning); `load` reads files, `COSMOS_*`
environment variables and flags in order of precedence (its docstring has the order) and
validates the result.
"""

from __future__ import annotations

from .load import (
    APP_NAME,
    ENV_PREFIX,
    load_config,
    user_cache_dir,
    user_config_dir,
    user_data_dir,
)
from .schema import ALIASES, SCHEMA, Config, Field, FrameSize

__all__ = [
    "ALIASES",
    "APP_NAME",
    "ENV_PREFIX",
    "SCHEMA",
    "Config",
    "Field",
    "FrameSize",
    "load_config",
    "user_cache_dir",
    "user_data_dir",
    "user_config_dir",
]
