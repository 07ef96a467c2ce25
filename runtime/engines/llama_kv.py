"""Bookkeeping for llama.cpp's unified KV cache: which sequence holds which tokens, how many
cells are in use, and which idle sequences are kept as cached prefixes.

llama.cpp has no call that counts used cells, so the ledger performs every memory operation
itself and mirrors it. In a unified cache `seq_cp` shares cells instead of copying them and
every later decode writes fresh cells, so two sequences only ever share a prefix of positions;
`_shared[a][b]` is that prefix length, and the cells a sequence alone holds are the ones past
its longest shared prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import llama_cpp.llama_cpp as ll


class KVLedger:
    def __init__(self, memory: Any, n_cells: int, n_seqs: int) -> None:
        self._memory = memory
        self.n_cells = n_cells
        self.tokens: list[list[int]] = [[] for _ in range(n_seqs)]
        self._shared = [[0] * n_seqs for _ in range(n_seqs)]
        self._free_ids = list(range(n_seqs - 1, -1, -1))
        self._cached: OrderedDict[int, None] = OrderedDict()  # idle sequences, least recent first
        self.used = 0

    @property
    def free_cells(self) -> int:
        return self.n_cells - self.used

    @property
    def cached_count(self) -> int:
        return len(self._cached)

    def acquire(self, protect: set[int]) -> int | None:
        """A sequence id with no cells, evicting the least recently used cached prefix if needed."""
        if not self._free_ids and not self.evict_one(protect):
            return None
        return self._free_ids.pop()

    def available_ids(self, protect: set[int]) -> int:
        return len(self._free_ids) + sum(1 for seq in self._cached if seq not in protect)

    def release(self, seq: int, *, keep: bool) -> None:
        """Give a sequence back; with `keep` its cells stay as a cached prefix for later requests."""
        if keep and self.tokens[seq]:
            self._cached[seq] = None
            return
        self._remove(seq)
        self._free_ids.append(seq)

    def evict_one(self, protect: set[int]) -> bool:
        """Drop the least recently used cached prefix not in `protect`; False if there is none."""
        seq = next((s for s in self._cached if s not in protect), None)
        if seq is None:
            return False
        del self._cached[seq]
        self.release(seq, keep=False)
        return True

    def best_prefix(self, prompt: list[int]) -> tuple[int, int]:
        """(sequence, length) of the longest prefix of `prompt` already in the cache; (-1, 0) if none."""
        best_seq, best_len = -1, 0
        for seq, held in enumerate(self.tokens):
            if len(held) <= best_len or held[0] != prompt[0]:
                continue
            length = common_prefix(held, prompt)
            if length > best_len and ll.llama_memory_seq_pos_min(self._memory, seq) <= 0:
                best_seq, best_len = seq, length
        if best_seq in self._cached:
            self._cached.move_to_end(best_seq)
        return best_seq, best_len

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Let the empty sequence `dst` share the first `length` cells of `src` (no data is copied)."""
        ll.llama_memory_seq_cp(self._memory, src, dst, 0, length)
        self.tokens[dst] = self.tokens[src][:length]
        for other, row in enumerate(self._shared):
            if other not in (src, dst):
                row[dst] = self._shared[dst][other] = min(length, self._shared[src][other])
        self._shared[src][dst] = self._shared[dst][src] = length

    def append(self, seq: int, tokens: list[int]) -> None:
        """Record tokens that a successful decode wrote into fresh cells."""
        self.tokens[seq].extend(tokens)
        self.used += len(tokens)

    def _remove(self, seq: int) -> None:
        self.used -= len(self.tokens[seq]) - max(self._shared[seq])
        ll.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self.tokens[seq] = []
        for other, row in enumerate(self._shared):
            row[seq] = self._shared[seq][other] = 0


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
