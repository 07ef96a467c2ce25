"""Bookkeeping for llama.cpp's KV cache: which sequence holds which tokens and how many cells are in
use. Only active sequences hold cells; a released sequence's state moves to the host cache
(hostcache.py), from where a request with the same prefix gets it back.

llama.cpp has no call that counts used cells, so the ledger performs every memory operation
itself and mirrors it. In a unified cache `seq_cp` shares cells instead of copying them and
every later decode writes fresh cells, so two sequences only ever share a prefix of positions;
`_shared[a][b]` is that prefix length, and the cells a sequence alone holds are the ones past
its longest shared prefix. With slots (one KV stream per sequence, `slots=True`) sequences share
no cells: a prefix is copied into the other stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llama_cpp.llama_cpp as ll

from runtime.engines.llama.hostcache import Entry, HostCache, common_prefix


@dataclass
class Prefix:
    """Where a new sequence's first `length` tokens come from: a sequence in the pool, a host cache
    entry, or nowhere (length 0)."""

    length: int = 0
    seq: int = -1
    entry: Entry | None = None
    copied: bool = False  # a pool sequence's prefix that is copied (slots), not shared

    def cells_needed(self, total: int) -> int:
        """Cells a sequence of `total` tokens takes when it starts from this prefix."""
        if self.seq >= 0 and not self.copied:
            return total - self.length  # shared cells are already there
        if self.entry is not None:
            return max(total, len(self.entry.tokens))  # the whole entry comes back before it is trimmed
        return total


class KVLedger:
    def __init__(self, ctx: Any, n_cells: int, n_seqs: int, *, cache_tokens: int, slots: bool = False) -> None:
        """`cache_tokens`: how many tokens of released sequences the host cache keeps; `slots`: the context
        has a KV stream per sequence (kv_unified off)."""
        self._memory = ll.llama_get_memory(ctx)
        self._slots = slots
        self.n_cells = n_cells
        self.host = HostCache(ctx, cache_tokens)
        self.tokens: list[list[int]] = [[] for _ in range(n_seqs)]
        self._shared = [[0] * n_seqs for _ in range(n_seqs)]
        self._free_ids = set(range(n_seqs))
        self.used = 0

    @property
    def free_cells(self) -> int:
        return self.n_cells - self.used

    def acquire(self) -> int:
        """The lowest free id: with slots llama.cpp batches only runs of consecutive ids together (generation.py)."""
        seq = min(self._free_ids)
        self._free_ids.remove(seq)
        return seq

    def release(self, seq: int, *, keep: bool) -> None:
        """Give a sequence back; with `keep` its state goes to the host cache for later requests."""
        if keep and self.tokens[seq] and ll.llama_memory_seq_pos_min(self._memory, seq) <= 0:
            self.host.save(seq, self.tokens[seq])
        self.used -= len(self.tokens[seq]) - max(self._shared[seq])
        ll.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self.tokens[seq] = []
        for other, row in enumerate(self._shared):
            row[seq] = self._shared[seq][other] = 0
        self._free_ids.add(seq)

    def clear(self) -> None:
        """Empty the pool, so the next sequence's cells start at the first one again."""
        assert self.used == 0 and len(self._free_ids) == len(self.tokens), "sequences still hold cells"
        ll.llama_memory_clear(self._memory, False)  # metadata only: masked cells weigh exactly zero

    def best_prefix(self, prompt: list[int]) -> Prefix:
        """The longest prefix of `prompt` held in the pool or the host cache; the pool wins ties."""
        entry, best = self.host.best(prompt)
        found = Prefix(best, entry=entry)
        for seq, held in enumerate(self.tokens):
            if len(held) < found.length or not held or held[0] != prompt[0]:
                continue
            length = common_prefix(held, prompt)
            if length >= found.length and length and ll.llama_memory_seq_pos_min(self._memory, seq) <= 0:
                found = Prefix(length, seq=seq, copied=self._slots)
        return found

    def start(self, seq: int, prefix: Prefix) -> int:
        """Fill the empty sequence `seq` with the prefix; how many tokens it then holds."""
        if prefix.seq >= 0:
            if not self.share(prefix.seq, seq, prefix.length):
                return 0
        elif prefix.entry is not None:
            # A recurrent model's state cannot be cut back to a shorter prefix: start afresh instead.
            if not (self.host.restore(prefix.entry, seq)
                    and ll.llama_memory_seq_rm(self._memory, seq, prefix.length, -1)):
                ll.llama_memory_seq_rm(self._memory, seq, -1, -1)
                return 0
            self.append(seq, prefix.entry.tokens[:prefix.length])
        return prefix.length

    def share(self, src: int, dst: int, length: int) -> bool:
        """Let the empty sequence `dst` share the first `length` cells of `src` (no data is copied), or with
        slots, copy them into its own stream; False if llama.cpp could not copy them (`dst` stays empty)."""
        if self._slots:
            return self._copy(src, dst, length)
        ll.llama_memory_seq_cp(self._memory, src, dst, 0, length)
        self.tokens[dst] = self.tokens[src][:length]
        for other, row in enumerate(self._shared):
            if other not in (src, dst):
                row[dst] = self._shared[dst][other] = min(length, self._shared[src][other])
        self._shared[src][dst] = self._shared[dst][src] = length
        return True

    def _copy(self, src: int, dst: int, length: int) -> bool:
        """A state copy, not `seq_cp`: across streams llama.cpp copies whole streams only, and only at the
        next decode, so a sequence saved to the host cache before then would be saved without its cells."""
        if not (self.host.copy(src, dst) and ll.llama_memory_seq_rm(self._memory, dst, length, -1)):
            ll.llama_memory_seq_rm(self._memory, dst, -1, -1)
            return False
        self.append(dst, self.tokens[src][:length])
        return True

    def append(self, seq: int, tokens: list[int]) -> None:
        """Record tokens written into fresh cells."""
        self.tokens[seq].extend(tokens)
        self.used += len(tokens)
