#!/usr/bin/env bash
# Install cosmos-workflow for development on a fresh Debian/Ubuntu machine:
# system packages (ffmpeg; OpenSSH and Chromium for the tests), Python 3.10 and 3.12 (the worker
# tests run the worker on them too: GPU hosts bring their own Python), a venv in .venv, the
# project with dev extras. Quick and idempotent when everything is there.
#
#   scripts/install.sh && .venv/bin/cosmos check ../shared/media/prompt-specs/office_handover.json
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
# The report tests load `cosmos report` pages in headless Chromium (Debian's package).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >&2
fi

# Python 3.10 and 3.12, found the way tests/test_worker.py finds them: a python3.X that runs
# (a pyenv shim of a version that is not selected only pretends), or a pyenv-installed 3.X.*.
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
PYENV=$(command -v pyenv || { [ -x "$PYENV_ROOT/bin/pyenv" ] && echo "$PYENV_ROOT/bin/pyenv"; } || :)
have_python() {
  { command -v "python$1" >/dev/null 2>&1 && "python$1" -c '' >/dev/null 2>&1; } ||
    compgen -G "$PYENV_ROOT/versions/$1.*/bin/python$1" >/dev/null
}
for version in 3.10 3.12; do
  have_python "$version" && continue
  if [ -n "$PYENV" ]; then
    echo "installing Python $version with pyenv (builds from source: a few minutes)" >&2
    PYENV_ROOT=$PYENV_ROOT "$PYENV" install --skip-existing "$version" >&2 || :
  elif command -v apt-get >/dev/null 2>&1 && $SUDO apt-get update -qq &&
    apt-cache show "python$version" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "python$version" >&2
  fi
  if ! have_python "$version"; then
    echo "warning: no python$version: its worker tests skip (and fail under CI=true)." >&2
    echo "  Install it with pyenv (https://github.com/pyenv/pyenv#installation, then" >&2
    echo "  \`pyenv install $version\`; Debian 12 has no python$version package), or on" >&2
    echo "  Ubuntu from the deadsnakes PPA, then run this script again." >&2
  fi
done

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -e '.[dev]' >&2
echo "installed: $(.venv/bin/cosmos --version)" >&2
