// A tiny Markdown renderer that builds DOM nodes: fenced code, headings, lists, paragraphs, and inline
// code, bold, italic and http(s) links. Text only ever enters through text nodes, so whatever a model
// writes (<script>, onerror=...) shows as the characters it is.

import { el } from "./dom.js";

const FENCE = /^```\s*([\w+#.-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d+[.)]\s+(.*)$/;
const INLINE = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\(https?:\/\/[^\s)]+\))/;

export function renderMarkdown(text) {
  const root = document.createDocumentFragment();
  const lines = text.split("\n");
  let index = 0;
  while (index < lines.length) {
    const line = lines[index];
    const fence = line.match(FENCE);
    if (fence) {
      const code = [];
      index += 1;
      while (index < lines.length && !FENCE.test(lines[index])) code.push(lines[index++]);
      index += 1;  // the closing fence (or the end of an answer still streaming)
      root.append(el("pre", { "data-lang": fence[1] || null }, el("code", {}, code.join("\n"))));
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      root.append(el(`h${Math.min(heading[1].length + 2, 6)}`, {}, ...inline(heading[2])));
      index += 1;
      continue;
    }
    const listPattern = BULLET.test(line) ? BULLET : NUMBERED.test(line) ? NUMBERED : null;
    if (listPattern) {
      const list = el(listPattern === BULLET ? "ul" : "ol");
      while (index < lines.length && listPattern.test(lines[index])) {
        list.append(el("li", {}, ...inline(lines[index].match(listPattern)[1])));
        index += 1;
      }
      root.append(list);
      continue;
    }
    if (!line.trim()) { index += 1; continue; }
    const paragraph = [];
    while (index < lines.length && lines[index].trim() && !FENCE.test(lines[index]) && !HEADING.test(lines[index])
           && !BULLET.test(lines[index]) && !NUMBERED.test(lines[index])) {
      paragraph.push(lines[index++]);
    }
    const node = el("p");
    paragraph.forEach((part, position) => {
      if (position) node.append(el("br"));
      node.append(...inline(part));
    });
    root.append(node);
  }
  return root;
}

function inline(text) {
  const nodes = [];
  let rest = text;
  let match;
  while ((match = rest.match(INLINE))) {
    if (match.index) nodes.push(document.createTextNode(rest.slice(0, match.index)));
    const token = match[0];
    if (match[1]) nodes.push(el("code", {}, token.slice(1, -1)));
    else if (match[2]) nodes.push(el("strong", {}, ...inline(token.slice(2, -2))));
    else if (match[3]) nodes.push(el("em", {}, ...inline(token.slice(1, -1))));
    else {
      const label = token.slice(1, token.indexOf("]("));
      const href = token.slice(token.indexOf("](") + 2, -1);
      nodes.push(el("a", { href, rel: "noopener noreferrer", target: "_blank" }, label));
    }
    rest = rest.slice(match.index + token.length);
  }
  if (rest) nodes.push(document.createTextNode(rest));
  return nodes;
}
