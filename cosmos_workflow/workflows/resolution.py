"""Resolution mixin: exact token checks, the limits table and local frame preparation.

Everything here runs on the user's machine, without a GPU and without network traffic.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import media, tokens
from ..errors import CosmosError, MediaError, SpecError
from ..sizing import Budget, Resolution, choose_size, largest_fitting_size, parse_aspect
from ..specs import PromptSpec, load_spec, load_specs, safe_file_stem, spec_for_video


@dataclass
class CheckItem:
    """One checked input: the shape of an item in `cosmos check --json`."""

    input: str
    name: str
    source_width: int | None = None
    source_height: int | None = None
    frame_width: int | None = None
    frame_height: int | None = None
    frames: int = 0
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

    @property
    def room_for_output(self) -> int | None:
        if self.prompt_tokens is None:
            return None
        return self.max_model_len - self.prompt_tokens

    def to_dict(self) -> dict:
        data = asdict(self)
        for private in ("spec", "video", "source_width", "source_height", "name"):
            data.pop(private)
        if data["error"] is None:
            data.pop("error")
        return data


@dataclass
class CheckReport:
    items: list[CheckItem]
    load_errors: list[CosmosError]

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
        data: dict = {"items": [item.to_dict() for item in self.items]}
        if self.load_errors:
            data["load_errors"] = [e.to_dict() for e in self.load_errors]
        return data


def _error_dict(error: CosmosError) -> dict:
    return {**error.to_dict(), "exit_code": error.exit_code}


class ResolutionMixin:
    """check / limits / prepare, mixed into `WorkflowOrchestrator` (needs `self.config`)."""

    config: object

    # -- inputs -----------------------------------------------------------------------------

    def load_inputs(
        self,
        inputs: list[Path],
        *,
        prompt: str | None = None,
        recursive: bool = False,
        passed_over: list[dict] | None = None,
    ) -> tuple[list[PromptSpec], list[CosmosError]]:
        """Specs from spec files, folders of specs and bare videos, in the order given.

        A bare video becomes an item with `prompt` (or NVIDIA's default). With `prompt` set,
        it replaces every spec's own prompt too. Files in folders that cosmos wrote are
        appended to `passed_over` (see `load_specs`).
        """
        specs: list[PromptSpec] = []
        errors: list[CosmosError] = []
        videos_dir = self.config.paths.local_videos_dir or None
        for path in inputs:
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

    # -- check ------------------------------------------------------------------------------

    def budget(self, *, frames=None, max_model_len=None, output_tokens=None) -> Budget:
        up = self.config.upsampling
        return Budget(
            max_model_len=max_model_len or up.max_model_len,
            output_tokens=up.output_tokens if output_tokens is None else output_tokens,
            frame_count=frames or up.frame_count,
        )

    def check_specs(
        self, specs: list[PromptSpec], resolution: Resolution, budget: Budget
    ) -> list[CheckItem]:
        """Probe every clip (in parallel) and count its exact prompt tokens."""
        items = [
            CheckItem(
                input=str(spec.path or spec.video),
                name=spec.name,
                frames=budget.frame_count,
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
        resolution: Resolution | str = "source",
        budget: Budget | None = None,
        recursive: bool = False,
    ) -> CheckReport:
        """Exact token check of every input: fits, output_cut or too_long."""
        budget = budget or self.budget()
        resolution = Resolution.parse(resolution) if isinstance(resolution, str) else resolution
        specs, errors = self.load_inputs(inputs, prompt=prompt, recursive=recursive)
        return CheckReport(self.check_specs(specs, resolution, budget), errors)

    # -- limits -----------------------------------------------------------------------------

    def limits(
        self,
        max_model_lens: list[int],
        aspects: list[str],
        *,
        frames: int,
        prompt_tokens: int | None,
        output_tokens: int,
    ) -> list[dict]:
        """For each context size and aspect, the largest frame size that fits and its cost.

        `prompt_tokens` is the text part (prompt + chat frame); default: NVIDIA's default prompt.
        """
        text = tokens.text_tokens("") if prompt_tokens is None else prompt_tokens
        rows = []
        for max_model_len in max_model_lens:
            for aspect_text in aspects:
                aspect = parse_aspect(aspect_text)
                size = largest_fitting_size(aspect, frames, text, max_model_len, output_tokens)
                row = {
                    "max_model_len": max_model_len,
                    "aspect": aspect_text,
                    "frames": frames,
                    "width": None,
                    "height": None,
                    "prompt_tokens": None,
                    "margin": None,
                }
                if size is not None:
                    image = frames * tokens.image_tokens_per_frame(*size)
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
        resolution: Resolution | str = "auto",
        budget: Budget | None = None,
        preview: bool = False,
        recursive: bool = False,
        prompt: str | None = None,
        on_item=None,
    ) -> CheckReport:
        """Write, per item, the frames the model will see, a hint video and (opt.) a preview.

        Layout: `<out_dir>/<name>/frame_000.png …`, `<name>/hint.mp4`, `<name>/preview.png`.
        """
        budget = budget or self.budget()
        report = self.check(
            inputs, prompt=prompt, resolution=resolution, budget=budget, recursive=recursive
        )
        if any(item.error is None for item in report.items):
            check_writable_dir(Path(out_dir), "--out", "out_dir_not_writable")
        cache = self.frame_cache()
        for item in report.items:
            if item.error is None:
                item_dir = Path(out_dir) / safe_file_stem(item.name)
                try:
                    self._prepare_item(item, cache, item_dir, budget, preview)
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
    from dataclasses import replace

    return replace(spec, prompt=prompt)
