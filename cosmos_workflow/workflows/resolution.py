"""Resolution mixin: `check`, `limits`, `prepare` and `load_inputs`, faces over `Preflight`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..errors import CosmosError
from ..sizing import Resolution
from ..specs import PromptSpec
from .preflight import CheckItem, CheckReport, Preflight

# `cosmos limits` with no --max-model-len: the context sizes people run the upsampler with.
DEFAULT_CONTEXT_SIZES = (4096, 8192, 16384, 32768)
DEFAULT_ASPECTS = ("16:9", "4:3")


class ResolutionMixin:
    """Mixed into `WorkflowOrchestrator`: needs `config` and `preflight`."""

    config: Config
    preflight: Preflight

    def load_inputs(
        self, inputs: list[Path], *, prompt: str | None = None, recursive: bool = False
    ) -> tuple[list[PromptSpec], list[CosmosError]]:
        """Specs from spec files, folders of specs and bare videos (see `Preflight`)."""
        return self.preflight.load_inputs(inputs, prompt=prompt, recursive=recursive)

    def check(
        self,
        inputs: list[Path],
        *,
        prompt: str | None = None,
        frame_count: int | None = None,
        max_model_len: int | None = None,
        output_tokens: int | None = None,
        resolution: str = "source",
        recursive: bool = False,
    ) -> CheckReport:
        """Exact token check of every input: fits, output_cut or too_long (`cosmos check`)."""
        return self.preflight.check(
            inputs,
            prompt=prompt,
            resolution=Resolution.parse(resolution),
            budget=self.preflight.budget(
                frame_count=frame_count, max_model_len=max_model_len, output_tokens=output_tokens
            ),
            recursive=recursive,
        )

    def limits(
        self,
        *,
        max_model_len: list[int] | None = None,
        aspect: list[str] | None = None,
        frame_count: int | None = None,
        prompt_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> list[dict]:
        """The largest frame size that fits each context size and aspect (`cosmos limits`)."""
        return self.preflight.limits(
            list(max_model_len or DEFAULT_CONTEXT_SIZES),
            list(aspect or DEFAULT_ASPECTS),
            budget=self.preflight.budget(frame_count=frame_count, output_tokens=output_tokens),
            prompt_tokens=prompt_tokens,
        )

    def prepare(
        self,
        inputs: list[Path],
        *,
        out_dir: Path | None = None,
        resolution: str = "auto",
        preview: bool = False,
        frame_count: int | None = None,
        prompt: str | None = None,
        recursive: bool = False,
        on_item: Callable[[CheckItem], None] | None = None,
    ) -> CheckReport:
        """Write each item's model frames, hint video and (opt.) preview (`cosmos prepare`).

        `out_dir` defaults to `[upsampling] hint_video_dir`.
        """
        return self.preflight.prepare(
            inputs,
            out_dir=Path(out_dir or self.config.upsampling.hint_video_dir),
            resolution=Resolution.parse(resolution),
            budget=self.preflight.budget(frame_count=frame_count),
            preview=preview,
            recursive=recursive,
            prompt=prompt,
            on_item=on_item,
        )
