"""Host key verification against an OpenSSH known_hosts file.

The rules are OpenSSH's: a key recorded for the host must match (a changed key is refused, always);
an unknown host is refused under "strict" and recorded on first connect under "accept-new"
(StrictHostKeyChecking=accept-new). New entries are appended, never rewritten, so the user's
comments, markers and hashed entries stay as they were.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ..errors import HostKeyError

STRICT = "strict"
ACCEPT_NEW = "accept-new"
POLICIES = (STRICT, ACCEPT_NEW)

# What HostKeys.lookup returns for one host name: key type -> key, or None if unknown.
KnownKeys = Mapping[str, paramiko.PKey] | None


@dataclass(frozen=True)
class HostKeyInfo:
    """A server's host key as OpenSSH shows it.

    `host` is the known_hosts name (`host`, or `[host]:port` off port 22); `recorded` is True
    if this call added the key to known_hosts; `known` if it was on file before.
    """

    host: str
    key_type: str
    fingerprint_sha256: str
    recorded: bool
    known: bool = False


def known_hosts_name(hostname: str, port: int) -> str:
    """The name OpenSSH files a host under: `host` on port 22, `[host]:port` otherwise."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def load_known_hosts(path: Path, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """The entries of `path` (hashed ones included) added to `into` (or a new HostKeys).

    An absent file is an empty one. Lines paramiko cannot read (a damaged key, an unknown key
    type, `@cert-authority` / `@revoked` markers) are skipped, as OpenSSH skips what it cannot
    use, instead of failing every connection.
    """
    keys = into if into is not None else paramiko.HostKeys()
    if not path.exists():
        return keys
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:  # a folder, no permission, …: no key can be checked against it
        raise HostKeyError(
            f"cannot read known_hosts {path}: {e.strerror or e}",
            "set [remote] known_hosts to a readable file (OpenSSH's known_hosts format)",
            code="known_hosts_read",
        ) from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except Exception:  # InvalidHostKey, SSHException, ValueError…: any unreadable line
            continue
        if entry is not None and entry.key is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append one `name type base64` line to `path`, creating it (and its folder) if needed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    with open(path, "a+b") as f:
        # A file whose last line lacks its newline would glue our entry onto it.
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("ascii"))


def record_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """`append_known_host`, with a failure to write turned into a one-line HostKeyError."""
    try:
        append_known_host(path, name, key)
    except OSError as e:
        raise HostKeyError(
            f"cannot record the host key of {name} in {path}: {e.strerror or e}",
            "check that file's permissions, or set [remote] known_hosts",
            code="known_hosts_write",
        ) from None


def unknown_host_error(name: str, key: paramiko.PKey, known_hosts: Path) -> HostKeyError:
    return HostKeyError(
        f"host key of {name} is not in {known_hosts} ({key.get_name()} {key.fingerprint})",
        "check the fingerprint with the host's owner, then run `cosmos remote trust`; "
        'or set host_key_policy = "accept-new" to record new hosts on first connect',
        code="host_key_unknown",
    )


def changed_host_error(
    name: str, known: paramiko.PKey | None, offered: paramiko.PKey, known_hosts: Path
) -> HostKeyError:
    was = f"{known.get_name()} {known.fingerprint}" if known is not None else "another key"
    return HostKeyError(
        f"HOST KEY OF {name} HAS CHANGED: {known_hosts} has {was}, the server offers "
        f"{offered.get_name()} {offered.fingerprint}; refusing to connect (possible "
        "man-in-the-middle attack)",
        "if the host was really reinstalled, remove the old key with "
        f"`ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(known_hosts))}` "
        "and run `cosmos remote trust`",
        code="host_key_changed",
    )


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for hosts with no entry at all (mismatches never reach it).

    "strict" refuses; "accept-new" appends the key to known_hosts and accepts it.
    """

    def __init__(self, known_hosts: Path, policy: str):
        if policy not in POLICIES:
            raise ValueError(f"host_key_policy must be one of {POLICIES}, not {policy!r}")
        self.known_hosts = known_hosts
        self.policy = policy

    def missing_host_key(self, client, hostname, key):
        if self.policy != ACCEPT_NEW:
            raise unknown_host_error(hostname, key, self.known_hosts)
        record_known_host(self.known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


def preferred_key_types(known: KnownKeys, offered: list[str]):
    """Key types to offer, those already on file first (as paramiko's SSHClient does), so a
    host with several keys presents the one we can check instead of looking changed."""
    if not known:
        return offered
    first = []
    for key_type in known:
        if key_type == "ssh-rsa":
            first += ["rsa-sha2-512", "rsa-sha2-256"]
        first.append(key_type)
    first = [t for t in dict.fromkeys(first) if t in offered]
    return first + [t for t in offered if t not in first]


def fetch_server_key(sock: socket.socket, known: KnownKeys, timeout_s: float) -> paramiko.PKey:
    """Run the key exchange on `sock` and return the server's host key; no authentication."""
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout_s
        transport.handshake_timeout = timeout_s
        options = transport.get_security_options()
        options.key_types = preferred_key_types(known, list(options.key_types))
        transport.start_client(timeout=timeout_s)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def check_against_known(name: str, key: paramiko.PKey, known: KnownKeys, path: Path) -> bool:
    """True if `key` is on file for `name`, False if `name` has no entry; raises if it differs."""
    if not known:
        return False
    on_file = known.get(key.get_name())
    if on_file is not None and on_file == key:
        return True
    raise changed_host_error(name, on_file or next(iter(known.values()), None), key, path)
