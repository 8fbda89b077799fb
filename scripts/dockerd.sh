#!/usr/bin/env bash
# Make a Docker engine available on this machine for the docker-runner tests.
#
#   scripts/dockerd.sh start    # install Debian's docker.io (+ mmdebstrap, sudo) if missing; start
#                               # dockerd in the background unless `docker info` already answers
#   scripts/dockerd.sh status   # say whether an engine answers, and whether this script started it
#   scripts/dockerd.sh stop     # stop the dockerd THIS script started (never anyone else's)
#
# The test machines have no systemd and no docker registry: dockerd is started by hand, its log in
# $COSMOS_DOCKERD_LOG and its pid in $COSMOS_DOCKERD_PIDFILE (dockerd writes that file itself and
# removes it on a clean exit; only this script uses that path, so a pid there is one we started).
# mmdebstrap is what scripts/docker_image.sh builds its image's root filesystem with; sudo is
# installed because the docker runner can run docker through sudo on a GPU host.
# `start` prints nothing on stdout (errors go to stderr) and is idempotent.
set -euo pipefail

LOG=${COSMOS_DOCKERD_LOG:-/var/log/cosmos-dockerd.log}
PIDFILE=${COSMOS_DOCKERD_PIDFILE:-/run/cosmos-dockerd.pid}
LOCK=${PIDFILE%.pid}.lock
SOCK=/var/run/docker.sock
WAIT_SECONDS=${COSMOS_DOCKERD_WAIT:-60}

die() { echo "dockerd.sh: $*" >&2; exit 1; }

engine_answers() { timeout 20 docker info >/dev/null 2>&1; }

find_dockerd() {
  command -v dockerd 2>/dev/null || { for d in /usr/sbin/dockerd /usr/bin/dockerd; do
    [ -x "$d" ] && { echo "$d"; return 0; }; done; return 1; }
}

# The pid in our pid file, if that process is alive and is a dockerd (guards against pid reuse).
our_pid() {
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid=$(tr -dc '0-9' < "$PIDFILE")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
    */dockerd*) echo "$pid" ;;
    *) return 1 ;;
  esac
}

install_missing() {
  local pkgs=()
  find_dockerd >/dev/null || pkgs+=(docker.io)
  command -v mmdebstrap >/dev/null 2>&1 || pkgs+=(mmdebstrap)
  command -v sudo >/dev/null 2>&1 || pkgs+=(sudo)
  [ ${#pkgs[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "need root to install ${pkgs[*]}"
  echo "dockerd.sh: installing ${pkgs[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
}

start() {
  install_missing
  # docker.io's postinst creates the group; dockerd makes its socket group docker when it exists,
  # so a docker-group user (the runner's non-root case) can use the engine.
  getent group docker >/dev/null || groupadd --system docker
  command -v docker >/dev/null 2>&1 || die "no docker CLI on PATH"

  exec 9>"$LOCK"
  flock 9   # two concurrent starts must not launch two daemons
  if ! engine_answers; then
    if ! our_pid >/dev/null; then
      local dockerd args
      dockerd=$(find_dockerd) || die "dockerd not found after installing docker.io"
      args=(--pidfile "$PIDFILE" --group docker)
      # A storage driver given both as a flag and in daemon.json makes dockerd refuse to start.
      grep -qs '"storage-driver"' /etc/docker/daemon.json || args+=(--storage-driver overlay2)
      mkdir -p "$(dirname "$LOG")"
      echo "=== $(date -u +%FT%TZ) dockerd.sh start: $dockerd ${args[*]}" >> "$LOG"
      # Own session (setsid): a job-control kill of the caller's process group must not take the
      # daemon with it. fd 9 (the lock) is closed for it, else it would hold the lock forever.
      setsid "$dockerd" "${args[@]}" </dev/null >>"$LOG" 2>&1 9>&- &
      local launched=$!
    fi
    local deadline=$((SECONDS + WAIT_SECONDS))
    until engine_answers; do
      if [ -n "${launched:-}" ] && ! kill -0 "$launched" 2>/dev/null; then
        tail -n 20 "$LOG" >&2
        die "dockerd exited during start-up (log: $LOG)"
      fi
      [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$LOG" >&2;
        die "docker info did not answer within ${WAIT_SECONDS}s (log: $LOG)"; }
      sleep 0.5
    done
  fi
  if [ -S "$SOCK" ] && [ "$(stat -c %G "$SOCK")" != docker ]; then
    chgrp docker "$SOCK" 2>/dev/null || echo "dockerd.sh: $SOCK is not group docker" >&2
  fi
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    engine_answers && echo "dockerd.sh: the running engine was not started by this script; left alone" >&2
    return 0
  fi
  kill -TERM "$pid"
  # dockerd stops its containers first (10 s grace each, in parallel) and then its containerd.
  local deadline=$((SECONDS + WAIT_SECONDS))
  while [ -d "/proc/$pid" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "dockerd (pid $pid) still running ${WAIT_SECONDS}s after SIGTERM"
    sleep 0.5
  done
  rm -f "$PIDFILE"
}

status() {
  local pid=""
  pid=$(our_pid) || pid=""
  if engine_answers; then
    if [ -n "$pid" ]; then echo "running: dockerd pid $pid, started by dockerd.sh (log: $LOG)"
    else echo "running: an engine answers, not started by dockerd.sh"; fi
    return 0
  fi
  if [ -n "$pid" ]; then echo "starting or unresponsive: dockerd pid $pid (log: $LOG)"
  else echo "not running"; fi
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
