"""One self-contained HTML page for a recorded run: what the model saw, what it wrote, at what cost.

The page loads nothing: thumbnails are data: URLs made from the frame cache (found by each
frame's sha256 in the cache manifests, and checked against it), styles and the one script are
inline, and a Content-Security-Policy forbids everything else (no network, no other script).

Every text from a run (prompts, names, paths, errors, host) is escaped: a prompt holding
`<script>` or `</textarea>` is shown as those characters. The one script only reports, on
<body>, how many images decoded (`data-images`, `data-images-decoded`, `data-ready`) so that a
headless browser's DOM dump can tell.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import html
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import tokens
from ..fsutil import sha256_file

GENERATOR = "cosmos-workflow report"
THUMBNAIL_PX = 360  # the longer side of an embedded frame

_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-decoded", String(decoded.length));
  document.body.setAttribute("data-ready", "1");
});
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 16px;
  color: #1d232a; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0; }
.meta { color: #58616b; margin: 0 0 12px; }
table.settings { border-collapse: collapse; margin: 8px 0 16px; }
table.settings td, table.settings th { border: 1px solid #d7dce1; padding: 2px 8px;
  text-align: left; font-weight: normal; }
table.settings th { color: #58616b; }
.item { border: 1px solid #d7dce1; border-radius: 6px; padding: 12px; margin: 12px 0; }
.item.failed { border-color: #d1242f; } .item.skipped { border-color: #bf8700; }
.head { display: flex; gap: 12px; align-items: baseline; flex-wrap: wrap; }
.status { font-weight: bold; text-transform: uppercase; font-size: 12px; }
.ok .status { color: #1a7f37; } .failed .status { color: #d1242f; }
.skipped .status { color: #bf8700; }
.frames { display: flex; gap: 8px; margin: 8px 0; flex-wrap: wrap; }
.frames figure { margin: 0; } .frames img { display: block; border: 1px solid #d7dce1; }
.frames figcaption { font-size: 11px; color: #58616b; }
.gone { color: #58616b; font-style: italic; }
.prompts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.prompt { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f8fa;
  border-radius: 4px; padding: 8px; margin: 4px 0 0; font: inherit; }
del { background: #ffebe9; color: #82071e; text-decoration: line-through; }
ins { background: #dafbe1; color: #116329; text-decoration: none; }
.bar { display: flex; height: 14px; border: 1px solid #afb8c1; border-radius: 3px;
  overflow: hidden; margin: 8px 0 2px; background: #fff; }
.bar span { display: block; height: 100%; }
.bar .image { background: #0969da; } .bar .text { background: #8250df; }
.bar .output { background: #1a7f37; }
.legend { font-size: 12px; color: #58616b; }
.cut { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; padding: 4px 8px;
  margin: 8px 0; }
.error { background: #ffebe9; border: 1px solid #d1242f; border-radius: 4px; padding: 6px 8px;
  margin: 8px 0; }
.hint { color: #58616b; }
"""


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def esc(value) -> str:
    """Text (any value) as HTML text or attribute value: never markup."""
    return html.escape("" if value is None else str(value), quote=True)


# -- the frame cache --------------------------------------------------------------------------


def find_frames(cache_roots: Iterable[str | Path | None], wanted: set[str]) -> dict[str, Path]:
    """sha256 → a PNG in the frame cache with that content, for as many of `wanted` as exist.

    Looks in each cache's entry manifests (`<root>/<source sha>/<W>x<H>-n<N>/manifest.json`,
    see media/cache.py) and checks each found file's hash: a frame replaced since is not shown
    as the one the model saw.
    """
    found: dict[str, Path] = {}
    for root in cache_roots:
        if root is None or not wanted - found.keys():
            continue
        for manifest_path in Path(root).glob("*/*/manifest.json"):
            try:
                manifest = json.loads(manifest_path.read_text("utf-8"))
                frames = manifest["frames"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for frame in frames if isinstance(frames, list) else []:
                try:
                    sha, name = frame["sha256"], frame["file"]
                except (KeyError, TypeError):
                    continue
                if sha in wanted and sha not in found:
                    path = manifest_path.parent / str(name)
                    try:
                        if sha256_file(path) == sha:
                            found[sha] = path
                    except OSError:
                        continue
    return found


def thumbnail_data_url(path: Path) -> str | None:
    """A JPEG thumbnail of the PNG at `path` as a data: URL; None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# -- pieces -----------------------------------------------------------------------------------


def word_diff(original: str, upsampled: str) -> tuple[str, str]:
    """Both prompts as HTML: words only in the original in <del>, only in the upsampled in
    <ins>. Words are compared without their whitespace; each is shown with its own."""
    a = re.findall(r"\s+|\S+\s*", original or "")
    b = re.findall(r"\s+|\S+\s*", upsampled or "")
    matcher = difflib.SequenceMatcher(None, [w.strip() for w in a], [w.strip() for w in b], False)
    left, right = [], []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        old, new = esc("".join(a[i1:i2])), esc("".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f"<del>{old}</del>")
        if new:
            right.append(f"<ins>{new}</ins>")
    return "".join(left), "".join(right)


def token_split(item: dict, max_model_len: int | None) -> dict | None:
    """Image, text and output tokens of an item against `max_model_len`; None when unknown."""
    prompt = _int(item.get("prompt_tokens_engine")) or _int(item.get("prompt_tokens_local"))
    width, height = _int(item.get("frame_width")), _int(item.get("frame_height"))
    if not prompt or not width or not height or not max_model_len or max_model_len < 1:
        return None
    try:
        image = tokens.image_tokens_per_frame(width, height) * (_int(item.get("frame_count")) or 0)
    except Exception:  # noqa: BLE001 - a size the tokenizer refuses: no split, still a total
        image = 0
    image = max(0, min(image, prompt))
    return {
        "image": image,
        "text": prompt - image,
        "output": max(0, _int(item.get("generated_tokens")) or 0),
        "max_model_len": max_model_len,
    }


def _token_bar(split: dict | None) -> str:
    if split is None:
        return '<p class="legend">token counts unknown</p>'
    total = split["max_model_len"]
    spans = []
    for part in ("image", "text", "output"):
        share = max(0.0, min(100.0, 100.0 * split[part] / total))
        spans.append(
            f'<span class="{part}" style="width:{share:.2f}%" title="{part}: {split[part]:,}">'
            "</span>"
        )
    used = split["image"] + split["text"] + split["output"]
    legend = (
        f"image {split['image']:,} · text {split['text']:,} · output {split['output']:,} "
        f"= {used:,} of max_model_len {total:,}"
    )
    return f'<div class="bar">{"".join(spans)}</div><p class="legend">{esc(legend)}</p>'


def _frames_html(item: dict, frames: dict[str, Path], tally: dict) -> str:
    hashes = [h for h in _list(item.get("frame_sha256")) if isinstance(h, str)]
    if not hashes:
        return '<p class="gone">no frames were sent for this item</p>'
    figures, missing = [], 0
    for n, sha in enumerate(hashes):
        url = thumbnail_data_url(frames[sha]) if sha in frames else None
        if url is None:
            missing += 1
            continue
        figures.append(
            f'<figure><img src="{esc(url)}" alt="frame {n}">'
            f"<figcaption>frame {n} · sha256 {esc(sha[:12])}</figcaption></figure>"
        )
    note = ""
    if missing:
        what = "frames" if missing == len(hashes) else f"{missing} of {len(hashes)} frames"
        note = f'<p class="gone">{what} no longer in the cache</p>'
    tally["shown"] += len(figures)
    tally["missing"] += missing
    return f'<div class="frames">{"".join(figures)}</div>{note}'


def _error_html(error: dict | None, label: str = "error") -> str:
    if not isinstance(error, dict):
        return ""
    hint = f'<div class="hint">hint: {esc(error.get("hint"))}</div>' if error.get("hint") else ""
    code = f" ({esc(error.get('code'))})" if error.get("code") else ""
    return f'<div class="error">{label}{code}: {esc(error.get("message"))}{hint}</div>'


def _item_html(item: dict, frames: dict[str, Path], max_model_len: int | None, tally) -> str:
    status = str(item.get("status") or "")
    size = (
        f"{item.get('frame_count')} × {item.get('frame_width')}×{item.get('frame_height')}"
        if item.get("frame_width")
        else "no frames"
    )
    original, upsampled = word_diff(
        item.get("original_prompt") or "", item.get("upsampled_prompt") or ""
    )
    if item.get("upsampled_prompt") is None:
        upsampled = '<span class="gone">no upsampled prompt</span>'
    cut = ""
    if item.get("finish_reason") == "length":
        cut = (
            '<div class="cut">output cut: the model stopped at its token limit '
            '(finish_reason "length")</div>'
        )
    label = "skipped" if status == "skipped" else "error"
    return f"""<section class="item {esc(status)}" data-item="{esc(item.get("id"))}">
<div class="head"><h2>{esc(item.get("name") or item.get("id"))}</h2>
<span class="status">{esc(status)}</span><span class="meta">{esc(size)}</span></div>
<p class="meta">input {esc(item.get("input"))} → output {esc(item.get("output") or "-")}</p>
{_frames_html(item, frames, tally)}
<div class="prompts">
<div><strong>original</strong><div class="prompt original">{original}</div></div>
<div><strong>upsampled</strong><div class="prompt upsampled">{upsampled}</div></div>
</div>
{_token_bar(token_split(item, max_model_len))}
{cut}{_error_html(item.get("error"), label)}
</section>"""


def _settings_table(run: dict) -> str:
    rows = [
        ("host", run.get("host")),
        ("mode", run.get("mode")),
        ("transport / runner", f"{run.get('transport')} / {run.get('runner')}"),
        ("model", run.get("model")),
        ("job", run.get("job_id")),
        ("started (UTC)", run.get("started_at")),
        ("duration", f"{run.get('duration_s')} s"),
    ]
    rows += [(f"{k}", v) for k, v in _dict(run.get("settings")).items()]
    rows += [(f"time: {k}", f"{v} s") for k, v in _dict(run.get("timings_s")).items()]
    rows.append(("save folder", run.get("save_dir")))
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="settings">{cells}</table>'


@dataclass(frozen=True)
class Report:
    html: str
    frames_shown: int  # thumbnails embedded
    frames_missing: int  # frames the model saw that are no longer in the cache


def build_report(run: dict, frame_caches: Iterable[str | Path | None] = ()) -> Report:
    """The HTML page for `run` (as `History.run()` gives it), thumbnails from `frame_caches`
    (the run's own cache first)."""
    items = [item for item in _list(run.get("items")) if isinstance(item, dict)]
    wanted = {
        sha for item in items for sha in _list(item.get("frame_sha256")) if isinstance(sha, str)
    }
    frames = find_frames([run.get("frame_cache"), *frame_caches], wanted) if wanted else {}
    max_model_len = _int(_dict(run.get("settings")).get("max_model_len"))
    counts = _dict(run.get("counts"))
    summary = (
        f"{counts.get('total', len(items))} item(s): {counts.get('ok', 0)} ok, "
        f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped"
    )
    load_errors = "".join(
        _error_html(error, "spec not read")
        for error in _list(run.get("load_errors"))
        if isinstance(error, dict)
    )
    title = f"cosmos run {run.get('id')} · {run.get('started_at') or ''}"
    tally = {"shown": 0, "missing": 0}
    body = "".join(_item_html(item, frames, max_model_len, tally) for item in items)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_STYLE}</style>
</head>
<body data-run="{esc(run.get("id"))}">
<h1>{esc(title)}</h1>
<p class="meta">{esc(summary)} · {esc(run.get("host"))} · {esc(run.get("model"))}</p>
{_settings_table(run)}
{load_errors}
{body}
<script>{_SCRIPT}</script>
</body></html>
"""
    return Report(page, tally["shown"], tally["missing"])


def is_report(path: Path) -> bool:
    """Whether `path` holds a page this module wrote (so writing over it loses nothing)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head
