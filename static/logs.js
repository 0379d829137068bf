// Logs: the /logs page (filters, search, time range, live tail) and the
// "latest logs" box of a host page (<div id="host-logs" data-host="ID">).
// Plain ES module, no framework. Log lines are attacker-controlled: every
// field goes in with textContent, never innerHTML.

const PAGE = 100;
const MAX_ROWS = 1000;
const SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c ?? "");
  return e;
}

function when(ts) {
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

function row(r) {
  const sev = r.severity ?? "notice";
  const msg = el("td", { class: "msg" }, r.message);
  if (r.truncated) msg.append(" ", el("span", { class: "mark", title: "longer than the line limit; cut" }, "[truncated]"));
  if (r.invalid_utf8) msg.append(" ", el("span", { class: "mark", title: "not UTF-8; bad bytes shown as �" }, "[invalid UTF-8]"));
  const tr = el("tr", { class: `sev sev-${SEVERITIES.indexOf(sev)}` },
    el("td", { class: "ts", title: `received ${r.received_at}` }, when(r.ts)),
    el("td", {}, r.host ?? ""),
    el("td", {}, r.app_name ?? ""),
    el("td", {}, el("span", { class: "sevname" }, r.severity ?? "–")),
    msg);
  return tr;
}

async function fetchJson(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body?.error?.message ?? `HTTP ${r.status}`);
  return body;
}

function logsPage(root) {
  const form = document.getElementById("logs-filter");
  const rows = document.getElementById("logs-rows");
  const older = document.getElementById("logs-older");
  const status = document.getElementById("logs-status");
  let next = null;
  let source = null;

  // Filters live in the URL, so a search can be bookmarked and shared.
  const url = new URLSearchParams(location.search);
  for (const k of ["q", "host", "app", "severity", "from"]) {
    if (url.has(k) && form.elements[k]) form.elements[k].value = url.get(k);
  }

  function params() {
    const p = new URLSearchParams();
    for (const k of ["q", "host", "app", "severity", "from"]) {
      const v = form.elements[k].value.trim();
      if (v) p.set(k, v);
    }
    return p;
  }

  async function load(append) {
    const p = params();
    p.set("limit", String(PAGE));
    if (append && next) p.set("before", next);
    status.textContent = "loading…";
    try {
      const page = await fetchJson(`/api/v1/logs?${p}`);
      if (!append) rows.replaceChildren();
      for (const r of page.records) rows.append(row(r));
      next = page.next;
      older.hidden = !next;
      status.textContent = rows.children.length ? "" : "no matching records";
    } catch (e) {
      status.textContent = `search failed: ${e.message}`;
    }
  }

  function live(on) {
    if (source) { source.close(); source = null; }
    if (!on) return;
    source = new EventSource(`/api/v1/logs/stream?${params()}`);
    source.addEventListener("ready", () => { status.textContent = "live"; });
    source.addEventListener("log", (ev) => {
      const r = JSON.parse(ev.data);
      rows.prepend(row(r));
      while (rows.children.length > MAX_ROWS) rows.lastElementChild.remove();
    });
    source.addEventListener("lagged", (ev) => {
      const { missed } = JSON.parse(ev.data);
      status.textContent = `live (skipped ${missed} records: too many to show)`;
    });
    source.onerror = () => { status.textContent = "live tail disconnected; retrying…"; };
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = params();
    history.replaceState(null, "", p.toString() ? `?${p}` : location.pathname);
    load(false).then(() => live(form.elements.live.checked));
  });
  form.elements.live.addEventListener("change", () => live(form.elements.live.checked));
  older.addEventListener("click", () => load(true));

  fetchJson("/api/v1/hosts").then((hosts) => {
    const sel = form.elements.host;
    const keep = sel.value || url.get("host") || "";
    for (const h of hosts) sel.append(el("option", { value: h.hostname }, h.hostname));
    // A host given by id (links from a host page) keeps its own entry.
    if (keep && ![...sel.options].some((o) => o.value === keep)) {
      const named = hosts.find((h) => String(h.id) === keep);
      sel.append(el("option", { value: keep }, named ? named.hostname : keep));
    }
    sel.value = keep;
  }).catch(() => {});
  load(false);
}

function hostLogs(box) {
  const host = box.dataset.host;
  const table = el("table", { class: "logs" });
  const tbody = el("tbody");
  table.append(el("thead", {}, el("tr", {},
    el("th", {}, "Time"), el("th", {}, "Host"), el("th", {}, "App"), el("th", {}, "Severity"), el("th", {}, "Message"))), tbody);
  const more = el("a", { href: `/logs?host=${encodeURIComponent(host)}` }, "All logs of this host →");
  box.replaceChildren(table, el("p", {}, more));
  async function refresh() {
    try {
      const page = await fetchJson(`/api/v1/logs?host=${encodeURIComponent(host)}&limit=20`);
      tbody.replaceChildren(...page.records.map(row));
      if (!page.records.length) tbody.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No logs from this host yet.")));
    } catch (e) {
      tbody.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted" }, `logs unavailable: ${e.message}`)));
    }
  }
  refresh();
  setInterval(refresh, 10000);
}

const page = document.getElementById("logs-page");
if (page) logsPage(page);
const box = document.getElementById("host-logs");
if (box && box.dataset.host) hostLogs(box);
