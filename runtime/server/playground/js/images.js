// Images: generation with partial images as they stream, and edits of an uploaded image with a mask
// painted on a canvas (painted pixels become the mask's transparent ones: the part to repaint).

import { $, el, fillModels, setStatus } from "./dom.js";
import { call, events, withCapability } from "./api.js";

let source = null;  // the image to edit, a File
let painted = false;
let controller = null;

export function setupImages() {
  $("images-form").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
  $("images-stop").addEventListener("click", () => controller?.abort());
  $("images-source").addEventListener("change", () => loadSource($("images-source").files[0]));
  $("images-drop-source").addEventListener("click", () => loadSource(null));
  $("images-clear-mask").addEventListener("click", clearMask);
  setupPainting($("images-mask"));
}

export function setImageModels(models) {
  fillModels($("images-model"), withCapability(models, "images"));
}

async function loadSource(file) {
  source = file || null;
  $("images-editor").hidden = !source;
  $("images-go").textContent = source ? "Edit" : "Generate";
  if (!source) { $("images-source").value = ""; return; }
  const bitmap = await createImageBitmap(source);
  for (const canvas of [$("images-canvas"), $("images-mask")]) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  $("images-canvas").getContext("2d").drawImage(bitmap, 0, 0);
  clearMask();
}

function clearMask() {
  const mask = $("images-mask");
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  painted = false;
}

function setupPainting(canvas) {
  let drawing = false;
  const paint = (event) => {
    if (!drawing) return;
    const box = canvas.getBoundingClientRect();
    const scale = canvas.width / box.width;
    const context = canvas.getContext("2d");
    context.fillStyle = "#ff2d55";
    context.beginPath();
    context.arc((event.clientX - box.left) * scale, (event.clientY - box.top) * scale,
      (Number($("images-brush").value) / 2) * scale, 0, 2 * Math.PI);
    context.fill();
    painted = true;
  };
  canvas.addEventListener("pointerdown", (event) => { drawing = true; canvas.setPointerCapture(event.pointerId); paint(event); });
  canvas.addEventListener("pointermove", paint);
  canvas.addEventListener("pointerup", () => { drawing = false; });
  canvas.addEventListener("pointercancel", () => { drawing = false; });
}

// The mask as the API takes it: opaque where the image stays, transparent where it is painted.
function maskFile() {
  const layer = $("images-mask");
  const mask = el("canvas", { width: layer.width, height: layer.height });
  const context = mask.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, mask.width, mask.height);
  context.globalCompositeOperation = "destination-out";
  context.drawImage(layer, 0, 0);
  return new Promise((resolve) => mask.toBlob((blob) => resolve(new File([blob], "mask.png", { type: "image/png" })), "image/png"));
}

async function requestBody() {
  const body = { model: $("images-model").value, prompt: $("images-prompt").value, size: $("images-size").value,
    stream: true, partial_images: Number($("images-partials").value) || 0 };
  if ($("images-steps").value) body.steps = Number($("images-steps").value);
  if ($("images-seed").value !== "") body.seed = Number($("images-seed").value);
  if ($("images-negative").value.trim()) body.negative_prompt = $("images-negative").value.trim();
  if (!source) return body;
  const form = new FormData();
  for (const [name, value] of Object.entries(body)) form.append(name, String(value));
  form.append("image", source);
  if (painted) form.append("mask", await maskFile());
  return form;
}

async function generate() {
  if (!$("images-model").value) { setStatus($("images-status"), "No image model on this server.", true); return; }
  const path = source ? "/images/edits" : "/images/generations";
  const figure = el("figure", {}, el("img", { alt: "Generating..." }), el("figcaption", {}, "waiting..."));
  const [image, caption] = figure.children;
  $("images-out").prepend(figure);
  controller = new AbortController();
  $("images-go").disabled = true;
  $("images-stop").hidden = false;
  setStatus($("images-status"), "Generating (the first request loads the model)...");
  const started = performance.now();
  try {
    const response = await call(path, { method: "POST", body: await requestBody(), signal: controller.signal });
    for await (const event of events(response)) {
      if (!event.b64_json) continue;
      image.src = `data:image/${event.output_format || "png"};base64,${event.b64_json}`;
      const partial = event.type?.endsWith("partial_image");
      image.alt = `${partial ? "Partial image" : "Image"}: ${$("images-prompt").value}`;
      caption.textContent = partial ? `partial ${event.partial_image_index + 1}`
        : `${event.size} · ${((performance.now() - started) / 1000).toFixed(1)} s`;
    }
    setStatus($("images-status"), "");
  } catch (error) {
    setStatus($("images-status"), error.name === "AbortError" ? "Stopped." : error.message, true);
    if (!image.src) figure.remove();
  } finally {
    controller = null;
    $("images-go").disabled = false;
    $("images-stop").hidden = true;
  }
}
