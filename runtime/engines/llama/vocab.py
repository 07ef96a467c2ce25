"""A loaded model's vocabulary: text <-> token ids, token pieces (cached) and special tokens."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp.llama_cpp as ll


class Vocab:
    def __init__(self, model: Any) -> None:
        self.ptr = ll.llama_model_get_vocab(model)
        self.n_tokens = ll.llama_vocab_n_tokens(self.ptr)
        self.bos = ll.llama_vocab_bos(self.ptr)
        self.eos = ll.llama_vocab_eos(self.ptr)
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        while True:
            out = (ll.llama_token * capacity)()
            count = ll.llama_tokenize(self.ptr, data, len(data), out, capacity, add_special, parse_special)
            if count >= 0:
                return out[:count]
            capacity = -count

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        return b"".join(self.piece(t, special=special) for t in tokens).decode("utf-8", "replace")

    def piece(self, token: int, *, special: bool = False) -> bytes:
        if not special and token in self._pieces:
            return self._pieces[token]
        buf = ctypes.create_string_buffer(256)
        size = ll.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, special)
        data = buf.raw[:max(size, 0)]
        if not special:
            self._pieces[token] = data
        return data

    def text(self, token: int) -> str:
        """A special token's text ("" for a token the model lacks), e.g. for the chat template."""
        return "" if token < 0 else self.piece(token, special=True).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return ll.llama_vocab_is_eog(self.ptr, token)

    def fill_in_middle(self) -> tuple[int, int, int] | None:
        """The (prefix, suffix, middle) tokens of a model trained to infill, else None."""
        tokens = (ll.llama_vocab_fim_pre(self.ptr), ll.llama_vocab_fim_suf(self.ptr), ll.llama_vocab_fim_mid(self.ptr))
        return None if min(tokens) < 0 else tokens
