#!/usr/bin/env bash
# Run the whole test suite: lint, format check, then pytest (extra arguments go to pytest).
# The worker's engine tests need the CPU vLLM venv: it is built once (cached outside the clone,
# about 4 minutes) by scripts/setup_engine.sh unless COSMOS_ENGINE_PYTHON already points at one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${COSMOS_ENGINE_PYTHON:-}" ]; then
  COSMOS_ENGINE_PYTHON=$(scripts/setup_engine.sh | tail -n 1)
  export COSMOS_ENGINE_PYTHON
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
