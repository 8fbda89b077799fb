"""Reading and validating spec files and folders of specs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PureWindowsPath

from ..errors import SpecError
from .model import HINT_KEYS, SEED_ONLY_KEYS, PromptSpec, SpecFormat
from .outputs import LEDGER_KIND, LEDGER_NAME, OutputLedger
from .paths import is_windows_path, resolve_media

# `cosmos upsample` writes its run record (run.json) beside the specs it writes; a folder load
# passes over such records instead of reporting them as broken specs.
RUN_RECORD_KIND = "cosmos-run-record"

# A spec is a few kB; anything this big is not one (and is not worth reading into memory).
_MAX_SPEC_BYTES = 16 * 1024 * 1024
# A spec is an object of strings and one level of control objects. Deeper nesting is refused
# before anything else walks it: json (and later json.dumps when a spec is written) recurses
# once per level, and Python's recursion limit (~1000 frames, part of them the CLI's own) is
# not a limit an input may reach.
_MAX_SPEC_DEPTH = 64


def _fail(path: Path, reason: str, hint: str | None = None, code: str = "bad_spec") -> SpecError:
    return SpecError(f"{path}: {reason}", hint, code=code)


def _read_json(path: Path) -> dict:
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):
            # Reading a named pipe would block until someone writes to it: refuse it instead.
            raise _fail(
                path,
                "is not a regular file (a device, pipe or socket)",
                "give a spec .json file",
            )
        size = st.st_size
        if size > _MAX_SPEC_BYTES:
            raise _fail(
                path,
                f"too large for a prompt spec ({size} bytes)",
                "a spec is a small JSON file; is this the right file?",
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise _fail(
            path,
            "no such file",
            "check the path; give a spec .json, a folder of specs or a video",
            code="spec_not_found",
        ) from None
    except IsADirectoryError:
        raise _fail(
            path, "is a folder, not a spec file", "pass spec .json files, or folders of them"
        ) from None
    except OSError as exc:
        raise _fail(
            path, f"cannot be read ({exc.strerror or exc})", "check the file's permissions"
        ) from None
    try:
        # utf-8-sig: editors on Windows like to prepend a byte-order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            path,
            f"is not UTF-8 text (byte {exc.start})",
            "save the file as UTF-8 (JSON files must be UTF-8)",
            code="bad_json",
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(
            path,
            f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})",
            "fix the JSON syntax (a missing comma or quote is the usual cause)",
            code="bad_json",
        ) from None
    except RecursionError:
        raise _too_deep(path) from None
    except ValueError as exc:
        # Not a syntax error: an integer literal over Python's 4300-digit conversion limit.
        raise _fail(
            path,
            f"holds a number JSON cannot hold sensibly ({str(exc).split(':')[0]})",
            "a spec holds text and paths; remove the oversized number",
            code="bad_json",
        ) from None
    if _depth_exceeds(obj, _MAX_SPEC_DEPTH):
        raise _too_deep(path)
    if not isinstance(obj, dict):
        raise _fail(
            path,
            f"a spec must be a JSON object, not {type(obj).__name__}",
            'a spec file holds one object: {"prompt": ..., "input_video_path": ...}',
        )
    return obj


def _too_deep(path: Path) -> SpecError:
    return _fail(
        path,
        f"nested more than {_MAX_SPEC_DEPTH} levels deep; a prompt spec is a flat object",
        'a spec file holds one object: {"prompt": ..., "input_video_path": ...}',
        code="bad_json",
    )


def _depth_exceeds(obj: object, limit: int) -> bool:
    """True if lists/objects nest more than `limit` levels (iterative: no recursion to hit)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False


def _text(path: Path, obj: dict, key: str, *, required: bool = False) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise _fail(
                path,
                f'has no "{key}"',
                f'add a "{key}" string (an empty one lets the upsampler describe the video)',
            )
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise _fail(
            path,
            f'"{key}" must be a string, not {type(value).__name__}',
            f'write "{key}" as a JSON string, in double quotes',
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(
            path,
            f'"{key}" holds an unpaired UTF-16 surrogate (\\ud8xx escape)',
            "an emoji written as \\u escapes needs both halves of its surrogate pair",
        ) from None
    return value


def _seed_controls(path: Path, obj: dict) -> dict[str, str]:
    value = obj.get("control_inputs")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(
            path,
            f'"control_inputs" must be an object, not {type(value).__name__}',
            'write it as {"edge": "path/to/edge.mp4", ...}',
        )
    controls = {}
    for name, control_path in value.items():
        if control_path is None:
            continue
        if not isinstance(control_path, str):
            raise _fail(
                path,
                f'"control_inputs.{name}" must be a path string',
                f'write "{name}" as a path in double quotes, or null',
            )
        controls[name] = control_path
    return controls


def _nvidia_controls(path: Path, obj: dict) -> dict[str, str]:
    controls = {}
    for key, value in obj.items():
        if key in HINT_KEYS:
            if not isinstance(value, dict):
                raise _fail(
                    path,
                    f'hint "{key}" must be an object, not {type(value).__name__}',
                    f'write it as "{key}": {{"control_weight": 1.0}} (NVIDIA\'s layout)',
                )
            control_path = value.get("input_control")
            if control_path is None:
                continue
            if not isinstance(control_path, str):
                raise _fail(
                    path,
                    f'"{key}.input_control" must be a path string',
                    "write it as a path in double quotes, or leave it out",
                )
            controls[key] = control_path
        elif isinstance(value, dict):
            raise _fail(
                path,
                f'unknown key "{key}" holds an object; NVIDIA\'s transfer.py rejects it',
                f"hint keys are {', '.join(HINT_KEYS)}; rename or remove {key!r}",
            )
    return controls


def _spec_format(obj: dict) -> SpecFormat:
    return SpecFormat.SEED if SEED_ONLY_KEYS & obj.keys() else SpecFormat.NVIDIA


def load_spec(path: Path, *, videos_dir: Path | str | None = None) -> PromptSpec:
    """Read and validate one spec file; raises `SpecError` (path + one-line reason) if broken.

    A video or control input that cannot be found does not raise: it is reported in
    `video_error` / `control_errors`. `videos_dir` (`[paths] local_videos_dir`) is one more
    place relative media paths are looked for, after the others; None: none.
    """
    videos_dir = Path(videos_dir) if videos_dir is not None else None
    path = Path(os.path.abspath(path))
    obj = _read_json(path)
    if obj.get("kind") == RUN_RECORD_KIND:
        raise _fail(
            path,
            "is a cosmos run record, not a prompt spec",
            "give the prompt specs (run.json only records what a run did)",
            code="run_record",
        )
    if obj.get("kind") == LEDGER_KIND:
        raise _fail(
            path,
            f"is cosmos' list of the outputs it wrote ({LEDGER_NAME}), not a prompt spec",
            "give the prompt specs",
            code="run_record",
        )
    spec_format = _spec_format(obj)
    prompt = _text(path, obj, "prompt", required=True)
    negative_prompt = _text(path, obj, "negative_prompt")
    video_text = _text(path, obj, "input_video_path")
    if spec_format is SpecFormat.SEED:
        spec_id = _text(path, obj, "id")
        name = _text(path, obj, "name") or path.stem
        _text(path, obj, "timestamp")
        _text(path, obj, "parent_prompt_text")
        is_upsampled = obj.get("is_upsampled")
        is_upsampled = False if is_upsampled is None else is_upsampled
        if not isinstance(is_upsampled, bool):
            raise _fail(
                path, '"is_upsampled" must be true or false', "write true or false, without quotes"
            )
        written_controls = _seed_controls(path, obj)
    else:
        spec_id, name, is_upsampled = None, path.stem, False
        written_controls = _nvidia_controls(path, obj)

    if video_text is None:
        video, video_error = (
            None,
            SpecError(
                f"{path}: has no input_video_path",
                "the upsampler looks at the video's first frames: add input_video_path",
                code="no_video",
            ),
        )
    else:
        video, video_error = resolve_media(
            video_text,
            key="input_video_path",
            spec_path=path,
            spec_format=spec_format,
            videos_dir=videos_dir,
        )
    controls: dict[str, str] = {}
    control_errors: dict[str, SpecError] = {}
    for control, text in written_controls.items():
        found, error = resolve_media(
            text,
            key=f"control input {control!r}",
            spec_path=path,
            spec_format=spec_format,
            videos_dir=videos_dir,
        )
        controls[control] = str(found) if found is not None else text
        if error is not None:
            control_errors[control] = error
    return PromptSpec(
        path=path,
        format=spec_format,
        id=spec_id,
        name=name,
        prompt=prompt,
        negative_prompt=negative_prompt,
        video=video,
        video_error=video_error,
        control_inputs=controls,
        is_upsampled=is_upsampled,
        raw=obj,
        control_errors=control_errors,
    )


def _spec_files(folder: Path, recursive: bool) -> list[Path]:
    """`*.json` in `folder` (and below), hidden files and folders skipped, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        for name in files:
            if name.lower().endswith(".json") and not name.startswith("."):
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def load_specs(
    inputs: list[Path],
    *,
    recursive: bool = False,
    passed_over: list[dict] | None = None,
    videos_dir: Path | str | None = None,
) -> tuple[list[PromptSpec], list[SpecError]]:
    """Load spec files and folders of specs (`*.json`; `recursive=True` descends).

    Returns the specs that loaded, in input order (folders sorted by path), and one `SpecError`
    per input that did not (its message starts with the path). A folder without any spec is an
    error too.

    In folders, files cosmos wrote are not inputs: its run records (run.json, runs/*.json) and
    the outputs its ledger lists (`specs.outputs`). They are appended to `passed_over` as
    `{"path", "reason"}`. A file named on its own is always an input. `videos_dir`: as in
    `load_spec`.
    """
    specs: list[PromptSpec] = []
    errors: list[SpecError] = []
    passed_over = [] if passed_over is None else passed_over
    ledgers: dict[Path, OutputLedger] = {}
    for item in inputs:
        item = Path(item)
        try:
            is_dir = item.is_dir()
        except OSError as exc:  # a name over 255 bytes, a path over PATH_MAX, …
            errors.append(
                _fail(
                    item,
                    f"cannot be looked up ({exc.strerror or exc})",
                    "check the path; give a spec .json, a folder of specs or a video",
                    code="spec_not_found",
                )
            )
            continue
        if is_dir:
            files = _spec_files(item, recursive)
            if not files:
                errors.append(
                    _fail(
                        item,
                        "no *.json prompt specs in this folder"
                        + ("" if recursive else " (subfolders not searched)"),
                        "put spec .json files there, give another folder"
                        + ("" if recursive else ", or use --recursive"),
                        code="no_specs",
                    )
                )
        else:
            files = [item]
        for file in files:
            if file is not item:
                ledger = ledgers.get(file.parent) or OutputLedger.load(file.parent)
                ledgers[file.parent] = ledger
                if ledger.lists(file.name):
                    reason = f"written by cosmos upsample (listed in {LEDGER_NAME})"
                    passed_over.append({"path": str(file), "reason": reason})
                    continue
            try:
                specs.append(load_spec(file, videos_dir=videos_dir))
            except SpecError as exc:
                if exc.code == "run_record" and file is not item:
                    passed_over.append({"path": str(file), "reason": "a cosmos run record"})
                else:
                    errors.append(exc)
    return specs, errors


def spec_for_video(video: Path, prompt: str) -> PromptSpec:
    """A bare video given on the command line, as a seed-format spec without a file."""
    text = str(video)
    found, error = resolve_media(text, key="video", spec_path=None, spec_format=SpecFormat.SEED)
    stem = PureWindowsPath(text).stem if is_windows_path(text) else Path(text).stem
    raw = {
        "name": stem,
        "prompt": prompt,
        "negative_prompt": None,
        "input_video_path": text,
        "control_inputs": {},
    }
    return PromptSpec(
        path=None,
        format=SpecFormat.SEED,
        id=None,
        name=stem,
        prompt=prompt,
        video=found,
        video_error=error,
        raw=raw,
    )
