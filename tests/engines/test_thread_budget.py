"""The thread budget: decodes use the cores other processes leave free, never fewer than one or more than the
most; a count the user fixed is kept; and the count does not change what a seeded request generates."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama import threads
from runtime.engines.llama.batch import BatchEngine
from runtime.engines.llama.threads import ThreadBudget
from runtime.options import EngineOptions

CPUS = len(os.sched_getaffinity(0))


class Machine:
    """Scripted clock and CPU counters: `others` cores busy besides this process, which uses `own`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now, self.busy, self.own = 100.0, 0.0, 0.0
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(ThreadBudget, "_busy_seconds", lambda _: (self.busy, self.own))

    def run(self, seconds: float, others: float, own: float = 1.0) -> None:
        self.now += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own


def test_the_count_follows_the_cores_others_leave(monkeypatch):
    machine, budget = Machine(monkeypatch), ThreadBudget(CPUS)
    assert budget.threads() == CPUS  # nothing measured yet
    machine.run(0.6, others=CPUS - 1)
    assert budget.threads() == 1
    machine.run(0.6, others=CPUS - 0.6)
    assert budget.threads() == 1  # never none
    machine.run(0.6, others=0.2)
    assert budget.threads() == CPUS  # a little background work costs no thread


def test_the_count_is_reconsidered_twice_a_second_and_not_after_an_idle_spell(monkeypatch):
    machine, budget = Machine(monkeypatch), ThreadBudget(CPUS)
    budget.threads()
    machine.run(0.6, others=CPUS)
    assert budget.threads() == 1
    machine.run(0.1, others=0)
    assert budget.threads() == 1  # too soon to look again
    machine.run(5.0, others=0)
    assert budget.threads() == 1  # the engine was idle: that spell says nothing about now
    machine.run(0.6, others=0)
    assert budget.threads() == CPUS


def test_never_more_than_the_most(monkeypatch):
    machine, budget = Machine(monkeypatch), ThreadBudget(1)
    budget.threads()
    machine.run(0.6, others=0)
    assert budget.threads() == 1


def test_the_counters_are_read_from_this_machine():
    budget = ThreadBudget(CPUS)
    busy, own = budget._busy_seconds()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # spin: this process's CPU time grows
        pass
    busy_after, own_after = budget._busy_seconds()
    assert own_after - own >= 0.25
    assert busy_after - busy >= 0.2  # the machine counted it too (in clock ticks, so a little coarser)
    assert 1 <= threads.usable_cpus() <= CPUS


@pytest.fixture(scope="module")
def fixed_engines(smollm_gguf: Path):
    """SmolLM2 held at one thread and at every core."""
    engines = [BatchEngine(smollm_gguf, EngineOptions(parallel=2, threads=n), embedding=False) for n in (1, CPUS)]
    yield engines
    for engine in engines:
        engine.close()


def generate(engine: BatchEngine, prompt: str) -> list[tuple[str, float]]:
    usage, out = Usage(), []
    params = SamplingParams(temperature=0.8, max_tokens=24, seed=7, logprobs=1)
    for delta in engine.generate(engine.vocab.tokenize(prompt), params, 1, usage, threading.Event()):
        out += [(lp.token, lp.logprob) for lp in (delta.logprobs or [])]
    return out


def test_a_fixed_count_is_kept(fixed_engines, smollm_engine):
    one, every = fixed_engines
    assert one.stats()["threads"] == 1 and every.stats()["threads"] == CPUS
    assert 1 <= smollm_engine.info()["threads"] <= CPUS  # the default: a budget


def test_the_thread_count_does_not_change_a_seeded_answer(fixed_engines):
    one, every = fixed_engines
    for prompt in ("The lighthouse keeper opened the door and", "List three rivers of Europe:"):
        assert generate(one, prompt) == generate(every, prompt)


def test_a_chat_models_embeddings_compute_on_one_thread(smollm_engine):
    # A second context computing on several threads of its own starts a second OpenMP team, and libgomp then
    # slows every decode of the first (engine.py, SECOND_CONTEXT_THREADS).
    smollm_engine.embed([smollm_engine.tokenize("a lighthouse")], threading.Event())
    assert smollm_engine._embedder.stats()["threads"] == 1
