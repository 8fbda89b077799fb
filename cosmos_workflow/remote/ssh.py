"""One SSH connection to the GPU host, modelled on fabric's `Connection` (paramiko underneath).

It connects lazily, is a context manager, keeps one SFTP client (closed before the SSH client),
sends keepalives, and verifies host keys against known_hosts (hostkeys.py) instead of trusting
whatever answers. Commands are argv lists quoted with `shlex.join`; file operations (transfer.py)
are atomic. Every failure is an `SSHError` (or subclass) with a stable code and a hint.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Iterator, Mapping

import paramiko

from ..errors import HostKeyError, SSHError
from . import hostkeys
from .base import (
    Command,
    CommandResult,
    Counters,
    LineCallback,
    LineStream,
    Stopwatch,
    command_failed,
    command_text,
    command_timed_out,
    shell_script,
)
from .hostkeys import HostKeyInfo
from .hostsettings import (
    HostSettings,
    ResolvedHost,
    auth_error,
    handshake_error,
    login_refused_error,
    open_socket,
    passphrase_error,
    resolve_host,
    unreadable_key_error,
)
from .transfer import SFTPOperations

__all__ = ["Connection", "HostKeyInfo", "HostSettings", "host_key_fingerprint", "trust_host"]

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
# How long the read loop sleeps at most between checks of the deadline and the transport.
_POLL_S = 0.5


def trust_host(settings: HostSettings) -> HostKeyInfo:
    """Fetch the host's key without logging in, and record it in known_hosts if it is new.

    `recorded` is True if this call added the key, False if it was already on file. A key
    that differs from the one on file raises `HostKeyError` ("host_key_changed") and changes
    nothing. Non-22 ports are filed as `[host]:port`, as OpenSSH does.
    """
    host, key, known = _fetch_host_key(settings)
    if not known:
        hostkeys.record_known_host(host.known_hosts, host.known_hosts_name, key)
    return HostKeyInfo(host.known_hosts_name, key.get_name(), key.fingerprint, not known, known)


def host_key_fingerprint(settings: HostSettings) -> HostKeyInfo:
    """The host's key type and SHA256 fingerprint (`SHA256:<base64, no padding>`), no login.

    Records nothing. `known` says whether known_hosts already has this key; a different key on
    file raises `HostKeyError` ("host_key_changed").
    """
    host, key, known = _fetch_host_key(settings)
    return HostKeyInfo(host.known_hosts_name, key.get_name(), key.fingerprint, False, known)


def _fetch_host_key(settings: HostSettings) -> tuple[ResolvedHost, paramiko.PKey, bool]:
    host = resolve_host(settings)
    known = hostkeys.load_known_hosts(host.known_hosts).lookup(host.known_hosts_name)
    clock = Stopwatch()
    sock = open_socket(host, settings.connect_timeout_s)
    try:
        key = hostkeys.fetch_server_key(sock, known, settings.connect_timeout_s)
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise handshake_error(e, host, settings.connect_timeout_s, clock) from e
    finally:
        sock.close()
    on_file = hostkeys.check_against_known(host.known_hosts_name, key, known, host.known_hosts)
    return host, key, on_file


class Connection(SFTPOperations):
    """One SSH connection to one host, opened on first use.

    >>> with Connection(HostSettings("gpu-box", connect_timeout_s=15.0)) as conn:
    ...     conn.run(["nvidia-smi", "-L"]).stdout

    Remote paths everywhere are absolute POSIX paths; `~` is never expanded.
    """

    def __init__(self, settings: HostSettings):
        self.settings = settings
        self.counters = Counters()
        self._host: ResolvedHost | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def host(self) -> ResolvedHost:
        if self._host is None:
            self._host = resolve_host(self.settings)
        return self._host

    @property
    def description(self) -> str:
        return self.host.description

    @property
    def is_connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def connect(self) -> Connection:
        """Open the SSH session now (it opens on first use otherwise). Idempotent."""
        if self.is_connected:
            return self
        self.close()
        host, timeout_s = self.host, self.settings.connect_timeout_s
        log.debug("connecting to %s", host.description)
        client = paramiko.SSHClient()
        hostkeys.load_known_hosts(host.known_hosts, into=client.get_host_keys())
        client.set_missing_host_key_policy(
            hostkeys.KnownHostsPolicy(host.known_hosts, self.settings.host_key_policy)
        )
        clock = Stopwatch()
        sock = open_socket(host, timeout_s)
        try:
            client.connect(
                host.hostname,
                port=host.port,
                username=host.user,
                key_filename=[str(p) for p in host.key_files] or None,
                # The agent is always asked (it may hold a passphrase-protected key); ~/.ssh/id_*
                # only when no key is configured, as OpenSSH does.
                allow_agent=True,
                look_for_keys=not host.key_files,
                sock=sock,
                timeout=timeout_s,
                banner_timeout=timeout_s,
                auth_timeout=timeout_s,
                channel_timeout=timeout_s,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise hostkeys.changed_host_error(
                host.known_hosts_name, e.expected_key, e.key, host.known_hosts
            ) from e
        except paramiko.PasswordRequiredException as e:
            client.close()
            raise passphrase_error(host) from e
        except paramiko.AuthenticationException as e:
            client.close()
            raise login_refused_error(host) from e
        except (paramiko.SSHException, OSError, EOFError, ValueError) as e:
            # ValueError: a key file of random bytes fails paramiko's parse with a
            # UnicodeDecodeError.
            transport = client.get_transport()
            # A session id exists once the key exchange is done: what failed was the login.
            logging_in = transport is not None and transport.session_id is not None
            logging_in = logging_in and isinstance(e, paramiko.SSHException)
            client.close()
            # paramiko reports a key file it cannot parse as a bare SSHException, which would
            # read as a failed handshake ("is this the SSH port?"): name the key instead.
            error = unreadable_key_error(host.key_files)
            if error is None and logging_in:
                error = auth_error(host)
            raise error or handshake_error(e, host, timeout_s, clock) from e
        transport = client.get_transport()
        if self.settings.keepalive_s > 0:
            transport.set_keepalive(self.settings.keepalive_s)
        self._client = client
        self.counters.connect += 1
        return self

    def close(self) -> None:
        """Close SFTP, then SSH (fabric's order). Safe to call twice; the next call reconnects."""
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "not connected"
        return f"<Connection {self.settings.host} {state}>"

    @property
    def client(self) -> paramiko.SSHClient:
        self.connect()
        return self._client

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The one SFTP client of this connection, opened on first use."""
        if self._sftp is None or not self.is_connected:
            client = self.client
            with self._lost_on_failure("opening SFTP"):
                self._sftp = client.open_sftp()
        return self._sftp

    @contextlib.contextmanager
    def _lost_on_failure(self, doing: str) -> Iterator[None]:
        """Report a dropped connection as one "connection_lost" error.

        paramiko signals a dead transport in several ways depending on where the drop lands
        (SSHException, EOFError, or a plain OSError "Socket is closed" in the middle of an
        SFTP write), so any OSError counts as a lost connection once the SFTP channel or the
        transport is down. (paramiko closes the channels before it marks the transport
        inactive, so the channel is the first to tell.)
        """
        try:
            yield
        except (paramiko.SSHException, EOFError, ConnectionError, TimeoutError) as e:
            raise self._connection_lost(doing) from e
        except OSError as e:
            sftp_closed = self._sftp is not None and self._sftp.sock.closed
            if self.is_connected and not sftp_closed:
                raise
            raise self._connection_lost(doing) from e

    def _connection_lost(self, doing: str) -> SSHError:
        self.close()
        return SSHError(
            f"lost the connection to {self.host.description} while {doing}",
            "check the network and the host, then run the command again",
            code="connection_lost",
        )

    # --- tunnels ------------------------------------------------------------------------------

    def open_tunnel(self, port: int, *, timeout_s: float | None = None) -> paramiko.Channel:
        """A channel to 127.0.0.1:`port` ON THE HOST (SSH "direct-tcpip"), over this connection.

        Like `ssh -L`, without a second connection or a local listening port: the host's
        loopback service is reached, nothing is opened on the host's network. Raises SSHError
        "tunnel_refused" when nothing listens there, "connection_lost" when the SSH connection
        is gone.
        """
        # No reconnect here: tunnels are opened from several threads at once; reconnecting is
        # the caller's (`connect()` first, and again after "connection_lost").
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            raise self._connection_lost(f"opening a tunnel to port {port}")
        try:
            channel = transport.open_channel(
                "direct-tcpip",
                ("127.0.0.1", port),
                ("127.0.0.1", 0),
                timeout=timeout_s or self.settings.connect_timeout_s,
            )
        except paramiko.ChannelException as e:
            raise SSHError(
                f"nothing answers on port {port} of {self.host.description} "
                f"(the SSH server said: {e.text or e.code})",
                "`cosmos serve status` says whether the server runs",
                code="tunnel_refused",
            ) from e
        except (paramiko.SSHException, EOFError, OSError) as e:
            if transport.is_active():
                raise SSHError(
                    f"cannot open a tunnel to port {port} of {self.host.description}: {e}",
                    "the host's sshd may forbid TCP forwarding (AllowTcpForwarding)",
                    code="tunnel_refused",
                ) from e
            raise self._connection_lost(f"opening a tunnel to port {port}") from e
        if timeout_s is not None:
            channel.settimeout(timeout_s)
        return channel

    # --- commands -----------------------------------------------------------------------------

    def run(
        self,
        command: Command,
        *,
        check: bool = True,
        on_stdout: LineCallback | None = None,
        on_stderr: LineCallback | None = None,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run `command` on the host and return its record; raise if it exits non-zero.

        `command` is an argv list (quoted with `shlex.join`) or a `ShellCommand`. Output is
        collected; `on_stdout` / `on_stderr` also get each line as it arrives. `cwd` (absolute)
        and `env` are applied by a quoted `cd` / `export` prefix, so they work whatever the
        server's AcceptEnv says. `check=False` returns the record of a failed command instead
        of raising `RemoteCommandError`. On timeout the channel is closed and
        `RemoteCommandError` ("command_timeout") raised; a remote process that ignores its
        closed pipes may keep running. No tty is allocated; stdin is closed.
        """
        text = command_text(command)
        script = shell_script(text, cwd=cwd, env=env)
        transport = self.client.get_transport()
        self.counters.exec += 1
        clock = Stopwatch()
        out, err = LineStream(on_stdout), LineStream(on_stderr)
        with self._lost_on_failure(f"running `{text[:60]}`"):
            channel = transport.open_session(timeout=self.settings.connect_timeout_s)
            try:
                channel.exec_command(script)
                channel.shutdown_write()
                finished = self._pump(channel, out, err, clock, timeout_s)
                exit_code = channel.recv_exit_status() if finished else None
            finally:
                channel.close()
        result = CommandResult(text, exit_code, out.finish(), err.finish(), clock.elapsed_s)
        if not finished:
            raise command_timed_out(result, timeout_s, self.host.hostname)
        if check and exit_code != 0:
            raise command_failed(result, self.host.hostname)
        return result

    def _pump(self, channel, out, err, clock: Stopwatch, timeout_s: float | None) -> bool:
        """Move output into `out`/`err` until the command ends (True) or times out (False)."""
        transport = channel.get_transport()
        while True:
            if channel.recv_ready():
                out.feed(channel.recv(_READ_SIZE))
            elif channel.recv_stderr_ready():
                err.feed(channel.recv_stderr(_READ_SIZE))
            elif channel.closed or (channel.status_event.is_set() and channel.eof_received):
                # A channel closed by a dying transport has no exit status (-1 stays); one
                # killed by a signal has none either, but its transport lives on.
                if channel.exit_status == -1 and not transport.is_active():
                    raise EOFError("the connection dropped before the command ended")
                return True
            else:
                wait_s = _POLL_S
                if timeout_s is not None:
                    wait_s = min(wait_s, timeout_s - clock.elapsed_s)
                    if wait_s <= 0:
                        return False
                # After EOF the channel's pipe stays readable, so select would spin: wait for
                # the exit status instead.
                if channel.eof_received:
                    channel.status_event.wait(wait_s)
                else:
                    select.select([channel], [], [], wait_s)
