// Models: every model with kind, size and state; load, unload and delete; pull with live progress.
// Management needs an admin key: an inference key gets the server's 403, shown as a clear message.

import { $, el, humanSize, setStatus } from "./dom.js";
import { apiKey, call, callJson, events, listModels } from "./api.js";

const ADMIN_HINT = "This needs an admin key. Sign in with one: run `stacklet open`, or create one with "
  + "`stacklet keys create --admin`.";
let onChange = () => {};
let pullController = null;

export function setupModels(changed) {
  onChange = changed;
  $("pull-form").addEventListener("submit", (event) => { event.preventDefault(); pull(); });
  $("pull-stop").addEventListener("click", () => pullController?.abort());
}

function explain(error) {
  return error.code === "insufficient_scope" ? ADMIN_HINT : error.message;
}

let shown = "";  // what the table shows: redrawn only when it changes, so focus and clicks are not lost

export function renderModels(models) {
  const summary = JSON.stringify(models.map((model) => [model.id, model.kind, model.size, model.state]));
  if (summary === shown) return;
  shown = summary;
  const rows = models.map((model) => el("tr", { "data-model": model.id },
    el("td", {}, el("strong", {}, model.id)),
    el("td", {}, model.kind),
    el("td", {}, humanSize(model.size)),
    el("td", {}, el("span", { class: `badge ${model.state}` }, model.state)),
    el("td", { class: "actions" }, el("div", { class: "row" }, ...actions(model)))));
  $("models-table").tBodies[0].replaceChildren(...rows);
  if (!models.length) setStatus($("models-status"), "No models yet: pull one above, or run `stacklet pull` on the server.");
}

function actions(model) {
  if (model.kind === "route") return [deleteButton(model.id, `/routes/${encodeURIComponent(model.id)}`, "route")];
  const loaded = model.state !== "available";
  const toggle = el("button", { type: "button", class: "small", "aria-label": `${loaded ? "Unload" : "Load"} ${model.id}` },
    loaded ? "Unload" : "Load");
  toggle.addEventListener("click", () => act(toggle, `${loaded ? "Unloading" : "Loading"} ${model.id}...`,
    () => call(`/models/${encodeURIComponent(model.id)}/${loaded ? "unload" : "load"}`, { method: "POST" })));
  return [toggle, deleteButton(model.id, `/models/${encodeURIComponent(model.id)}`, "model")];
}

function deleteButton(name, path, noun) {
  const button = el("button", { type: "button", class: "small danger", "aria-label": `Delete ${name}` }, "Delete");
  const question = noun === "route" ? `Delete the route ${name}? Its targets stay.`
    : `Delete ${name}? Its files go too, unless another model uses them.`;
  button.addEventListener("click", async () => {
    if (await confirmed(question)) act(button, `Deleting ${name}...`, () => call(path, { method: "DELETE" }));
  });
  return button;
}

async function act(button, doing, action) {
  button.disabled = true;
  setStatus($("models-status"), doing);
  try {
    await action();
    setStatus($("models-status"), "Done.");
  } catch (error) {
    setStatus($("models-status"), explain(error), true);
  } finally {
    button.disabled = false;
    await refresh();
  }
}

function confirmed(question) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = question;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

export async function refresh() {
  try {
    const models = await listModels();
    renderModels(models);
    onChange(models);
    renderRoutes((await callJson("/routes")).data);
    if (remotesRefusedTo !== apiKey.get()) renderRemotes((await callJson("/remotes")).data);
  } catch (error) {
    if (error.code === "insufficient_scope") remotesRefusedTo = apiKey.get();  // only admins see remotes: ask once
    else setStatus($("models-status"), explain(error), true);
  }
}

let remotesRefusedTo = null;  // the key that may not list remotes

const health = (healthy) => el("span", { class: `badge ${healthy ? "loaded" : "loading"}` }, healthy ? "healthy" : "down");

function targets(list) {
  return list.map((target) => el("div", {}, `${target.target}${target.weight > 1 ? ` ×${target.weight}` : ""} `,
    health(target.healthy)));
}

function renderRoutes(routes) {
  $("routes-panel").hidden = !routes.length;
  $("routes-table").tBodies[0].replaceChildren(...routes.map((route) => el("tr", { "data-route": route.id },
    el("td", {}, el("strong", {}, route.id)), el("td", {}, ...targets(route.targets)),
    el("td", {}, ...targets(route.fallbacks)))));
}

function renderRemotes(remotes) {
  $("remotes-panel").hidden = !remotes.length;
  $("remotes-table").tBodies[0].replaceChildren(...remotes.map((remote) => el("tr", { "data-remote": remote.name },
    el("td", {}, el("strong", {}, remote.name)), el("td", {}, remote.url),
    el("td", { title: remote.last_error || "" }, health(remote.healthy)), el("td", {}, remote.models.join(", ")))));
}

// Pull progress: `resolved` gives the total, `progress` each file's bytes so far, `success` the model.
async function pull() {
  const body = { source: $("pull-source").value.trim() };
  if ($("pull-name").value.trim()) body.name = $("pull-name").value.trim();
  const done = {};
  let total = 0;
  pullController = new AbortController();
  $("pull-go").disabled = true;
  $("pull-stop").hidden = false;
  $("pull-progress").hidden = false;
  $("pull-bar").value = 0;
  $("pull-detail").textContent = "Resolving...";
  setStatus($("models-status"), `Pulling ${body.source}...`);
  try {
    const response = await call("/models", { method: "POST", body, signal: pullController.signal });
    for await (const event of events(response)) {
      if (event.event === "resolved") total = event.total_bytes || 0;
      if (event.event === "progress" || event.event === "file_done") done[event.file] = event.bytes ?? event.size;
      const bytes = Object.values(done).reduce((sum, value) => sum + value, 0);
      if (total) $("pull-bar").value = bytes / total;
      $("pull-detail").textContent = `${humanSize(bytes)} of ${humanSize(total)} ${event.file ? `· ${event.file}` : ""}`;
      if (event.event === "success") {
        $("pull-bar").value = 1;
        setStatus($("models-status"), `Pulled ${event.model.id}.`);
      }
    }
  } catch (error) {
    setStatus($("models-status"), error.name === "AbortError" ? "Pull cancelled; pulling again resumes it." : explain(error), true);
  } finally {
    pullController = null;
    $("pull-go").disabled = false;
    $("pull-stop").hidden = true;
    await refresh();
  }
}
