// The playground's start: sign-in (a key typed in, or one `stacklet open` put in the URL fragment),
// the views behind the navigation, and the model list every view picks from.

import { $, setStatus } from "./dom.js";
import { apiKey, listModels, onKeyRefused } from "./api.js";
import { setChatModels, setupChat } from "./chat.js";
import { setupCode } from "./code.js";
import { setImageModels, setupImages } from "./images.js";
import { setAudioModels, setupAudio } from "./audio.js";
import { setEmbeddingModels, setupEmbeddings } from "./embeddings.js";
import { refresh as refreshModels, renderModels, setupModels } from "./models.js";

const VIEWS = ["chat", "images", "speech", "transcribe", "embeddings", "models"];
const KEY_FRAGMENT = "#key=";
const MODELS_POLL_MS = 5000;
let poll = null;

function modelsChanged(models) {
  setChatModels(models);
  setImageModels(models);
  setAudioModels(models);
  setEmbeddingModels(models);
}

function show(view) {
  const signedIn = Boolean(apiKey.get());
  const current = signedIn ? (VIEWS.includes(view) ? view : "chat") : "signin";
  for (const section of document.querySelectorAll("main > .view")) section.hidden = section.id !== `view-${current}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("nav").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  clearInterval(poll);
  if (current === "models") {
    refreshModels();
    poll = setInterval(refreshModels, MODELS_POLL_MS);  // states change as models load and unload
  }
}

const currentView = () => location.hash.slice(1);

async function signIn(key) {
  apiKey.set(key);
  try {
    const models = await listModels();
    modelsChanged(models);
    renderModels(models);
    setStatus($("signin-status"), "");
    show(currentView());
  } catch (error) {
    apiKey.clear();
    show("signin");
    if (error.status !== 401) setStatus($("signin-status"), error.message, true);
  }
}

function keyRefused() {
  apiKey.clear();
  show("signin");
  setStatus($("signin-status"), "The server refused the key: it is wrong, revoked or expired. Run `stacklet open` "
    + "again, or paste another key.", true);
}

function start() {
  onKeyRefused(keyRefused);
  setupChat();
  setupCode();
  setupImages();
  setupAudio();
  setupEmbeddings();
  setupModels(modelsChanged);
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("signin-key").value.trim());
    $("signin-key").value = "";
  });
  $("sign-out").addEventListener("click", () => { apiKey.clear(); show("signin"); });
  window.addEventListener("hashchange", () => show(currentView()));
  if (location.hash.startsWith(KEY_FRAGMENT)) {
    // From `stacklet open`: keep the key, and take it out of the address bar and this history entry.
    const key = decodeURIComponent(location.hash.slice(KEY_FRAGMENT.length));
    history.replaceState(null, "", `${location.pathname}#chat`);
    signIn(key);
  } else if (apiKey.get()) {
    signIn(apiKey.get());
  } else {
    show("signin");
  }
}

start();
