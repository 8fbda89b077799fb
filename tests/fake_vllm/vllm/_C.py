"""Stand-in for vLLM's compiled extension (tests only): FAKE_VLLM_EXTENSION_ERROR makes it fail
to load, as a vLLM built for another torch or CUDA does (an undefined symbol)."""

import os

if os.environ.get("FAKE_VLLM_EXTENSION_ERROR"):
    raise ImportError(os.environ["FAKE_VLLM_EXTENSION_ERROR"])
