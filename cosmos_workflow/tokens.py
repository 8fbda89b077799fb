"""Exact Pixtral token budget for NVIDIA's prompt upsampler, and the largest frame size that fits.

The upsampler (Pixtral-12B served by vLLM with `tokenizer_mode="mistral"`) receives one user
message: N frames as image chunks, then the prompt text. vLLM tokenizes it with mistral_common,
so the count here uses the same tokenizer file (`tekken_240911.json`, shipped inside the
mistral-common package) and the same image rule, and equals what vLLM reports:

- text: `[BOS] [INST] … text … [/INST]` — the tekken tokens of the text plus the chat frame;
- each image: scaled down (Python `round`) so its long side is at most `max_image_size`, then
  `ceil(h / cell)` rows of `ceil(w / cell)` patch tokens plus one row-break token per row (the
  last one is the image-end token), where `cell = image_patch_size × spatial_merge_size`.

Images are counted from their size alone (mistral_common's own `_image_to_num_tokens` rule,
re-stated here so no pixels and no OpenCV are needed); tests/test_tokens.py proves the count
equal to `encode_chat_completion` on real images over a grid of sizes, frame counts and prompts.

Pure functions. The only I/O is loading the tokenizer file, once per process, on first use.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import CosmosError

# NVIDIA's upsampler replaces an empty prompt with this text (cosmos_transfer1
# auxiliary/upsampler/model/upsampler.py); we also replace a whitespace-only one.
DEFAULT_PROMPT = "describe the following images"

# Pixtral-12B-2409's tokenizer; NVIDIA's checkpoint ships the same file as `tekken.json`.
TOKENIZER_FILE = "tekken_240911.json"


class Verdict(str, Enum):
    """Whether a request fits the model's context (`max_model_len`)."""

    FITS = "fits"  # prompt + the whole output fit
    OUTPUT_CUT = "output_cut"  # the prompt is accepted, but the upsampled text would be cut short
    TOO_LONG = "too_long"  # vLLM rejects the prompt


@dataclass(frozen=True)
class TokenCount:
    """The exact prompt cost of N frames of one size plus a prompt."""

    frame_width: int  # size of the frames given to the model
    frame_height: int
    frames: int
    model_width: int  # size after mistral_common's downscale to the max image size
    model_height: int
    image_tokens: int  # all frames
    text_tokens: int  # prompt text + chat frame (BOS, [INST], [/INST])
    prompt_tokens: int  # image_tokens + text_tokens

    @property
    def tokens_per_frame(self) -> int:
        return self.image_tokens // self.frames


@dataclass(frozen=True)
class _ImageRule:
    cell_px: int  # image_patch_size × spatial_merge_size: pixels per image token, each way
    max_image_size: int


def tokenizer_path() -> Path:
    """Path of Pixtral's tokenizer file inside the installed mistral-common package."""
    import mistral_common

    return Path(mistral_common.__file__).resolve().parent / "data" / TOKENIZER_FILE


@functools.cache
def _tokenizer():
    # Imported here: mistral_common's import and the 19 MB tokenizer file cost ~3 s, paid only
    # by commands that count tokens.
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = tokenizer_path()
    if not path.is_file():
        raise CosmosError(
            f"Pixtral's tokenizer file is missing from mistral-common: {path}",
            "reinstall the tool's dependencies (pip install -U mistral-common)",
            code="tokenizer_missing",
        )
    return MistralTokenizer.from_file(str(path))


@functools.cache
def _image_rule() -> _ImageRule:
    encoder = _tokenizer().instruct_tokenizer.image_encoder
    if encoder is None:  # a text-only tokenizer file: cannot be Pixtral's
        raise CosmosError(f"{TOKENIZER_FILE} has no image configuration", code="tokenizer_missing")
    config = encoder.image_config
    return _ImageRule(
        cell_px=config.image_patch_size * config.spatial_merge_size,
        max_image_size=config.max_image_size,
    )


def max_image_size() -> int:
    """The model's max image side in pixels (1024): larger frames are scaled down to it."""
    return _image_rule().max_image_size


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise ValueError(f"frame size must be positive whole pixels, got {width}x{height}")


def model_image_size(width: int, height: int) -> tuple[int, int]:
    """The size mistral_common gives the model for a `width`×`height` frame.

    Same arithmetic as mistral_common's `ImageEncoder._image_to_num_tokens`, float division
    and Python's half-to-even `round` included, so every size rounds the same way.
    """
    _check_size(width, height)
    limit = _image_rule().max_image_size
    w: int = width
    h: int = height
    ratio = max(h / limit, w / limit)
    if ratio > 1:
        w = max(round(w / ratio), 1)
        h = max(round(h / ratio), 1)
    return w, h


def image_tokens_per_frame(width: int, height: int) -> int:
    """Tokens one `width`×`height` frame costs: rows × (patches per row + 1 break/end token)."""
    w, h = model_image_size(width, height)
    cell = _image_rule().cell_px
    return math.ceil(h / cell) * (math.ceil(w / cell) + 1)


def effective_prompt(prompt: str) -> str:
    """The text the model reads: `prompt`, or DEFAULT_PROMPT when it is empty or blank."""
    return prompt if prompt.strip() else DEFAULT_PROMPT


@functools.lru_cache(maxsize=256)
def text_tokens(prompt: str) -> int:
    """Tokens of the prompt text plus the chat frame (BOS, [INST], [/INST]).

    An empty or whitespace-only prompt counts as DEFAULT_PROMPT. Encoded with mistral_common's
    own chat encoder (a text-only request), so the frame is not hard-coded here.
    """
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    request = ChatCompletionRequest(messages=[UserMessage(content=effective_prompt(prompt))])
    return len(_tokenizer().encode_chat_completion(request).tokens)


def count_prompt_tokens(width: int, height: int, frames: int, prompt: str) -> TokenCount:
    """Exact prompt tokens of `frames` frames of `width`×`height` followed by `prompt`.

    Equals the prompt length vLLM reports for NVIDIA's message (images first, then the text).
    Example: 2 frames of 1280×720 cost 2 × 2,340 image tokens; with DEFAULT_PROMPT, 4,687.
    """
    _check_size(width, height)
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    model_w, model_h = model_image_size(width, height)
    image = frames * image_tokens_per_frame(width, height)
    text = text_tokens(prompt)
    return TokenCount(
        frame_width=width,
        frame_height=height,
        frames=frames,
        model_width=model_w,
        model_height=model_h,
        image_tokens=image,
        text_tokens=text,
        prompt_tokens=image + text,
    )


def verdict(prompt_tokens: int, max_model_len: int, output_tokens: int) -> Verdict:
    """`fits` if the prompt and `output_tokens` of output fit in `max_model_len`.

    `output_cut`: vLLM accepts the prompt but stops generating at `max_model_len`. `too_long`:
    vLLM rejects it — including a prompt of exactly `max_model_len`, since vLLM needs room for
    at least one generated token (v1 input processor, `_validate_prompt_len`).
    """
    if prompt_tokens < 0 or output_tokens < 0 or max_model_len < 1:
        raise ValueError(
            f"bad token budget: prompt {prompt_tokens}, output {output_tokens}, "
            f"max_model_len {max_model_len}"
        )
    if prompt_tokens + max(output_tokens, 1) <= max_model_len:
        return Verdict.FITS
    if prompt_tokens < max_model_len:
        return Verdict.OUTPUT_CUT
    return Verdict.TOO_LONG
