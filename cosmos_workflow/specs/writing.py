"""Writing upsampled specs: output names, the JSON of an upsampled spec, atomic writes."""

from __future__ import annotations

import copy
import hashlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from ..errors import SpecError
from ..fsutil import atomic_write_bytes, json_bytes
from .model import PromptSpec, SpecFormat
from .paths import rewrite_path

_UNSAFE_CHARS_RE = re.compile(r"[^\w.-]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{d}{i}" for d in ("com", "lpt") for i in range(10)
}
_MAX_STEM_BYTES = 120


def safe_file_stem(name: str) -> str:
    """`name` as a file name stem that cannot leave its folder.

    Path separators, `..`, control characters and shell-unfriendly characters become `_`;
    leading dots are dropped (no hidden files, no `..`); letters of any script are kept.
    """
    stem = _UNSAFE_CHARS_RE.sub("_", name).strip("._")
    while len(stem.encode("utf-8")) > _MAX_STEM_BYTES:
        stem = stem[:-1]
    stem = stem.rstrip("._") or "spec"
    if stem.lower().split(".")[0] in _WINDOWS_RESERVED:
        stem = f"{stem}_"
    return stem


def output_names(specs, *, out_dir: Path | None = None) -> list[str]:
    """Output file names (`<name>.json`, made safe) for `specs`, one each, in order.

    Raises `SpecError` when two specs would write the same file (compared case-insensitively,
    as on macOS and Windows) or, given `out_dir`, when an output would replace an input spec
    (its own, or another one of `specs`).
    """
    names = [f"{safe_file_stem(spec.name)}.json" for spec in specs]
    first_by_key: dict[str, int] = {}
    for index, name in enumerate(names):
        key = name.casefold()
        if key in first_by_key:
            other = specs[first_by_key[key]]
            spec = specs[index]
            source = spec.path or spec.video
            if source is not None and source == (other.path or other.video):
                # "X and X would both be written as …" would leave the user puzzled.
                raise SpecError(
                    f"{source} is given twice (on its own, or also through its folder)",
                    "give each spec once",
                    code="duplicate_input",
                )
            raise SpecError(
                f"{spec.path or spec.video} and {other.path or other.video} would both be "
                f"written as {name}",
                "give the specs distinct names, or upsample them into separate folders",
                code="name_collision",
            )
        first_by_key[key] = index
    if out_dir is not None:
        out = Path(os.path.abspath(out_dir))
        inputs = {os.path.normcase(spec.path): spec.path for spec in specs if spec.path}
        for name in names:
            replaced = inputs.get(os.path.normcase(os.path.abspath(out / name)))
            if replaced is not None:
                raise SpecError(
                    f"writing {name} into {out} would replace the input spec {replaced}",
                    "choose another --save-dir: input specs are never modified",
                    code="would_overwrite_input",
                )
    return names


def _new_id(spec: PromptSpec, text: str) -> str:
    """`ps_` + 12 hex: deterministic from the parent (id, else file or video) and the text."""
    parent = spec.id or str(spec.path or spec.video or spec.name)
    digest = hashlib.sha256(f"{parent}\0{text}".encode()).hexdigest()
    return f"ps_{digest[:12]}"


def upsampled_spec(
    spec: PromptSpec, text: str, *, out_dir: Path, now: datetime | None = None
) -> dict:
    """The JSON to write for `spec` with its prompt replaced by the upsampled `text`.

    NVIDIA spec: the same object with only `prompt` replaced (key order kept), so transfer.py
    still loads it; paths stay relative to the checkout and no lineage is added (transfer.py
    rejects unknown objects; lineage belongs in the run record).

    Seed spec (or a bare video): a new spec with id `ps_<12 hex>` (deterministic from the
    parent and `text`), `is_upsampled: true`, `parent_prompt_text` = the prompt that was sent,
    a UTC timestamp (`now`, for tests), the name kept, and media paths rewritten so they
    resolve from `out_dir` (see `rewrite_path`). Unknown keys of the input are kept.
    """
    if spec.format is SpecFormat.NVIDIA:
        data = copy.deepcopy(spec.raw)
        data["prompt"] = text
        return data
    out = Path(os.path.abspath(out_dir))
    raw = spec.raw
    video_text = raw.get("input_video_path")
    controls = raw.get("control_inputs") or {}
    written_controls = {}
    for control, control_text in controls.items():
        if control_text is None:
            written_controls[control] = None
            continue
        found = spec.control_inputs.get(control)
        resolved = None if found is None or control in spec.control_errors else Path(found)
        written_controls[control] = rewrite_path(control_text, resolved, spec, out)
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    data = {
        "id": _new_id(spec, text),
        "name": spec.name,
        "prompt": text,
        "negative_prompt": spec.negative_prompt,
        "input_video_path": (
            None if video_text is None else rewrite_path(video_text, spec.video, spec, out)
        ),
        "control_inputs": written_controls,
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "is_upsampled": True,
        "parent_prompt_text": spec.prompt,
    }
    for key, value in raw.items():
        if key not in data:
            data[key] = copy.deepcopy(value)
    return data


def spec_bytes(data: dict) -> bytes:
    """The exact bytes `write_spec` writes for `data`."""
    if not isinstance(data, dict):
        raise TypeError("a spec is a dict")
    return json_bytes(data)


def write_spec(path: Path, data: dict) -> Path:
    """Write a spec atomically (UTF-8, non-ASCII kept as is); returns the path."""
    return atomic_write_bytes(path, spec_bytes(data))
