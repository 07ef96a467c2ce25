"""The balancer's order, the model-name rewrite and Retry-After parsing, without servers."""

from __future__ import annotations

import asyncio
import json
import time

from runtime.server.balancer import Candidate, order, prefix_key
from runtime.server.metrics import TargetStats
from runtime.server.rewrite import ModelRewrite, rewrite_request_model
from runtime.server.upstreams import Upstream, retry_after
from runtime.store.routes import Remote


def upstream(name: str, down: bool = False) -> Upstream:
    remote = Upstream(Remote(name, f"http://{name}/v1"), None)
    remote.down_until = time.monotonic() + 60 if down else 0.0
    return remote


def test_least_in_flight_per_weight_then_fallbacks_and_no_cooling_targets():
    a, b, c = (Candidate(n, "m", upstream(n), w) for n, w in (("a", 1), ("b", 2), ("c", 1)))
    down = Candidate("d", "m", upstream("d", down=True))
    stats = {"a": TargetStats(in_flight=1), "b": TargetStats(in_flight=2), "c": TargetStats()}
    ranked = order([a, b, down], [c, down], stats.__getitem__, lambda: None, time.monotonic())
    assert ranked == [a, b, c] or ranked == [b, a, c]  # a: (1+1)/1 = 2, b: (2+1)/2 = 1.5
    assert ranked[0] is b


def test_a_prefix_sticks_until_its_target_is_much_busier():
    targets = [Candidate(n, "m", upstream(n)) for n in "abcd"]
    stats = {n: TargetStats() for n in "abcd"}
    chosen = {order(targets, [], stats.__getitem__, lambda: "system prompt", 0)[0].target for _ in range(20)}
    assert len(chosen) == 1
    sticky = chosen.pop()
    stats[sticky].in_flight = 10
    assert order(targets, [], stats.__getitem__, lambda: "system prompt", 0)[0].target != sticky


def test_prefix_keys_follow_the_system_prompt_or_first_message():
    system = {"role": "system", "content": "S"}
    one, two = {"role": "user", "content": "1"}, {"role": "user", "content": "2"}
    assert prefix_key([system, one]) == prefix_key([system, two]) != prefix_key([one])
    first = {"role": "user", "content": "hello"}
    assert prefix_key([first]) == prefix_key([first, {"role": "assistant", "content": "x"}, first])
    assert prefix_key(prompt="abc") == "abc" and prefix_key() is None


def test_model_names_are_rewritten_in_bodies_and_streams():
    assert json.loads(rewrite_request_model(b'{"model": "gpt-4o", "x": 1}', "application/json", "qwen")) == {
        "model": "qwen", "x": 1}
    form = b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--B--\r\n'
    assert b"\r\n\r\nfaster\r\n--B" in rewrite_request_model(form, "multipart/form-data; boundary=B", "faster")
    rewrite = ModelRewrite("gpt-4o")
    assert rewrite.whole(b'{"id":"1","model": "qwen","content":"\\"model\\": \\"qwen\\""}') == (
        b'{"id":"1","model":"gpt-4o","content":"\\"model\\": \\"qwen\\""}')

    async def chunks():
        for part in (b'data: {"model":"q', b'wen","n":1}\n\ndata: {"model":"qwen"}\n\n', b"data: [DONE]\n\n"):
            yield part

    async def collect():
        return b"".join([c async for c in rewrite.stream(b"", chunks())])

    assert asyncio.run(collect()) == b'data: {"model":"gpt-4o","n":1}\n\ndata: {"model":"gpt-4o"}\n\ndata: [DONE]\n\n'


def test_retry_after_is_bounded():
    assert retry_after(b"7") == 7 and retry_after(b"0") == 1 and retry_after(b"99999") == 600
    assert retry_after(None) is None and retry_after(b"soon") is None
