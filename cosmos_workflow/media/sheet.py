"""A contact sheet: the frames the model will read, in a labelled grid, as one PNG."""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from ..errors import MediaError
from ..fsutil import atomic_write_bytes

_COLUMNS = 4
_PAD = 8
_FONT_SIZE = 14
_BACKGROUND = (32, 32, 32)
_TEXT = (235, 235, 235)
# Frames are shown 1:1 so the sheet shows the pixels the model gets; only a frame wider than
# this is shown smaller (its label still says its real size).
_MAX_CELL_WIDTH = 1024
# Fonts that have "×" and "·", looked up in the system font folders; Pillow's built-in font is
# the fallback (it lacks "×", so such characters are spelled in ASCII there).
_FONTS = ("DejaVuSans.ttf", "Arial.ttf", "arial.ttf", "Helvetica.ttc", "LiberationSans-Regular.ttf")
_ASCII = {"×": "x", "·": "-", "…": "...", "—": "-", "–": "-"}


@functools.lru_cache(maxsize=1)
def _font() -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    for name in _FONTS:
        try:
            return ImageFont.truetype(name, _FONT_SIZE), True
        except OSError:
            continue
    return ImageFont.load_default(size=_FONT_SIZE), False


def _printable(text: str, font, full: bool) -> str:
    if full:
        return text
    missing = bytes(font.getmask("\uffff"))
    return "".join(
        _ASCII[ch] if ch in _ASCII and bytes(font.getmask(ch)) == missing else ch for ch in text
    )


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            picture = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise MediaError(f"cannot read image {path}: {exc}", None, code="media_corrupt") from None
    if picture.width > _MAX_CELL_WIDTH:
        height = max(1, round(picture.height * _MAX_CELL_WIDTH / picture.width))
        picture = picture.resize((_MAX_CELL_WIDTH, height), Image.Resampling.LANCZOS)
    return picture


def contact_sheet(images: list[Path], labels: list[str], out_path: Path) -> Path:
    """Write a PNG grid of `images` (up to 4 per row), each with its label underneath.

    For a preview of what the model gets, e.g. labels like "320×180 · 504 tokens". Frames are
    shown at their own pixel size. Written atomically; returns `out_path`.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    pictures = [_open(Path(p)) for p in images]
    font, full = _font()
    texts = [_printable(label, font, full) for label in labels]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_boxes = [probe.textbbox((0, 0), t, font=font) for t in texts]
    line_height = max(_FONT_SIZE, max(box[3] for box in text_boxes))

    columns = min(_COLUMNS, len(pictures))
    rows = -(-len(pictures) // columns)
    cell_width = max(max(p.width for p in pictures), max(box[2] for box in text_boxes))
    cell_height = max(p.height for p in pictures) + _PAD + line_height
    sheet = Image.new(
        "RGB",
        (_PAD + columns * (cell_width + _PAD), _PAD + rows * (cell_height + _PAD)),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for index, (picture, text) in enumerate(zip(pictures, texts, strict=True)):
        x = _PAD + (index % columns) * (cell_width + _PAD)
        y = _PAD + (index // columns) * (cell_height + _PAD)
        sheet.paste(picture, (x, y))
        draw.text((x, y + picture.height + _PAD // 2), text, font=font, fill=_TEXT)

    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return atomic_write_bytes(out_path, buffer.getvalue())
