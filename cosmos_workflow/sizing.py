"""Sizing: which frame size an item gets, and the token budget it must fit.

Pure functions over sizes and token counts (no I/O but the tokenizer that `tokens` loads on
first use): the size policy (`Resolution`), the run's budget (`Budget`), choosing a size
(`choose_size`, `largest_fitting_size`, `fit_in_box`), even rounding, and parsing the sizes and
aspect ratios users type. `tokens` owns the exact Pixtral count; this module owns the choices.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from . import tokens
from .errors import SpecError

_DECIMAL = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_RATIO_RE = re.compile(rf"^\s*({_DECIMAL})\s*[:/]\s*({_DECIMAL})\s*$")
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*[x×X]\s*([0-9]+)\s*$")
_NUMBER_RE = re.compile(rf"^\s*({_DECIMAL})\s*$")


def even(x: float) -> int:
    """`x` rounded to the nearest even number, at least 2 (frame sides the solver proposes)."""
    return max(2, 2 * round(x / 2))


def largest_fitting_size(
    aspect: float,
    frame_count: int,
    text_tokens: int,
    max_model_len: int,
    output_tokens: int,
    *,
    max_width: int | None = None,
    max_height: int | None = None,
) -> tuple[int, int] | None:
    """The largest even (width, height) of this aspect whose prompt `fits`, or None.

    Heights are tried in steps of 2 from the top down; the width is `height × aspect` rounded
    to an even number (at least 2). A size is a candidate only if neither side exceeds the
    model's max image size (1024: larger frames are scaled down and cost the same tokens) nor
    `max_width` / `max_height` (pass the source size: frames are never upscaled). `text_tokens`
    is `tokens.text_tokens(prompt)`. None if no candidate fits — or there is none, e.g. an aspect
    so wide that even a 2 px tall frame is wider than the max image size.
    """
    if not math.isfinite(aspect) or aspect <= 0:
        raise ValueError(f"aspect ratio must be a positive number, got {aspect}")
    if frame_count < 1:
        raise ValueError(f"frame count must be at least 1, got {frame_count}")
    if text_tokens < 0:
        raise ValueError(f"text tokens cannot be negative, got {text_tokens}")
    tokens.verdict(0, max_model_len, output_tokens)  # validates the budget
    limit = tokens.max_image_size()
    width_cap = limit if max_width is None else min(max_width, limit)
    height_cap = limit if max_height is None else min(max_height, limit)
    # Scanning every height (at most 512) finds the largest that fits without assuming that
    # tokens grow with height; each step is a few integer operations.
    for height in range(height_cap - height_cap % 2, 1, -2):
        width = even(height * aspect)
        if width > width_cap:
            continue
        prompt = frame_count * tokens.image_tokens_per_frame(width, height) + text_tokens
        if tokens.verdict(prompt, max_model_len, output_tokens) is tokens.Verdict.FITS:
            return width, height
    return None


def parse_aspect(text: str) -> float:
    """Aspect ratio (width / height) from "16:9", "16/9", "1.777" or "1280x720".

    Raises ValueError for anything else, or for a zero or non-finite ratio.
    """
    match = _RATIO_RE.match(text) or _SIZE_RE.match(text)
    if match:
        numerator, denominator = float(match.group(1)), float(match.group(2))
        if numerator > 0 and denominator > 0:
            return numerator / denominator
    elif (match := _NUMBER_RE.match(text)) and float(match.group(1)) > 0:
        return float(match.group(1))
    raise ValueError(f'aspect ratio {text!r} is not understood (use "16:9", "1.78" or "1280x720")')


def parse_size(text: str) -> tuple[int, int]:
    """(width, height) from "320x180" (also "320×180", "320 X 180"); ValueError otherwise."""
    match = _SIZE_RE.match(text)
    if match and int(match.group(1)) >= 1 and int(match.group(2)) >= 1:
        return int(match.group(1)), int(match.group(2))
    raise ValueError(f'frame size {text!r} is not understood (use a size like "320x180")')


@dataclass(frozen=True)
class Resolution:
    """How to choose the frame size the model gets.

    - `source`: the clip as it is (the model's own processor still caps the long side at 1024);
    - `auto`: the largest size that fits prompt + output in `max_model_len`, never upscaled;
    - a box `WxH`: scaled to fit inside W×H keeping the clip's aspect ratio, even dimensions;
    - a height `480`: like `auto` but at most that many pixels tall.
    """

    kind: str  # "source" | "auto" | "box" | "height"
    width: int = 0
    height: int = 0

    @classmethod
    def parse(cls, text: str) -> Resolution:
        value = text.strip().lower()
        if value in ("source", "auto"):
            return cls(value)
        try:
            height = int(value) if value.isdigit() else 0
        except ValueError:  # "²" is a digit int() refuses; so is a number over 4300 digits
            height = 0
        if height >= 2:
            return cls("height", height=height)
        try:
            width, height = parse_size(value)
        except ValueError:
            width = height = 0
        if width >= 2 and height >= 2:
            return cls("box", width, height)
        raise SpecError(
            f"resolution {text!r} is not understood",
            'use "source", "auto", a height like "480", or a size like "320x180"',
            code="bad_resolution",
        )

    def __str__(self) -> str:
        if self.kind == "box":
            return f"{self.width}x{self.height}"
        if self.kind == "height":
            return str(self.height)
        return self.kind


@dataclass(frozen=True)
class Budget:
    """The token budget of one run: context size, room for output, frames per item."""

    max_model_len: int
    output_tokens: int
    frame_count: int


def fit_in_box(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """Largest even size with the clip's aspect ratio inside the box (never upscaled)."""
    scale = min(box_width / width, box_height / height, 1.0)
    return even(width * scale), even(height * scale)


def choose_size(
    source: tuple[int, int], text_tokens: int, resolution: Resolution, budget: Budget
) -> tuple[int, int] | None:
    """The frame size to give the model for a clip of `source` size (None: nothing fits)."""
    width, height = source
    if resolution.kind == "source":
        return width, height
    if resolution.kind == "box":
        return fit_in_box(width, height, resolution.width, resolution.height)
    max_height = height if resolution.kind == "auto" else min(height, resolution.height)
    return largest_fitting_size(
        width / height,
        budget.frame_count,
        text_tokens,
        budget.max_model_len,
        budget.output_tokens,
        max_width=width,
        max_height=max_height,
    )
