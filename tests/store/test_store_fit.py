"""The quant a pull takes when the source names none: the largest that fits the machine's memory (injected)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub, store_contents, tiny_gguf

from runtime.config import Settings
from runtime.errors import InvalidRequestError
from runtime.options import EngineOptions
from runtime.store import fit
from runtime.store.fit import Machine
from runtime.store.footprint import OVERHEAD, estimate
from runtime.store.store import HEADER_BYTES, Store

GB = 10**9
# An 8B llama: 32 layers, 8 KV heads of 128 dims (grouped-query attention), trained for 8192 tokens.
LLAMA_8B = {"architecture": "llama", "block_count": 32, "embedding_length": 4096, "head_count": 32,
            "head_count_kv": 8, "context_length": 8192}
SIZES_8B = {"Q2_K": int(3.18 * GB), "Q4_K_M": int(4.92 * GB), "Q5_K_M": int(5.73 * GB), "Q6_K": int(6.6 * GB),
            "Q8_0": int(8.54 * GB), "F16": int(16.07 * GB)}


@pytest.mark.parametrize(("machine", "expected"), [
    (Machine("VRAM", 4 * GB), "Q2_K"),  # nothing fits: the smallest, and the reason says so
    (Machine("VRAM", 8 * GB), "Q5_K_M"),
    (Machine("VRAM", 12 * GB), "Q8_0"),
    (Machine("VRAM", 80 * GB), "Q8_0"),  # unquantised weights are never the fit's choice
    (Machine("RAM", 8 * GB), "Q2_K"),  # in RAM a chat model's host cache doubles the KV cache
    (Machine("RAM", 9 * GB), "Q4_K_M"),
    (Machine("RAM", 16 * GB), "Q8_0"),
])
def test_the_largest_quant_that_fits(machine: Machine, expected: str) -> None:
    choice = fit.choose(SIZES_8B, "fit", "llm", LLAMA_8B, machine)
    assert choice.quant == expected
    on_gpu = machine.memory == "VRAM"
    assert choice.need == estimate("llm", SIZES_8B[expected], LLAMA_8B, EngineOptions(), on_gpu)
    assert choice.kv_cache == choice.need - SIZES_8B[expected] - OVERHEAD
    assert choice.kv_cache == (1 if on_gpu else 2) * 32 * 8192 * 8 * 128 * 2 * 2  # K and V in f16


def test_the_reason_names_the_sizes_and_the_next_quant() -> None:
    choice = fit.choose(SIZES_8B, "fit", "llm", LLAMA_8B, Machine("VRAM", 8 * GB))
    assert choice.reason == "Q5_K_M: 5.7 GB + 1.1 GB KV cache fits 8.0 GB free VRAM; Q6_K would need 7.9 GB"
    tight = fit.choose(SIZES_8B, "fit", "llm", LLAMA_8B, Machine("VRAM", 4 * GB))
    assert tight.reason.startswith("Q2_K: the smallest, and even it needs 4.5 GB")
    assert "--ctx-size" in tight.reason


def test_smallest_and_largest_override_the_fit() -> None:
    tiny = Machine("VRAM", 1 * GB)
    assert fit.choose(SIZES_8B, "smallest", "llm", LLAMA_8B, tiny).quant == "Q2_K"
    largest = fit.choose(SIZES_8B, "largest", "llm", LLAMA_8B, tiny)
    assert largest.quant == "F16"
    assert "--quant largest" in largest.reason


def test_without_dimensions_the_kv_cache_is_guessed_and_said_so() -> None:
    choice = fit.choose(SIZES_8B, "fit", "llm", {}, Machine("VRAM", 8 * GB))
    assert choice.kv_cache == SIZES_8B["Q2_K"] // fit.KV_GUESS_SHARE
    assert "guessed" in choice.reason


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="fit, smallest, largest"):
        fit.check_policy("biggest")


# Through the store: real GGUF headers read from the hub with a range request.

QUANTS = {"Q2_K": 1, "Q4_K_M": 2, "Q8_0": 3}  # MiB of padding: the files grow with the quant
LAYERS, HEADS = 64, (2, 2)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        files = {f"fit-{q}.gguf": tiny_gguf(layers=LAYERS, heads=HEADS, extra=os.urandom(mib << 20))
                 for q, mib in QUANTS.items()}
        server.add_repo("org/Fit-GGUF", {**files, "mmproj-fit-f16.gguf": tiny_gguf("clip", template=None)})
        yield server


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store(Settings.load().paths)
    yield opened
    opened.close()


def needs(hub: FakeHub) -> dict[str, int]:
    """What each quant of org/Fit-GGUF needs in RAM, by the shared estimate and the header's dimensions."""
    meta = {"block_count": LAYERS, "embedding_length": 8, "head_count": HEADS[0], "head_count_kv": HEADS[1],
            "context_length": 2048}
    files = hub.state.repos["org/Fit-GGUF"].files
    return {q: estimate("llm", len(files[f"fit-{q}.gguf"]), meta, EngineOptions()) for q in QUANTS}


@pytest.mark.parametrize("expected", ["Q2_K", "Q4_K_M", "Q8_0"])
def test_a_pull_takes_the_quant_that_fits(hub: FakeHub, store: Store, monkeypatch: pytest.MonkeyPatch,
                                          expected: str) -> None:
    free = int(needs(hub)[expected] / fit.HEADROOM) + 1  # just enough for `expected`
    monkeypatch.setattr(fit, "this_machine", lambda: Machine("RAM", free))
    events: list[dict] = []
    record = store.pull("org/Fit-GGUF", progress=events.append)
    assert [f.path.rsplit("/", 1)[-1] for f in record.files] == [f"fit-{expected}.gguf", "mmproj-fit-f16.gguf"]
    choice = events[0]["choice"]
    assert choice["quant"] == expected and choice["memory"] == "RAM" and choice["free"] == free
    assert choice["kv_cache"] == 2 * LAYERS * 2048 * HEADS[1] * (4 * 2 + 4 * 2)  # read from the header
    assert "guessed" not in choice["reason"]
    header_reads = [r for _, _, r in hub.requests("GET", "/cdn/") if r and r.startswith("bytes=0-")]
    assert header_reads == [f"bytes=0-{HEADER_BYTES - 1}"]  # one range request, not a whole file


def test_a_named_quant_skips_the_choice(hub: FakeHub, store: Store) -> None:
    events: list[dict] = []
    store.pull("org/Fit-GGUF:Q2_K", progress=events.append)
    assert "choice" not in events[0]
    assert all(r is None for _, _, r in hub.requests("GET", "/cdn/"))  # no header read


def test_quant_smallest(hub: FakeHub, store: Store) -> None:
    assert store.pull("org/Fit-GGUF", quant="smallest").files[0].path.endswith("fit-Q2_K.gguf")


def test_dry_run_downloads_nothing(hub: FakeHub, stacklet_home: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "STACKLET_HOME": str(stacklet_home)}
    run = subprocess.run([sys.executable, "-m", "cli", "pull", "org/Fit-GGUF", "--dry-run", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["event"] == "resolved" and plan["model"] == "Fit"
    assert [f["role"] for f in plan["files"]] == ["model", "mmproj"]
    assert plan["choice"]["quant"] == plan["files"][0]["path"].removeprefix("fit-").removesuffix(".gguf")
    human = subprocess.run([sys.executable, "-m", "cli", "pull", "org/Fit-GGUF", "--dry-run", "--quant", "largest"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert human.returncode == 0, human.stderr
    assert "Would pull Fit from hf.co/org/Fit-GGUF" in human.stdout
    assert "fit-Q8_0.gguf" in human.stdout and "Q8_0: the largest in the repo" in human.stdout
    assert "Nothing was downloaded" in human.stdout
    assert all(r and r.startswith("bytes=0-") for _, _, r in hub.requests("GET", "/cdn/"))  # header reads only
    models = stacklet_home / "cache" / "hub"
    assert not models.exists() or store_contents(models) == []
