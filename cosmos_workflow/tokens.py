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

Pure functions. The only I/O is loading the tokenizer file, once per process, on first use —
and, when the caller names one (`use_count_cache`), a small file of counts already made: a
repeat count of the same text, with the same tokenizer file and mistral-common version, is read
from it and the tokenizer (~1.5 s to load) is not loaded at all.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import os
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import CosmosError
from .fsutil import atomic_write_json

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
    """Path of Pixtral's tokenizer file inside the installed mistral-common package.

    Found without importing mistral_common (its import alone costs ~0.05 s).
    """
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        raise CosmosError(
            "mistral-common is not installed",
            "reinstall the tool's dependencies (pip install -U mistral-common)",
            code="tokenizer_missing",
        )
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    return package / "data" / TOKENIZER_FILE


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
    stored = _counts().image_rule()
    if stored is not None:
        return stored
    encoder = _tokenizer().instruct_tokenizer.image_encoder
    if encoder is None:  # a text-only tokenizer file: cannot be Pixtral's
        raise CosmosError(f"{TOKENIZER_FILE} has no image configuration", code="tokenizer_missing")
    config = encoder.image_config
    rule = _ImageRule(
        cell_px=config.image_patch_size * config.spatial_merge_size,
        max_image_size=config.max_image_size,
    )
    _counts().remember(image_rule=rule)
    return rule


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
    own chat encoder (a text-only request), so the frame is not hard-coded here; a count made
    before is read from the count cache (`use_count_cache`), when there is one.
    """
    text = effective_prompt(prompt)
    stored = _counts().text(text)
    if stored is not None:
        return stored
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    request = ChatCompletionRequest(messages=[UserMessage(content=text)])
    count = len(_tokenizer().encode_chat_completion(request).tokens)
    _counts().remember(text=(text, count))
    return count


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


# -- the count cache ----------------------------------------------------------------------------

# Bump when what a stored count means changes (the request encoded, the image rule's fields).
COUNT_CACHE_FORMAT = 1
# Texts remembered (oldest dropped first): a file of ~100 KB, read in about a millisecond.
MAX_CACHED_TEXTS = 1024


class _CountCache:
    """Counts already made, in one JSON file, valid for one tokenizer file and library version.

    {"identity": {...}, "image_rule": {"cell_px", "max_image_size"}, "texts": {sha256: n}}.
    Texts are keyed by the sha256 of the exact text encoded. The identity is the tokenizer
    file's path, size, mtime and inode and mistral-common's version (a reinstall or an upgrade
    writes a new file, so either changes it), plus COUNT_CACHE_FORMAT: when it differs, the file
    is ignored and replaced. A file that cannot be read or parsed is ignored; one that cannot
    be written is not written. A count is never wrong because of the cache — at worst it is made
    again.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._identity: dict | None = None
        self._data: dict | None = None

    def identity(self) -> dict:
        if self._identity is None:
            tokenizer = tokenizer_path()
            st = tokenizer.stat()
            self._identity = {
                "format": COUNT_CACHE_FORMAT,
                "tokenizer": str(tokenizer),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "inode": st.st_ino,
                "mistral_common": _mistral_common_version(tokenizer),
            }
        return self._identity

    def _read(self) -> dict:
        """The file's entries when they belong to this identity, else empty ones."""
        empty: dict = {"texts": {}}
        if self.path is None:
            return empty
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if not isinstance(data, dict) or data.get("identity") != self.identity():
                return empty
            texts = data.get("texts")
            if not isinstance(texts, dict):
                return empty
            return {**data, "texts": texts}
        except (OSError, ValueError):
            return empty
        except CosmosError:  # no tokenizer file to identify: nothing cached can be trusted
            return empty

    def _loaded(self) -> dict:
        if self._data is None:
            self._data = self._read()
        return self._data

    def text(self, text: str) -> int | None:
        if self.path is None:
            return None
        with self._lock:
            count = self._loaded()["texts"].get(_text_key(text))
        return count if _positive_int(count) else None

    def image_rule(self) -> _ImageRule | None:
        if self.path is None:
            return None
        with self._lock:
            rule = self._loaded().get("image_rule")
        if not isinstance(rule, dict):
            return None
        cell_px, max_size = rule.get("cell_px"), rule.get("max_image_size")
        if not (_positive_int(cell_px) and _positive_int(max_size)):
            return None
        return _ImageRule(cell_px=cell_px, max_image_size=max_size)

    def remember(
        self, *, text: tuple[str, int] | None = None, image_rule: _ImageRule | None = None
    ) -> None:
        """Add a count (or the image rule) and write the file, merged with what another process
        may have written since it was read."""
        if self.path is None:
            return
        with self._lock:
            try:
                identity = self.identity()
            except (OSError, CosmosError):
                return
            current = self._read()  # another `cosmos` may have added counts meanwhile
            texts = {**current["texts"], **self._loaded()["texts"]}
            rule = self._loaded().get("image_rule") or current.get("image_rule")
            if text is not None:
                key = _text_key(text[0])
                texts.pop(key, None)  # re-inserted last: the newest is dropped last
                texts[key] = text[1]
            if image_rule is not None:
                rule = {"cell_px": image_rule.cell_px, "max_image_size": image_rule.max_image_size}
            while len(texts) > MAX_CACHED_TEXTS:
                del texts[next(iter(texts))]
            self._data = {"identity": identity, "texts": texts}
            if rule is not None:
                self._data["image_rule"] = rule
            # Only a cache: a read-only or full disk means counting again next time.
            with contextlib.suppress(OSError):
                atomic_write_json(self.path, self._data)


_count_cache = _CountCache(None)


def use_count_cache(path: str | os.PathLike | None) -> None:
    """Remember counts across processes in the JSON file `path` (None: keep none).

    Process-wide, like the tokenizer it stands in for. The caller chooses the place (the
    orchestrator uses its cache folder); the file is only a cache (see `_CountCache`).
    """
    global _count_cache
    _count_cache = _CountCache(None if path is None else Path(path))


def _counts() -> _CountCache:
    return _count_cache


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _mistral_common_version(tokenizer: Path) -> str:
    """mistral-common's version from its dist-info folder's name (no import, no metadata scan:
    importlib.metadata costs ~40 ms), else from importlib.metadata."""
    site = tokenizer.parent.parent.parent  # …/site-packages/mistral_common/data/<file>
    found = list(site.glob("mistral_common-*.dist-info"))
    if len(found) == 1:
        return found[0].name[len("mistral_common-") : -len(".dist-info")]
    from importlib.metadata import version

    return version("mistral-common")
