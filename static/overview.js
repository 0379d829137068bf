// Refreshes the overview table from the JSON API. Plain ES module, no framework.
// Every value goes in through textContent, never innerHTML: hostnames are
// attacker-controlled input.

const REFRESH_MS = 5000;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function fmt(v, unit) {
  return v === undefined || v === null ? "–" : `${v.toFixed(1)}${unit}`;
}

// The host's state, and its worst active alarm linking to why.
function stateCell(h) {
  const td = el("td", {}, el("span", { class: `state state-${h.state}` }, h.state));
  const p = h.problem;
  if (p && ["critical", "warning", "unknown"].includes(p.state)) {
    td.append(" ", el("a", {
      class: `state state-${p.state}`,
      href: `/hosts/${encodeURIComponent(h.id)}#why`,
      title: "active alarms: see why on the host's page",
    }, p.count > 1 ? `${p.state} ×${p.count}` : p.state));
  }
  return td;
}

function render(groups) {
  const root = document.getElementById("groups");
  const out = [];
  if (groups.length === 0) {
    // The server's empty state carries the enroll command: keep it as it is.
    const empty = document.getElementById("no-agents");
    if (empty) return;
    out.push(el("p", { class: "empty" }, "No agent yet: reload the page to see the command that enrolls one."));
  }
  for (const g of groups) {
    const tbody = el("tbody");
    for (const h of g.hosts) {
      const name = el("td", {}, el("a", { href: `/hosts/${encodeURIComponent(h.id)}` }, h.hostname));
      if (h.instance_id) name.append(" ", el("small", { class: "muted" }, h.instance_id));
      tbody.append(el("tr", {},
        name,
        stateCell(h),
        el("td", {}, `${h.last_seen_age_s} s ago`),
        el("td", { class: "num" }, fmt(h.current["cpu.busy_pct"], " %")),
        el("td", { class: "num" }, fmt(h.current["mem.used_pct"], " %")),
        el("td", { class: "num" }, fmt(h.current["load.1m"], "")),
      ));
    }
    const head = el("thead", {}, el("tr", {},
      el("th", {}, "Host"), el("th", {}, "State"), el("th", {}, "Last seen"),
      el("th", { class: "num" }, "CPU"), el("th", { class: "num" }, "Memory"), el("th", { class: "num" }, "Load")));
    out.push(el("section", { class: "group" },
      el("h2", {}, g.group === "(no group)" ? g.group
        : el("a", { href: `/groups/${encodeURIComponent(g.group)}` }, g.group), " ", el("small", { class: "muted" }, `${g.hosts.length} host${g.hosts.length === 1 ? "" : "s"}`)),
      el("table", { class: "hosts" }, head, tbody)));
  }
  root.replaceChildren(...out);
}

async function refresh() {
  try {
    const r = await fetch("/api/v1/overview", { credentials: "same-origin" });
    if (r.status === 401) { location.href = "/login"; return; }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById("updated").textContent = `refresh failed: ${e.message}`;
  }
}

setInterval(refresh, REFRESH_MS);
