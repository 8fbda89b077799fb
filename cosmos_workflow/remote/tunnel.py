"""HTTP/JSON to the warm server: through an SSH tunnel, a local socket, or a plain URL.

`http.client` over whatever `open_socket()` returns: a paramiko channel ("direct-tcpip" to the
host's loopback, `Connection.open_tunnel`), a socket (`LocalConnection.open_tunnel`), or, for
`--endpoint URL`, http.client's own connection. One request per connection (`Connection:
close`), so concurrent requests never share a stream. No dependency beyond the standard library.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paramiko


class Unreachable(Exception):
    """The request got no complete answer: refused, cut mid-way, or timed out."""


class _ChannelReader(io.RawIOBase):
    """A readable raw stream over a channel's recv (what http.client reads responses from)."""

    def __init__(self, channel):
        self.channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.channel.recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ChannelSocket:
    """The part of the socket interface http.client uses, over a paramiko channel."""

    def __init__(self, channel):
        self.channel = channel

    def sendall(self, data: bytes) -> None:
        self.channel.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_ChannelReader(self.channel))

    def settimeout(self, timeout_s) -> None:
        self.channel.settimeout(timeout_s)

    def close(self) -> None:
        """Nothing: http.client "closes" the socket of a `Connection: close` response as soon as
        the headers are in, while the body is still to be read from makefile()'s stream (a real
        socket stays open while that stream is). The channel is closed by `release()`."""

    def release(self) -> None:
        self.channel.close()


class _TunnelHTTPConnection(http.client.HTTPConnection):
    def __init__(self, open_socket: Callable[[], Any], timeout_s: float):
        super().__init__("127.0.0.1", timeout=timeout_s)
        self._open_socket = open_socket

    def connect(self) -> None:
        sock = self._open_socket()
        self.sock = sock if isinstance(sock, socket.socket) else _ChannelSocket(sock)
        self._opened = self.sock
        self.sock.settimeout(self.timeout)

    def release(self) -> None:
        """Close the connection and its channel (after the response was read)."""
        self.close()
        opened = getattr(self, "_opened", None)
        if isinstance(opened, _ChannelSocket):
            opened.release()


def shown_url(url: str) -> str:
    """`url` as printed and recorded: scheme, host, port and path; never a user:password@ or
    a query string, where a key could hide (keys come from COSMOS_SERVER_API_KEY only)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url.split("@")[-1].split("?")[0]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Target:
    """Where requests go: `open_socket` (tunnel or local socket) or an `http(s)://` URL.

    `base_path` is the API's prefix ("/v1"); `headers` go with every request (an API key's
    `Authorization`: never printed, logged or recorded; `repr` leaves it out).
    """

    open_socket: Callable[[], Any] | None = None
    url: str | None = None
    base_path: str = "/v1"
    headers: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        where = self.url or "tunnel"
        return f"Target({where}, base_path={self.base_path!r}, {len(self.headers)} header(s))"

    @classmethod
    def for_url(cls, url: str, api_key: str | None = None) -> Target:
        """An OpenAI-compatible base URL, e.g. `http://gpu:8000/v1` (`/v1` when no path)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{shown_url(url)!r} is not an http:// or https:// URL")
        path = parts.path.rstrip("/") or "/v1"
        headers = (("Authorization", f"Bearer {api_key}"),) if api_key else ()
        return cls(url=f"{parts.scheme}://{parts.netloc}", base_path=path, headers=headers)

    def connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.open_socket is not None:
            return _TunnelHTTPConnection(self.open_socket, timeout_s)
        parts = urlsplit(self.url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout_s, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)


def request_json(
    target: Target, method: str, path: str, payload: Any = None, *, timeout_s: float = 600.0
) -> tuple[int, Any]:
    """(HTTP status, parsed JSON body, or the body text when it is not JSON).

    Raises `Unreachable` when no complete answer came; errors of the tunnel itself
    (`SSHError`: the SSH connection dropped, nothing listens on the port) pass through.
    """
    body = None if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = {"Connection": "close", "Accept": "application/json", **dict(target.headers)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn = target.connection(timeout_s)
    try:
        conn.request(method, target.base_path + path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        status = response.status
    except (OSError, EOFError, http.client.HTTPException, paramiko.SSHException) as e:
        raise Unreachable(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
    finally:
        getattr(conn, "release", conn.close)()
    text = data.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
