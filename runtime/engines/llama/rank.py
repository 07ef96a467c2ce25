"""Cross-encoder reranking on llama.cpp's rank pooling: each (query, document) pair is one input, read the way
the model was trained to read it, and its classification head's output becomes a relevance score."""

from __future__ import annotations

import math

import llama_cpp.llama_cpp as ll

from runtime.engines.llama.vocab import Vocab


class PairFormat:
    """A pair laid out as the model was trained on it: its own `rerank` prompt when it has one (Qwen3
    rerankers, as llama-server does), else the way transformers joins two segments with the special tokens
    the vocabulary adds: [CLS] query [SEP] document [SEP] for BERT, <s> query </s></s> document </s> for
    XLM-RoBERTa (bge-reranker). llama-server leaves out BERT's final [SEP]; the models were trained with it."""

    def __init__(self, vocab: Vocab, template: str | None) -> None:
        self._vocab = vocab
        self._template = template
        ptr = vocab.ptr
        add_eos, add_sep = ll.llama_vocab_get_add_eos(ptr), ll.llama_vocab_get_add_sep(ptr)
        sep = ll.llama_vocab_sep(ptr)
        self._start = [vocab.bos] if ll.llama_vocab_get_add_bos(ptr) and vocab.bos >= 0 else []
        self._end = [vocab.eos] if add_eos and vocab.eos >= 0 else [sep] if add_sep and sep >= 0 else []
        self._between = self._end + ([sep] if add_eos and add_sep and sep >= 0 else [])

    def tokens(self, query: str, document: str) -> list[int]:
        if self._template is not None:
            prompt = self._template.replace("{query}", query).replace("{document}", document)
            return self._vocab.tokenize(prompt, add_special=False, parse_special=True)
        query_tokens = self._vocab.tokenize(query, add_special=False)
        document_tokens = self._vocab.tokenize(document, add_special=False)
        return self._start + query_tokens + self._between + document_tokens + self._end


def relevance(outputs: list[float]) -> float:
    """A score in [0, 1], as Cohere and Jina give: the sigmoid of a single logit (BERT-style heads), or the
    first of several outputs (Qwen3 rerankers' head is already a softmax over yes/no, yes first)."""
    if len(outputs) == 1:
        logit = outputs[0]
        return 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))
    return outputs[0]
