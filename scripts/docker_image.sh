#!/usr/bin/env bash
# Build a LOCAL stand-in of NVIDIA's cosmos-transfer1 Docker image, with the real CPU vLLM of the
# project's engine venv inside, for testing the docker runner where no registry is reachable.
# Prints the image reference (cosmos-stand-in:vllm<version>-<12 hex>) as its LAST stdout line;
# everything else goes to stderr.
#
#   scripts/dockerd.sh start && scripts/docker_image.sh                # vLLM 0.32.0
#   COSMOS_ENGINE_VLLM=0.9.2 scripts/docker_image.sh                  # the matrix's other versions
#
# What the stand-in reproduces of NVIDIA's image:
#   - vLLM in the SYSTEM Python (`python3 -c "import vllm"` works, no venv to activate): the engine
#     venv's site-packages are copied into /usr/local/lib/python3.11/dist-packages of a Debian
#     bookworm rootfs (bookworm's python3 is 3.11, the engine wheels' cp311);
#   - an NGC-style entrypoint, /opt/nvidia/nvidia_entrypoint.sh, that prints a banner on STDOUT
#     (with "NVIDIA Driver was not detected" when there is no GPU) and then execs its arguments;
#   - runs as root by default, WORKDIR /workspace, no CMD; works for an arbitrary --user uid
#     without a passwd entry (files world-readable).
# What it does not: CUDA (it is a CPU vLLM; `--gpus` needs the NVIDIA runtime, absent here), and
# NVIDIA's Python 3.12 / vLLM 0.8.1 (the engine matrix's versions instead).
#
# The tag's hex part hashes what determines the image (this script, the entrypoint, the vLLM
# version, the engine venv's stamp and `pip freeze`): a rerun finds the tag and exits at once.
# Needs a running engine (scripts/dockerd.sh start), mmdebstrap, and root (mmdebstrap's root mode).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SELF="$HERE/$(basename "$0")"

VLLM_VERSION=${COSMOS_ENGINE_VLLM:-0.32.0}
REPO=${COSMOS_STAND_IN_REPO:-cosmos-stand-in}
# Debian packages beyond minbase: python3 (3.11) and tini, plus what the engine needs and its
# wheels do not bundle (found by trying, and by ldd over every .so in the image):
#   libnuma1  vllm/_C links libnuma.so.1 (without it `from vllm import LLM` still imports, but the
#             engine fails loading vllm._C);
#   libgomp1  numba's OpenMP pool (torch and sentencepiece bundle their own libgomp);
#   g++       torch.compile's inductor (vLLM's default, enforce_eager=False) builds C++ kernels at
#             engine start: "InvalidCxxCompiler: No working C++ compiler found" without it.
#             NVIDIA's image, built on a CUDA devel image, has one;
#   python3-dev  Python.h for those kernels' Python bindings (inductor's cpp_pybinding);
#   openssl   inductor hashes its precompiled header with `openssl sha512` (FileNotFoundError).
INCLUDE=python3,tini,libnuma1,libgomp1,g++,python3-dev,openssl
ENGINE_WAIT=${COSMOS_ENGINE_WAIT:-3600}   # seconds to wait for another process's engine build

log() { echo "docker_image.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# The NGC-like entrypoint (NVIDIA's images print such a banner on stdout before the command).
read -r -d '' ENTRYPOINT <<'EOF' || true
#!/bin/bash
# Local stand-in of NVIDIA's /opt/nvidia/nvidia_entrypoint.sh: a banner on stdout, then the command.
cat <<'BANNER'

==========
== Cosmos-Transfer1 (local stand-in) ==
==========

NVIDIA Release local (build: CPU vLLM, no CUDA)

This container image is a local stand-in for NVIDIA's cosmos-transfer1 image, for tests only.

BANNER
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "WARNING: The NVIDIA Driver was not detected.  GPU functionality will not be available."
  echo "   Use the NVIDIA Container Toolkit to start this container with GPU support."
  echo
fi
exec "$@"
EOF

# The Debian mirror of this machine's apt sources (deb822 .sources or one-line .list) that
# serves bookworm; COSMOS_DEBIAN_MIRROR overrides. Read at run time, never written down.
debian_mirror() {
  if [ -n "${COSMOS_DEBIAN_MIRROR:-}" ]; then echo "$COSMOS_DEBIAN_MIRROR"; return; fi
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                         if ($(i + 1) == "bookworm") { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk 'BEGIN { RS = ""; FS = "\n" }
           { types = uris = suites = ""; enabled = "yes"
             for (i = 1; i <= NF; i++) {
               if ($i ~ /^#/ || index($i, ":") == 0) continue
               k = tolower(substr($i, 1, index($i, ":") - 1)); v = substr($i, index($i, ":") + 1)
               gsub(/^[ \t]+|[ \t]+$/, "", v)
               if (k == "types") types = v; else if (k == "uris") uris = v
               else if (k == "suites") suites = v; else if (k == "enabled") enabled = tolower(v)
             }
             if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ / bookworm /) {
               split(uris, u, " "); print u[1]; exit } }' "$f"
    done
  } | head -n 1
}

# Is some process building this engine venv right now? (A process naming the venv, or a
# setup_engine.sh for this version.) setup_engine.sh deletes an unstamped venv and starts over, so
# calling it during another build would wreck both.
engine_build_running() {
  local venv=$1 p cmd env_v
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$cmd" in
      *"$venv"*) return 0 ;;
      *setup_engine.sh*)
        env_v=$(tr '\0' '\n' < "$p/environ" 2>/dev/null | sed -n 's/^COSMOS_ENGINE_VLLM=//p')
        [ "${env_v:-0.32.0}" = "$VLLM_VERSION" ] && return 0 ;;
    esac
  done
  return 1
}

wait_for_engine_build() {
  local cache venv deadline=$((SECONDS + ENGINE_WAIT)) quiet=0
  cache=${COSMOS_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cosmos-workflow}
  for venv in "$cache"/engine-vllm"$VLLM_VERSION"-torch*-py*; do
    [ -d "$venv" ] && [ ! -f "$venv/.complete" ] || continue
    # Two quiet looks in a row: a build has short gaps between its pip runs.
    while [ ! -f "$venv/.complete" ] && [ "$quiet" -lt 2 ]; do
      if engine_build_running "$venv"; then
        [ "$quiet" -eq 0 ] && [ $((SECONDS % 60)) -lt 5 ] && log "waiting for the engine build in $venv"
        quiet=0
        [ "$SECONDS" -lt "$deadline" ] || die "the engine build in $venv did not finish in ${ENGINE_WAIT}s"
      else
        quiet=$((quiet + 1))
      fi
      sleep 5
    done
  done
}

command -v docker >/dev/null 2>&1 || die "no docker CLI (scripts/dockerd.sh start installs an engine)"
timeout 30 docker info >/dev/null 2>&1 || die "docker info fails: is an engine running? (scripts/dockerd.sh start)"

wait_for_engine_build
PY=$(COSMOS_ENGINE_VLLM="$VLLM_VERSION" "$HERE/setup_engine.sh" | tail -n 1)
VENV=$("$PY" -c 'import sys; print(sys.prefix)')
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$PYVER" = 3.11 ] || die "the engine venv is Python $PYVER; the image's system Python (bookworm) is 3.11"
[ -f "$VENV/.complete" ] || die "$VENV has no .complete stamp"

HASH=$(
  {
    echo "script $(sha256sum < "$SELF")"
    echo "entrypoint $(printf '%s\n' "$ENTRYPOINT" | sha256sum)"
    echo "vllm $VLLM_VERSION"
    echo "stamp $(stat -c %Y "$VENV/.complete")"
    "$PY" -m pip freeze --all 2>/dev/null
  } | sha256sum | cut -c1-12
)
IMAGE="$REPO:vllm${VLLM_VERSION}-$HASH"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE"
  exit 0
fi

# One build of a given image at a time; the second waits and then finds the tag.
LOCKFILE="${TMPDIR:-/tmp}/cosmos-stand-in-$HASH.lock"
exec 8>"$LOCKFILE"
flock 8
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the rootfs needs root (mmdebstrap root mode)"
command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap missing (scripts/dockerd.sh start installs it)"
MIRROR=$(debian_mirror)
[ -n "$MIRROR" ] || die "no Debian bookworm mirror found in the apt sources (set COSMOS_DEBIAN_MIRROR)"

ROOTFS_TAG="$REPO-rootfs:$HASH"
CANDIDATE="$REPO:unverified-$HASH"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/cosmos-stand-in.XXXXXX")
cleanup() {
  local rc=$?
  rm -rf "$WORK"
  docker rmi "$ROOTFS_TAG" >/dev/null 2>&1 || true
  docker rmi "$CANDIDATE" >/dev/null 2>&1 || true
  rm -f "$LOCKFILE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building $IMAGE from $VENV"
START=$SECONDS

# 1. Root filesystem: Debian bookworm minbase + the engine's site-packages in the system Python.
#    The copy happens in a customize hook, inside the chroot before mmdebstrap writes its tarball.
cat > "$WORK/hook.sh" <<'EOF'
#!/bin/sh
# mmdebstrap customize hook: $1 is the chroot. SITE and VENV come from the environment.
set -eu
root=$1
dest="$root/usr/local/lib/python3.11/dist-packages"
ver=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$ver" = 3.11 ] || { echo "the rootfs python3 is $ver, not 3.11" >&2; exit 1; }
mkdir -p "$dest"
cp -a "$SITE/." "$dest/"
# Any --user uid must be able to import everything (the project runs the container as the SSH
# user); pip's files are 644 already but some wheels ship tighter modes.
chmod -R a+rX "$dest"
# The venv's console scripts (vllm, hf, ...) with the system python3, as pip would install them.
for f in "$VENV"/bin/*; do
  [ -f "$f" ] || continue
  first=$(head -n 1 "$f")
  case "$first" in
    "#!$VENV/bin/python"*) ;;
    *) continue ;;
  esac
  name=$(basename "$f")
  { echo '#!/usr/bin/python3'; tail -n +2 "$f"; } > "$root/usr/local/bin/$name"
  chmod 755 "$root/usr/local/bin/$name"
done
mkdir -p "$root/workspace"
EOF
chmod 755 "$WORK/hook.sh"
T0=$SECONDS
SITE="$SITE" VENV="$VENV" mmdebstrap --quiet --variant=minbase --include="$INCLUDE" \
  --customize-hook="$WORK/hook.sh" bookworm "$WORK/rootfs.tar" "$MIRROR" >&2
T_ROOTFS=$((SECONDS - T0))
log "rootfs: $(du -h "$WORK/rootfs.tar" | cut -f1) in ${T_ROOTFS}s"

# 2. Import it, and delete the tarball at once (it is the size of the image).
T0=$SECONDS
docker import "$WORK/rootfs.tar" "$ROOTFS_TAG" >&2
rm -f "$WORK/rootfs.tar"
T_IMPORT=$((SECONDS - T0))
log "import: ${T_IMPORT}s"

# 3. The entrypoint layer. The classic builder (DOCKER_BUILDKIT=0) because the Debian engine has
#    no buildx here; --rm --force-rm leave no stopped container behind even when a step fails.
mkdir -p "$WORK/ctx"
printf '%s\n' "$ENTRYPOINT" > "$WORK/ctx/nvidia_entrypoint.sh"
chmod 755 "$WORK/ctx/nvidia_entrypoint.sh"
cat > "$WORK/ctx/Dockerfile" <<EOF
FROM $ROOTFS_TAG
COPY nvidia_entrypoint.sh /opt/nvidia/nvidia_entrypoint.sh
ENV PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="cosmos-transfer1 local stand-in" \\
      cosmos.stand-in.vllm="$VLLM_VERSION" cosmos.stand-in.hash="$HASH"
WORKDIR /workspace
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]
EOF
T0=$SECONDS
DOCKER_BUILDKIT=0 docker build --rm --force-rm -q -t "$CANDIDATE" "$WORK/ctx" >&2
T_BUILD=$((SECONDS - T0))
log "build: ${T_BUILD}s"

# 4. Verify as the project uses it: a non-root uid with no passwd entry imports vLLM from the
#    system Python, and the banner comes first on stdout.
T0=$SECONDS
OUT=$(docker run --rm --user 12345:12345 -e HOME=/tmp -e USER=nobody "$CANDIDATE" sh -c '
  bad=$(find /usr/local/lib/python3.11/dist-packages ! -perm -o=r -print -quit)
  [ -z "$bad" ] || { echo "not world-readable: $bad" >&2; exit 1; }
  exec python3 -c "import vllm, sys; from vllm import LLM; print(\"@@\", vllm.__version__, sys.version)"
') || die "the image failed its check: $OUT"
printf '%s\n' "$OUT" >&2
grep -q "NVIDIA Driver was not detected" <<<"$OUT" || die "no banner on stdout"
grep -q "^@@ $VLLM_VERSION" <<<"$OUT" || die "vllm $VLLM_VERSION not importable in the image"
log "check (uid 12345 imports vllm): $((SECONDS - T0))s"

docker tag "$CANDIDATE" "$IMAGE"
# Older stand-ins of this vLLM version are superseded (kept if a container still uses them).
docker images --format '{{.Repository}}:{{.Tag}}' "$REPO" | grep "^$REPO:vllm${VLLM_VERSION}-" \
  | grep -vx "$IMAGE" | xargs -r docker rmi >/dev/null 2>&1 || true
log "built $IMAGE in $((SECONDS - START))s (rootfs ${T_ROOTFS}s, import ${T_IMPORT}s, build ${T_BUILD}s)"
echo "$IMAGE"
