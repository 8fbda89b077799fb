"""The `PromptSpec` record and the names of the two spec formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ..errors import SpecError

# transfer.py's `valid_hint_keys` (cosmos_transfer1/diffusion/inference/inference_utils.py).
HINT_KEYS = ("vis", "edge", "depth", "seg", "keypoint", "upscale", "hdmap", "lidar")
SEED_KEYS = (
    "id",
    "name",
    "prompt",
    "negative_prompt",
    "input_video_path",
    "control_inputs",
    "timestamp",
    "is_upsampled",
    "parent_prompt_text",
)
SEED_ONLY_KEYS = frozenset(SEED_KEYS) - {"prompt", "negative_prompt", "input_video_path"}


class SpecFormat(str, Enum):
    SEED = "seed"
    NVIDIA = "nvidia"


@dataclass(frozen=True)
class PromptSpec:
    """One prompt spec, validated, with its media paths resolved.

    `video` is the absolute path of `input_video_path`, or None with `video_error` saying why.
    `control_inputs` maps a control name (seed) or hint key (NVIDIA `input_control`) to the
    resolved absolute path, or to the path as written when it could not be resolved (then
    `control_errors` has the reason). `raw` is the JSON as read, used to write outputs.
    """

    path: Path | None
    format: SpecFormat
    id: str | None
    name: str
    prompt: str
    negative_prompt: str | None = None
    video: Path | None = None
    video_error: SpecError | None = None
    control_inputs: dict[str, str] = field(default_factory=dict, hash=False)
    is_upsampled: bool = False
    raw: dict = field(default_factory=dict, hash=False, repr=False)
    control_errors: dict[str, SpecError] = field(default_factory=dict, hash=False, repr=False)
