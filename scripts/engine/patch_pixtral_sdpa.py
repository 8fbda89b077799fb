"""Give vLLM 0.8/0.9's Mistral-format Pixtral vision encoder a CPU attention path.

Those versions call xformers (`memory_efficient_attention` with a `BlockDiagonalMask`) in
`vllm/model_executor/models/pixtral.py` whenever the checkpoint is in Mistral's native format,
and xformers exists only for CUDA. This adds, in the `except ImportError` branch, a stand-in
with the same two names built on torch's scaled_dot_product_attention and a block-diagonal
boolean mask (each image attends only to itself, as xformers' mask does). Test-bench only
(scripts/setup_engine.sh, CPU builds); a GPU host has xformers and is never touched.

    python patch_pixtral_sdpa.py SITE_PACKAGES

Idempotent (marked `_cosmos_sdpa_fallback`); fails loudly if the file no longer has the branch.
"""

from __future__ import annotations

import pathlib
import sys

MARK = "_cosmos_sdpa_fallback"
OLD = """except ImportError:
    USE_XFORMERS_OPS = False
"""
NEW = f"""except ImportError:  # {MARK}: CPU test bench, see cosmos-workflow scripts/engine/
    import types as _types

    class _BlockDiagonalMask:
        def __init__(self, seqlens):
            self.seqlens = [int(n) for n in seqlens]

        @classmethod
        def from_seqlens(cls, seqlens, *args, **kwargs):
            return cls(seqlens)

        def to_bool(self, device):
            total = sum(self.seqlens)
            mask = torch.zeros(total, total, dtype=torch.bool, device=device)
            start = 0
            for n in self.seqlens:
                mask[start : start + n, start : start + n] = True
                start += n
            return mask

    def _memory_efficient_attention(q, k, v, attn_bias=None, **kwargs):
        # xformers' (batch, seq, heads, dim) layout <-> SDPA's (batch, heads, seq, dim)
        mask = attn_bias.to_bool(q.device) if attn_bias is not None else None
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )
        return out.transpose(1, 2)

    xops = _types.SimpleNamespace(
        memory_efficient_attention=_memory_efficient_attention,
        fmha=_types.SimpleNamespace(
            attn_bias=_types.SimpleNamespace(BlockDiagonalMask=_BlockDiagonalMask)
        ),
    )
    USE_XFORMERS_OPS = True
"""

if __name__ == "__main__":
    path = pathlib.Path(sys.argv[1]) / "vllm" / "model_executor" / "models" / "pixtral.py"
    source = path.read_text(encoding="utf-8")
    if MARK in source:
        print(f"{path}: already patched")
    elif source.count(OLD) != 1:
        raise SystemExit(f"{path}: the xformers import branch was not found; cannot patch")
    else:
        path.write_text(source.replace(OLD, NEW), encoding="utf-8")
        print(f"{path}: SDPA stand-in for xformers added")
