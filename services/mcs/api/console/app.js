// The MCS web console: plain DOM, no libraries, nothing from another origin. It reads the REST API with
// the session cookie and sends the session's CSRF token (from <meta name="csrf-token">) on every POST.
"use strict";

const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
const POLL_MS = 2000;
const TERMINAL = ["completed", "failed", "canceled"];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.method && opts.method !== "GET") {
    opts.headers["X-CSRF-Token"] = CSRF;
    opts.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, opts);
  if (res.status === 401) {
    location.href = "/ui/login";
    throw new Error("logged out");
  }
  const text = await res.text();
  const body = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((body && body.error && body.error.message) || res.statusText);
  return body;
}

function put(root, ...parts) {
  root.replaceChildren(...parts.flat(Infinity).filter((p) => p !== "" && p !== null && p !== undefined));
}
const pretty = (v) => h("pre", { class: "json" }, JSON.stringify(v, null, 2));
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const badge = (state) => h("span", { class: "state state-" + state }, state);
const taskLink = (id) => h("a", { href: "#/task/" + id, class: "mono" }, id.slice(0, 8));
function seconds(a, b) {
  if (!a) return "";
  const s = ((b ? new Date(b) : new Date()) - new Date(a)) / 1000;
  return s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";
}

// ---------------------------------------------------------------- confirm + actions

function confirmed(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

async function act(taskId, action, body) {
  if (!(await confirmed(`${action} task ${taskId.slice(0, 8)}?`))) return;
  try {
    await api(`/v1/tasks/${taskId}/${action}`, { method: "POST", body: JSON.stringify(body || {}) });
  } catch (e) {
    alert(`${action} failed: ${e.message}`);
  }
  refresh();
}

// ---------------------------------------------------------------- at a glance

async function glance() {
  const el = document.getElementById("glance");
  const [status, done] = await Promise.all([
    api("/v1/status"),
    api("/v1/tasks?state=completed&updated_after=5m&limit=500"),
  ]);
  const priorities = {};
  for (const [state, byPriority] of Object.entries(status.queue)) {
    if (state !== "queued") continue;
    for (const [p, n] of Object.entries(byPriority)) priorities[p] = (priorities[p] || 0) + n;
  }
  const running = ["assigned", "claimed"].reduce(
    (sum, s) => sum + Object.values(status.queue[s] || {}).reduce((a, b) => a + b, 0), 0);
  const rate = (done.tasks.length / 5).toFixed(1) + (done.next_cursor ? "+" : "");
  el.replaceChildren(
    h("div", { class: "card" }, h("b", {}, "queued"),
      ...Object.entries(priorities).map(([p, n]) => h("span", { class: "kv", "data-priority": p }, `${p} ${n}`))),
    h("div", { class: "card" }, h("b", {}, "running"), ` ${running}`),
    h("div", { class: "card", id: "rate" }, h("b", {}, "completed/min"), ` ${rate}`),
    h("div", { class: "card" }, h("b", {}, "agents online"), ` ${status.agents.online.length}`,
      status.unreachable.length ? h("span", { class: "warn" }, ` · ${status.unreachable.length} unreachable`) : ""),
  );
}

// ---------------------------------------------------------------- views

const filters = { state: "", type: "", agent: "", updated_after: "", q: "" };

async function viewTasks(root) {
  const params = new URLSearchParams({ limit: "100" });
  for (const k of ["state", "type", "agent", "updated_after", "q"]) if (filters[k]) params.set(k, filters[k]);
  const page = await api("/v1/tasks?" + params);
  const states = ["", "queued", "assigned", "claimed", "retrying", "waiting", "blocked", "completed", "failed", "canceled"];
  const input = (name, placeholder) => h("input", {
    name, placeholder, value: filters[name],
    onchange: (e) => { filters[name] = e.target.value.trim(); refresh(); },
  });
  const stateSelect = h("select", { name: "state", onchange: (e) => { filters.state = e.target.value; refresh(); } },
    states.map((s) => h("option", { value: s, selected: s === filters.state }, s || "any state")));
  const rows = page.tasks.map((t) => h("tr", { "data-task": t.id, "data-state": t.state },
    h("td", {}, taskLink(t.id)), h("td", {}, t.type), h("td", {}, badge(t.state)), h("td", {}, t.priority),
    h("td", {}, t.assigned_to || (t.route === "all" ? "fan-out" : "—")), h("td", {}, when(t.updated_at))));
  put(root, 
    h("h2", {}, "Tasks"),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, stateSelect, input("type", "type"),
      input("agent", "agent"), input("updated_after", "since: 30m, 2h, 1d"), input("q", "search payload/result")),
    h("div", { class: "scroll" }, h("table", { id: "tasks" },
      h("thead", {}, h("tr", {}, ["id", "type", "state", "priority", "agent", "updated"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows))),
    rows.length ? "" : h("p", { class: "muted" }, "No tasks match."),
  );
}

function consensusTable(result) {
  return h("div", { class: "scroll" }, h("table", { id: "consensus" },
    h("thead", {}, h("tr", {}, ["severity", "consensus", "file", "line", "title", "agents"].map((c) => h("th", {}, c)))),
    h("tbody", {}, (result.findings || []).map((f) => h("tr", { class: "sev-" + f.severity },
      h("td", {}, f.severity), h("td", {}, f.consensus), h("td", { class: "mono" }, f.file), h("td", {}, f.line ?? ""),
      h("td", {}, f.title), h("td", {}, (f.agents || []).join(", ")))))));
}

async function viewTask(root, id) {
  const [t, ev] = await Promise.all([api("/v1/tasks/" + id), api(`/v1/tasks/${id}/events`)]);
  const actions = [];
  if (!TERMINAL.includes(t.state)) actions.push(h("button", { class: "danger", id: "act-cancel", onclick: () => act(id, "cancel") }, "Cancel"));
  if (t.state === "failed" || t.state === "canceled") actions.push(h("button", { id: "act-retry", onclick: () => act(id, "retry") }, "Retry"));
  if (t.state === "waiting" || t.state === "blocked") {
    actions.push(h("button", { id: "act-approve", onclick: () => act(id, "approve") }, "Approve"));
    actions.push(h("button", { class: "danger", id: "act-deny", onclick: () => act(id, "deny", { reason: "denied in the console" }) }, "Deny"));
  }
  const result = t.result && t.result.aggregate === "consensus"
    ? [h("h3", {}, "Consensus findings"), consensusTable(t.result)]
    : t.result !== null ? [h("h3", {}, "Result"), pretty(t.result)] : [];
  put(root, 
    h("h2", {}, `Task ${t.id.slice(0, 8)} `, badge(t.state)),
    h("p", { class: "actions" }, actions),
    h("dl", {},
      h("dt", {}, "type"), h("dd", {}, t.type), h("dt", {}, "priority"), h("dd", {}, t.priority),
      h("dt", {}, "route"), h("dd", {}, t.route), h("dt", {}, "agent"), h("dd", {}, t.assigned_to || "—"),
      h("dt", {}, "attempts"), h("dd", {}, `${t.attempts} of ${t.max_retries + 1}`),
      h("dt", {}, "submitted by"), h("dd", {}, t.submitted_by), h("dt", {}, "created"), h("dd", {}, when(t.created_at)),
      t.parent_id ? [h("dt", {}, "fan-out parent"), h("dd", {}, taskLink(t.parent_id))] : "",
      t.workflow_id ? [h("dt", {}, "workflow"), h("dd", {}, h("a", { href: "#/workflow/" + t.workflow_id }, `${t.workflow_id.slice(0, 8)} (step ${t.step_id})`))] : ""),
    t.children.length ? [h("h3", {}, `Fan-out children (${t.children.length})`),
      h("ul", { id: "children" }, t.children.map((c) => h("li", {}, taskLink(c))))] : "",
    h("h3", {}, "Payload"), pretty(t.payload),
    result,
    t.error ? [h("h3", {}, "Error"), h("pre", { class: "error" }, t.error)] : "",
    h("h3", {}, "Events"),
    h("ol", { class: "timeline", id: "events" }, ev.events.map((e) => h("li", {},
      h("time", {}, when(e.at)), " ", h("b", {}, e.kind), " by ", h("span", { class: "actor" }, e.actor),
      e.detail ? h("code", {}, " " + JSON.stringify(e.detail)) : ""))),
  );
}

async function viewWorkflows(root) {
  const page = await api("/v1/workflows?limit=100");
  put(root, h("h2", {}, "Workflows"), h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ["id", "name", "state", "steps", "created"].map((c) => h("th", {}, c)))),
    h("tbody", {}, page.workflows.map((w) => h("tr", {},
      h("td", {}, h("a", { href: "#/workflow/" + w.id, class: "mono" }, w.id.slice(0, 8))), h("td", {}, w.name),
      h("td", {}, badge(w.state)), h("td", {}, Object.keys(w.steps).length), h("td", {}, when(w.created_at))))))));
}

function dag(steps) {
  const byTask = {};
  for (const [name, t] of Object.entries(steps)) byTask[t.id] = name;
  const deps = {};
  for (const [name, t] of Object.entries(steps)) {
    deps[name] = (t.depends_on || []).map((d) => byTask[typeof d === "string" ? d : d.id || d.task_id]).filter(Boolean);
  }
  const level = {};
  const depth = (n, seen) => {
    if (level[n] !== undefined) return level[n];
    if (seen.has(n)) return 0;
    seen.add(n);
    return (level[n] = deps[n].length ? 1 + Math.max(...deps[n].map((d) => depth(d, seen))) : 0);
  };
  Object.keys(steps).forEach((n) => depth(n, new Set()));
  const columns = {};
  for (const n of Object.keys(steps)) (columns[level[n]] = columns[level[n]] || []).push(n);
  const W = 170, H = 56, GX = 50, GY = 16, pos = {};
  let rows = 1;
  for (const [col, names] of Object.entries(columns)) {
    names.forEach((n, i) => (pos[n] = { x: 10 + col * (W + GX), y: 10 + i * (H + GY) }));
    rows = Math.max(rows, names.length);
  }
  const width = 20 + Object.keys(columns).length * (W + GX), height = 20 + rows * (H + GY);
  const out = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, id: "dag", role: "img" });
  for (const [n, ds] of Object.entries(deps)) for (const d of ds) {
    const a = pos[d], b = pos[n];
    out.append(svg("path", { d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}`, class: "edge" }));
  }
  for (const [n, t] of Object.entries(steps)) {
    const p = pos[n];
    const end = TERMINAL.includes(t.state) ? t.updated_at : null;
    const link = svg("a", { href: "#/task/" + t.id, "data-step": n, "data-state": t.state });
    link.append(svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6, class: "node state-" + t.state }),
      svg("text", { x: p.x + 8, y: p.y + 20, class: "node-name" }, n),
      svg("text", { x: p.x + 8, y: p.y + 40, class: "node-meta" }, `${t.state} ${seconds(t.created_at, end)}`));
    out.append(link);
  }
  return out;
}

async function viewWorkflow(root, id) {
  const [w, ev] = await Promise.all([api("/v1/workflows/" + id), api(`/v1/workflows/${id}/events`)]);
  put(root, 
    h("h2", {}, `Workflow ${w.name} `, badge(w.state)),
    h("p", { class: "muted" }, `${w.id} · started ${when(w.created_at)} · ${seconds(w.created_at, w.finished_at)}`),
    h("div", { class: "scroll" }, dag(w.steps)),
    w.inputs ? [h("h3", {}, "Inputs"), pretty(w.inputs)] : "",
    h("h3", {}, "Events"),
    h("ol", { class: "timeline" }, ev.events.map((e) => h("li", {}, h("time", {}, when(e.at)), " ", h("b", {}, e.kind),
      " by ", h("span", { class: "actor" }, e.actor), e.detail ? h("code", {}, " " + JSON.stringify(e.detail)) : ""))),
  );
}

async function viewAgents(root) {
  const [status, running] = await Promise.all([api("/v1/status"), api("/v1/tasks?state=claimed&limit=500")]);
  const load = {};
  for (const t of running.tasks) if (t.assigned_to) load[t.assigned_to] = (load[t.assigned_to] || 0) + 1;
  const unreachable = {};
  for (const u of status.unreachable) unreachable[u.agent] = u;
  const all = [...status.agents.online, ...status.agents.offline];
  put(root, h("h2", {}, "Agents"), h("div", { class: "scroll" }, h("table", { id: "agents" },
    h("thead", {}, h("tr", {}, ["name", "status", "capabilities", "load", "last seen", "notify"].map((c) => h("th", {}, c)))),
    h("tbody", {}, all.map((a) => h("tr", {},
      h("td", {}, a.name), h("td", {}, badge(a.status)), h("td", {}, (a.capabilities || []).join(", ")),
      h("td", {}, `${load[a.name] || 0} / ${a.concurrency ?? "?"}`), h("td", {}, when(a.last_seen)),
      h("td", {}, !a.notify_url ? "polls" : unreachable[a.name]
        ? h("span", { class: "warn", title: unreachable[a.name].error || "" }, "unreachable") : "ok")))))));
}

async function viewSchedules(root) {
  const page = await api("/v1/schedules");
  put(root, h("h2", {}, "Schedules"), h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ["name", "cron", "next run", "last run", "last task"].map((c) => h("th", {}, c)))),
    h("tbody", {}, page.schedules.map((s) => h("tr", {},
      h("td", {}, s.name), h("td", { class: "mono" }, `${s.cron} ${s.timezone || ""}`),
      h("td", {}, s.paused ? "paused" : when(s.next_run_at)), h("td", {}, when(s.last_run_at)),
      h("td", {}, s.last_task_id ? taskLink(s.last_task_id) : "—")))))),
  page.schedules.length ? "" : h("p", { class: "muted" }, "No schedules."));
}

let memoryNs = "mesh";
async function viewMemory(root, key) {
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); memoryNs = e.target.ns.value.trim(); location.hash = "#/memory"; refresh(); } },
    h("input", { name: "ns", value: memoryNs, placeholder: "namespace: mesh, agent:NAME, ..." }), h("button", {}, "Browse"));
  const page = await api(`/v1/memory/${encodeURIComponent(memoryNs)}?limit=200`);
  const value = key ? await api(`/v1/memory/${encodeURIComponent(memoryNs)}/${key}`) : null;
  put(root, h("h2", {}, "Shared memory"), form,
    h("ul", { class: "keys" }, page.items.map((i) => h("li", {}, h("a", { href: "#/memory/" + encodeURIComponent(i.key) }, i.key),
      h("span", { class: "muted" }, ` v${i.version} ${(i.tags || []).join(" ")}`)))),
    page.items.length ? "" : h("p", { class: "muted" }, "No keys."),
    value ? [h("h3", {}, value.key), h("p", { class: "muted" }, `version ${value.version}, by ${value.updated_by} (read-only)`), pretty(value.value)] : "");
}

// ---------------------------------------------------------------- router, live updates

const ROUTES = [
  [/^#\/task\/(.+)$/, viewTask], [/^#\/workflows$/, viewWorkflows], [/^#\/workflow\/(.+)$/, viewWorkflow],
  [/^#\/agents$/, viewAgents], [/^#\/schedules$/, viewSchedules], [/^#\/memory(?:\/(.+))?$/, viewMemory],
  [/^/, viewTasks],
];

let rendering = null, again = false;
async function refresh() {
  if (rendering) { again = true; return rendering; }
  const root = document.getElementById("view");
  const hash = location.hash || "#/tasks";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", hash.startsWith(a.getAttribute("href").replace(/s$/, "")));
  rendering = (async () => {
    for (const [re, view] of ROUTES) {
      const m = hash.match(re);
      if (!m) continue;
      if (document.activeElement && root.contains(document.activeElement) && document.activeElement.tagName === "INPUT") break;
      try {
        await Promise.all([view(root, m[1] && decodeURIComponent(m[1])), glance()]);
        document.body.dataset.rendered = String(Date.now());
      } catch (e) {
        if (e.message !== "logged out") put(root, h("p", { class: "error" }, e.message));
      }
      break;
    }
  })();
  await rendering;
  rendering = null;
  if (again) { again = false; refresh(); }
}

let soon = null;
const refreshSoon = () => { clearTimeout(soon); soon = setTimeout(refresh, 150); };

function live() {
  const badgeEl = document.getElementById("live");
  const poll = () => {
    document.body.dataset.live = "poll";
    badgeEl.textContent = "live (polling)";
    setInterval(refresh, POLL_MS);
  };
  if (!window.EventSource) return poll();
  const stream = new EventSource("/v1/events");
  stream.onopen = () => { document.body.dataset.live = "stream"; badgeEl.textContent = "live"; };
  for (const kind of ["task", "workflow", "agent", "message"]) stream.addEventListener(kind, refreshSoon);
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) { stream.close(); poll(); }  // no stream here: poll the API
    else badgeEl.textContent = "reconnecting";
  };
}

function loginPage(form) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = document.getElementById("login-error");
    const res = await fetch("/ui/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: form.token.value }),
    });
    if (res.ok) { location.href = "/ui"; return; }
    const body = await res.json().catch(() => ({}));
    const wait = res.headers.get("Retry-After");
    error.textContent = ((body.error && body.error.message) || res.statusText) + (wait ? ` (wait ${wait} s)` : "");
    document.body.dataset.loginStatus = String(res.status);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login");
  if (form) return loginPage(form);
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/ui/logout", { method: "POST" }).catch(() => null);
    location.href = "/ui/login";
  });
  window.addEventListener("hashchange", refresh);
  refresh();
  live();
});
