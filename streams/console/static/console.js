// talkstream console: asks the JSON API (/console/api/...) with the token this browser keeps,
// and fills the server-rendered page. No framework, no build step.
"use strict";

const TOKEN_KEY = "talkstream.console.token";
const REFRESH_MS = 5000;

function token() { return localStorage.getItem(TOKEN_KEY); }

// a token passed once as #token=... (never sent to a server) is kept, and taken out of the address
function takeTokenFromAddress() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value; else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function askForToken(refused) {
  document.getElementById("content").hidden = true;
  document.getElementById("login").hidden = false;
  const box = document.getElementById("login-refused");
  box.textContent = refused || "";
  box.hidden = !refused;
  document.getElementById("token-input").focus();
}

class Unauthorized extends Error {}

async function api(path, options) {
  const response = await fetch(path, {
    ...(options || {}),
    headers: { "Authorization": "Bearer " + (token() || ""), "Accept": "application/json" },
  });
  if (response.status === 401) {
    throw new Unauthorized("The console refused the token: enter the right one.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function when(epochOrIso) {
  if (epochOrIso === null || epochOrIso === undefined) return "-";
  const date = typeof epochOrIso === "number" ? new Date(epochOrIso * 1000) : new Date(epochOrIso);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function seconds(value) { return value === null || value === undefined ? "-" : `${value} s`; }

function show(value) {
  if (value === null || value === undefined || value === "") return "(empty)";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// a value in a table cell: lines (a list of records) fold into "N lines", opened on a click
function valueNode(value) {
  if (Array.isArray(value) && value.length && typeof value[0] === "object") {
    return el("details", {}, el("summary", { text: `${value.length} line${value.length === 1 ? "" : "s"}` }),
      el("pre", { class: "lines", text: value.map((line) => JSON.stringify(line)).join("\n") }));
  }
  return show(value);
}

// ---------------------------------------------------------------- flows page

function polyline(svg, points, value, stroke, top) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 300, step = points.length > 1 ? width / (points.length - 1) : width;
  // the plot keeps y 12..48: the maximum's label above, the time axis below
  const coords = [];
  points.forEach((point, i) => {
    const v = value(point);
    if (v === null || v === undefined) return;
    coords.push([i * step, 48 - (v / top) * 36]);
  });
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", coords.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", stroke);
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  if (coords.length <= 30) {  // sparse values (a few steps with writes): a dot each, a lone one shows too
    for (const [x, y] of coords) {
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("cx", x.toFixed(1));
      dot.setAttribute("cy", y.toFixed(1));
      dot.setAttribute("r", "2");
      dot.setAttribute("fill", stroke);
      svg.append(dot);
    }
  }
}

function chart(svg, points, series) {
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const values = series.flatMap(([value]) => points.map(value)).filter((v) => v !== null && v !== undefined);
  const top = Math.max(...values, 0) || 1;
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "10");
  label.setAttribute("class", "axis");
  label.textContent = `max ${Math.round(top * 100) / 100}`;
  svg.append(label);
  for (const [text, x, anchor] of [["15 min ago", 2, "start"], ["now", 298, "end"]]) {
    const tick = document.createElementNS(ns, "text");
    tick.setAttribute("x", String(x));
    tick.setAttribute("y", "58");
    tick.setAttribute("text-anchor", anchor);
    tick.setAttribute("class", "axis");
    tick.textContent = text;
    svg.append(tick);
  }
  if (!values.length) {
    const empty = document.createElementNS(ns, "text");
    empty.setAttribute("x", "150");
    empty.setAttribute("y", "34");
    empty.setAttribute("text-anchor", "middle");
    empty.setAttribute("class", "empty");
    empty.textContent = "no write in the last 15 minutes";
    svg.append(empty);
    return;
  }
  for (const [value, stroke] of series) polyline(svg, points, value, stroke, top);
}

async function loadFlows() {
  const data = await api("/console/api/flows");
  for (const [id, flow] of Object.entries(data.flows)) {
    const row = document.querySelector(`tr[data-flow="${CSS.escape(id)}"]`);
    if (!row) continue;
    for (const name of ["links", "linked", "pending", "parked", "blocked", "deleted", "deadletters"]) {
      row.querySelector(`[data-field="${name}"]`).textContent = flow[name] ?? 0;
    }
    const state = flow.state || "running";
    const badge = row.querySelector(".state");
    badge.textContent = state;
    badge.className = `state state-${state}`;
    row.querySelector('[data-field="why"]').textContent = state === "running" ? "" : (flow.why || "");
    const activity = flow.activity || {};
    row.querySelector('[data-field="events_per_s"]').textContent = activity.events_per_s ?? "-";
    row.querySelector('[data-field="latency"]').textContent = `${seconds(activity.p50)} / ${seconds(activity.p99)}`;
    const button = row.querySelector("button.control");
    button.dataset.action = state === "running" ? "pause" : "resume";
    button.textContent = state === "running" ? "Pause" : "Resume";
    button.disabled = false;
    const figure = document.querySelector(`figure.chart[data-flow="${CSS.escape(id)}"]`);
    if (figure && activity.points) {
      chart(figure.querySelector("svg.events"), activity.points, [[(p) => p.events_per_s, "#2563eb"]]);
      chart(figure.querySelector("svg.latency"), activity.points, [[(p) => p.p50, "#16a34a"], [(p) => p.p99, "#dc2626"]]);
    }
  }
  document.querySelector("#pollers tbody").replaceChildren(...Object.entries(data.pollers || {}).map(
    ([name, poll]) => el("tr", {}, el("td", {}, el("code", { text: name })),
                         el("td", { text: poll.time ? when(poll.time) : "nothing read yet" }),
                         el("td", { text: age(poll.age_s) }))));
  document.querySelector("#lag tbody").replaceChildren(...Object.entries(data.lag || {}).map(
    ([topic, lag]) => el("tr", {}, el("td", {}, el("code", { text: topic })), el("td", { text: lag }))));
}

async function flowAction(event) {
  const button = event.target.closest("button.control");
  if (!button || !button.dataset.action) return;
  const { flow, action } = button.dataset;
  if (action === "pause" && !confirm(`Pause ${flow}? Its links hold every write until you resume it.`)) return;
  button.disabled = true;
  await api(`/console/api/flows/${encodeURIComponent(flow)}/${action}`, { method: "POST" });
  await refresh();
}

// ---------------------------------------------------------------- link page

function linkSection(link) {
  const records = link.records || {};
  const fields = records.fields || {};
  const current = (system, property) => {
    const record = records[system];
    const field = (fields[property] || {})[system];
    if (!record) return records.errors && records.errors[system] ? "unavailable" : "-";
    return field && field in record ? valueNode(record[field]) : "-";
  };
  const fieldNames = (property) => {
    const f = fields[property] || {};
    return `in Business NXT: ${f.businessnxt || "-"}`;
  };
  const mark = (flag) => (flag === true ? "same" : flag === false ? "differs" : "-");
  const rows = link.properties.map((p) => el("tr", { "data-property": p.property },
    el("th", { scope: "row" }, el("code", { text: p.property }), el("div", { class: "fields", text: fieldNames(p.property) })),
    el("td", { class: "agreed" }, valueNode(p.agreed)),
    el("td", { text: p.from || "-" }),
    el("td", { class: "when", text: p.at ? when(p.at) : "-" }),
    el("td", { class: "customcrm" }, current("customcrm", p.property)),
    el("td", { class: "businessnxt" }, current("businessnxt", p.property)),
    el("td", { text: `${mark(p.reported.customcrm)} / ${mark(p.reported.businessnxt)}` })));
  const decisions = (link.decisions || []).slice().reverse().map((d) => {
    const t = d.trigger || {};
    const trigger = [t.kind, t.side, t.op, t.version && `version ${t.version}`, t.status].filter(Boolean).join(" ");
    return el("li", {}, el("strong", { text: when(d.at) }), ` ${trigger}: ${(d.outcome || []).join(", ")}`,
      el("ul", {}, (d.changes || []).map((c) => el("li", {}, el("code", { text: c.property }),
        `: ${show(c.old)} → ${show(c.new)} (${c.why})`))));
  });
  const ids = link.ids || {};
  return el("section", { class: "link", "data-key": link.key },
    el("h2", {}, link.title || link.flow, " ", el("span", { class: `status status-${link.status}`, text: link.status })),
    el("dl", { class: "ids" },
      el("dt", { text: "Link key" }), el("dd", {}, el("code", { text: link.key })),
      el("dt", { text: "Customcrm id" }), el("dd", { class: "id-customcrm", text: ids.customcrm || "(none yet)" }),
      el("dt", { text: "Business NXT number" }), el("dd", { class: "id-businessnxt", text: ids.businessnxt || "(none yet)" })),
    link.waiting.length ? el("ul", { class: "waiting" }, link.waiting.map((w) => el("li", { text: w }))) : null,
    link.in_flight.length ? el("p", { text: `Writes in flight: ${link.in_flight.map((w) => `${w.op} to ${w.to}`).join(", ")}` }) : null,
    Object.values(records.errors || {}).map((e) => el("p", { class: "warning", text: e })),
    el("table", { class: "properties" },
      el("thead", {}, el("tr", {}, [
        ["Property", "the Customcrm name of the mapped property"],
        ["Agreed value", "the value both sides are brought to"],
        ["Came from", "the side whose change set the agreed value"],
        ["Agreed at", "when that change was decided"],
        ["Customcrm now", "read from Customcrm just now"],
        ["Business NXT now", "read from Business NXT just now"],
        ["Reported", "whether Customcrm's / Business NXT's last report to talkstream carried the agreed value"],
      ].map(([h, title]) => el("th", { text: h, title })))),
      el("tbody", {}, rows)),
    el("h3", { text: "Recent decisions" }),
    decisions.length ? el("ol", { class: "decisions" }, decisions) : el("p", { text: "No decision recorded yet." }));
}

async function loadLink() {
  const params = new URLSearchParams(location.search);
  const id = params.get("id");
  const target = document.getElementById("links");
  if (!id) { target.replaceChildren(el("p", { text: "Search for a record id above." })); return; }
  document.getElementById("search-id").value = id;
  document.getElementById("link-heading").textContent = `Record ${id}`;
  const query = new URLSearchParams({ id });
  if (params.get("system")) query.set("system", params.get("system"));
  const data = await api(`/console/api/links?${query}`);
  target.replaceChildren(...(data.links.length ? data.links.map(linkSection)
    : [el("p", { class: "warning", text: `No link holds a record ${id}.` })]));
}

// ---------------------------------------------------------------- dead letters page

async function loadDeadLetters() {
  const data = await api("/console/api/deadletters");
  const entries = data.deadletters;
  document.getElementById("deadletter-count").textContent = `${entries.length} waiting`;
  document.getElementById("redrive-all").disabled = entries.length === 0;
  document.querySelector("#deadletters tbody").replaceChildren(...(entries.length ? entries.map((d) =>
    el("tr", { "data-id": d.id },
      el("td", { text: when(d.failed_at) }), el("td", { text: d.flow || "-" }),
      el("td", {}, d.record ? el("a", { href: `/console/link?id=${encodeURIComponent(d.record.split(":").pop())}` },
        el("code", { text: d.record })) : "-"), el("td", { text: d.stage }),
      el("td", { text: d.attempts }), el("td", { class: "reason", text: d.reason }),
      el("td", { class: "actions" }, el("button", { class: "view", "data-id": d.id, text: "View" }), " ",
        el("button", { class: "redrive", "data-id": d.id, text: "Re-drive" }))))
    : [el("tr", {}, el("td", { colspan: 7, text: "No dead letter waits." }))]));
}

async function deadLetterAction(event) {
  const button = event.target.closest("button");
  if (!button || !button.dataset.id) return;
  const id = button.dataset.id;
  if (button.classList.contains("view")) {
    const entry = await api(`/console/api/deadletters/${encodeURIComponent(id)}`);
    document.getElementById("deadletter-id").textContent = id;
    document.getElementById("deadletter-body").textContent = JSON.stringify(entry, null, 2);
    document.getElementById("deadletter").hidden = false;
  } else if (button.classList.contains("redrive")) {
    button.disabled = true;
    await api(`/console/api/deadletters/${encodeURIComponent(id)}/redrive`, { method: "POST" });
    await refresh();
  }
}

async function redriveAll() {
  if (!confirm("Re-drive every dead letter? Fix their causes first.")) return;
  await api("/console/api/deadletters/redrive", { method: "POST" });
  await refresh();
}

// ---------------------------------------------------------------- wiring

const PAGES = { flows: loadFlows, link: loadLink, deadletters: loadDeadLetters };

async function refresh() {
  if (!token()) { askForToken(); return; }
  try {
    await PAGES[document.body.dataset.page]();
    document.getElementById("login").hidden = true;
    document.getElementById("content").hidden = false;
    document.getElementById("updated").textContent = `Updated ${when(Date.now() / 1000)}.`;
    showError("");
  } catch (error) {
    if (error instanceof Unauthorized) {
      localStorage.removeItem(TOKEN_KEY);
      askForToken(error.message);
    } else {
      showError(`Could not load: ${error.message}`);
    }
  }
}

function guarded(handler) {
  return (event) => handler(event).catch((error) => {
    if (error instanceof Unauthorized) { localStorage.removeItem(TOKEN_KEY); askForToken(error.message); }
    else showError(error.message);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromAddress();
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
    refresh();
  });
  document.getElementById("forget").addEventListener("click", (event) => {
    event.preventDefault();
    localStorage.removeItem(TOKEN_KEY);
    askForToken();
  });
  const page = document.body.dataset.page;
  if (page === "flows") document.getElementById("flows").addEventListener("click", guarded(flowAction));
  if (page === "deadletters") {
    document.getElementById("deadletters").addEventListener("click", guarded(deadLetterAction));
    document.getElementById("redrive-all").addEventListener("click", guarded(redriveAll));
  }
  refresh();
  if (page !== "link") setInterval(refresh, REFRESH_MS);
});
