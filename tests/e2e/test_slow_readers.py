"""A client that reads its stream slowly never holds a model's generation slot (runtime/server/backlog.py):
on a real server with SmolLM2 and two slots, two slow readers hold long streams while a third request is
answered, long before they have read theirs."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.serverproc import local_record, server_process

STORY = {"model": "smol", "messages": [{"role": "user", "content": "Tell me a long story."}], "stream": True,
         "max_tokens": 300, "logprobs": True, "top_logprobs": 20,
         "logit_bias": {"0": -100, "2": -100}}  # no end of text: every stream is long (about 2 KB a token)


class SlowReader(threading.Thread):
    """Reads 512 bytes every 100 ms (about 5 KB/s) from a raw socket with a small receive buffer."""

    def __init__(self, port: int, key: str) -> None:
        super().__init__(daemon=True)
        body = json.dumps(STORY).encode()
        self.request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self.port = port
        self.received = 0
        self.ended = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(self.request)
            try:
                while not self.stop.is_set() and (chunk := sock.recv(512)):
                    self.received += len(chunk)
                    time.sleep(0.1)
            except OSError:
                pass
        self.ended.set()


def test_slow_readers_do_not_hold_generation_slots(tmp_path: Path, smollm_gguf: Path, monkeypatch) -> None:
    monkeypatch.setenv("STACKLET_PARALLEL", "2")
    with server_process(tmp_path / "home", [local_record("smol", "llm", {"model": smollm_gguf})]) as (root, key):
        headers = {"Authorization": f"Bearer {key}"}
        httpx.post(f"{root}/v1/models/smol/load", headers=headers, json={}, timeout=120).raise_for_status()
        readers = [SlowReader(int(root.rsplit(":", 1)[1]), key) for _ in range(2)]
        for reader in readers:
            reader.start()
        while not all(reader.received for reader in readers):
            time.sleep(0.05)  # both streams have started: both slots are taken
        answer = httpx.post(f"{root}/v1/chat/completions", headers=headers, timeout=300,
                            json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        still_reading = [not reader.ended.is_set() for reader in readers]
        for reader in readers:
            reader.stop.set()
            reader.join(30)
        assert answer.status_code == 200, answer.text
        assert still_reading == [True, True]  # answered while the slow readers were far from the end of theirs
