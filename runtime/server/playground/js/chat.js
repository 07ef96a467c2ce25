// Chat: streamed chat completions with a stop button, Markdown answers, reasoning and tool-call blocks,
// time to first token and tokens per second under each answer.

import { $, el, fillModels, setStatus } from "./dom.js";
import { call, events, withCapability } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { showCode } from "./code.js";

const PATH = "/chat/completions";
let history = [];
let lastRequest = null;
let controller = null;

export function setupChat() {
  $("chat-temperature").addEventListener("input", () => {
    $("chat-temperature-value").textContent = $("chat-temperature").value;
  });
  $("chat-form").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
  });
  $("chat-stop").addEventListener("click", () => controller?.abort());
  $("chat-model").addEventListener("change", showAttach);
  $("chat-new").addEventListener("click", () => {
    controller?.abort();
    history = [];
    $("chat-log").replaceChildren();
    setStatus($("chat-status"), "");
  });
  $("chat-code").addEventListener("click", () => lastRequest && showCode(PATH, lastRequest));
}

let chatModels = [];

export function setChatModels(models) {
  chatModels = withCapability(models, "chat");
  fillModels($("chat-model"), chatModels);
  showAttach();
}

// Models with a vision projector take an image with the message.
function showAttach() {
  const model = chatModels.find((candidate) => candidate.id === $("chat-model").value);
  $("chat-attach").hidden = !model?.meta?.capabilities?.includes("vision");
  if ($("chat-attach").hidden) $("chat-image").value = "";
}

const dataUrl = (file) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.addEventListener("load", () => resolve(reader.result));
  reader.addEventListener("error", () => reject(reader.error));
  reader.readAsDataURL(file);
});

function requestBody(model, tools) {
  const system = $("chat-system").value.trim();
  return {
    model,
    messages: [...(system ? [{ role: "system", content: system }] : []), ...history],
    temperature: Number($("chat-temperature").value),
    max_tokens: Number($("chat-max-tokens").value) || 256,
    ...(tools ? { tools, tool_choice: $("chat-tool-choice").value } : {}),
    stream: true,
    stream_options: { include_usage: true },
  };
}

// The tools as typed (null when none); throws with a message that says what is wrong.
function parseTools() {
  const text = $("chat-tools").value.trim();
  if (!text) return null;
  let tools;
  try { tools = JSON.parse(text); } catch (error) { throw new Error(`Tools are not valid JSON: ${error.message}`); }
  if (!Array.isArray(tools)) throw new Error("Tools must be a JSON array of tool objects.");
  return tools;
}

function messageNode(role, who) {
  const node = el("li", { class: `msg ${role}` }, el("div", { class: "who" }, who), el("div", { class: "body" }));
  $("chat-log").append(node);
  return node;
}

async function send() {
  const text = $("chat-input").value.trim();
  const model = $("chat-model").value;
  if (!text || controller) return;
  if (!model) { setStatus($("chat-status"), "No chat model on this server: pull one on the Models page.", true); return; }
  let tools;
  try { tools = parseTools(); } catch (error) { setStatus($("chat-status"), error.message, true); return; }
  controller = new AbortController();
  const image = $("chat-image").files[0];
  const url = image ? await dataUrl(image) : null;
  history.push({ role: "user", content: url ? [{ type: "text", text }, { type: "image_url", image_url: { url } }] : text });
  const body = messageNode("user", "You").querySelector(".body");
  body.textContent = text;
  if (url) body.append(el("img", { class: "attachment", src: url, alt: `Attached: ${image.name}` }));
  $("chat-input").value = "";
  $("chat-image").value = "";
  lastRequest = requestBody(model, tools);
  $("chat-code").disabled = false;
  const answer = new Answer(messageNode("assistant", model));
  $("chat-send").hidden = true;
  $("chat-stop").hidden = false;
  setStatus($("chat-status"), "Waiting for the model (the first request loads it)...");
  try {
    const response = await call(PATH, { method: "POST", body: lastRequest, signal: controller.signal });
    for await (const chunk of events(response)) answer.add(chunk);
    setStatus($("chat-status"), "");
  } catch (error) {
    if (error.name === "AbortError") setStatus($("chat-status"), "Stopped.");
    else answer.fail(error.message);
  } finally {
    answer.finish();
    if (answer.text || answer.toolCalls.length) history.push(answer.message());
    controller = null;
    $("chat-send").hidden = false;
    $("chat-stop").hidden = true;
    $("chat-input").focus();
  }
}

// One assistant answer as it streams in.
export class Answer {
  constructor(node) {
    this.node = node;
    this.body = node.querySelector(".body");
    this.text = "";
    this.reasoning = "";
    this.toolCalls = [];
    this.usage = null;
    this.chunks = 0;
    this.started = performance.now();
    this.firstToken = null;
    this.pending = false;
    this.failed = false;
  }

  add(chunk) {
    if (chunk.usage) this.usage = chunk.usage;
    const delta = chunk.choices?.[0]?.delta;
    if (!delta) return;
    if (delta.content || delta.reasoning_content || delta.tool_calls) {
      this.firstToken ??= performance.now();
      this.chunks += 1;
    }
    this.text += delta.content || "";
    this.reasoning += delta.reasoning_content || "";
    for (const call of delta.tool_calls || []) {
      const slot = this.toolCalls[call.index] ??= { id: call.id, type: "function", function: { name: "", arguments: "" } };
      slot.function.name += call.function?.name || "";
      slot.function.arguments += call.function?.arguments || "";
    }
    if (!this.pending) {  // one render per frame however fast tokens come
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.render(); });
    }
  }

  render() {
    const parts = [];
    if (this.reasoning) {
      parts.push(el("details", { class: "reasoning" }, el("summary", {}, "Reasoning"),
        el("div", { class: "reasoning-text" }, this.reasoning)));
    }
    parts.push(renderMarkdown(this.text));
    for (const call of this.toolCalls.filter(Boolean)) {
      parts.push(el("div", { class: "tool-call" }, el("strong", {}, `Tool call: ${call.function.name}`),
        el("pre", {}, call.function.arguments)));
    }
    this.body.replaceChildren(...parts);
  }

  fail(message) {
    this.node.classList.add("error");
    this.body.replaceChildren(el("p", {}, message));
    this.failed = true;
  }

  finish() {
    if (!this.failed) this.render();
    if (this.firstToken === null) return;
    const seconds = (performance.now() - this.firstToken) / 1000;
    const tokens = this.usage?.completion_tokens ?? this.chunks;
    const rate = seconds > 0 ? (tokens / seconds).toFixed(1) : "-";
    const ttft = ((this.firstToken - this.started) / 1000).toFixed(2);
    this.node.append(el("div", { class: "stats" }, `${tokens} tokens · ${rate} tok/s · TTFT ${ttft} s`));
  }

  message() {
    const message = { role: "assistant", content: this.text };
    if (this.toolCalls.length) message.tool_calls = this.toolCalls.filter(Boolean);
    return message;
  }
}
