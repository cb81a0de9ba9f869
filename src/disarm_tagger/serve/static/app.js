"use strict";
// The review page. Article text is hostile: it only ever reaches the DOM through textContent and text
// nodes, never parsed as markup. Offsets from the server count Unicode code points, so text is sliced as an
// array of code points, not as UTF-16 units.

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "disarm-tagger-token";

const state = {
  file: null,          // a chosen File (uploaded as multipart), else the textarea is used
  raw: "",             // what was sent to /api/suggest (for Save review)
  source: "",          // file name, if any
  doc: null,           // the /api/suggest?include_text=true response
  decisions: [],       // per suggestion: "", "accepted" or "rejected"
  added: [],           // techniques the analyst added: {id, name, tactic_id, tactic}
  current: -1,         // the selected suggestion
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);  // strings become text nodes
  return node;
}

function status(message, isError = false) {
  const box = $("#status");
  box.textContent = message;
  box.classList.toggle("error", isError);
}

// ------------------------------------------------------------------------------------------------ API
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", "Bearer " + token);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("#auth").hidden = false;
    throw new Error("this server needs its access token (see the box above)");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return { status: response.status, body };
}

function jsonRequest(payload) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) };
}

// ------------------------------------------------------------------------------------------------ suggest
async function suggest() {
  const topK = Number($("#top-k").value) || 10;
  let request;
  if (state.file) {
    const form = new FormData();
    form.append("file", state.file);
    form.append("top_k", String(topK));
    request = { method: "POST", body: form };
    state.source = state.file.name;
  } else {
    state.raw = $("#raw").value;
    if (!state.raw.trim()) return status("Paste an article or choose a file first.", true);
    request = jsonRequest({ text: state.raw, top_k: topK });
    state.source = "";
  }
  status("Tagging…");
  $("#suggest").disabled = true;
  try {
    const { body } = await api("/api/suggest?include_text=true", request);
    state.doc = body;
    state.decisions = body.suggestions.map(() => "");
    state.added = [];
    state.current = -1;
    render();
    const warnings = (body.warnings || []).join(" ");
    status(`${body.suggestions.length} suggestions. ${warnings}`.trim());
  } catch (error) {
    status(error.message, true);
  } finally {
    $("#suggest").disabled = false;
  }
}

// ------------------------------------------------------------------------------------------------ render
function render() {
  const doc = state.doc;
  $("#review").hidden = false;
  $("#title").textContent = doc.title || state.source || "Pasted text";
  $("#legend").textContent = `Score: calibrated chance an analyst would tag the technique; ✓ = at or above `
    + `the model's threshold (${doc.threshold.toFixed(2)}).`;
  renderText(doc.text, doc.suggestions);
  renderSuggestions();
  renderAdded();
}

function renderText(text, suggestions) {
  const chars = Array.from(text);
  const cuts = new Set([0, chars.length]);
  for (const s of suggestions) {
    for (const e of s.evidence) {
      if (e.start >= 0 && e.end <= chars.length && e.start < e.end) { cuts.add(e.start); cuts.add(e.end); }
    }
  }
  const points = [...cuts].sort((a, b) => a - b);
  const box = $("#text");
  box.replaceChildren();
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i], points[i + 1]];
    const piece = chars.slice(a, b).join("");
    const owners = [];
    suggestions.forEach((s, k) => {
      if (s.evidence.some((e) => e.start <= a && b <= e.end)) owners.push(k);
    });
    if (!owners.length) {
      box.append(document.createTextNode(piece));
      continue;
    }
    const mark = el("mark", { dataset: { owners: owners.join(" ") } }, piece);
    mark.title = "Evidence for:\n" + owners.map((k) => `${suggestions[k].technique_id} ${suggestions[k].name}`).join("\n");
    mark.addEventListener("mouseenter", () => hoverOwners(owners, true));
    mark.addEventListener("mouseleave", () => hoverOwners(owners, false));
    box.append(mark);
  }
}

function hoverOwners(owners, on) {
  for (const k of owners) $(`#suggestions li[data-k="${k}"]`)?.classList.toggle("hover", on);
}

function renderSuggestions() {
  const list = $("#suggestions");
  list.replaceChildren();
  state.doc.suggestions.forEach((s, k) => {
    const above = s.score >= state.doc.threshold;
    const item = el("li", { dataset: { k: String(k), id: s.technique_id }, tabIndex: -1, onclick: () => select(k) },
      el("span", { class: "rank" }, `${s.rank}.`),
      el("span", { class: "name" }, el("b", {}, s.technique_id), " ", s.name),
      el("span", { class: "score" + (above ? " above" : "") }, s.score.toFixed(2) + (above ? " ✓" : "")),
      el("span", { class: "tactic" }, `${s.tactic_id} ${s.tactic}`),
      el("span", { class: "actions" },
        el("button", { type: "button", class: "accept", title: "Accept (a)",
          onclick: (event) => { event.stopPropagation(); decide(k, "accepted", true); } }, "Accept"),
        el("button", { type: "button", class: "reject", title: "Reject (r)",
          onclick: (event) => { event.stopPropagation(); decide(k, "rejected", true); } }, "Reject")));
    list.append(item);
  });
  paintDecisions();
}

function paintDecisions() {
  document.querySelectorAll("#suggestions li").forEach((item) => {
    const k = Number(item.dataset.k);
    item.classList.toggle("accepted", state.decisions[k] === "accepted");
    item.classList.toggle("rejected", state.decisions[k] === "rejected");
    item.classList.toggle("selected", k === state.current);
    item.setAttribute("aria-selected", String(k === state.current));
  });
}

function select(k) {
  const n = state.doc ? state.doc.suggestions.length : 0;
  if (!n) return;
  state.current = Math.max(0, Math.min(n - 1, k));
  paintDecisions();
  document.querySelectorAll("mark.current").forEach((m) => m.classList.remove("current"));
  const marks = [...document.querySelectorAll("#text mark")]
    .filter((m) => m.dataset.owners.split(" ").includes(String(state.current)));
  marks.forEach((m) => m.classList.add("current"));
  if (marks.length) marks[0].scrollIntoView({ block: "center", behavior: "smooth" });
  $(`#suggestions li[data-k="${state.current}"]`).scrollIntoView({ block: "nearest" });
}

function decide(k, decision, toggle = false) {
  if (k < 0 || !state.doc) return;
  state.decisions[k] = toggle && state.decisions[k] === decision ? "" : decision;
  state.current = k;
  paintDecisions();
}

// ------------------------------------------------------------------------------------------------ add
let searchTimer = null;
function searchTechniques() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const q = $("#add-q").value.trim();
    const results = $("#add-results");
    if (!q) return results.replaceChildren();
    try {
      const { body } = await api(`/api/techniques?limit=8&q=${encodeURIComponent(q)}`);
      results.replaceChildren(...body.techniques.map((t) => el("li", {},
        el("b", {}, t.id), ` ${t.name}`, el("span", { class: "muted" }, ` (${t.tactic})`),
        el("button", { type: "button", onclick: () => addTechnique(t) }, "Add"))));
      if (!body.techniques.length) results.append(el("li", { class: "muted" }, "No technique matches."));
    } catch (error) {
      status(error.message, true);
    }
  }, 150);
}

function addTechnique(t) {
  const k = state.doc.suggestions.findIndex((s) => s.technique_id === t.id);
  if (k >= 0) {
    decide(k, "accepted");
    status(`${t.id} is suggestion ${k + 1}: accepted it.`);
  } else if (!state.added.some((a) => a.id === t.id)) {
    state.added.push(t);
    renderAdded();
    status(`Added ${t.id}.`);
  }
  $("#add-q").value = "";
  $("#add-results").replaceChildren();
}

function renderAdded() {
  $("#added").replaceChildren(...state.added.map((t, i) => el("li", { dataset: { id: t.id } },
    "✓ ", el("b", {}, t.id), ` ${t.name} (added)`,
    el("button", { type: "button", onclick: () => { state.added.splice(i, 1); renderAdded(); } }, "Remove"))));
}

// ------------------------------------------------------------------------------------------------ save, export
function reviewed() {
  const accepted = state.doc.suggestions.filter((s, k) => state.decisions[k] === "accepted");
  return [
    ...accepted.map((s) => ({ technique_id: s.technique_id, score: s.score, evidence: s.evidence })),
    ...state.added.map((t) => ({ technique_id: t.id })),
  ];
}

async function save() {
  if (!state.doc) return;
  const labels = reviewed().map((t) => t.technique_id);
  if (!labels.length) return status("Accept or add at least one technique before saving.", true);
  const annotator = $("#annotator").value.trim();
  const note = $("#note").value.trim();
  let request;
  if (state.file) {
    const form = new FormData();
    form.append("file", state.file);
    form.append("labels", labels.join(","));
    form.append("annotator", annotator);
    form.append("note", note);
    request = { method: "POST", body: form };
  } else {
    request = jsonRequest({ text: state.raw, labels, annotator, note, source: state.source });
  }
  try {
    const { status: code, body } = await api("/api/annotations", request);
    const what = code === 200 ? "Replaced the earlier review" : "Saved";
    status(`${what}: ${body.labels.join(", ")} for ${body.id}. The next \`disarm-tagger train\` learns from it.`);
  } catch (error) {
    status(error.message, true);
  }
}

async function download(format) {
  if (!state.doc) return;
  const techniques = reviewed();
  if (!techniques.length) return status("Accept or add at least one technique before downloading.", true);
  try {
    const { body } = await api(`/api/export/${format}`, jsonRequest({
      text: state.doc.text, title: state.doc.title, source: state.source, techniques }));
    const blob = new Blob([JSON.stringify(body, null, 2)], { type: "application/json" });
    const link = el("a", { href: URL.createObjectURL(blob), download: `disarm-review.${format}.json` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    status(`Downloaded the ${format} export of ${techniques.length} techniques.`);
  } catch (error) {
    status(error.message, true);
  }
}

// ------------------------------------------------------------------------------------------------ wiring
function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || !state.doc) return;
  if (event.target.closest("input, textarea, select, [contenteditable]")) return;
  const actions = {
    j: () => select(state.current + 1),
    k: () => select(state.current - 1),
    a: () => decide(state.current, "accepted"),
    r: () => decide(state.current, "rejected"),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    if (state.current < 0 && (event.key === "a" || event.key === "r")) select(0);
    action();
  }
}

async function checkServer() {
  try {
    const { body } = await api("/healthz");
    $("#auth").hidden = true;
    $("#model").textContent = `model: ${body.model}`;
  } catch (error) {
    status(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#suggest").addEventListener("click", suggest);
  $("#file").addEventListener("change", (event) => {
    state.file = event.target.files[0] || null;
    if (state.file) status(`Using the file ${state.file.name}.`);
  });
  $("#raw").addEventListener("input", () => {
    state.file = null;
    $("#file").value = "";
  });
  $("#add-q").addEventListener("input", searchTechniques);
  $("#save").addEventListener("click", save);
  document.querySelectorAll("[data-export]").forEach((button) =>
    button.addEventListener("click", () => download(button.dataset.export)));
  $("#auth").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    checkServer();
  });
  document.addEventListener("keydown", onKey);
  checkServer();
});
