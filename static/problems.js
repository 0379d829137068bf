// The problem count in the header of every page: active alarms by severity
// and hosts down, refreshed every 15 s. Text only (no HTML from the API).
const badge = document.getElementById("problems");

async function refresh() {
  try {
    const [alarms, hosts] = await Promise.all([
      fetch("/api/v1/alarms?state=active", { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : [])),
      fetch("/api/v1/hosts?state=down", { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : [])),
    ]);
    const hard = alarms.filter((a) => a.state_type === "hard");
    const count = (s) => hard.filter((a) => a.state === s).length;
    const parts = [];
    if (count("CRITICAL")) parts.push(`${count("CRITICAL")} critical`);
    if (count("WARNING")) parts.push(`${count("WARNING")} warning`);
    if (count("UNKNOWN")) parts.push(`${count("UNKNOWN")} unknown`);
    if (hosts.length) parts.push(`${hosts.length} host${hosts.length === 1 ? "" : "s"} down`);
    badge.textContent = parts.length ? parts.join(" · ") : "no problems";
    badge.className = "problems " + (count("CRITICAL") || hosts.length ? "bad" : parts.length ? "warn" : "ok");
    badge.hidden = false;
  } catch (e) {
    badge.hidden = true;
  }
}

if (badge) {
  refresh();
  setInterval(refresh, 15000);
}
