"""Prompt specs in and out: the seed project's PromptSpec JSON and NVIDIA's controlnet JSON.

Two formats are read:

- **seed** (`SpecFormat.SEED`): `id name prompt negative_prompt input_video_path control_inputs
  timestamp is_upsampled parent_prompt_text`. A file with any of the seed-only keys (`id`,
  `name`, `control_inputs`, `timestamp`, `is_upsampled`, `parent_prompt_text`) is a seed spec.
- **nvidia** (`SpecFormat.NVIDIA`): what `cosmos_transfer1/diffusion/inference/transfer.py
  --controlnet_specs` reads: `prompt`, `input_video_path`, hint keys (`vis edge depth seg
  keypoint upscale hdmap lidar`, each an object with `control_weight` / `input_control` ...) and
  any other top-level argument of transfer.py (`negative_prompt`, `sigma_max`, ...). NVIDIA's
  loader rejects dict-valued keys that are not hint keys, so we do too; other unknown keys are
  kept as they are.

Where a relative media path (`input_video_path`, a control input) is looked for, in order:

1. next to the spec file;
2. in the current directory;
3. NVIDIA specs only: in the cosmos-transfer1 checkout the spec belongs to, because NVIDIA's
   paths are relative to the checkout (transfer.py runs from there), not to the JSON file. The
   checkout is the nearest folder above the spec that holds a `cosmos_transfer1/` package, and
   the folder above the path's own first component when the spec sits inside it (a spec in
   `<checkout>/assets/` naming `assets/clip.mp4` finds `<checkout>/assets/clip.mp4`);
4. in the videos folder the loader is given (`videos_dir`: the orchestrator passes
   `[paths] local_videos_dir`, itself relative to the current directory when relative).

An absolute path is only ever looked for where it points.

The first existing file wins; when none exists the error names every place looked. A missing
video does not stop a spec from loading: `PromptSpec.video` is None and `video_error` says why,
so one bad item does not hide the others. Windows drive paths (`F:/Art/...`, `C:\\...`) on a
non-Windows machine get their own error.

Writing (`cosmos upsample`): outputs are named `<name or file stem>.json` in the save folder,
made safe (`output_names`; a name can never point outside the folder, collisions are errors).
An NVIDIA spec is written back with only `prompt` replaced: key order, `input_video_path`
(relative to the checkout) and everything else unchanged, no lineage (transfer.py would reject
it). A seed spec becomes a new spec (new `ps_` id, `is_upsampled`, `parent_prompt_text`, UTC
timestamp); its media paths are written relative to the output folder when they were relative
in the input, absolute when they were absolute. Input files are never written. The save
folder's ledger (`outputs`, `.cosmos-outputs.json`) records what cosmos wrote there, so a file
it did not write is never replaced, a hand edit is noticed, and folder loads pass over earlier
outputs.

Prompt text is data: it is kept byte-exact (quotes, `$(...)`, newlines, emoji, CJK).

Modules: `model` (the record), `paths` (lookup and rewriting), `reading`, `writing`,
`outputs` (the ledger).
"""

from __future__ import annotations

from .model import HINT_KEYS, PromptSpec, SpecFormat
from .reading import load_spec, load_specs, spec_for_video
from .writing import output_names, safe_file_stem, upsampled_spec, write_spec

__all__ = [
    "HINT_KEYS",
    "PromptSpec",
    "SpecFormat",
    "load_spec",
    "load_specs",
    "output_names",
    "safe_file_stem",
    "spec_for_video",
    "upsampled_spec",
    "write_spec",
]
