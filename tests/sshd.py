"""pytest plugin: a real OpenSSH sshd on 127.0.0.1, for tests of the SSH layer.

Enable it with `pytest_plugins = ["tests.sshd"]` in tests/conftest.py. Fixtures:

- `sshd` (session): a running server with throwaway host and user keys; see `SSHServer`.
- `other_host_key` (session): the public key line of a second host key (for "changed key").
- `changed_known_hosts`: a known_hosts that files that other key under the server's name.
- `connection`: parametrized over "ssh" (a `Connection` to `sshd`) and "local"
  (`LocalConnection`), for tests that both transports must pass.

The server runs as the current user (root in CI: `PermitRootLogin prohibit-password`), with
`StrictModes no` (the temp folders are not 0700) and `UsePAM no` (no system login stack).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cosmos_workflow.remote.local import LocalConnection
from cosmos_workflow.remote.ssh import Connection, HostSettings

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", ""))
START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> Path:
    """A new passphrase-less ed25519 key pair at `path` / `path.pub`."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def openssh_fingerprint(public_key: Path) -> str:
    """`SHA256:…` as `ssh-keygen -lf` prints it: the reference our fingerprints must equal."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


@dataclass
class SSHServer:
    """A running sshd and everything a client needs to reach it."""

    host: str
    port: int
    user: str
    key: Path  # the user's private key (0600, in authorized_keys)
    known_hosts: Path  # the host key filed under [127.0.0.1]:port; treat as read-only
    host_key_pub: Path
    host_key_fingerprint: str  # SHA256:… per ssh-keygen
    folder: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def known_hosts_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    def host_pub_fields(self) -> list[str]:
        """`[key type, base64]` of the host key the server presents."""
        return self.host_key_pub.read_text().split()[:2]

    @property
    def log(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")

    def settings(self, **overrides) -> HostSettings:
        """HostSettings for this server (strict host keys, its own empty ssh_config)."""
        values = dict(
            host=self.host,
            port=self.port,
            user=self.user,
            ssh_key=self.key,
            known_hosts=self.known_hosts,
            ssh_config=self.folder / "ssh_config",
            connect_timeout_s=5.0,
        )
        values.update(overrides)
        return HostSettings(**values)

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command name: state, ppid, …
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def kill_sessions(self) -> int:
        """SIGKILL every connection's server process, dropping those connections mid-flight
        (for fault-injection tests). Returns how many were killed; the listener stays up."""
        killed = 0
        for pid in self.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed


def _sshd_config(folder: Path, port: int, host_key: Path, authorized_keys: Path) -> str:
    root = os.geteuid() == 0
    return "\n".join(
        [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"PermitRootLogin {'prohibit-password' if root else 'no'}",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel INFO",
            "",
        ]
    )


def _wait_until_serving(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4) == b"SSH-":
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on port {port}:\n{log.read_text()}")


def start_sshd(
    folder: Path, sshd: str | None = None, *, other_users: tuple[str, ...] = ()
) -> SSHServer:
    """Start a real OpenSSH server on 127.0.0.1 in `folder`, with throwaway host and user keys.

    `other_users`: local accounts that may log in too, with the same key. sshd reads a user's
    authorized keys as that user, so then `folder` must be one every user can read.
    Used by the `sshd` fixture and by scripts/bench.py; stop it with `stop_sshd`.
    """
    sshd = sshd or SSHD
    if sshd is None:
        raise RuntimeError("OpenSSH's sshd is not installed (apt-get install openssh-server)")
    host_key = keygen(folder / "ssh_host_ed25519_key", "test-host")
    user_key = keygen(folder / "id_ed25519", "test-user")
    authorized_keys = folder / "authorized_keys"
    authorized_keys.write_text(Path(f"{user_key}.pub").read_text())
    if other_users:
        keys = folder / "keys"
        keys.mkdir(mode=0o755)
        for user in (getpass.getuser(), *other_users):
            (keys / user).write_text(authorized_keys.read_text())
            (keys / user).chmod(0o644)
        authorized_keys = keys / "%u"
    (folder / "ssh_config").write_text("")  # so the developer's ~/.ssh/config never applies
    if os.geteuid() == 0:
        # sshd's privilege-separation folder; a fresh container may not have it.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    host_pub = Path(f"{host_key}.pub")
    for _attempt in range(3):  # another process may grab the port between pick and bind
        port = free_port()
        config = folder / "sshd_config"
        config.write_text(_sshd_config(folder, port, host_key, authorized_keys))
        log = folder / "sshd.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        try:
            _wait_until_serving(process, port, log)
            break
        except RuntimeError:
            process.kill()
            process.wait()
            if "Address already in use" not in log.read_text():
                raise
    else:
        raise RuntimeError("sshd did not start: no free port after 3 tries")
    known_hosts = folder / "known_hosts"
    key_type, key_b64 = host_pub.read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
    return SSHServer(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        key=user_key,
        known_hosts=known_hosts,
        host_key_pub=host_pub,
        host_key_fingerprint=openssh_fingerprint(host_pub),
        folder=folder,
        process=process,
    )


def stop_sshd(server: SSHServer) -> None:
    server.kill_sessions()
    server.process.terminate()
    try:
        server.process.wait(5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SSHServer:
    """A real OpenSSH server on 127.0.0.1, logging us in with a throwaway key."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


@pytest.fixture(scope="session")
def other_host_key(tmp_path_factory) -> str:
    """`<type> <base64>` of a second host key, never served by `sshd`."""
    key = keygen(tmp_path_factory.mktemp("other-host-key") / "key", "impostor")
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


@pytest.fixture
def changed_known_hosts(sshd, other_host_key, tmp_path) -> Path:
    """A known_hosts that records a different key for the server's `[127.0.0.1]:port`."""
    path = tmp_path / "known_hosts_changed"
    path.write_text(f"{sshd.known_hosts_name} {other_host_key}\n")
    return path


@pytest.fixture(params=["ssh", "local"])
def connection(request):
    """A `Connection` to `sshd`, or a `LocalConnection`: tests both must pass."""
    if request.param == "local":
        conn = LocalConnection()
    else:
        conn = Connection(request.getfixturevalue("sshd").settings())
    with conn:
        yield conn
