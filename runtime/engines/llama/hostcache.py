"""Idle sequences' KV state, kept in host memory so that the KV pool holds only active sequences.

In llama.cpp's unified KV pool every used cell costs attention time for every decoded token,
also cells of other sequences (they are masked, not skipped). A finished sequence therefore does
not stay in the pool: its state is copied out, and a later request that shares its prefix (the
next chat turn, a common system prompt) gets it copied back in, a memory copy instead of
re-evaluating the prefix. The least recently used entries go first when the cache is full.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import llama_cpp.llama_cpp as ll


@dataclass(eq=False)
class Entry:
    tokens: list[int]
    state: Any  # a ctypes byte array from llama_state_seq_get_data


class HostCache:
    def __init__(self, ctx: Any, capacity_tokens: int) -> None:
        self._ctx = ctx
        self.capacity_tokens = capacity_tokens
        self._entries: OrderedDict[Entry, None] = OrderedDict()  # least recently used first
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def save(self, seq: int, tokens: list[int]) -> None:
        """Copy a sequence's state out of the KV pool; entries it extends are dropped."""
        if len(tokens) > self.capacity_tokens:
            return
        state = self._state(seq)
        if state is None:
            return
        for entry in [e for e in self._entries if e.tokens == tokens[:len(e.tokens)]]:
            self._drop(entry)
        entry = Entry(list(tokens), state)
        self._entries[entry] = None
        self.tokens += len(tokens)
        while self.tokens > self.capacity_tokens:
            self._drop(next(iter(self._entries)))

    def best(self, prompt: list[int]) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with `prompt`, and that length; (None, 0) if none."""
        best, best_len = None, 0
        for entry in self._entries:
            if entry.tokens[0] == prompt[0]:
                length = common_prefix(entry.tokens, prompt)
                if length > best_len:
                    best, best_len = entry, length
        return best, best_len

    def restore(self, entry: Entry, seq: int) -> bool:
        """Copy an entry into the empty sequence `seq`; False if the pool has no room for it."""
        if entry in self._entries:
            self._entries.move_to_end(entry)
        return ll.llama_state_seq_set_data(self._ctx, entry.state, len(entry.state), seq) != 0

    def copy(self, src: int, dst: int) -> bool:
        """Copy one sequence's state into the empty sequence `dst` through host memory, bypassing the cache."""
        state = self._state(src)
        return state is not None and ll.llama_state_seq_set_data(self._ctx, state, len(state), dst) != 0

    def _state(self, seq: int) -> Any:
        size = ll.llama_state_seq_get_size(self._ctx, seq)
        state = (ctypes.c_uint8 * size)()
        return state if ll.llama_state_seq_get_data(self._ctx, state, size, seq) == size else None

    def _drop(self, entry: Entry) -> None:
        del self._entries[entry]
        self.tokens -= len(entry.tokens)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists (compares in slices: most prompts match long runs)."""
    limit = min(len(a), len(b))
    low, step = 0, 256
    while low < limit:
        high = min(low + step, limit)
        if a[low:high] != b[low:high]:
            break
        low = high
    else:
        return limit
    while low < high and a[low] == b[low]:
        low += 1
    return low
