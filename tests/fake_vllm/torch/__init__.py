"""Stand-in for torch, for the worker's `check` tests only (never a product path).

It sits beside the stand-in vLLM (tests/fake_vllm), so a worker started with that folder on
PYTHONPATH imports it. It offers what `worker.py check` reads: `__version__`,
`cuda.is_available()` and `cuda.device_count()`, applying CUDA_VISIBLE_DEVICES the way the
CUDA runtime does: only the listed indexes are visible, up to the first one that names no GPU.

  FAKE_TORCH_GPUS       GPUs the process could see without CUDA_VISIBLE_DEVICES (default 1)
  FAKE_TORCH_ERROR      when set, importing torch raises ImportError with this message
"""

from __future__ import annotations

import os

if os.environ.get("FAKE_TORCH_ERROR"):
    raise ImportError(os.environ["FAKE_TORCH_ERROR"])

__version__ = "2.7.1-standin"


class cuda:  # noqa: N801 - torch.cuda is a module; a namespace class is enough here
    @staticmethod
    def device_count() -> int:
        present = int(os.environ.get("FAKE_TORCH_GPUS", "1"))
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        if listed is None:
            return present
        visible = 0
        for index in listed.split(","):
            if not index.strip().isdigit() or int(index) >= present:
                break
            visible += 1
        return visible

    @staticmethod
    def is_available() -> bool:
        return cuda.device_count() > 0
