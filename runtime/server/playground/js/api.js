// The server's API as the page calls it: every call carries the signed-in key; errors arrive as
// OpenAI's envelope and become ApiError with the server's own message.

const KEY_STORAGE = "stacklet.apiKey";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (key) => localStorage.setItem(KEY_STORAGE, key),
  clear: () => localStorage.removeItem(KEY_STORAGE),
};

export const baseUrl = () => `${location.origin}/v1`;

let keyRefused = () => {};
// What to do when the server refuses the key (revoked, or a `stacklet open` key that expired).
export function onKeyRefused(handler) {
  keyRefused = handler;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${apiKey.get()}`, ...extra };
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    message = body.error?.message || message;
    code = body.error?.code || null;
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message, code);
}

// fetch with the key; the body is JSON unless it is FormData. Throws ApiError on an error status.
export async function call(path, { method = "GET", body, signal } = {}) {
  const form = body instanceof FormData;
  const response = await fetch(`${baseUrl()}${path}`, {
    method, signal,
    headers: headers(body === undefined || form ? {} : { "Content-Type": "application/json" }),
    body: body === undefined || form ? body : JSON.stringify(body),
  });
  if (response.status === 401) keyRefused();
  if (!response.ok) throw await failure(response);
  return response;
}

export async function callJson(path, options) {
  return (await call(path, options)).json();
}

// The data of each server-sent event of a streamed response, parsed; stops at [DONE].
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) throw new ApiError(500, event.error.message, event.error.code);
      yield event;
    }
  }
}

// Every model the server has, with kind, state and meta (GET /v1/models takes any key).
export async function listModels() {
  return (await callJson("/models")).data;
}

// The models that serve `capability`; a route serves what its first target serves, when that is a local model.
export function withCapability(models, capability) {
  const byId = new Map(models.map((model) => [model.id, model]));
  const capabilities = (model) => (model.kind === "route"
    ? byId.get(model.meta?.targets?.[0]?.target)?.meta?.capabilities : model.meta?.capabilities) || [];
  return models.filter((model) => capabilities(model).includes(capability));
}
