"""Trains the demo's cross-encoder: all-MiniLM-L6-v2 with low-rank adapters, a pooler and a one-logit head,
fine-tuned on tests/data/rerank-train.jsonl. Writes the small delta (cli/data/minilm-reranker.npz) that
cli/demo_models.py merges into MiniLM's real weights before converting to GGUF.

A maintainer's tool, not part of the product or the tests: it needs torch and tokenizers in a venv of their own.
    python -m venv /tmp/train && /tmp/train/bin/pip install torch tokenizers numpy
    /tmp/train/bin/python tests/train_reranker.py MINILM_DIR
Inputs are laid out as llama.cpp's rank pooling reads them: [CLS] query [SEP] document [SEP], every token of
type 0 (llama.cpp adds only the first token-type row).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import BertWordPieceTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cli.demo_models import _read_safetensors  # noqa: E402  (numpy only: runs in the training venv)

TRAIN = ROOT / "tests" / "data" / "rerank-train.jsonl"
OUT = ROOT / "cli" / "data" / "minilm-reranker.npz"
RANK, ALPHA = 16, 32
ADAPTED = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")
RANDOM_NEGATIVES, BATCH, EPOCHS, LR, MAX_TOKENS, DROPOUT = 3, 8, 1, 4e-4, 192, 0.1


def adapter_key(layer: int, name: str) -> str:
    return f"{layer}_{name}".replace(".", "_")  # a ModuleDict key may not hold dots


class Lora(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias
        self.a = torch.nn.Parameter(torch.randn(RANK, weight.shape[1]) / weight.shape[1] ** 0.5)
        self.b = torch.nn.Parameter(torch.zeros(weight.shape[0], RANK))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias) + (x @ self.a.T @ self.b.T) * (ALPHA / RANK)


class CrossEncoder(torch.nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], cfg: dict) -> None:
        super().__init__()
        self.w, self.cfg = weights, cfg
        self.adapters = torch.nn.ModuleDict({
            adapter_key(i, name): Lora(weights[f"encoder.layer.{i}.{name}.weight"],
                                                  weights[f"encoder.layer.{i}.{name}.bias"])
            for i in range(cfg["num_hidden_layers"]) for name in ADAPTED})
        self.pooler = torch.nn.Linear(cfg["hidden_size"], cfg["hidden_size"])
        with torch.no_grad():
            self.pooler.weight.copy_(weights["pooler.dense.weight"])
            self.pooler.bias.copy_(weights["pooler.dense.bias"])
        self.classifier = torch.nn.Linear(cfg["hidden_size"], 1)
        torch.nn.init.zeros_(self.classifier.weight)
        torch.nn.init.zeros_(self.classifier.bias)

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(x, DROPOUT, self.training)

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.w[name + ".weight"], self.w[name + ".bias"],
                                              self.cfg["layer_norm_eps"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(self.encode(ids, mask)[:, 0]))).squeeze(-1)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w, heads = self.w, self.cfg["num_attention_heads"]
        n, length = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
        x = self._norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        bias = (1.0 - mask[:, None, None, :].float()) * -1e4
        for i in range(self.cfg["num_hidden_layers"]):
            adapters = {name: self.adapters[adapter_key(i, name)] for name in ADAPTED}

            def split(h: torch.Tensor) -> torch.Tensor:
                return h.view(n, length, heads, -1).transpose(1, 2)

            q, k, v = (split(adapters[f"attention.self.{p}"](x)) for p in ("query", "key", "value"))
            attention = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                                         dropout_p=DROPOUT if self.training else 0.0)
            attention = attention.transpose(1, 2).reshape(n, length, -1)
            x = self._norm(x + self._dropout(adapters["attention.output.dense"](attention)),
                           f"encoder.layer.{i}.attention.output.LayerNorm")
            hidden = torch.nn.functional.gelu(adapters["intermediate.dense"](x))
            x = self._norm(x + self._dropout(adapters["output.dense"](hidden)), f"encoder.layer.{i}.output.LayerNorm")
        return x


def pairs(tokenizer: BertWordPieceTokenizer, query: str, documents: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    q = tokenizer.encode(query, add_special_tokens=False).ids
    rows = [([cls] + q + [sep] + tokenizer.encode(d, add_special_tokens=False).ids)[: MAX_TOKENS - 1] + [sep]
            for d in documents]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return ids, mask


def train(minilm: Path) -> None:
    torch.manual_seed(0)
    rng = random.Random(0)
    cfg = json.loads((minilm / "config.json").read_text())
    weights = {name.removeprefix("bert."): torch.from_numpy(array.astype(np.float32))
               for name, array in _read_safetensors(minilm / "model.safetensors").items() if array.dtype != np.int64}
    model = CrossEncoder(weights, cfg)
    tokenizer = BertWordPieceTokenizer(str(minilm / "vocab.txt"), lowercase=True)
    examples = [json.loads(line) for line in TRAIN.read_text().splitlines() if line.strip()]
    passages = [p for e in examples for p in [e["positive"], *e["negatives"]]]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.01)
    steps = EPOCHS * ((len(examples) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps, pct_start=0.1)
    step = 0
    for epoch in range(EPOCHS):
        rng.shuffle(examples)
        for start in range(0, len(examples), BATCH):
            loss = torch.zeros(())
            for example in examples[start : start + BATCH]:
                own = {example["positive"], *example["negatives"]}
                others = rng.sample([p for p in rng.sample(passages, 20) if p not in own], RANDOM_NEGATIVES)
                documents = [example["positive"], *example["negatives"], *others]
                logits = model(*pairs(tokenizer, example["query"], documents))
                labels = torch.zeros(len(documents))
                labels[0] = 1.0
                listwise = torch.nn.functional.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long))
                # weighted so the one relevant document counts as much as all the others: scores stay calibrated
                weight = torch.tensor(len(documents) - 1.0)
                pointwise = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)
                loss = loss + listwise + pointwise
            loss = loss / BATCH
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 10 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f}", flush=True)
    save(model, cfg)


def save(model: CrossEncoder, cfg: dict) -> None:
    """f16 LoRA factors per adapted matrix, the pooler and the head: what demo_models merges."""
    arrays = {}
    for i in range(cfg["num_hidden_layers"]):
        for name in ADAPTED:
            adapter = model.adapters[adapter_key(i, name)]
            key = f"encoder.layer.{i}.{name}.weight"
            arrays[key + ".lora_a"] = adapter.a.detach().numpy().astype(np.float16)
            arrays[key + ".lora_b"] = (adapter.b.detach().numpy() * (ALPHA / RANK)).astype(np.float16)
    arrays["pooler.dense.weight"] = model.pooler.weight.detach().numpy().astype(np.float16)
    arrays["pooler.dense.bias"] = model.pooler.bias.detach().numpy().astype(np.float32)
    arrays["classifier.weight"] = model.classifier.weight.detach().numpy().astype(np.float32)
    arrays["classifier.bias"] = model.classifier.bias.detach().numpy().astype(np.float32)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    train(Path(sys.argv[1]))
