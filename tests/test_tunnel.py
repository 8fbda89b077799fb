"""HTTP through the tunnel (a direct-tcpip channel over the real sshd, or a local socket) to a
plain HTTP server on 127.0.0.1: the transport the warm server's requests take."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from cosmos_workflow.errors import CosmosError
from cosmos_workflow.remote.tunnel import Target, request_json

pytestmark = pytest.mark.ssh


@pytest.fixture
def split_server():
    """An HTTP server that sends its headers, then (in a second write, later) the body:
    a client must keep reading the body after the headers, as vLLM's answers often arrive."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    body = json.dumps({"answer": "x" * 5000}).encode()

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += client.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
                client.sendall(head.encode() + b"Content-Type: application/json\r\n\r\n")
                time.sleep(0.3)  # the stand-in's own pacing: the body is a separate segment
                client.sendall(body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], body
    listener.close()


def test_body_sent_after_the_headers_arrives_whole(connection, split_server):
    port, body = split_server
    connection.connect()
    target = Target(open_socket=lambda: connection.open_tunnel(port, timeout_s=30))
    status, answer = request_json(target, "GET", "/health", timeout_s=30)
    assert status == 200
    assert answer == json.loads(body)


def test_nothing_listening_is_a_tunnel_refused_error(connection):
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    connection.connect()
    with pytest.raises(CosmosError) as caught:
        connection.open_tunnel(port, timeout_s=10)
    assert caught.value.code == "tunnel_refused"
    assert f"nothing answers on port {port}" in caught.value.message
