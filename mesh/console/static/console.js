// agent-mesh console: plain JavaScript over the console's JSON API (/api/openapi.json).
// Every value from the API is put in the page with textContent / setAttribute, never as HTML.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const main = () => document.getElementById("main");
// replaceChildren would print a skipped (null) section as the text "null".
// A redraw replaces the page; an input the operator is typing in keeps the focus (and what was
// typed, via the drafts): typing that lands between a redraw and a refocus would go nowhere.
const mount = (...nodes) => {
  const active = document.activeElement;
  const draft = active && active.dataset ? active.dataset.draft : undefined;
  const at = draft !== undefined ? [active.selectionStart, active.selectionEnd] : null;
  main().replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
  if (draft === undefined) return;
  const again = [...main().querySelectorAll("input[data-draft]")].find((el) => el.dataset.draft === draft);
  if (again) { again.focus(); if (at[0] !== null) again.setSelectionRange(at[0], at[1]); }
};

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "onchange" || k === "oninput" || k === "onsubmit") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function token() { return sessionStorage.getItem("mesh-console-token") || ""; }
function authHeaders() { const t = token(); return t ? { Authorization: "Bearer " + t } : {}; }

async function api(path, options) {
  const res = await fetch(path, { ...(options || {}), headers: { Accept: "application/json", ...authHeaders(), ...((options || {}).headers || {}) } });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error((body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : res.statusText) + " (" + res.status + ")");
  return body;
}

const badge = (status) => h("span", { class: "badge s-" + status, "data-status": status }, status);
const ago = (ms) => (ms ? fmtDuration((Date.now() - ms) / 1000) + " ago" : "–");
const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");
function fmtDuration(sec) {
  if (sec < 1) return Math.round(sec * 1000) + " ms";
  if (sec < 90) return sec.toFixed(1) + " s";
  if (sec < 5400) return Math.round(sec / 60) + " min";
  return (sec / 3600).toFixed(1) + " h";
}
function fmtValue(unit, v) {
  if (v === null || v === undefined) return "not measured";
  if (unit === "ratio") return (v * 100).toFixed(1) + "%";
  if (unit === "ms") return v.toFixed(1) + " ms";
  if (unit === "bytes") return v >= 1024 ? (v / 1024).toFixed(1) + " KiB" : v + " B";
  return String(v);
}
function link(href, text) { return h("a", { href, "data-link": "1" }, text); }

// -- routing --------------------------------------------------------------------------------

const routes = [
  [/^\/(?:runs)?$/, pageRuns],
  [/^\/runs\/([^/]+)$/, pageRun],
  [/^\/runs\/([^/]+)\/steps\/([^/]+)$/, pageStep],
  [/^\/mesh$/, pageMesh],
  [/^\/dashboard$/, pageDashboard],
  [/^\/escalations$/, pageEscalations],
];
let current = null;
let rendering = false;
let pending = false;
let fromLive = false;
let lastSig = "";

// A live update redraws a page only when its data changed (a redraw under the operator's
// cursor loses clicks); clocks ("3 s ago") do not count as a change.
function unchanged(data) {
  const sig = location.pathname + location.search + JSON.stringify(data, (k, v) => (k === "age_s" || k === "duration_s" || k === "last_seen_ms" ? undefined : v));
  const skip = fromLive && sig === lastSig;
  lastSig = sig;
  return skip;
}

async function render() {
  if (rendering) { pending = true; return; }
  rendering = true;
  try {
    const path = location.pathname;
    for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", path.startsWith("/" + a.dataset.nav) || (path === "/" && a.dataset.nav === "runs"));
    for (const [re, fn] of routes) {
      const m = path.match(re);
      if (m) { current = fn; await fn(...m.slice(1).map(decodeURIComponent)); break; }
    }
    refreshEscalationCount();
  } catch (e) {
    mount(h("div", { class: "msg err" }, String(e.message || e)));
  } finally {
    rendering = false;
    fromLive = false;
    document.body.dataset.rendered = String(Date.now());
    if (pending) { pending = false; setTimeout(render, 50); }
  }
}

function navigate(href) { history.pushState(null, "", href); render(); }
document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a");
  if (!a || a.target === "_blank" || !a.getAttribute("href") || !a.getAttribute("href").startsWith("/")) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", render);

async function refreshEscalationCount() {
  try {
    const data = await api("/api/escalations");
    document.getElementById("esc-count").textContent = data.escalations.length ? "(" + data.escalations.length + ")" : "";
  } catch (e) { /* shown on the page itself */ }
}

// -- live updates: server-sent events read with fetch, so the bearer token can travel in a header ----

let lastRender = 0;
async function live() {
  const dot = document.getElementById("live");
  for (;;) {
    try {
      const res = await fetch("/api/stream", { headers: { Accept: "text/event-stream", ...authHeaders() } });
      if (!res.ok || !res.body) throw new Error("stream " + res.status);
      dot.className = "live on";
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      let first = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0 || (i = buf.indexOf("\r\n\r\n")) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2).replace(/^\r?\n/, "");
          if (/^event: ?changed/m.test(chunk)) {
            if (first) { first = false; continue; }
            scheduleRender();
          }
        }
      }
    } catch (e) { /* retry below */ }
    dot.className = "live off";
    await new Promise((r) => setTimeout(r, 2000));
  }
}
function scheduleRender() {
  if (document.querySelector("[data-editing='1']")) return;  // do not redraw under the operator's typing
  const wait = Math.max(0, 1000 - (Date.now() - lastRender));
  setTimeout(() => { lastRender = Date.now(); fromLive = true; render(); }, wait);
}

// -- runs -----------------------------------------------------------------------------------

async function pageRuns() {
  const params = new URLSearchParams(location.search);
  const status = params.get("status") || "";
  const q = params.get("q") || "";
  const query = new URLSearchParams({ limit: "100" });
  if (status) query.set("status", status);
  if (q) query.set("q", q);
  const data = await api("/api/runs?" + query);
  if (unchanged(data)) return;
  const sel = h("select", { id: "filter-status", onchange: () => applyFilters() },
    ["", "pending", "running", "paused", "succeeded", "failed"].map((v) => h("option", { value: v, selected: v === status }, v || "any status")));
  const search = h("input", { id: "filter-q", type: "search", placeholder: "search name or id", value: q });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") applyFilters(); });
  function applyFilters() {
    const p = new URLSearchParams();
    if (sel.value) p.set("status", sel.value);
    if (search.value) p.set("q", search.value);
    navigate("/runs" + (p.toString() ? "?" + p : ""));
  }
  const rows = data.runs.map((r) => h("tr", { "data-run": r.workflow_id },
    h("td", { class: "mono" }, link("/runs/" + encodeURIComponent(r.workflow_id), r.workflow_id)),
    h("td", {}, r.name), h("td", {}, badge(r.status)),
    h("td", { class: "num" }, r.created_ms ? fmtDuration(r.age_s) : "–"),
    h("td", { class: "num" }, r.created_ms ? fmtDuration(r.duration_s) : "–"),
    h("td", { class: "num" }, r.steps_done + "/" + r.steps_total),
    h("td", { class: "num" }, r.resumes), h("td", { class: "num" }, r.escalations)));
  mount(
    h("h1", {}, "Runs"),
    h("div", { class: "filters" }, sel, search, h("button", { onclick: applyFilters }, "Filter")),
    data.tail_error ? h("div", { class: "msg err" }, "live tail: " + data.tail_error) : null,
    h("div", { class: "card" }, h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, ["workflow", "name", "status", "age", "duration", "steps", "resumes", "escalations"].map((c, i) => h("th", { class: i > 2 ? "num" : null }, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No runs yet."))))),
    h("p", { class: "muted" }, "source: " + data.source));
}

// -- one run: DAG and timeline ---------------------------------------------------------------

function layers(steps) {
  const depth = {};
  const byId = Object.fromEntries(steps.map((st) => [st.id, st]));
  const visit = (id, seen) => {
    if (depth[id] !== undefined) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    const deps = (byId[id] ? byId[id].depends_on : []).filter((d) => byId[d]);
    depth[id] = deps.length ? 1 + Math.max(...deps.map((d) => visit(d, seen))) : 0;
    return depth[id];
  };
  steps.forEach((st) => visit(st.id, new Set()));
  return depth;
}

function dag(detail) {
  const steps = detail.steps;
  const depth = layers(steps);
  const cols = {};
  steps.forEach((st) => { (cols[depth[st.id]] = cols[depth[st.id]] || []).push(st); });
  const W = 210, H = 96, GX = 60, GY = 22;
  const pos = {};
  Object.entries(cols).forEach(([d, list]) => list.forEach((st, i) => { pos[st.id] = { x: 10 + d * (W + GX), y: 10 + i * (H + GY) }; }));
  const width = 20 + Object.keys(cols).length * (W + GX);
  const height = 20 + Math.max(...Object.values(cols).map((l) => l.length)) * (H + GY);
  const takeovers = {};
  detail.timeline.filter((e) => e.kind === "takeover").forEach((e) => { (takeovers[e.step] = takeovers[e.step] || []).push(e); });
  const color = { completed: "#2e9e5b", running: "#2f6fdb", ready: "#2f6fdb", paused: "#d9911a", failed: "#d23c3c", waiting: "#9aa3b5" };
  const svg = s("svg", { id: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "workflow DAG" });
  const defs = s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6b7385" })));
  svg.append(defs);
  steps.forEach((st) => st.depends_on.forEach((d) => {
    if (!pos[d]) return;
    const a = pos[d], b = pos[st.id];
    svg.append(s("path", { d: `M ${a.x + W} ${a.y + H / 2} C ${a.x + W + GX / 2} ${a.y + H / 2}, ${b.x - GX / 2} ${b.y + H / 2}, ${b.x} ${b.y + H / 2}`, fill: "none", stroke: "#6b7385", "marker-end": "url(#arrow)" }));
  }));
  steps.forEach((st) => {
    const p = pos[st.id];
    const tk = takeovers[st.id] || [];
    const g = s("g", { class: "dag-node", "data-step": st.id, "data-status": st.status, "data-owner": st.owner, "data-resumes": st.resumes, "data-takeovers": tk.length, transform: `translate(${p.x},${p.y})` });
    const a = s("a", { href: "/runs/" + encodeURIComponent(detail.run.workflow_id) + "/steps/" + encodeURIComponent(st.id) });
    a.append(s("rect", { width: W, height: H, fill: "#fff", stroke: color[st.status] || "#999", "stroke-width": tk.length ? 3 : 1.5, rx: 8 }));
    a.append(s("rect", { width: 8, height: H, fill: color[st.status] || "#999", rx: 3 }));
    a.append(s("text", { x: 16, y: 20, "font-weight": 700, "font-size": 14 }, st.id));
    a.append(s("text", { x: W - 8, y: 20, "text-anchor": "end", "font-size": 11, fill: color[st.status] }, st.status));
    a.append(s("text", { x: 16, y: 38, "font-size": 11, fill: "#6b7385" }, `${st.role} · owner ${st.owner || "–"} · epoch ${st.epoch}`));
    a.append(s("text", { x: 16, y: 55, "font-size": 11, fill: "#6b7385" }, `${st.turns} turns · ${st.resumes} resume${st.resumes === 1 ? "" : "s"} · ${st.input_tokens + st.output_tokens} tok`));
    if (st.status === "paused") a.append(s("text", { x: 16, y: tk.length ? 88 : 73, "font-size": 11, fill: "#d9911a", class: "dag-paused" }, `⏸ ${st.escalation_kind || "paused"}: waiting for a human`));
    if (tk.length) {
      const t = tk[tk.length - 1];
      const prev = (t.detail.match(/from (\S+)/) || [])[1] || "?";
      a.append(s("text", { x: 16, y: 73, "font-size": 11, fill: "#d23c3c", class: "dag-kill" }, `✕ ${prev} lost (killed) `));
      a.append(s("text", { x: 16, y: 88, "font-size": 11, fill: "#6b4fd8", class: "dag-takeover" }, `⟳ ${t.agent} took over after turn ${t.turn}`));
    }
    g.append(a);
    svg.append(g);
  });
  return svg;
}

function timelineChart(detail) {
  const ev = detail.timeline.filter((e) => e.agent && e.kind !== "submitted");
  if (!ev.length) return h("p", { class: "muted" }, "No events tailed yet.");
  const agents = [...new Set(ev.map((e) => e.agent))];
  const t0 = Math.min(...ev.map((e) => e.at_ms)), t1 = Math.max(...ev.map((e) => e.at_ms), t0 + 1);
  const L = 130, R = 20, lane = 28, width = 1000;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (width - L - R);
  const svg = s("svg", { id: "timeline", width: "100%", viewBox: `0 0 ${width} ${agents.length * lane + 30}`, role: "img", "aria-label": "timeline of turns across agents" });
  agents.forEach((a, i) => {
    const y = 10 + i * lane + lane / 2;
    svg.append(s("text", { x: 4, y: y + 4, "font-size": 12 }, a));
    svg.append(s("line", { x1: L, x2: width - R, y1: y, y2: y, stroke: "#d9dde5" }));
  });
  const colors = { turn: "#2f6fdb", started: "#2e9e5b", takeover: "#6b4fd8", escalated: "#d9911a", completed: "#2e9e5b", failed: "#d23c3c", resume_requested: "#d9911a", workflow: "#1d2330" };
  // The kill: the last event of an owner that a takeover replaced.
  const kills = detail.timeline.filter((e) => e.kind === "takeover").map((e) => {
    const prev = (e.detail.match(/from (\S+)/) || [])[1];
    const last = ev.filter((x2) => x2.agent === prev && x2.step === e.step && x2.at_ms <= e.at_ms).pop();
    return last ? { agent: prev, at_ms: last.at_ms, step: e.step } : null;
  }).filter(Boolean);
  ev.forEach((e) => {
    const y = 10 + agents.indexOf(e.agent) * lane + lane / 2;
    const title = s("title", {}, `${when(e.at_ms)} ${e.kind} ${e.step} turn ${e.turn}: ${e.detail}`);
    if (e.kind === "takeover") svg.append(s("path", { class: "tl-takeover", d: `M ${x(e.at_ms)} ${y - 9} l 8 9 l -8 9 l -8 -9 z`, fill: colors.takeover }, title));
    else svg.append(s("circle", { class: "tl-" + e.kind, cx: x(e.at_ms), cy: y, r: e.kind === "turn" ? 4 : 6, fill: colors[e.kind] || "#999" }, title));
  });
  kills.forEach((k) => {
    const y = 10 + agents.indexOf(k.agent) * lane + lane / 2;
    const cx = x(k.at_ms) + 8;
    svg.append(s("path", { class: "tl-kill", d: `M ${cx - 6} ${y - 6} L ${cx + 6} ${y + 6} M ${cx + 6} ${y - 6} L ${cx - 6} ${y + 6}`, stroke: "#d23c3c", "stroke-width": 3 }, s("title", {}, `${k.agent} went silent (killed) during ${k.step}`)));
  });
  return svg;
}

async function pageRun(wf) {
  const d = await api("/api/runs/" + encodeURIComponent(wf));
  if (unchanged(d)) return;
  const r = d.run;
  const events = d.timeline.filter((e) => e.kind !== "turn").slice(-60).reverse().map((e) =>
    h("tr", { class: "tl-row tl-row-" + e.kind }, h("td", { class: "mono" }, when(e.at_ms)), h("td", {}, badge(e.kind)), h("td", {}, e.step), h("td", {}, e.agent), h("td", { class: "num" }, e.turn || ""), h("td", {}, e.detail)));
  mount(
    h("h1", {}, r.name + " ", h("span", { class: "mono muted" }, r.workflow_id), " ", badge(r.status)),
    h("div", { class: "card kv" },
      h("span", { class: "muted" }, "steps"), h("span", {}, `${r.steps_done}/${r.steps_total} done`),
      h("span", { class: "muted" }, "started"), h("span", {}, r.created_ms ? ago(r.created_ms) : "–"),
      h("span", { class: "muted" }, "duration"), h("span", {}, fmtDuration(r.duration_s)),
      h("span", { class: "muted" }, "resumes"), h("span", {}, r.resumes),
      h("span", { class: "muted" }, "escalations"), h("span", {}, r.escalations),
      h("span", { class: "muted" }, "reasoner tokens"), h("span", { id: "run-usage" }, `${r.tokens} (≈ $${r.cost_usd.toFixed(4)})`),
      h("span", { class: "muted" }, "submitted by"), h("span", {}, r.submitted_by || "–"),
      h("span", { class: "muted" }, "trace"), h("span", {}, d.trace_url ? h("a", { id: "trace-link", href: d.trace_url, target: "_blank", rel: "noopener" }, r.trace_id) : (r.trace_id || "–") + (r.trace_id ? " (set MESH_CONSOLE_JAEGER_UI_URL for a link)" : ""))),
    h("h2", {}, "Workflow"), h("div", { class: "card" }, dag(d)),
    h("h2", {}, "Timeline of turns across agents"), h("div", { class: "card" }, timelineChart(d)),
    h("div", { class: "card" }, h("table", { id: "events" }, h("thead", {}, h("tr", {}, ["time", "event", "step", "agent", "turn", "detail"].map((c) => h("th", {}, c)))), h("tbody", {}, events))));
}

// -- one step --------------------------------------------------------------------------------

function tokenChart(turns) {
  const pts = turns.filter((t) => t.prompt_budget > 0);
  if (!pts.length) return h("p", { class: "muted" }, "No prompt token counts in this step's checkpoint.");
  const width = 640, height = 240, L = 56, R = 14, T = 14, B = 30;
  const maxY = Math.max(...pts.map((t) => Math.max(t.prompt_tokens, t.prompt_budget))) * 1.08;
  const minT = Math.min(...pts.map((t) => t.turn)), maxT = Math.max(...pts.map((t) => t.turn), minT + 1);
  const x = (t) => L + ((t - minT) / (maxT - minT)) * (width - L - R);
  const y = (v) => T + (1 - v / maxY) * (height - T - B);
  const svg = s("svg", { id: "token-chart", width: "100%", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "prompt tokens per turn against the budget" });
  [0, 0.5, 1].forEach((f) => {
    const v = Math.round(maxY * f);
    svg.append(s("line", { x1: L, x2: width - R, y1: y(v), y2: y(v), stroke: "#eef0f4" }));
    svg.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7385" }, v));
  });
  svg.append(s("polyline", { class: "budget-line", points: pts.map((t) => `${x(t.turn)},${y(t.prompt_budget)}`).join(" "), fill: "none", stroke: "#d23c3c", "stroke-dasharray": "6 4" }));
  svg.append(s("polyline", { points: pts.map((t) => `${x(t.turn)},${y(t.prompt_tokens)}`).join(" "), fill: "none", stroke: "#2f6fdb", "stroke-width": 2 }));
  pts.forEach((t) => {
    svg.append(s("circle", { class: "turn-point", "data-turn": t.turn, cx: x(t.turn), cy: y(t.prompt_tokens), r: 4, fill: "#2f6fdb" },
      s("title", {}, `turn ${t.turn}: ${t.prompt_tokens} of ${t.prompt_budget} tokens (${(100 * t.prompt_tokens / t.prompt_budget).toFixed(1)}%)`)));
    if (t.compressed) svg.append(s("path", { class: "mark-compressed", d: `M ${x(t.turn) - 6} ${T + 12} l 6 -10 l 6 10 z`, fill: "#6b4fd8" }, s("title", {}, `turn ${t.turn}: ${t.compressed} block(s) compressed`)));
    if (t.evicted) svg.append(s("rect", { class: "mark-evicted", x: x(t.turn) - 5, y: T + 16, width: 10, height: 10, fill: "#d9911a" }, s("title", {}, `turn ${t.turn}: ${t.evicted} block(s) evicted`)));
    svg.append(s("text", { x: x(t.turn), y: height - 12, "text-anchor": "middle", "font-size": 10, fill: "#6b7385" }, t.turn));
  });
  svg.append(s("text", { x: width - R, y: height - 1, "text-anchor": "end", "font-size": 10, fill: "#6b7385" }, "turn  ·  ▲ compression  ■ eviction  - - budget"));
  return svg;
}

// What the operator typed survives a redraw of the page (keyed by step and field).
const drafts = {};

function decisionControls(wf, step, nonce, after) {
  const key = wf + "/" + step + "/";
  const field = (cls, placeholder, size) => {
    const inp = h("input", { class: cls, placeholder, size, value: drafts[key + cls] || "", "data-draft": key + cls });
    inp.addEventListener("input", () => { drafts[key + cls] = inp.value; });
    inp.addEventListener("focus", () => inp.setAttribute("data-editing", "1"));
    inp.addEventListener("blur", () => inp.removeAttribute("data-editing"));
    return inp;
  };
  const note = field("esc-note", "note for the log", 28);
  const varName = field("esc-var", "variable", 12);
  const varValue = field("esc-value", "new value", 14);
  const out = h("span", { class: "esc-result muted" });
  // What was typed is read from the drafts: a redraw during typing may have left it in the
  // input this row replaced (the live stream redraws at any time).
  const typed = (inp, cls) => (key + cls in drafts ? drafts[key + cls] : inp.value);
  async function send(decision) {
    const body = { nonce, decision, note: typed(note, "esc-note") };
    if (decision === "edit") {
      const name = typed(varName, "esc-var");
      if (!name) { out.textContent = "name the variable to edit"; return; }
      body.variables = { [name]: typed(varValue, "esc-value") };
    }
    out.textContent = "sending…";
    try {
      const r = await api(`/api/runs/${encodeURIComponent(wf)}/steps/${encodeURIComponent(step)}/decision`,
        { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      out.textContent = `${decision} sent by ${r.operator}`;
      for (const cls of ["esc-note", "esc-var", "esc-value"]) delete drafts[key + cls];
      out.className = "esc-result sent";
      if (after) setTimeout(after, 3000);  // the live stream usually redraws sooner, once the log has it
    } catch (e) { out.textContent = String(e.message || e); out.className = "esc-result flag"; }
  }
  return h("div", { class: "esc-actions", "data-step": step },
    note, h("button", { class: "esc-resume", onclick: () => send("resume") }, "Resume"),
    h("button", { class: "esc-reject danger", onclick: () => send("reject") }, "Reject"),
    varName, varValue, h("button", { class: "esc-edit secondary", onclick: () => send("edit") }, "Edit + resume"), out);
}

async function pageStep(wf, step) {
  const d = await api(`/api/runs/${encodeURIComponent(wf)}/steps/${encodeURIComponent(step)}`);
  if (unchanged(d)) return;
  const turns = d.turns.map((t) => h("tr", { class: "turn-row", "data-turn": t.turn },
    h("td", { class: "num" }, t.turn), h("td", { class: "mono" }, t.action),
    h("td", { class: "mono" }, JSON.stringify(t.params)),
    h("td", {}, t.injected.join(", ") || "–"),
    h("td", { class: "num" }, t.repairs), h("td", { class: "num" }, t.retries),
    h("td", {}, badge(t.outcome), " ", t.summary),
    h("td", { class: "num" }, t.prompt_budget ? `${t.prompt_tokens}/${t.prompt_budget}` : "–"),
    h("td", { class: "num" }, t.calls ? `${t.input_tokens}+${t.output_tokens}` : "–"),
    h("td", { class: "num" }, Math.round(t.duration_ms) + " ms")));
  const ledger = d.turns.filter((t) => t.ledger.length).slice().reverse().flatMap((t) => t.ledger.map((l) => h("li", { class: "mono" }, `turn ${t.turn}: ${l.replace(/^- /, "")}`)));
  const vars = d.variables.map((v) => h("tr", { "data-var": v.name },
    h("td", { class: "mono" }, v.name), h("td", { class: "mono" }, v.secret ? "••••• (secret)" : JSON.stringify(v.value)),
    h("td", {}, v.inherited ? "inherited" : "discovered"), h("td", {}, v.origin || "–"), h("td", {}, badge(v.gossip))));
  mount(
    h("h1", {}, link("/runs/" + encodeURIComponent(wf), wf), " / " + step + " ", badge(d.status)),
    d.status === "paused" ? h("div", { class: "card", id: "escalation", "data-kind": d.step.escalation_kind },
      h("strong", {}, "Paused "), badge(d.step.escalation_kind || "paused"), " ", d.escalation || d.step.last,
      decisionControls(wf, step, d.step.escalation_nonce, render)) : null,
    d.error ? h("div", { class: "msg err" }, d.error) : null,
    h("div", { class: "card kv" },
      h("span", { class: "muted" }, "role"), h("span", {}, d.step.role),
      h("span", { class: "muted" }, "owner"), h("span", {}, `${d.step.owner} (epoch ${d.step.epoch})`),
      h("span", { class: "muted" }, "turns"), h("span", {}, d.turn),
      h("span", { class: "muted" }, "resumes"), h("span", {}, d.resumes),
      h("span", { class: "muted" }, "state size"), h("span", {}, fmtValue("bytes", d.state_bytes)),
      h("span", { class: "muted" }, "reasoner tokens"), h("span", { id: "step-usage" }, `${d.step.input_tokens} in · ${d.step.output_tokens} out · $${d.step.cost_usd.toFixed(4)}`)),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Prompt tokens against the budget"), tokenChart(d.turns)),
      h("div", { class: "card" }, h("h2", {}, "Eviction ledger"), ledger.length ? h("ul", { id: "ledger" }, ledger) : h("p", { class: "muted", id: "ledger" }, "Nothing evicted or compressed."))),
    h("h2", {}, "Turns"),
    h("div", { class: "card" }, h("table", { id: "turns" }, h("thead", {}, h("tr", {}, ["turn", "decision", "parameters", "injected / corrected", "repairs", "retries", "outcome", "prompt", "tokens in+out", "time"].map((c) => h("th", {}, c)))), h("tbody", {}, turns))),
    h("h2", {}, "Variables"),
    h("div", { class: "card" }, h("table", { id: "variables" }, h("thead", {}, h("tr", {}, ["name", "value", "how", "origin", "gossip"].map((c) => h("th", {}, c)))), h("tbody", {}, vars))),
    h("h2", {}, "Scratchpad"),
    h("pre", { class: "scratch", id: "scratchpad" }, d.scratchpad || "(no scratchpad on this machine)"));
}

// -- mesh -----------------------------------------------------------------------------------

async function pageMesh() {
  const wf = new URLSearchParams(location.search).get("workflow") || "";
  const d = await api("/api/mesh" + (wf ? "?workflow_id=" + encodeURIComponent(wf) : ""));
  if (unchanged(d)) return;
  const byRole = {};
  d.agents.forEach((a) => { (byRole[a.role] = byRole[a.role] || []).push(a); });
  const agentRows = Object.entries(byRole).flatMap(([role, list]) => list.map((a, i) => h("tr", { "data-agent": a.agent },
    h("td", {}, i === 0 ? role : ""), h("td", { class: "mono" }, a.agent), h("td", {}, a.host),
    h("td", { class: "mono" }, a.partitions.join(", ") || "–"), h("td", {}, a.last_seen_ms ? ago(a.last_seen_ms) : "–"),
    h("td", {}, a.quarantined ? h("span", { class: "flag" }, "quarantined") : "ok"))));
  const gossip = d.gossip.map((g) => h("tr", {}, h("td", { class: "mono" }, g.name),
    ...d.gossip_agents.map((a) => h("td", {}, badge(g.status[a] || "absent"))),
    h("td", {}, g.converged ? h("span", { class: "okflag" }, "converged") : h("span", { class: "flag" }, "diverged"))));
  const props = d.proposals.map((p) => h("tr", {}, h("td", { class: "mono" }, p.key), h("td", {}, p.fact_kind), h("td", {}, p.proposer),
    h("td", {}, Object.entries(p.ballots).map(([v, b]) => `${v}: ${b.verdict}`).join(", ") || "–"), h("td", {}, badge(p.outcome))));
  mount(
    h("h1", {}, "Mesh"),
    d.agents_error ? h("div", { class: "msg err" }, d.agents_error) : null,
    h("h2", {}, "Agents per role"),
    h("div", { class: "card" }, h("table", { id: "agents" }, h("thead", {}, h("tr", {}, ["role", "agent", "host", "partitions", "last message", "state"].map((c) => h("th", {}, c)))), h("tbody", {}, agentRows.length ? agentRows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No live agents."))))),
    h("h2", {}, "Gossip map of ", h("span", { class: "mono" }, d.workflow_id || "–")),
    h("div", { class: "card" }, h("table", { id: "gossip" }, h("thead", {}, h("tr", {}, h("th", {}, "variable"), ...d.gossip_agents.map((a) => h("th", {}, a)), h("th", {}, "convergence"))), h("tbody", {}, gossip))),
    h("h2", {}, "Proposals and ballots"),
    h("div", { class: "card" }, h("table", { id: "proposals" }, h("thead", {}, h("tr", {}, ["fact", "kind", "proposer", "ballots", "outcome"].map((c) => h("th", {}, c)))), h("tbody", {}, props.length ? props : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No proposals tailed."))))),
    h("h2", {}, "Quarantined peers"),
    h("div", { class: "card" }, d.quarantined.length ? h("ul", {}, d.quarantined.map((q) => h("li", {}, `${q.peer}: ${q.reason} (reputation ${q.reputation} < ${q.threshold}, seen by ${q.observer})`))) : h("p", { class: "muted" }, "None.")));
}

// -- dashboard ------------------------------------------------------------------------------

function sparkline(k) {
  const width = 260, height = 46;
  const svg = s("svg", { class: "spark", "data-kpi": k.key, width, height, viewBox: `0 0 ${width} ${height}` });
  if (!k.series.length) return svg;
  const vals = k.series.map((p) => p[1]);
  const hi = Math.max(...vals, k.limit) * 1.1 || 1, lo = Math.min(0, ...vals);
  const t0 = k.series[0][0], t1 = Math.max(k.series[k.series.length - 1][0], t0 + 1);
  const x = (t) => 4 + ((t - t0) / (t1 - t0)) * (width - 8);
  const y = (v) => 4 + (1 - (v - lo) / (hi - lo)) * (height - 8);
  svg.append(s("line", { x1: 0, x2: width, y1: y(k.limit), y2: y(k.limit), stroke: "#d23c3c", "stroke-dasharray": "4 3" }));
  svg.append(s("polyline", { points: k.series.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), fill: "none", stroke: "#2f6fdb", "stroke-width": 1.5 }));
  k.series.forEach((p) => svg.append(s("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, fill: k.violated ? "#d23c3c" : "#2f6fdb" }, s("title", {}, `${when(p[0])}: ${fmtValue(k.unit, p[1])}`))));
  return svg;
}

async function pageDashboard() {
  const d = await api("/api/kpis");
  if (unchanged(d)) return;
  const rows = d.kpis.map((k) => h("tr", { class: k.violated ? "violated" : null, "data-kpi": k.key },
    h("td", {}, k.title, h("div", { class: "muted" }, k.why)),
    h("td", { class: "num" }, fmtValue(k.unit, k.value)),
    h("td", { class: "num" }, (k.better === "higher" ? "≥ " : "≤ ") + fmtValue(k.unit, k.limit)),
    h("td", {}, k.value === null ? h("span", { class: "muted" }, "–") : k.violated ? h("span", { class: "flag" }, "violated") : h("span", { class: "okflag" }, "ok")),
    h("td", {}, sparkline(k))));
  mount(h("h1", {}, "Dashboard"),
    h("p", { class: "muted" }, `Over the last ${d.runs} runs; one point per run, oldest first; dashed red: the threshold.`),
    h("div", { class: "card" }, h("table", { id: "kpis" }, h("thead", {}, h("tr", {}, ["KPI", "value", "threshold", "", "over time"].map((c) => h("th", {}, c)))), h("tbody", {}, rows))));
}

// -- escalations ----------------------------------------------------------------------------

async function pageEscalations() {
  const d = await api("/api/escalations");
  if (unchanged(d)) return;
  const rows = d.escalations.map((e) => h("tr", { class: "esc-row", "data-workflow": e.workflow_id, "data-step": e.step_id },
    h("td", { class: "mono" }, link("/runs/" + encodeURIComponent(e.workflow_id), e.workflow_id)),
    h("td", {}, link(`/runs/${encodeURIComponent(e.workflow_id)}/steps/${encodeURIComponent(e.step_id)}`, e.step_id)),
    h("td", {}, badge(e.kind || "paused")), h("td", {}, e.reason), h("td", {}, e.owner), h("td", {}, e.at_ms ? ago(e.at_ms) : "–"),
    h("td", {}, decisionControls(e.workflow_id, e.step_id, e.nonce, render))));
  mount(h("h1", {}, "Escalations"),
    token() ? null : h("div", { class: "msg" }, "Decisions need the console's bearer token: enter it at the top right."),
    h("div", { class: "card" }, h("table", { id: "escalations" }, h("thead", {}, h("tr", {}, ["workflow", "step", "kind", "reason", "owner", "since", "decision"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Nothing waits for a human."))))));
}

// -- start ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  input.addEventListener("change", () => { sessionStorage.setItem("mesh-console-token", input.value.trim()); render(); });
  render();
  live();
});
