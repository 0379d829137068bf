// Graph panels of the host and group pages: a shared time range (presets,
// zoom, pan, drag across a graph to zoom in), kept in the URL's hash so a
// reload or a shared link shows the same window. Plain ES module.
//
// Each <figure class="panel" data-query="…"> gets an <img> of
// /api/v1/graph.svg with the page's range and the panel's width. No value is
// ever put into the page as HTML.
//
// A figure with data-from/data-to (the scaling page's dry-run) keeps that
// window: the range bar does not move it. With data-values, the hover
// readout reads that query instead of data-query (which may carry
// graph-only parameters such as policy=).

// Plot gutters of the server's graphs (server/src/graph): the plot starts
// this far from the left edge and ends this far from the right one.
const LEFT = 72;
const RIGHT = 14;
const HEIGHT = 250;
const REFRESH_MS = 30_000;
const DEFAULT_SPAN = 6 * 3600;
const MIN_SPAN = 120;
const MAX_SPAN = 2 * 366 * 86400;

const state = { span: DEFAULT_SPAN, end: null, perMember: false };

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const span = Number(p.get("range"));
  const from = Number(p.get("from"));
  const to = Number(p.get("to"));
  if (from > 0 && to > from) {
    state.end = to;
    state.span = to - from;
  } else if (span >= MIN_SPAN) {
    state.span = Math.min(span, MAX_SPAN);
  }
  state.perMember = p.get("members") === "1";
}

function writeHash() {
  const p = new URLSearchParams();
  if (state.end === null) p.set("range", String(state.span));
  else {
    p.set("from", String(state.end - state.span));
    p.set("to", String(state.end));
  }
  if (state.perMember) p.set("members", "1");
  history.replaceState(null, "", `#${p}`);
}

function window_() {
  const now = Math.floor(Date.now() / 1000 / 10) * 10;
  const to = state.end === null ? now : Math.min(state.end, now);
  return { from: Math.round(to - state.span), to: Math.round(to) };
}

function human(span) {
  const units = [[31536000, "year"], [2678400, "month"], [604800, "week"], [86400, "day"], [3600, "h"], [60, "min"]];
  for (const [s, name] of units) {
    if (span >= s && span % s === 0) {
      const n = span / s;
      return name.length > 3 && n !== 1 ? `${n} ${name}s` : `${n} ${name}`;
    }
  }
  return `${Math.round(span / 60)} min`;
}

function fmtTime(t, span) {
  const d = new Date(t * 1000);
  const opts = span > 2 * 86400
    ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }
    : { weekday: "short", hour: "2-digit", minute: "2-digit" };
  return d.toLocaleString(undefined, opts);
}

function describe() {
  const { from, to } = window_();
  const label = document.getElementById("range-label");
  label.textContent = state.end === null
    ? `last ${human(state.span)} · live`
    : `${fmtTime(from, state.span)} – ${fmtTime(to, state.span)}`;
  for (const b of document.querySelectorAll("#presets button")) {
    const on = state.end === null && Number(b.dataset.range) === state.span;
    b.setAttribute("aria-pressed", on ? "true" : "false");
  }
  document.getElementById("reset").disabled = state.end === null && state.span === DEFAULT_SPAN;
}

function src(fig, from, to, width) {
  const q = state.perMember && fig.dataset.perMember ? fig.dataset.perMember : fig.dataset.query;
  const p = new URLSearchParams({
    from: String(from),
    to: String(to),
    width: String(width),
    height: String(HEIGHT),
    utc_offset: String(-new Date().getTimezoneOffset()),
  });
  return `/api/v1/graph.svg?${q}&${p}`;
}

function pinned(fig) {
  const from = Number(fig.dataset.from);
  const to = Number(fig.dataset.to);
  return from > 0 && to > from ? { from, to } : null;
}

function load() {
  const live = window_();
  for (const fig of document.querySelectorAll("figure.panel")) {
    const { from, to } = pinned(fig) || live;
    const img = fig.querySelector("img");
    const width = Math.max(240, Math.min(4000, Math.floor(fig.querySelector(".frame").clientWidth)));
    const url = src(fig, from, to, width);
    if (img.getAttribute("src") === url) continue;
    img.width = width;
    img.height = HEIGHT;
    fig.classList.add("loading");
    // Swap only once the new picture is there: no flashing while refreshing.
    const next = new Image();
    next.onload = () => {
      img.src = url;
      fig.classList.remove("loading", "failed");
    };
    next.onerror = () => {
      fig.classList.remove("loading");
      fig.classList.add("failed");
      img.src = url;
    };
    next.src = url;
  }
  describe();
  writeHash();
}

function setFixed(from, to) {
  const span = Math.max(MIN_SPAN, Math.min(MAX_SPAN, Math.round(to - from)));
  const now = Date.now() / 1000;
  const end = Math.round(from + span);
  // A window that reaches the present follows it.
  state.end = end >= now - 10 ? null : end;
  state.span = span;
  load();
}

function zoom(factor) {
  const { from, to } = window_();
  const mid = (from + to) / 2;
  const half = (to - from) * factor / 2;
  if (state.end === null && factor > 1) {
    state.span = Math.min(MAX_SPAN, Math.round(state.span * factor));
    load();
    return;
  }
  setFixed(mid - half, mid + half);
}

function pan(direction) {
  const { from, to } = window_();
  const shift = (to - from) / 2 * direction;
  setFixed(from + shift, to + shift);
}

// Click-drag across a graph selects the time to zoom into.
function dragToZoom(fig) {
  const frame = fig.querySelector(".frame");
  const sel = fig.querySelector(".sel");
  let start = null;
  const x = (e) => {
    const r = frame.getBoundingClientRect();
    const plot = [LEFT, r.width - RIGHT];
    return Math.max(plot[0], Math.min(plot[1], e.clientX - r.left));
  };
  frame.addEventListener("mousedown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    start = x(e);
    sel.hidden = false;
    sel.style.left = `${start}px`;
    sel.style.width = "0px";
  });
  window.addEventListener("mousemove", (e) => {
    if (start === null) return;
    const cur = x(e);
    sel.style.left = `${Math.min(start, cur)}px`;
    sel.style.width = `${Math.abs(cur - start)}px`;
  });
  window.addEventListener("mouseup", (e) => {
    if (start === null) return;
    const end = x(e);
    const a = Math.min(start, end);
    const b = Math.max(start, end);
    start = null;
    sel.hidden = true;
    if (b - a < 4) return;
    const width = frame.getBoundingClientRect().width - LEFT - RIGHT;
    const { from, to } = window_();
    const t = (px) => from + (px - LEFT) / width * (to - from);
    setFixed(t(a), t(b));
  });
}

// Hover readout: the value of every line at the row under the pointer. The
// picture is an <img>, so the numbers come from /api/v1/query with the
// panel's selectors and exactly the picture's window; text only, never HTML.
const fetched = new Map();

function rowsFor(fig) {
  const img = fig.querySelector("img");
  const src = img.getAttribute("src");
  if (!src) return null;
  const shown = new URL(src, location.href).searchParams;
  const from = Number(shown.get("from"));
  const to = Number(shown.get("to"));
  const url = `/api/v1/query?${fig.dataset.values || fig.dataset.query}&from=${from}&to=${to}`;
  if (!fetched.has(url)) {
    if (fetched.size > 64) fetched.clear();
    fetched.set(url, fetch(url, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .catch(() => null));
  }
  return { from, to, data: fetched.get(url) };
}

function unitOf(name) {
  if (name.endsWith("_pct")) return "%";
  if (name.endsWith("_bytes_per_s")) return "B/s";
  if (name.endsWith("_bytes")) return "B";
  if (name.endsWith("_per_s")) return "/s";
  return "";
}

function fmtValue(v, unit) {
  if (v === null || v === undefined) return "–";
  const iec = unit.startsWith("B");
  const base = iec ? 1024 : 1000;
  const prefixes = iec ? ["", "Ki", "Mi", "Gi", "Ti", "Pi"] : ["", "k", "M", "G", "T", "P"];
  let x = v;
  let i = 0;
  while (Math.abs(x) >= base * 10 && i < prefixes.length - 1) {
    x /= base;
    i += 1;
  }
  const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
  const text = x.toFixed(digits);
  return `${text} ${prefixes[i]}${unit}`.trim();
}

function lineLabel(s, manyHosts) {
  const labels = Object.entries(s.labels || {}).map(([k, v]) => `${k}="${v}"`).join(",");
  const host = manyHosts && !String(s.host).startsWith("group:") ? `${s.host} ` : "";
  return `${host}${s.name}${labels ? `{${labels}}` : ""}`;
}

function readout(fig) {
  const frame = fig.querySelector(".frame");
  const cursor = document.createElement("div");
  cursor.className = "cursor";
  cursor.hidden = true;
  const box = document.createElement("div");
  box.className = "readout";
  box.hidden = true;
  frame.append(cursor, box);
  let seq = 0;
  const hide = () => {
    seq += 1;
    cursor.hidden = true;
    box.hidden = true;
  };
  frame.addEventListener("mouseleave", hide);
  frame.addEventListener("mousedown", hide);
  frame.addEventListener("mousemove", async (e) => {
    if (e.buttons !== 0 || (state.perMember && fig.dataset.perMember)) return hide();
    const r = frame.getBoundingClientRect();
    const px = e.clientX - r.left;
    const width = r.width - LEFT - RIGHT;
    if (px < LEFT || px > r.width - RIGHT || width <= 0) return hide();
    const rows = rowsFor(fig);
    if (!rows) return hide();
    const mine = ++seq;
    const result = await rows.data;
    if (mine !== seq || !result || !Array.isArray(result.series)) return;
    const t = rows.from + (px - LEFT) / width * (rows.to - rows.from);
    const hosts = new Set(result.series.map((s) => s.host));
    box.replaceChildren();
    let at = null;
    for (const s of result.series) {
      // The row covering t is the first one labelled at or after it.
      const p = s.points.find((pt) => pt[0] >= t) || s.points[s.points.length - 1];
      if (!p) continue;
      at = p[0];
      const line = document.createElement("div");
      const label = document.createElement("span");
      label.textContent = lineLabel(s, hosts.size > 1);
      const value = document.createElement("b");
      value.textContent = fmtValue(p[1], unitOf(s.name));
      line.append(label, value);
      box.append(line);
    }
    if (at === null) return hide();
    const head = document.createElement("div");
    head.className = "when";
    head.textContent = new Date(at * 1000).toLocaleString();
    box.prepend(head);
    cursor.style.left = `${px}px`;
    cursor.hidden = false;
    box.hidden = false;
    const left = px > r.width / 2 ? px - box.offsetWidth - 12 : px + 12;
    box.style.left = `${Math.max(0, left)}px`;
  });
}

function main() {
  readHash();
  for (const b of document.querySelectorAll("#presets button")) {
    b.addEventListener("click", () => {
      state.end = null;
      state.span = Number(b.dataset.range);
      load();
    });
  }
  document.getElementById("zoom-in").addEventListener("click", () => zoom(0.5));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(2));
  document.getElementById("back").addEventListener("click", () => pan(-1));
  document.getElementById("forward").addEventListener("click", () => pan(1));
  document.getElementById("reset").addEventListener("click", () => {
    state.end = null;
    state.span = DEFAULT_SPAN;
    load();
  });
  const toggle = document.getElementById("per-member");
  if (toggle) {
    toggle.checked = state.perMember;
    toggle.addEventListener("change", () => {
      state.perMember = toggle.checked;
      load();
    });
  }
  for (const fig of document.querySelectorAll("figure.panel")) {
    if (!pinned(fig)) dragToZoom(fig);
    readout(fig);
  }
  let resize = null;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(load, 200);
  });
  window.addEventListener("hashchange", () => {
    readHash();
    load();
  });
  setInterval(() => {
    if (state.end === null && !document.hidden) load();
  }, REFRESH_MS);
  load();
}

main();
