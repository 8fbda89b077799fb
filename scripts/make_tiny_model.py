"""Build a tiny, randomly initialised Pixtral stored like NVIDIA's prompt-upsampler checkpoint.

The real upsampler (checkpoints/nvidia/Cosmos-UpsamplePrompt1-12B-Transfer) is a 12B Pixtral in
Mistral's native format: params.json, consolidated.safetensors (bf16, Mistral tensor names) and
tekken.json. This script writes the same three files for a 17M-parameter model, so the worker
can be tested against the real vLLM engine on a CPU with the production loading arguments
(tokenizer_mode="mistral"). The text it generates is gibberish; the request format, batching,
token accounting and errors are real. See shared/ENGINE.md.

Run it with the engine venv's python (it needs torch, safetensors and mistral_common):

    python scripts/make_tiny_model.py OUT_DIR

Deterministic (fixed seed) and idempotent: a complete OUT_DIR with the same params.json is left
as it is. Each file is written to a temporary name and renamed, weights last, so an interrupted
run never looks complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

SEED = 0
# Random weights are drawn with this standard deviation: small enough that activations stay
# finite in bf16 through 2 layers, so sampling never meets NaNs.
WEIGHT_STD = 0.02

TEXT_DIM = 64
TEXT_LAYERS = 2
# 32 is the smallest head size vLLM's CPU attention backend supports (16 fails with
# "Unsupported CPU attention configuration").
HEAD_DIM = 32
N_HEADS = 4
N_KV_HEADS = 2
HIDDEN_DIM = 128
# The tekken_240911 vocabulary (131072 ids) is what the real upsampler uses; keeping it makes the
# token ids, and therefore the prompt token counts, identical to production.
VOCAB_SIZE = 131072

VISION_DIM = 64
VISION_LAYERS = 2
VISION_HIDDEN_DIM = 128
VISION_HEADS = 2
PATCH_SIZE_PX = 16
# 1024 px and image_token_id 10 are Pixtral-12B's values: they decide how many tokens an image
# costs (resize to fit 1024, one token per 16-px patch plus one per row).
IMAGE_SIZE_PX = 1024
IMAGE_TOKEN_ID = 10

PARAMS = {
    "dim": TEXT_DIM,
    "n_layers": TEXT_LAYERS,
    "head_dim": HEAD_DIM,
    "hidden_dim": HIDDEN_DIM,
    "n_heads": N_HEADS,
    "n_kv_heads": N_KV_HEADS,
    "rope_theta": 1000000000.0,
    "norm_eps": 1e-05,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 131072,
    # The weights are stored in bf16, and saying so lets every vLLM of the test matrix load them
    # as they are: without it vLLM 0.8 picks float16, which its CPU cache kernels reject.
    "torch_dtype": "bfloat16",
    "vision_encoder": {
        "hidden_size": VISION_DIM,
        "num_channels": 3,
        "image_size": IMAGE_SIZE_PX,
        "patch_size": PATCH_SIZE_PX,
        "rope_theta": 10000.0,
        "intermediate_size": VISION_HIDDEN_DIM,
        "num_hidden_layers": VISION_LAYERS,
        "num_attention_heads": VISION_HEADS,
        "image_token_id": IMAGE_TOKEN_ID,
    },
}

TOKENIZER_FILE = "tekken_240911.json"
MODEL_FILES = ("params.json", "tekken.json", "consolidated.safetensors")


def tensor_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint, by its Mistral-format name, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "tok_embeddings.weight": (VOCAB_SIZE, TEXT_DIM),
        "norm.weight": (TEXT_DIM,),
        "output.weight": (VOCAB_SIZE, TEXT_DIM),
    }
    q_dim = N_HEADS * HEAD_DIM
    kv_dim = N_KV_HEADS * HEAD_DIM
    for i in range(TEXT_LAYERS):
        p = f"layers.{i}."
        shapes[p + "attention.wq.weight"] = (q_dim, TEXT_DIM)
        shapes[p + "attention.wk.weight"] = (kv_dim, TEXT_DIM)
        shapes[p + "attention.wv.weight"] = (kv_dim, TEXT_DIM)
        shapes[p + "attention.wo.weight"] = (TEXT_DIM, q_dim)
        shapes[p + "feed_forward.w1.weight"] = (HIDDEN_DIM, TEXT_DIM)
        shapes[p + "feed_forward.w2.weight"] = (TEXT_DIM, HIDDEN_DIM)
        shapes[p + "feed_forward.w3.weight"] = (HIDDEN_DIM, TEXT_DIM)
        shapes[p + "attention_norm.weight"] = (TEXT_DIM,)
        shapes[p + "ffn_norm.weight"] = (TEXT_DIM,)
    shapes["vision_encoder.patch_conv.weight"] = (VISION_DIM, 3, PATCH_SIZE_PX, PATCH_SIZE_PX)
    shapes["vision_encoder.ln_pre.weight"] = (VISION_DIM,)
    for i in range(VISION_LAYERS):
        p = f"vision_encoder.transformer.layers.{i}."
        for w in ("wq", "wk", "wv", "wo"):
            shapes[p + f"attention.{w}.weight"] = (VISION_DIM, VISION_DIM)
        shapes[p + "feed_forward.w1.weight"] = (VISION_HIDDEN_DIM, VISION_DIM)
        shapes[p + "feed_forward.w2.weight"] = (VISION_DIM, VISION_HIDDEN_DIM)
        shapes[p + "feed_forward.w3.weight"] = (VISION_HIDDEN_DIM, VISION_DIM)
        shapes[p + "attention_norm.weight"] = (VISION_DIM,)
        shapes[p + "ffn_norm.weight"] = (VISION_DIM,)
    shapes["vision_language_adapter.w_in.weight"] = (TEXT_DIM, VISION_DIM)
    shapes["vision_language_adapter.w_in.bias"] = (TEXT_DIM,)
    shapes["vision_language_adapter.w_out.weight"] = (TEXT_DIM, TEXT_DIM)
    shapes["vision_language_adapter.w_out.bias"] = (TEXT_DIM,)
    return shapes


def make_tensors() -> dict:
    """Random bf16 weights (fixed seed); norm weights 1 and adapter biases 0, as a fresh model."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    tensors = {}
    for name, shape in tensor_shapes().items():
        if name.endswith("norm.weight") or name.endswith("ln_pre.weight"):
            t = torch.ones(shape)
        elif name.endswith(".bias"):
            t = torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=generator) * WEIGHT_STD
        tensors[name] = t.to(torch.bfloat16).contiguous()
    return tensors


def tokenizer_source() -> Path:
    """The Pixtral tokenizer file shipped inside the installed mistral_common package."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / TOKENIZER_FILE
    if not path.is_file():
        raise SystemExit(f"{path} not found: this mistral_common does not ship {TOKENIZER_FILE}")
    return path


def params_text() -> str:
    return json.dumps(PARAMS, indent=2) + "\n"


def is_complete(out_dir: Path) -> bool:
    """True when every file is there and params.json is exactly the one this script writes."""
    if not all((out_dir / name).is_file() for name in MODEL_FILES):
        return False
    return (out_dir / "params.json").read_text(encoding="utf-8") == params_text()


def _replace_into(out_dir: Path, name: str, write) -> None:
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, out_dir / name)
    finally:
        tmp.unlink(missing_ok=True)


def build(out_dir: Path) -> None:
    """Write params.json, tekken.json, then consolidated.safetensors into out_dir."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    # A stale consolidated.safetensors would make a half-rebuilt folder look complete.
    (out_dir / "consolidated.safetensors").unlink(missing_ok=True)
    _replace_into(out_dir, "params.json", lambda p: p.write_text(params_text(), encoding="utf-8"))
    _replace_into(out_dir, "tekken.json", lambda p: shutil.copyfile(tokenizer_source(), p))
    tensors = make_tensors()
    _replace_into(out_dir, "consolidated.safetensors", lambda p: save_file(tensors, str(p)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the model into")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    out_dir: Path = args.out_dir
    if not args.force and is_complete(out_dir):
        print(f"tiny model already complete in {out_dir}")
        return 0
    build(out_dir)
    n_params = sum(_numel(shape) for shape in tensor_shapes().values())
    print(f"tiny model written to {out_dir} ({n_params / 1e6:.1f}M parameters)")
    return 0


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())
