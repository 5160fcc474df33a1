// The dashboard's logic: fetch /api/v1/status once a second and show it. Every number shown is
// also in its element's data-value, exactly as the API gave it (the browser test reads those).
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token");
const EVERY_MS = 1000;

function set(id, value, text) {
  const el = document.getElementById(id);
  el.dataset.value = String(value);
  el.textContent = text === undefined ? String(value) : text;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i + 1 < units.length) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function age(secs) {
  if (secs === null || secs === undefined) return "-";
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + String(secs % 60).padStart(2, "0") + "s";
  if (secs < 86400) return Math.floor(secs / 3600) + "h" + String(Math.floor(secs % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(secs / 86400) + "d" + String(Math.floor(secs % 86400 / 3600)).padStart(2, "0") + "h";
}

function rate(r) {
  return r >= 100 ? Math.round(r).toString() : r.toFixed(1);
}

function plot(history) {
  const svg = document.getElementById("plot");
  svg.dataset.points = String(history.length);
  const max = Math.max(1, ...history.map(r => Math.max(r.accepted_per_sec, r.delivered_per_sec)));
  const n = Math.max(history.length - 1, 1);
  const line = key => history
    .map((r, i) => (i * 600 / n).toFixed(1) + "," + (155 - r[key] * 150 / max).toFixed(1))
    .join(" ");
  document.getElementById("plot-accepted").setAttribute("points", line("accepted_per_sec"));
  document.getElementById("plot-delivered").setAttribute("points", line("delivered_per_sec"));
  document.getElementById("plot-max").textContent = rate(max);
  document.getElementById("plot-span").textContent = history.length + " s";
}

function deepest(rows) {
  const body = document.querySelector("#deepest tbody");
  body.replaceChildren(...rows.map(m => {
    const tr = document.createElement("tr");
    tr.dataset.id = m.id;
    for (const cell of [m.id, m.entries, bytes(m.bytes), age(m.oldest_entry_age_secs), m.online ? "yes" : "no"]) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      tr.appendChild(td);
    }
    return tr;
  }));
}

function show(s) {
  set("version", s.version, "v" + s.version);
  set("uptime", s.uptime_secs, age(s.uptime_secs));
  set("ready", s.ready, s.ready ? "ready" : "not ready");
  document.getElementById("ready").classList.toggle("down", !s.ready);
  set("accepted-rate", s.accepted_per_sec, rate(s.accepted_per_sec));
  set("delivered-rate", s.delivered_per_sec, rate(s.delivered_per_sec));
  set("connections", s.connections);
  set("entries", s.mailboxes.entries);
  set("oldest", s.mailboxes.oldest_entry_age_secs, age(s.mailboxes.oldest_entry_age_secs));
  set("commit-mean", s.totals.commit_mean_us, s.totals.commit_mean_us + " µs");
  set("accepted-total", s.totals.accepted);
  set("delivered-total", s.totals.delivered);
  set("rejected-total", s.totals.rejected);
  set("connections-total", s.totals.connections_total);
  set("commits", s.totals.commits);
  set("mailboxes", s.mailboxes.count);
  set("bytes", s.mailboxes.bytes, bytes(s.mailboxes.bytes));
  document.getElementById("store").textContent = s.store;
  document.getElementById("durability").textContent = s.durability;
  document.getElementById("tls").textContent = s.tls ? "on" : "off";
  document.getElementById("max-connections").textContent = s.limits.max_connections;
  document.getElementById("window").textContent = s.limits.window + " / " + bytes(s.limits.window_bytes);
  document.getElementById("mailbox-limit").textContent =
    s.limits.mailbox_max_messages + " / " + bytes(s.limits.mailbox_max_bytes);
  plot(s.history);
  deepest(s.deepest);
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const answer = await fetch("/api/v1/status", { headers, cache: "no-store" });
    if (!answer.ok) throw new Error("status " + answer.status + (answer.status === 401 ? ": open /#token=TOKEN" : ""));
    show(await answer.json());
    error.hidden = true;
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    error.textContent = String(e.message || e);
    error.hidden = false;
  }
  setTimeout(refresh, EVERY_MS);
}

refresh();
