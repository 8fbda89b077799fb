"""Where the host is and how to reach it: settings, ~/.ssh/config resolution, key checks, TCP.

No SSH happens here; `ssh.Connection` and `ssh.trust_host` build on these. Every failure is an
`SSHError` with a stable code and a one-line hint.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ..errors import SSHError
from . import hostkeys
from .base import Stopwatch


@dataclass(frozen=True)
class HostSettings:
    """Where and how to connect. `None` fields fall back to ~/.ssh/config, then to defaults.

    `host` may be an alias from the ssh config file (`ssh_config`, default ~/.ssh/config):
    its HostName, User, Port and IdentityFile apply unless given here. `known_hosts` defaults
    to ~/.ssh/known_hosts. `host_key_policy` is "strict" or "accept-new".

    `connect_timeout_s` (TCP connect, SSH banner, handshake and auth, each) has no default
    here: its one default is `[remote] connect_timeout_s` in the config, which callers pass.
    """

    host: str
    user: str | None = None
    port: int | None = None
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    host_key_policy: str = hostkeys.STRICT
    connect_timeout_s: float = field(kw_only=True)
    keepalive_s: int = 30
    ssh_config: Path | None = None


@dataclass(frozen=True)
class ResolvedHost:
    """HostSettings with the ssh config applied: exactly what the connection will use."""

    alias: str
    hostname: str
    port: int
    user: str
    key_files: tuple[Path, ...]
    known_hosts: Path

    @property
    def known_hosts_name(self) -> str:
        return hostkeys.known_hosts_name(self.hostname, self.port)

    @property
    def description(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def resolve_host(settings: HostSettings) -> ResolvedHost:
    """Apply the ssh config file to `settings` and check the key files; no network."""
    if not settings.host:
        raise SSHError("no host configured", "set [remote] host in config.toml", code="no_host")
    if settings.host_key_policy not in hostkeys.POLICIES:
        raise SSHError(
            f"host_key_policy = {settings.host_key_policy!r} is not one of {hostkeys.POLICIES}",
            code="ssh_settings",
        )
    entry = _ssh_config_entry(settings)
    if "proxyjump" in entry or "proxycommand" in entry:
        raise SSHError(
            f"{settings.host} uses ProxyJump/ProxyCommand in the ssh config, which is not "
            "supported",
            "connect to the host directly (set [remote] host to an address it answers on)",
            code="ssh_config_unsupported",
        )
    if settings.ssh_key is not None:
        key_files = (check_key_file(Path(settings.ssh_key).expanduser()),)
    else:
        # Like OpenSSH, IdentityFile entries that do not exist are skipped.
        found = [Path(p).expanduser() for p in entry.get("identityfile", [])]
        key_files = tuple(check_key_file(p) for p in found if p.exists())
    port = settings.port or entry.get("port", 22)
    try:
        port = int(port)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:  # also keeps an over-long Port out of socket's C long
        raise SSHError(
            f"Port {entry.get('port')!r} for {settings.host} in the ssh config is not a port "
            "number",
            "fix the Port line of your ssh config (1 to 65535), or set [remote] port",
            code="ssh_config",
        )
    return ResolvedHost(
        alias=settings.host,
        hostname=entry.get("hostname", settings.host),
        port=port,
        user=settings.user or entry.get("user") or getpass.getuser(),
        key_files=key_files,
        known_hosts=Path(settings.known_hosts or "~/.ssh/known_hosts").expanduser(),
    )


def _ssh_config_entry(settings: HostSettings) -> dict:
    path = Path(settings.ssh_config or "~/.ssh/config").expanduser()
    if not path.exists():
        if settings.ssh_config is not None:
            raise SSHError(f"ssh config {path} does not exist", code="ssh_config_missing")
        return {}
    try:
        return dict(paramiko.SSHConfig.from_path(str(path)).lookup(settings.host))
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as e:
        raise SSHError(f"cannot read ssh config {path}: {e}", code="ssh_config") from e


def check_key_file(path: Path) -> Path:
    """Refuse a missing key, and (like OpenSSH) one that group or others may read."""
    if path.exists() and not path.is_file():
        raise SSHError(
            f"SSH key {path} is not a file",
            "point [remote] ssh_key at your private key file (e.g. ~/.ssh/id_ed25519)",
            code="ssh_key_invalid",
        )
    if not path.is_file():
        raise SSHError(
            f"SSH key {path} does not exist",
            "fix [remote] ssh_key, or leave it empty to use ~/.ssh/config or ssh-agent",
            code="ssh_key_missing",
        )
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if os.name == "posix" and mode & 0o077:
        raise SSHError(
            f"SSH key {path} has permissions {mode:04o}: others can read it, so it is refused",
            f"run: chmod 600 {shlex.quote(str(path))}",
            code="ssh_key_permissions",
        )
    if st.st_size > _MAX_KEY_BYTES:
        # paramiko would read all of it into memory before saying it is no key.
        raise SSHError(
            f"SSH key {path} is {st.st_size} bytes: too large to be a private key",
            "point [remote] ssh_key at your private key file (e.g. ~/.ssh/id_ed25519)",
            code="ssh_key_invalid",
        )
    return path


# An RSA-16384 private key in PEM is about 12 kB; nothing this large is a key.
_MAX_KEY_BYTES = 1024 * 1024


def _key_state(path: Path) -> str:
    """One of "ok", "locked" (needs a passphrase), "public" or "unreadable"."""
    try:
        paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError):
        return "locked"  # cryptography says so with a TypeError when given no password
    except Exception:  # noqa: BLE001 - ValueError, UnknownKeyType, SSHException, OSError…
        if path.suffix == ".pub" or _starts_with(path, b"ssh-"):
            return "public"
        return "unreadable"
    return "ok"


def unreadable_key_error(key_files: tuple[Path, ...]) -> SSHError | None:
    """The error for the first key file that is no private key paramiko can read, or None.

    A passphrase-protected key counts as readable: ssh-agent may hold it unlocked.
    """
    for path in key_files:
        state = _key_state(path)
        # The parser's own words (a cryptography FAQ link) say nothing more useful.
        if state == "public":
            return SSHError(
                f"SSH key {path} is a public key",
                "point [remote] ssh_key at the private key, not the public one (.pub)",
                code="ssh_key_invalid",
            )
        if state == "unreadable":
            return SSHError(
                f"SSH key {path} is not a private key paramiko can read",
                "point [remote] ssh_key at your private key, in OpenSSH or PEM format",
                code="ssh_key_invalid",
            )
    return None


def passphrase_error(host: ResolvedHost) -> SSHError:
    """No key could be used: one needs a passphrase we do not have (and ssh-agent lacks it)."""
    locked = next((p for p in host.key_files if _key_state(p) == "locked"), None)
    key = "<key>" if locked is None else shlex.quote(str(locked))
    return SSHError(
        f"the SSH key for {host.description} is protected by a passphrase",
        f"load it into ssh-agent with `ssh-add {key}`",
        code="ssh_key_passphrase",
    )


def login_refused_error(host: ResolvedHost) -> SSHError:
    keys = ", ".join(str(p) for p in host.key_files) or "ssh-agent / ~/.ssh/id_*"
    return SSHError(
        f"{host.description} refused our login (keys tried: {keys})",
        "check the user and that the key is in the host's authorized_keys; try "
        f"`ssh -p {host.port} {shlex.quote(f'{host.user}@{host.hostname}')}`",
        code="auth_failed",
    )


def auth_error(host: ResolvedHost) -> SSHError:
    """Why the login failed, once the handshake is done and every key file is readable.

    paramiko tries each key file as RSA, ECDSA and Ed25519 in turn and re-raises the last
    parse error ("Invalid key", "encountered RSA key, expected OPENSSH key"), which hides the
    refusal or the passphrase behind it.
    """
    if any(_key_state(p) == "locked" for p in host.key_files):
        return passphrase_error(host)
    return login_refused_error(host)


def _starts_with(path: Path, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(prefix)) == prefix
    except OSError:
        return False


def open_socket(host: ResolvedHost, timeout_s: float) -> socket.socket:
    """A TCP connection to the host, with one clear error per way it can fail."""
    where = f"{host.hostname}:{host.port}"
    try:
        return socket.create_connection((host.hostname, host.port), timeout=timeout_s)
    except socket.gaierror as e:
        raise SSHError(
            f"cannot resolve host {host.hostname!r} ({e.strerror})",
            "check [remote] host, or the HostName in your ssh config",
            code="dns",
        ) from e
    except UnicodeError as e:  # IDNA refuses the name (e.g. a label over 63 characters)
        raise SSHError(
            f"cannot resolve host {host.hostname!r}: not a valid host name",
            "check [remote] host, or the HostName in your ssh config",
            code="dns",
        ) from e
    except ConnectionRefusedError as e:
        raise SSHError(
            f"{where} refused the connection",
            "is sshd running there, and is the port right?",
            code="connection_refused",
        ) from e
    except TimeoutError as e:
        raise SSHError(
            f"no answer from {where} within {timeout_s:g} s",
            "check the address, the firewall and that the host is up; "
            "raise [remote] connect_timeout_s for slow links",
            code="connect_timeout",
        ) from e
    except OSError as e:
        raise SSHError(
            f"cannot reach {where}: {e.strerror or e}",
            "check the network and the address",
            code="host_unreachable",
        ) from e


def handshake_error(e: Exception, host: ResolvedHost, timeout_s: float, clock: Stopwatch):
    # paramiko's handshake wait can end at the deadline without an error of its own (then the
    # next step fails with "No existing session"), so the clock is the reliable witness.
    if isinstance(e.__context__, TimeoutError) or clock.elapsed_s >= 0.9 * timeout_s:
        return SSHError(
            f"{host.hostname}:{host.port} accepted the connection but did not speak SSH "
            f"within {timeout_s:g} s",
            "is this the SSH port? raise [remote] connect_timeout_s for slow links",
            code="connect_timeout",
        )
    return SSHError(
        f"SSH handshake with {host.hostname}:{host.port} failed: {e}",
        "is this the SSH port of the host?",
        code="ssh_handshake",
    )
