// Embeddings: the cosine similarity of a few sentences, as a shaded matrix.

import { $, el, fillModels, setStatus } from "./dom.js";
import { callJson, withCapability } from "./api.js";

const MAX_SENTENCES = 8;

export function setupEmbeddings() {
  $("embeddings-form").addEventListener("submit", (event) => { event.preventDefault(); compare(); });
}

export function setEmbeddingModels(models) {
  // Dedicated embedding models first: they are what a user most likely wants here.
  const able = withCapability(models, "embeddings");
  fillModels($("embeddings-model"), [...able.filter((m) => m.kind === "embedding"), ...able.filter((m) => m.kind !== "embedding")]);
}

function cosine(a, b) {
  let dot = 0, normA = 0, normB = 0;
  for (let i = 0; i < a.length; i += 1) { dot += a[i] * b[i]; normA += a[i] * a[i]; normB += b[i] * b[i]; }
  return dot / (Math.sqrt(normA * normB) || 1);
}

async function compare() {
  const sentences = $("embeddings-input").value.split("\n").map((line) => line.trim()).filter(Boolean).slice(0, MAX_SENTENCES);
  if (!sentences.length) return;
  $("embeddings-go").disabled = true;
  setStatus($("embeddings-status"), "Embedding...");
  try {
    const result = await callJson("/embeddings", { method: "POST", body: { model: $("embeddings-model").value, input: sentences } });
    const vectors = result.data.sort((a, b) => a.index - b.index).map((item) => item.embedding);
    showMatrix(sentences, vectors);
    setStatus($("embeddings-status"), `${vectors[0].length} dimensions, ${result.usage?.prompt_tokens ?? "?"} tokens.`);
  } catch (error) {
    setStatus($("embeddings-status"), error.message, true);
  } finally {
    $("embeddings-go").disabled = false;
  }
}

function showMatrix(sentences, vectors) {
  const head = el("thead", {}, el("tr", {}, el("th", {}, ""),
    ...sentences.map((_, i) => el("th", { scope: "col", title: sentences[i] }, `#${i + 1}`))));
  const rows = vectors.map((vector, i) => el("tr", {}, el("th", { scope: "row" }, `#${i + 1} ${sentences[i]}`),
    ...vectors.map((other) => {
      const similarity = cosine(vector, other);
      const cell = el("td", {}, similarity.toFixed(2));
      // CSSOM, not a style attribute: the page's CSP allows no inline styles.
      cell.style.backgroundColor = `rgba(51, 88, 212, ${Math.max(0, similarity) * 0.55})`;
      return cell;
    })));
  $("embeddings-matrix").replaceChildren(head, el("tbody", {}, ...rows));
}
