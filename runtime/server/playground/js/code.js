// "View code": the request just sent as curl, Python and Node, with the key left as $STACKLET_API_KEY.

import { $ } from "./dom.js";
import { baseUrl } from "./api.js";

const shellQuote = (text) => `'${text.replaceAll("'", "'\\''")}'`;

// A Python literal for a JSON value (JSON strings are valid Python strings).
function python(value, indent = "") {
  const inner = `${indent}    `;
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((item) => inner + python(item, inner)).join(",\n")},\n${indent}]`;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${python(v, inner)}`).join(",\n")},\n${indent}}`;
  }
  return JSON.stringify(value);
}

export function snippets(path, body) {
  const url = `${baseUrl()}${path}`;
  const curl = [`curl ${url} \\`, `  -H "Authorization: Bearer $STACKLET_API_KEY" \\`,
    `  -H "Content-Type: application/json" \\`, `  -d ${shellQuote(JSON.stringify(body, null, 2))}`].join("\n");
  const py = [
    "import os", "", "from openai import OpenAI", "",
    `client = OpenAI(base_url="${baseUrl()}", api_key=os.environ["STACKLET_API_KEY"])`,
    `request = ${python(body)}`,
    "for chunk in client.chat.completions.create(**request):",
    "    if chunk.choices:",
    "        print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)",
    "print()",
  ].join("\n");
  const node = [
    'import OpenAI from "openai";', "",
    `const client = new OpenAI({ baseURL: "${baseUrl()}", apiKey: process.env.STACKLET_API_KEY });`,
    `const stream = await client.chat.completions.create(${JSON.stringify(body, null, 2)});`,
    'for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");',
    'process.stdout.write("\\n");',
  ].join("\n");
  return { curl, python: py, node };
}

let current = { curl: "", python: "", node: "" };

function select(lang) {
  for (const tab of document.querySelectorAll("#code-dialog [role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.lang === lang));
  }
  $("code-text").textContent = current[lang];
}

export function showCode(path, body) {
  current = snippets(path, body);
  select("curl");
  $("code-dialog").showModal();
}

export function setupCode() {
  for (const tab of document.querySelectorAll("#code-dialog [role=tab]")) {
    tab.addEventListener("click", () => select(tab.dataset.lang));
  }
  $("code-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("code-text").textContent);
      $("code-copy").textContent = "Copied";
    } catch {
      $("code-copy").textContent = "Select the text to copy";
    }
    setTimeout(() => { $("code-copy").textContent = "Copy"; }, 1500);
  });
}
