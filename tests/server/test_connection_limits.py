"""Connections that misbehave are cut (runtime/server/framing.py) on a real server process: half-open and
trickling connections time out, a client that stops reading is dropped, past max_connections a new one
gets a 503, and secret-looking query values never reach the access log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime.config import Settings
from runtime.store.keys import KeyStore
from tests.serverproc import free_port, wait_healthy

LIMITS = {"STACKLET_READ_TIMEOUT": "1", "STACKLET_WRITE_TIMEOUT": "1", "STACKLET_MAX_CONNECTIONS": "6"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, Path]]:
    home = tmp_path_factory.mktemp("limits")
    env = {**os.environ, "STACKLET_HOME": str(home), **LIMITS}
    key, _ = KeyStore(Settings.load(environ=env).paths).create("limits", scope="admin")
    port = free_port()
    log_path = home / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "runtime", "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process)
            yield port, key, log_path
        finally:
            process.terminate()
            process.wait(timeout=60)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(15)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server ends the connection (EOF or reset); False if it is still open after the timeout."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def get_health(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), however the server's writes arrive."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(65536)
    head, _, body = response.partition(b"\r\n\r\n")
    sizes = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(sizes[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_connection_that_sends_nothing_is_closed(server):
    port, _, _ = server
    with connect(port) as sock:
        assert closed_by_server(sock)


def test_headers_trickled_a_byte_at_a_time_are_cut(server):
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with pytest.raises(OSError):  # the server cuts the connection while the client still sends
            for _ in range(100):
                sock.sendall(b"X")
                time.sleep(0.2)
        assert closed_by_server(sock)


def test_a_body_that_stops_arriving_is_cut(server):
    port, key, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /v1-openai/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\":")
        assert closed_by_server(sock)


def test_a_kept_alive_connection_serves_requests_after_a_pause(server):
    port, _, _ = server
    with connect(port) as sock:
        assert get_health(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # under uvicorn's 5 s keep-alive and the 1 s read timeout, which starts with a request
        assert get_health(sock).startswith(b"HTTP/1.1 200")


def test_a_client_that_stops_reading_is_dropped(server):
    port, key, _ = server
    request = (b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
               + key.encode() + b"\r\n\r\n")
    size = len(httpx.get(f"http://127.0.0.1:{port}/openapi.json",
                         headers={"Authorization": f"Bearer {key}"}).content)
    pipelined = 400
    with connect(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request * pipelined)
        time.sleep(4)  # the send buffers fill, the server's write timeout (1 s) runs out
        received = 0
        try:
            while chunk := sock.recv(65536):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < size * pipelined


def test_past_max_connections_a_new_one_gets_a_503_envelope(server):
    port, _, _ = server
    held = [connect(port) for _ in range(6)]
    try:
        with connect(port) as extra:
            head, _, body = extra.recv(65536).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 1" in head.lower()
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


def test_secret_query_values_never_reach_the_access_log(server):
    port, key, log_path = server
    url = f"http://127.0.0.1:{port}/v1-openai/models"
    for query in (f"api_key={key}", f"limit=5&access_token={key}", f"X-Api-Key={key}&x=1"):
        httpx.get(f"{url}?{query}", headers={"Authorization": f"Bearer {key}"})
    time.sleep(0.5)
    log = log_path.read_text()
    assert key not in log
    assert "api_key=***" in log and "access_token=***" in log and "limit=5" in log
