"""Token preflight: the local count equals mistral_common's encoder, verdicts, and the solver.

The reference is `MistralTokenizer.encode_chat_completion` on real PIL images (the full image
path, which resizes with OpenCV: a dev dependency only), for the message NVIDIA's upsampler
sends: N image chunks, then the prompt text.
"""

from __future__ import annotations

import base64
import io
import itertools
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mistral_common.protocol.instruct.chunk import ImageChunk, ImageURLChunk, TextChunk
from mistral_common.protocol.instruct.messages import UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from PIL import Image

from cosmos_workflow import tokens
from cosmos_workflow.sizing import largest_fitting_size, parse_aspect, parse_size
from cosmos_workflow.tokens import (
    DEFAULT_PROMPT,
    Verdict,
    count_prompt_tokens,
    image_tokens_per_frame,
    text_tokens,
    verdict,
)

from .conftest import REPO

# -- the reference ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_tokenizer():
    """A tokenizer of its own (not the module's cached one), from the file vLLM uses."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    return MistralTokenizer.from_file(str(path))


def nvidia_text(prompt: str) -> str:
    """What the upsampler sends as text: empty or blank prompts become the default."""
    return prompt if prompt.strip() else "describe the following images"


def reference_prompt_tokens(tokenizer, images: list, prompt: str) -> int:
    content = [*images, TextChunk(text=nvidia_text(prompt))]
    request = ChatCompletionRequest(messages=[UserMessage(content=content)])
    return len(tokenizer.encode_chat_completion(request).tokens)


@pytest.fixture(scope="module")
def frame_image():
    cache: dict[tuple[int, int], Image.Image] = {}

    def make(width: int, height: int) -> Image.Image:
        if (width, height) not in cache:
            cache[(width, height)] = Image.new("RGB", (width, height), (90, 120, 200))
        return cache[(width, height)]

    return make


# -- the grid -----------------------------------------------------------------------------------

_RNG = random.Random(20261127)

_WORDS_TEXT = (
    "robot arm kitchen camera slowly pans across the bright workshop while a red cube rests on "
    "the shelf, light glints off steel; café naïve Straße façade 机器人 厨房 ロボット 🤖 🍳 "
    "déjà-vu über 12.5% (edge) [depth] {seg} — ∑∫ Ωmega"
)
_WORDS = _WORDS_TEXT.split()

_LONG_PROMPT = " ".join(_RNG.choice(_WORDS) for _ in range(4000))[:20_000]

PROMPTS = [
    "",
    "   \n\t ",
    DEFAULT_PROMPT,
    "A robot arm picks up a red cube and places it on a wooden shelf.",
    "  padded with spaces and a trailing newline \n",
    "Der Roboter öffnet die Tür; la caméra suit l'élan — très précis.",
    "机器人在厨房里切菜，镜头缓慢推进。ロボットが料理する。로봇이 요리한다.",
    "🤖🍳 cooking 👩‍🔬🧪 flags 🇯🇵🇫🇷 skin tones 👍🏽 and a lone surrogate-free 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "مرحبا بالعالم — שלום — e\u0301 combining accents, Ωmega ∑∫ ≠ ≤",
    "$(rm -rf /); `whoami` && echo \"hi\" | tee >/dev/null 'quoted' \\ back\\slash %s {0}",
    "line one\nline two\r\n\r\n\tline four\x0bvertical tab",
    "a",
    _LONG_PROMPT,
]

_FIXED_SIZES = [
    (1, 1),
    (2, 2),
    (15, 15),
    (16, 16),
    (17, 17),
    (31, 33),
    (320, 180),
    (321, 181),
    (180, 320),
    (640, 480),
    (480, 640),
    (960, 540),
    (1023, 1023),
    (1024, 576),
    (1024, 1024),
    (1025, 1024),
    (1024, 1025),
    (1280, 704),
    (1280, 720),
    (720, 1280),
    (1920, 1080),
    (2048, 1089),  # the long side halves to 544.5: Python rounds half to even (544, not 545)
    (2048, 1087),  # 543.5 rounds to 544
    (3840, 2160),
    (4096, 200),
    (200, 4096),
    (4096, 3),  # the short side scales to 0.75 px: rounds to 1
    (4096, 1),  # 0.25 px rounds to 0: kept at 1 px
    (1, 4096),
]

# Random sizes: small, typical, and beyond the max image size on one side (kept to a few
# megapixels so OpenCV's resize in the reference stays quick).
_RANDOM_SIZES = (
    [(_RNG.randint(1, 64), _RNG.randint(1, 64)) for _ in range(6)]
    + [(_RNG.randint(65, 1024), _RNG.randint(65, 1024)) for _ in range(14)]
    + [(_RNG.randint(1025, 3000), _RNG.randint(16, 1200)) for _ in range(4)]
    + [(_RNG.randint(16, 1200), _RNG.randint(1025, 3000)) for _ in range(4)]
)

SIZES = _FIXED_SIZES + _RANDOM_SIZES

GRID = [
    (size, frames, (index * 7) % len(PROMPTS))
    for index, (size, frames) in enumerate(itertools.product(SIZES, range(1, 5)))
]


def test_grid_is_large_and_covers_the_hard_cases():
    assert len(GRID) >= 200
    assert {frames for _, frames, _ in GRID} == {1, 2, 3, 4}
    assert {p for _, _, p in GRID} == set(range(len(PROMPTS)))
    assert any(max(size) > 1024 for size, _, _ in GRID)
    assert len(_LONG_PROMPT) == 20_000


@pytest.mark.parametrize(
    ("size", "frames", "prompt_index"),
    GRID,
    ids=[f"{w}x{h}-f{f}-p{p}" for (w, h), f, p in GRID],
)
def test_prompt_tokens_equal_mistral_encode_chat_completion(
    reference_tokenizer, frame_image, size, frames, prompt_index
):
    width, height = size
    prompt = PROMPTS[prompt_index]
    images = [ImageChunk(image=frame_image(width, height))] * frames
    expected = reference_prompt_tokens(reference_tokenizer, images, prompt)

    count = count_prompt_tokens(width, height, frames, prompt)

    assert count.prompt_tokens == expected
    assert count.image_tokens + count.text_tokens == count.prompt_tokens
    assert count.image_tokens == frames * image_tokens_per_frame(width, height)


def _png_data_url(width: int, height: int) -> ImageURLChunk:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (0, 128, 255)).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return ImageURLChunk(image_url=f"data:image/png;base64,{data}")


@pytest.mark.parametrize("size", [(320, 180), (1280, 720), (321, 181)])
def test_base64_frames_as_vllm_receives_them_count_the_same(reference_tokenizer, size):
    images = [_png_data_url(*size)] * 2
    prompt = "A robot arm picks up a red cube and places it on a wooden shelf."
    expected = reference_prompt_tokens(reference_tokenizer, images, prompt)
    assert count_prompt_tokens(*size, 2, prompt).prompt_tokens == expected


# -- numbers from DESIGN.md and ENGINE.md -------------------------------------------------------


def test_design_examples_960x540_and_320x180():
    assert count_prompt_tokens(960, 540, 2, "").image_tokens == 4_148
    assert image_tokens_per_frame(960, 540) == 34 * 61
    assert count_prompt_tokens(320, 180, 2, "").image_tokens == 504


def test_default_prompt_costs_seven_text_tokens():
    assert text_tokens("") == 7  # BOS, [INST], 4 text tokens, [/INST]
    assert text_tokens(DEFAULT_PROMPT) == 7
    assert count_prompt_tokens(320, 180, 2, "").prompt_tokens == 511


def test_engine_report_523_and_4699_for_a_16_token_prompt():
    # The real vLLM engine reported 523 (2 × 320×180) and 4,699 (2 × 1280×720) prompt tokens:
    # 19 text tokens, i.e. a prompt of 16 tekken tokens plus the 3-token chat frame.
    prompt = "A robot arm picks up a red cube and places it on a wooden shelf."
    assert text_tokens(prompt) == 19
    assert count_prompt_tokens(320, 180, 2, prompt).prompt_tokens == 523
    assert count_prompt_tokens(1280, 720, 2, prompt).prompt_tokens == 4_699


def test_1280x720_is_scaled_to_1024x576_before_counting():
    count = count_prompt_tokens(1280, 720, 2, DEFAULT_PROMPT)
    assert (count.frame_width, count.frame_height) == (1280, 720)
    assert (count.model_width, count.model_height) == (1024, 576)
    assert count.tokens_per_frame == 36 * 65
    assert count.prompt_tokens == 4_687
    # DESIGN.md's 4,689 is the same frames with a 6-token prompt.
    six_token_prompt = "Describe the following images."
    assert count_prompt_tokens(1280, 720, 2, six_token_prompt).prompt_tokens == 4_689


def test_blank_prompts_count_as_the_default_prompt():
    for blank in ("", " ", "\n", "\t \r\n"):
        assert text_tokens(blank) == text_tokens(DEFAULT_PROMPT)
    assert text_tokens(" x ") != text_tokens(DEFAULT_PROMPT)


def test_frames_beyond_the_max_image_size_cost_the_same_as_at_it():
    assert image_tokens_per_frame(4096, 2304) == image_tokens_per_frame(1024, 576)
    assert image_tokens_per_frame(2048, 2048) == image_tokens_per_frame(1024, 1024) == 64 * 65


def test_invalid_sizes_and_frame_counts_are_refused():
    for bad in [(0, 10, 1), (10, 0, 1), (-5, 10, 1), (10, 10, 0), (10.5, 10, 1)]:
        with pytest.raises(ValueError):
            count_prompt_tokens(*bad, "x")


def test_counting_needs_neither_opencv_nor_an_eager_tokenizer_load():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["cv2"] = None  # any `import cv2` now fails, as without OpenCV installed
        from cosmos_workflow import sizing, tokens
        assert "mistral_common.tokens.tokenizers.mistral" not in sys.modules, "loaded eagerly"
        print(tokens.count_prompt_tokens(1280, 720, 2, "").prompt_tokens)
        print(sizing.largest_fitting_size(16 / 9, 2, tokens.text_tokens(""), 4096, 300))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["4687", "(910, 512)"]


# -- verdicts -----------------------------------------------------------------------------------


def test_verdict_boundaries():
    assert verdict(4096 - 300, 4096, 300) is Verdict.FITS
    assert verdict(4096 - 300 + 1, 4096, 300) is Verdict.OUTPUT_CUT
    assert verdict(4095, 4096, 300) is Verdict.OUTPUT_CUT
    assert verdict(4097, 4096, 300) is Verdict.TOO_LONG


def test_a_prompt_of_exactly_max_model_len_is_too_long():
    # vLLM refuses it: no room for even one generated token.
    assert verdict(4096, 4096, 300) is Verdict.TOO_LONG
    assert verdict(4096, 4096, 0) is Verdict.TOO_LONG
    assert verdict(4095, 4096, 0) is Verdict.FITS


def test_verdict_values_are_the_json_strings():
    assert [v.value for v in Verdict] == ["fits", "output_cut", "too_long"]
    assert Verdict("output_cut") is Verdict.OUTPUT_CUT


def test_verdict_refuses_negative_budgets():
    with pytest.raises(ValueError):
        verdict(-1, 4096, 300)
    with pytest.raises(ValueError):
        verdict(10, 0, 300)


# -- the solver ---------------------------------------------------------------------------------


def _fits(width, height, frames, text, max_model_len, output_tokens) -> bool:
    prompt = frames * image_tokens_per_frame(width, height) + text
    return verdict(prompt, max_model_len, output_tokens) is Verdict.FITS


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


SOLVER_CASES = [
    (aspect, frames, max_model_len)
    for aspect in (16 / 9, 4 / 3, 1.0, 9 / 16, 2.39, 1280 / 704, 321 / 181, 8.0, 1 / 8)
    for frames in (1, 2, 4)
    for max_model_len in (1024, 2048, 4096, 8192, 32768)
]


@pytest.mark.parametrize(("aspect", "frames", "max_model_len"), SOLVER_CASES)
def test_solver_returns_the_largest_even_size_that_fits(aspect, frames, max_model_len):
    text = text_tokens("")
    size = largest_fitting_size(aspect, frames, text, max_model_len, 300)
    assert size is not None
    width, height = size
    assert width % 2 == 0 and height % 2 == 0
    assert width == _even(height * aspect)
    assert max(width, height) <= 1024
    assert _fits(width, height, frames, text, max_model_len, 300)
    # No taller candidate fits: each either costs too much or leaves the max image size.
    for taller in range(height + 2, 1025, 2):
        wider = _even(taller * aspect)
        assert wider > 1024 or not _fits(wider, taller, frames, text, max_model_len, 300)


def test_solver_16_9_for_4096_context_and_2_frames():
    size = largest_fitting_size(16 / 9, 2, text_tokens(""), 4096, 300)
    assert size == (910, 512)
    assert count_prompt_tokens(*size, 2, "").prompt_tokens == 3_719
    # One step taller no longer fits: 914×514 costs 2 × 33 × 59 + 7 = 3,901 > 3,796.
    assert not _fits(914, 514, 2, 7, 4096, 300)


def test_solver_stops_at_the_max_image_size_when_everything_fits():
    assert largest_fitting_size(16 / 9, 2, 7, 32768, 300) == (1024, 576)
    assert largest_fitting_size(4 / 3, 2, 7, 32768, 300) == (1024, 768)
    assert largest_fitting_size(9 / 16, 2, 7, 32768, 300) == (576, 1024)


@pytest.mark.parametrize("source", [(640, 480), (321, 181), (1280, 704), (181, 321), (4, 2)])
def test_solver_never_upscales_the_source(source):
    width, height = source
    size = largest_fitting_size(
        width / height, 2, 7, 32768, 300, max_width=width, max_height=height
    )
    assert size is not None
    assert size[0] <= width and size[1] <= height
    assert size[0] % 2 == 0 and size[1] % 2 == 0
    if width % 2 == 0 and height % 2 == 0 and max(source) <= 1024:
        assert size == source  # everything fits at 32k: the source itself, not more


def test_solver_limits_a_big_source_by_tokens_not_by_its_size():
    size = largest_fitting_size(1280 / 720, 2, 7, 4096, 300, max_width=1280, max_height=720)
    assert size == (910, 512)


def test_solver_returns_none_when_nothing_fits():
    assert largest_fitting_size(16 / 9, 2, 7, 300, 300) is None
    assert largest_fitting_size(16 / 9, 2, 5000, 4096, 300) is None
    assert largest_fitting_size(4 / 3, 2, 7, 4096, 300, max_width=1, max_height=1) is None
    # So wide that a 2 px tall frame is already wider than the max image size.
    assert largest_fitting_size(600.0, 1, 7, 32768, 300) is None


def test_solver_finds_a_one_row_frame_when_only_that_fits():
    # Room for exactly one 1-row frame of 2 tokens (1 patch + the end token): 16×16; a
    # budget of 1 token fits nothing, not even 2×2.
    assert largest_fitting_size(1.0, 1, 7, 7 + 2 + 300, 300) == (16, 16)
    assert largest_fitting_size(1.0, 1, 7, 7 + 1 + 300, 300) is None


def test_solver_refuses_nonsense_arguments():
    for aspect in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            largest_fitting_size(aspect, 2, 7, 4096, 300)
    with pytest.raises(ValueError):
        largest_fitting_size(16 / 9, 0, 7, 4096, 300)


def test_limits_table_for_the_readme():
    text = text_tokens("")
    table = {
        (max_model_len, name): largest_fitting_size(aspect, 2, text, max_model_len, 300)
        for max_model_len in (4096, 8192, 16384, 32768)
        for name, aspect in (("16:9", 16 / 9), ("4:3", 4 / 3))
    }
    assert table == {
        (4096, "16:9"): (910, 512),
        (4096, "4:3"): (790, 592),
        (8192, "16:9"): (1024, 576),
        (8192, "4:3"): (1024, 768),
        (16384, "16:9"): (1024, 576),
        (16384, "4:3"): (1024, 768),
        (32768, "16:9"): (1024, 576),
        (32768, "4:3"): (1024, 768),
    }


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16:9", 16 / 9),
        (" 4 : 3 ", 4 / 3),
        ("16/9", 16 / 9),
        ("1.777", 1.777),
        ("2", 2.0),
        (".5", 0.5),
        ("1280x720", 1280 / 720),
        ("1280×720", 1280 / 720),
        ("2.39:1", 2.39),
    ],
)
def test_parse_aspect_accepts_ratios_numbers_and_sizes(text, expected):
    assert parse_aspect(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["", "wide", "16:0", "0:9", "0", "-1.5", "nan", "inf", "1e3", "16:9:1", "x720", "1_0"]
)
def test_parse_aspect_refuses_garbage(text):
    with pytest.raises(ValueError):
        parse_aspect(text)


def test_parse_size():
    assert parse_size("320x180") == (320, 180)
    assert parse_size(" 1280 × 720 ") == (1280, 720)
    assert parse_size("640X480") == (640, 480)
    for bad in ("320", "0x180", "320x0", "320x", "-320x180", "320.5x180", "320x180x2", "abc"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_tokenizer_file_is_the_one_in_mistral_common():
    assert tokens.tokenizer_path().name == "tekken_240911.json"
    assert tokens.tokenizer_path().is_file()
