// DOM helpers. Text always goes in through textContent: nothing a model or server says is parsed as HTML.

export const $ = (id) => document.getElementById(id);

// el("p", {class: "x"}, "text", child): attributes as given, children as text or nodes.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== undefined && child !== null));
  return node;
}

export function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

export function humanSize(bytes) {
  if (!bytes) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let size = bytes, unit = 0;
  while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
  return `${size.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

// Fill a <select> with model ids, keeping the current choice when it is still there.
export function fillModels(select, models) {
  const previous = select.value;
  select.replaceChildren(...models.map((model) => el("option", { value: model.id }, model.id)));
  if (!models.length) select.append(el("option", { value: "" }, "no model of this kind"));
  if (models.some((model) => model.id === previous)) select.value = previous;
}
