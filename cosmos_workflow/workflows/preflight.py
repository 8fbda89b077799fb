"""Preflight: load specs, check their exact tokens, the limits table, prepare frames.

Everything here runs on the user's machine, without a GPU and without network traffic. The
size policy and the budget are `sizing`'s; the exact counts are `tokens`'; the frames are the
frame cache's (`media`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

from .. import media, tokens
from ..config import Config, user_cache_dir
from ..errors import CosmosError, MediaError, SpecError
from ..sizing import Budget, Resolution, choose_size, largest_fitting_size, parse_aspect
from ..specs import PromptSpec, load_spec, load_specs, safe_file_stem, spec_for_video

TOKEN_COUNTS_FILE = "token-counts.json"


@dataclass
class CheckItem:
    """One checked input: the shape of an item in `cosmos check --json`."""

    input: str
    name: str
    source_width: int | None = None
    source_height: int | None = None
    frame_width: int | None = None
    frame_height: int | None = None
    frame_count: int = 0
    image_tokens: int | None = None
    text_tokens: int | None = None
    prompt_tokens: int | None = None
    max_model_len: int = 0
    output_tokens: int = 0
    verdict: str = "error"
    recommended_width: int | None = None
    recommended_height: int | None = None
    error: dict | None = None
    # Not printed: what later steps need.
    spec: PromptSpec | None = field(default=None, repr=False)
    video: media.VideoInfo | None = field(default=None, repr=False)
    prepared_dir: Path | None = field(default=None, repr=False)  # `prepare` wrote it here

    @property
    def room_for_output(self) -> int | None:
        if self.prompt_tokens is None:
            return None
        return self.max_model_len - self.prompt_tokens

    def to_dict(self) -> dict:
        data = asdict(self)
        for private in ("spec", "video", "prepared_dir", "source_width", "source_height", "name"):
            data.pop(private)
        if data["error"] is None:
            data.pop("error")
        return data


@dataclass
class CheckReport:
    items: list[CheckItem]
    load_errors: list[CosmosError]
    out_dir: Path | None = None  # `prepare`: where the items were written

    @property
    def exit_code(self) -> int:
        """0 all fit; 1 some item does not fit; 2/3 some input could not be read (spec/media)."""
        worst = 0
        for item in self.items:
            if item.verdict != tokens.Verdict.FITS.value:
                worst = max(worst, 1)
        for error in self.load_errors:
            worst = max(worst, error.exit_code)
        for item in self.items:
            if item.error:
                worst = max(worst, int(item.error.get("exit_code", 2)))
        return worst

    def to_dict(self) -> dict:
        data: dict = {"out_dir": str(self.out_dir)} if self.out_dir is not None else {}
        data["items"] = [item.to_dict() for item in self.items]
        if self.load_errors:
            data["load_errors"] = [e.to_dict() for e in self.load_errors]
        return data


def _error_dict(error: CosmosError) -> dict:
    return {**error.to_dict(), "exit_code": error.exit_code}


class Preflight:
    """Everything before the GPU host: specs, exact token checks, limits, prepared frames."""

    def __init__(self, config: Config):
        self.config = config
        # Counts made before are read back instead of loading the tokenizer (~1.5 s).
        tokens.use_count_cache(self.cache_dir / TOKEN_COUNTS_FILE)

    @cached_property
    def ffmpeg(self) -> str:
        return media.find_tool("ffmpeg", self.config.ffmpeg.binary)

    @cached_property
    def ffprobe(self) -> str:
        return media.find_tool("ffprobe", self.config.ffmpeg.ffprobe)

    @property
    def cache_dir(self) -> Path:
        return Path(self.config.paths.cache_dir or user_cache_dir())

    def frame_cache(self) -> media.FrameCache:
        return media.FrameCache(self.cache_dir / "frames", ffmpeg=self.ffmpeg)

    # -- inputs -----------------------------------------------------------------------------

    def load_inputs(
        self,
        inputs: list[Path] | None,
        *,
        prompt: str | None = None,
        recursive: bool = False,
        passed_over: list[dict] | None = None,
    ) -> tuple[list[PromptSpec], list[CosmosError]]:
        """Specs from spec files, folders of specs and bare videos, in the order given.

        No input: `[paths] local_prompts_dir`. A bare video becomes an item with `prompt` (or
        NVIDIA's default). With `prompt` set, it replaces every spec's own prompt too. Files in
        folders that cosmos wrote are appended to `passed_over` (see `load_specs`).
        """
        specs: list[PromptSpec] = []
        errors: list[CosmosError] = []
        videos_dir = self.config.paths.local_videos_dir or None
        for path in inputs or self.default_inputs():
            path = Path(path)
            try:
                is_dir, exists = path.is_dir(), path.exists()
            except OSError as exc:  # a name over 255 bytes, a path over PATH_MAX, …
                errors.append(
                    SpecError(
                        f"{path}: cannot be looked up ({exc.strerror or exc})",
                        "give a spec .json, a folder of specs or a video",
                        code="input_not_found",
                    )
                )
                continue
            if is_dir:
                found, errs = load_specs(
                    [path], recursive=recursive, passed_over=passed_over, videos_dir=videos_dir
                )
                specs.extend(found)
                errors.extend(errs)
            elif path.suffix.lower() == ".json":
                try:
                    specs.append(load_spec(path, videos_dir=videos_dir))
                except CosmosError as exc:
                    errors.append(exc)
            elif exists:
                specs.append(spec_for_video(path, prompt or ""))
            else:
                errors.append(
                    SpecError(
                        f"{path}: no such file or folder",
                        "give a spec .json, a folder of specs or a video",
                        code="input_not_found",
                    )
                )
        if prompt is not None:
            specs = [s if s.prompt == prompt else _with_prompt(s, prompt) for s in specs]
        return specs, errors

    def default_inputs(self) -> list[Path]:
        """No input given: the specs in `[paths] local_prompts_dir`."""
        folder = Path(self.config.paths.local_prompts_dir)
        if not folder.is_dir():
            raise SpecError(
                f"no input given, and [paths] local_prompts_dir ({folder}) is not a folder",
                "give spec files or folders, or set [paths] local_prompts_dir",
                code="input_not_found",
            )
        return [folder]

    # -- check ------------------------------------------------------------------------------

    def budget(
        self,
        *,
        frame_count: int | None = None,
        max_model_len: int | None = None,
        output_tokens: int | None = None,
    ) -> Budget:
        """The run's budget: the values given, the config's for the others."""
        up = self.config.upsampling
        return Budget(
            max_model_len=max_model_len or up.max_model_len,
            output_tokens=up.output_tokens if output_tokens is None else output_tokens,
            frame_count=frame_count or up.frame_count,
        )

    def check_specs(
        self, specs: list[PromptSpec], resolution: Resolution, budget: Budget
    ) -> list[CheckItem]:
        """Probe every clip (in parallel) and count its exact prompt tokens."""
        items = [
            CheckItem(
                input=str(spec.path or spec.video),
                name=spec.name,
                frame_count=budget.frame_count,
                max_model_len=budget.max_model_len,
                output_tokens=budget.output_tokens,
                spec=spec,
            )
            for spec in specs
        ]
        to_probe = [item for item in items if item.spec.video is not None]
        for item in items:
            if item.spec.video is None:
                item.error = _error_dict(item.spec.video_error)
        probes = media.probe_many(
            [item.spec.video for item in to_probe],
            ffprobe=self.ffprobe,
            min_frames=budget.frame_count,
        )
        for item, probed in zip(to_probe, probes, strict=True):
            if isinstance(probed, CosmosError):
                item.error = _error_dict(probed)
                continue
            item.video = probed
            self.count_tokens(item, probed, resolution, budget)
        return items

    def count_tokens(
        self, item: CheckItem, info: media.VideoInfo, resolution: Resolution, budget: Budget
    ) -> None:
        """Fill `item` with the size `resolution` chooses for `info` and its exact tokens."""
        item.source_width, item.source_height = info.width, info.height
        text_tokens = tokens.text_tokens(item.spec.prompt)
        size = choose_size((info.width, info.height), text_tokens, resolution, budget)
        if size is None:
            size = (info.width, info.height)
        count = tokens.count_prompt_tokens(size[0], size[1], budget.frame_count, item.spec.prompt)
        item.frame_width, item.frame_height = count.frame_width, count.frame_height
        item.image_tokens = count.image_tokens
        item.text_tokens = count.text_tokens
        item.prompt_tokens = count.prompt_tokens
        item.verdict = tokens.verdict(
            count.prompt_tokens, budget.max_model_len, budget.output_tokens
        ).value
        item.recommended_width = item.recommended_height = None
        if item.verdict != tokens.Verdict.FITS.value:
            best = choose_size((info.width, info.height), text_tokens, Resolution("auto"), budget)
            if best is not None:
                item.recommended_width, item.recommended_height = best

    def check(
        self,
        inputs: list[Path],
        *,
        prompt: str | None = None,
        resolution: Resolution,
        budget: Budget,
        recursive: bool = False,
    ) -> CheckReport:
        """Exact token check of every input: fits, output_cut or too_long."""
        specs, errors = self.load_inputs(inputs, prompt=prompt, recursive=recursive)
        return CheckReport(self.check_specs(specs, resolution, budget), errors)

    # -- limits -----------------------------------------------------------------------------

    def limits(
        self,
        max_model_lens: list[int],
        aspects: list[str],
        *,
        budget: Budget,
        prompt_tokens: int | None = None,
    ) -> list[dict]:
        """For each context size and aspect, the largest frame size that fits and its cost.

        `prompt_tokens` is the text part (prompt + chat frame); default: NVIDIA's default prompt.
        The budget gives the frame count and the room kept for the output.
        """
        frame_count, output_tokens = budget.frame_count, budget.output_tokens
        text = tokens.text_tokens("") if prompt_tokens is None else prompt_tokens
        try:
            parsed = [(aspect, parse_aspect(aspect)) for aspect in aspects]
        except ValueError as exc:
            raise SpecError(
                str(exc), 'use an aspect like "16:9" or "1.78"', code="bad_aspect"
            ) from None
        rows = []
        for max_model_len in max_model_lens:
            for aspect_text, aspect in parsed:
                size = largest_fitting_size(aspect, frame_count, text, max_model_len, output_tokens)
                row = {
                    "max_model_len": max_model_len,
                    "aspect": aspect_text,
                    "frame_count": frame_count,
                    "output_tokens": output_tokens,
                    "width": None,
                    "height": None,
                    "prompt_tokens": None,
                    "margin": None,
                }
                if size is not None:
                    image = frame_count * tokens.image_tokens_per_frame(*size)
                    row.update(
                        width=size[0],
                        height=size[1],
                        prompt_tokens=image + text,
                        margin=max_model_len - output_tokens - image - text,
                    )
                rows.append(row)
        return rows

    # -- prepare ----------------------------------------------------------------------------

    def prepare(
        self,
        inputs: list[Path],
        *,
        out_dir: Path,
        resolution: Resolution,
        budget: Budget,
        preview: bool = False,
        recursive: bool = False,
        prompt: str | None = None,
        on_item=None,
    ) -> CheckReport:
        """Write, per item, the frames the model will see, a hint video and (opt.) a preview.

        Layout: `<out_dir>/<name>/frame_000.png …`, `<name>/hint.mp4`, `<name>/preview.png`.
        """
        report = self.check(
            inputs, prompt=prompt, resolution=resolution, budget=budget, recursive=recursive
        )
        report.out_dir = Path(out_dir)
        if any(item.error is None for item in report.items):
            check_writable_dir(Path(out_dir), "--out", "out_dir_not_writable")
        cache = self.frame_cache()
        for item in report.items:
            if item.error is None:
                item_dir = Path(out_dir) / safe_file_stem(item.name)
                try:
                    self._prepare_item(item, cache, item_dir, budget, preview)
                    item.prepared_dir = item_dir
                except MediaError as exc:
                    item.error = _error_dict(exc)
                except OSError as exc:  # the disk filled up, a file in the way, …
                    item.error = _error_dict(
                        CosmosError(
                            f"cannot write {item_dir}: {exc.strerror or exc}",
                            "check the --out folder: free space, permissions",
                            code="write_failed",
                        )
                    )
            if on_item is not None:
                on_item(item)
        return report

    def _prepare_item(self, item, cache, item_dir: Path, budget: Budget, preview: bool) -> None:
        prepared = cache.frames(
            item.spec.video, item.frame_width, item.frame_height, budget.frame_count
        )
        item_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for index, src in enumerate(prepared.paths):
            dst = item_dir / f"frame_{index:03d}.png"
            dst.write_bytes(src.read_bytes())
            written.append(dst)
        media.make_hint_video(
            item.spec.video,
            item_dir / "hint.mp4",
            item.frame_width,
            item.frame_height,
            budget.frame_count,
            ffmpeg=self.ffmpeg,
        )
        if preview:
            per_frame = item.image_tokens // max(1, budget.frame_count)
            label = f"{item.frame_width}×{item.frame_height} · {per_frame} tokens"
            media.contact_sheet(written, [label] * len(written), item_dir / "preview.png")


def check_writable_dir(folder: Path, flag: str, code: str) -> None:
    """Fail before any work (or network traffic) when outputs could not be written there."""
    try:
        if folder.exists() and not folder.is_dir():
            raise CosmosError(
                f"cannot write to {flag} {folder}: it is a file, not a folder",
                "choose a folder you can write to",
                code=code,
            )
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".cosmos-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:  # read-only, a name over 255 bytes, below a file (/dev/null/x), …
        raise CosmosError(
            f"cannot write to {flag} {folder}: {exc.strerror or exc}",
            "choose a folder you can write to",
            code=code,
        ) from None


def _with_prompt(spec: PromptSpec, prompt: str) -> PromptSpec:
    return replace(spec, prompt=prompt)
