"""A real Docker host for tests: dockerd, the stand-in of NVIDIA's image, throwaway accounts.

- `require_docker()`: a Docker engine answers (`.ci/run` starts one with scripts/dockerd.sh).
- `stand_in_image()`: the image scripts/docker_image.sh builds (Debian's python3 with the
  engine venv's real CPU vLLM, an entrypoint that prints a banner and `exec`s, as NGC images
  do); cached by a content tag, so it is built once per machine. COSMOS_TEST_DOCKER_IMAGE names
  one already built.
- `Account`: a local user made for a test (a home of its own, optional groups and a sudoers
  rule), removed afterwards: the SSH users of a shared GPU host that is not root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .engine import REPO, missing_in_ci

IMAGE_SCRIPT = REPO / "scripts" / "docker_image.sh"
ACCOUNT_PREFIX = "cosmos-t-"
SUDOERS_DIR = Path("/etc/sudoers.d")


def docker(*args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=check
    )


def require_docker() -> None:
    """Stop unless a Docker engine answers: a failure under CI=true, a skip elsewhere."""
    if shutil.which("docker") is None:
        missing_in_ci("docker tests", "no docker command (scripts/dockerd.sh start installs it)")
    elif docker("info", check=False).returncode != 0:
        missing_in_ci("docker tests", "no Docker engine answers (scripts/dockerd.sh start)")
    if os.geteuid() != 0:
        missing_in_ci("docker tests", "they make test accounts and sudo rules: run them as root")


def stand_in_image() -> str:
    """The stand-in image's reference (built, or found by its content tag, in seconds)."""
    if os.environ.get("COSMOS_TEST_DOCKER_IMAGE"):
        return os.environ["COSMOS_TEST_DOCKER_IMAGE"]
    proc = subprocess.run(["bash", str(IMAGE_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/docker_image.sh failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def containers(name_part: str) -> list[str]:
    """Names of the containers (running or not) whose name holds `name_part`."""
    out = docker("ps", "-a", "--filter", f"name={name_part}", "--format", "{{.Names}}").stdout
    return out.split()


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: Path

    def owns_everything_under(self, *folders: Path) -> list[str]:
        """Paths under `folders` NOT owned by this account (empty: it owns them all)."""
        others = []
        for folder in folders:
            for path in [folder, *folder.rglob("*")]:
                st = path.lstat()
                if (st.st_uid, st.st_gid) != (self.uid, self.gid):
                    others.append(f"{path} ({st.st_uid}:{st.st_gid})")
        return others

    def chown(self, *paths: Path) -> None:
        for path in paths:
            shutil.chown(path, self.uid, self.gid)
            for child in path.rglob("*") if path.is_dir() else ():
                os.lchown(child, self.uid, self.gid)


def remove_account(name: str) -> None:
    """Delete a test account, its home and its sudoers rule (nothing when there is none)."""
    assert name.startswith(ACCOUNT_PREFIX), name  # never anyone else's
    (SUDOERS_DIR / name).unlink(missing_ok=True)
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, check=False)


def make_account(
    base: Path, suffix: str, *, groups: tuple[str, ...] = (), sudoers: str | None = None
) -> Account:
    """A new local account `cosmos-t-<suffix>` with its home under `base` (which every user can
    traverse). `sudoers`: its rule's text after the user name, e.g. `ALL=(root) NOPASSWD: ALL`.

    Its password field is `*` (no password works, the account is not locked): sshd without PAM
    refuses a locked account even with a key, and sudo rules that need a password still ask.
    """
    name = ACCOUNT_PREFIX + suffix
    remove_account(name)  # a leftover of an interrupted run
    home = base / name
    cmd = ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh"]
    if groups:
        cmd += ["--groups", ",".join(groups)]
    subprocess.run([*cmd, name], check=True, capture_output=True, text=True)
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    if sudoers is not None:
        rule = SUDOERS_DIR / name
        rule.write_text(f"{name} {sudoers}\n")
        rule.chmod(0o440)
        subprocess.run(["visudo", "-cf", str(rule)], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=home)


def path_without(tmp: Path, *commands: str) -> str:
    """A PATH of one folder linking every command of the usual PATH but `commands`: a host
    that lacks them (sudo, say), for the local transport."""
    farm = tmp / "bin"
    farm.mkdir(parents=True, exist_ok=True)
    for folder in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = farm / entry.name
            if entry.name in commands or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry.path)
    return str(farm)
