// jetserve dashboard: reads /api/dashboard every two seconds and draws it.
// Plain DOM and SVG; every string from the fleet goes through textContent.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function badge(state, cls) { return el("span", { class: "badge " + (cls || "s-" + state) }, state); }

function fmt(n, digits) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  if (n === 0) return "0";
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString();
  return n.toFixed(digits === undefined ? 1 : digits);
}

function ms(n) { return n ? fmt(n, n < 10 ? 2 : 1) + " ms" : "–"; }

function bytes(n) {
  if (!n) return "0";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(n < 10 && i > 0 ? 1 : 0) + " " + u[i];
}

function ago(t, now) {
  if (!t) return "–";
  const s = Math.max(0, (now - new Date(t).getTime()) / 1000);
  if (s < 60) return Math.round(s) + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  return Math.round(s / 3600) + "h ago";
}

function age(s) {
  if (!s) return "–";
  if (s < 60) return Math.round(s) + "s";
  if (s < 3600) return Math.round(s / 60) + "m";
  return (s / 3600).toFixed(1) + "h";
}

// sparkline draws values (oldest first) as a small filled line.
function sparkline(values, color, title) {
  const w = 120, h = 28;
  const s = svg("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  const t = svg("title", {}); t.textContent = title; s.append(t);
  if (values.length < 2) return s;
  const top = Math.max(...values, 1e-9);
  const pts = values.map((v, i) => [i * w / (values.length - 1), h - 2 - (v / top) * (h - 4)]);
  const line = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join(" ");
  s.append(svg("path", { d: line + ` L${w} ${h} L0 ${h} Z`, fill: color, "fill-opacity": "0.12", stroke: "none" }));
  s.append(svg("path", { d: line, fill: "none", stroke: color, "stroke-width": "1.5" }));
  return s;
}

function renderApps(snap) {
  const root = document.getElementById("apps");
  root.replaceChildren();
  if (!snap.applications.length) { root.append(el("p", { class: "empty" }, "No application deployed.")); return; }
  for (const a of snap.applications) {
    const card = el("div", { class: "card app", "data-app": a.name },
      el("div", { class: "card-head" }, el("h3", {}, a.name), el("span", { class: "route" }, a.route_prefix),
        badge(a.status), a.message ? el("span", { class: "msg" }, a.message) : null));
    const tbody = el("tbody");
    const table = el("table", { class: "grid deployments" },
      el("thead", {}, el("tr", {}, ...["deployment", "status", "replicas", "placement (replica @ worker)", "req/s",
        "p50", "p95", "errors", "ongoing", "queued", "last " + Math.round(snap.window_seconds) + "s"]
        .map((h, i) => el("th", { class: i >= 4 && i <= 9 ? "num" : "" }, h)))), tbody);
    for (const d of a.deployments) {
      const t = d.traffic || {};
      const reps = el("div", { class: "replicas" });
      for (const r of d.replicas) {
        const why = r.reason ? r.reason.code + ": " : ""; // the typed reason of a PENDING or STOPPING replica
        reps.append(el("span", { class: "replica badge s-" + r.state, "data-reason": r.reason ? r.reason.code : "",
          title: why + (r.message || r.state) + " · version " + r.version },
          r.replica_id, el("span", { class: "on" }, " @ " + (r.worker_id || "unplaced"))));
      }
      const series = t.series || [];
      tbody.append(el("tr", { class: "deployment", "data-deployment": d.name },
        el("td", {}, el("b", {}, d.name), d.name === a.ingress ? el("span", { class: "msg" }, " ingress") : null,
          d.message ? el("div", { class: "msg" }, d.message) : null),
        el("td", {}, badge(d.status)),
        el("td", {}, `${d.current_num_replicas} / ${d.target_num_replicas}`),
        el("td", {}, reps),
        el("td", { class: "num" }, fmt(t.rps)),
        el("td", { class: "num" }, ms(t.p50_ms)),
        el("td", { class: "num" }, ms(t.p95_ms)),
        el("td", { class: "num" }, t.error_rate ? fmt(100 * t.error_rate) + "%" : "0"),
        el("td", { class: "num" }, t.ongoing || 0),
        el("td", { class: "num" }, t.queued || 0),
        el("td", {}, sparkline(series.map(s => s.rps), "#4f46e5", "requests per second"),
          sparkline(series.map(s => s.ongoing + s.queued), "#b45309", "ongoing + queued"))));
    }
    card.append(table);
    for (const sp of (a.graph && a.graph.splitters) || []) {
      const rows = sp.branches.map(b => el("tr", { class: "branch", "data-step": b.step },
        el("td", {}, el("b", {}, b.step), el("span", { class: "msg" }, " → " + b.target)),
        el("td", { class: "num" }, b.weight + "%"),
        el("td", { class: "num" }, sp.requests ? fmt(b.share) + "%" : "–"),
        el("td", { class: "num" }, b.requests)));
      card.append(el("table", { class: "grid split", "data-node": sp.node },
        el("thead", {}, el("tr", {}, ...["split " + sp.node, "weight", "live share", "requests, last " + sp.window_seconds + "s"]
          .map((h, i) => el("th", { class: i ? "num" : "" }, h)))), el("tbody", {}, ...rows)));
    }
    root.append(card);
  }
}

function renderWorkers(snap) {
  const tbody = document.querySelector("#workers tbody");
  tbody.replaceChildren();
  if (!snap.workers.length) {
    tbody.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No live worker.")));
  }
  for (const w of snap.workers) {
    const gpus = (w.gpus || []).map((g, i) => `${g.type}#${g.index} ${fmt(100 * ((w.gpu_used || [])[i] || 0), 0)}%`).join(", ");
    const labels = Object.entries(w.labels || {}).map(([k, v]) => k + "=" + v).join(" ");
    tbody.append(el("tr", { class: "worker" },
      el("td", {}, el("b", {}, w.id)), el("td", {}, w.host),
      el("td", {}, `${fmt(w.cpu_used, 2)} / ${fmt(w.cpu, 2)}`),
      el("td", {}, `${bytes(w.memory_used_bytes)} / ${bytes(w.memory_bytes)}`),
      el("td", {}, gpus || "–"), el("td", {}, w.replicas), el("td", { class: "msg" }, labels)));
  }
}

function tile(label, value, bad) {
  return el("div", { class: "tile" + (bad ? " bad" : "") }, el("b", {}, value), el("span", {}, label));
}

function renderJobs(snap) {
  const root = document.getElementById("jobs");
  root.replaceChildren();
  if (!snap.jobs.length) { root.append(el("p", { class: "empty" }, "No async method.")); return; }
  const now = Date.parse(snap.generated_at);
  for (const m of snap.jobs) {
    const card = el("div", { class: "card method", "data-method": m.app + "/" + m.method },
      el("div", { class: "card-head" }, el("h3", {}, `${m.app}/${m.method}`),
        m.workflow ? el("span", { class: "badge" }, "workflow") : null,
        el("span", { class: "msg" }, "deployment " + m.deployment),
        m.error ? el("span", { class: "badge s-FAILED" }, "poll failed: " + m.error) : null),
      el("div", { class: "tiles" }, tile("queued", m.queued), tile("running", m.running),
        m.workflow ? tile("suspended", m.suspended) : null,
        tile("succeeded", m.succeeded), tile("failed", m.failed, m.failed > 0),
        tile("dead-lettered", m.dead_lettered, m.dead_lettered > 0), tile("cancelled", m.cancelled),
        tile("oldest queued", age(m.oldest_age_seconds))));
    const tbody = el("tbody");
    for (const j of m.recent) {
      const st = j.status === "RUNNING" ? badge(j.status, "s-JOB-RUNNING") : badge(j.status);
      tbody.append(el("tr", { class: "job", "data-job": j.request_id },
        el("td", {}, el("code", {}, j.request_id)), el("td", {}, st, j.retrying ? el("span", { class: "msg" }, " retrying") : null),
        el("td", {}, el("div", { class: "progress", title: fmt(100 * j.progress, 0) + "%" },
          el("div", { style: `width:${Math.round(100 * j.progress)}%` })), " ", fmt(100 * j.progress, 0) + "%"),
        el("td", { class: "num" }, j.attempts),
        el("td", { class: "msg" }, j.error || j.message || (j.waiting ? "waiting for " + j.waiting.join(", ") : "")),
        el("td", {}, j.replica || "–"),
        el("td", {}, ago(j.updated_at, now))));
    }
    if (!m.recent.length) tbody.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No job recorded yet.")));
    card.append(el("table", { class: "grid jobs" },
      el("thead", {}, el("tr", {}, ...["job", "status", "progress", "attempts", "message", "replica", "updated"]
        .map((h) => el("th", { class: h === "attempts" ? "num" : "" }, h)))), tbody));
    root.append(card);
  }
}

// scaleChart draws desired (a step line, dots at decisions) and current
// replicas over the window, and the smoothed load on a second axis.
function scaleChart(d, snap) {
  const W = 640, H = 170, L = 34, R = 40, T = 10, B = 22;
  const end = Date.parse(snap.generated_at), start = end - snap.window_seconds * 1000;
  const decs = d.decisions || [];
  const maxY = Math.max(1, d.autoscaling.max_replicas || 1, ...decs.map(x => Math.max(x.desired, x.current)));
  const maxLoad = Math.max(1e-9, ...decs.map(x => x.load));
  const x = t => L + (Math.max(t, start) - start) / (end - start) * (W - L - R);
  const y = v => H - B - v / maxY * (H - T - B);
  const yl = v => H - B - v / maxLoad * (H - T - B);
  const s = svg("svg", { class: "chart scale-chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-deployment": d.name });
  for (let v = 0; v <= maxY; v += Math.max(1, Math.ceil(maxY / 4))) {
    s.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb" }));
    const t = svg("text", { x: L - 6, y: y(v) + 3, "text-anchor": "end" }); t.textContent = v; s.append(t);
  }
  const lbl = (txt, xx, anchor) => { const t = svg("text", { x: xx, y: H - 6, "text-anchor": anchor }); t.textContent = txt; s.append(t); };
  lbl("-" + Math.round(snap.window_seconds) + "s", L, "start"); lbl("now", W - R, "end");
  if (!decs.length) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }); t.textContent = "no decision yet"; s.append(t);
    return s;
  }
  const step = (key, yf) => {
    let p = "";
    decs.forEach((dec, i) => {
      const xx = x(Date.parse(dec.at)), yy = yf(dec[key]);
      p += i === 0 ? `M${xx} ${yy}` : ` H${xx} V${yy}`;
    });
    return p + ` H${W - R}`;
  };
  s.append(svg("path", { d: step("load", yl), fill: "none", stroke: "#b45309", "stroke-width": 1, "stroke-dasharray": "3 2" }));
  s.append(svg("path", { d: step("current", y), fill: "none", stroke: "#059669", "stroke-width": 1.5 }));
  s.append(svg("path", { class: "desired", d: step("desired", y), fill: "none", stroke: "#4f46e5", "stroke-width": 2 }));
  for (const dec of decs) {
    const c = svg("circle", { class: "decision", cx: x(Date.parse(dec.at)), cy: y(dec.desired), r: 3.5, fill: "#4f46e5" });
    const t = svg("title", {}); t.textContent = `${dec.reason}: ${dec.desired} replicas — ${dec.message || ""}`; c.append(t);
    s.append(c);
  }
  const t = svg("text", { x: W - R + 4, y: T + 8 }); t.textContent = "load " + fmt(maxLoad); s.append(t);
  return s;
}

function renderScaling(snap) {
  const root = document.getElementById("scaling");
  root.replaceChildren();
  const scaled = [];
  for (const a of snap.applications) for (const d of a.deployments) if (d.autoscaling) scaled.push([a, d]);
  if (!scaled.length) { root.append(el("p", { class: "empty" }, "No autoscaled deployment.")); return; }
  for (const [a, d] of scaled) {
    const as = d.autoscaling;
    const last = (d.decisions || []).slice(-1)[0];
    root.append(el("div", { class: "card scaling", "data-deployment": d.name },
      el("div", { class: "card-head" }, el("h3", {}, `${a.name}/${d.name}`),
        el("span", {}, `current ${d.current_num_replicas} · desired ${d.desired_num_replicas} · target ${d.target_num_replicas}`),
        el("span", { class: "msg" }, `bounds ${as.min_replicas}..${as.max_replicas}, ${as.target_ongoing_requests} ongoing per replica, load ${fmt(as.load, 2)}`)),
      scaleChart(d, snap),
      el("div", { class: "legend" }, el("i", { style: "background:#4f46e5" }), "desired",
        el("i", { style: "background:#059669" }), "current (at decision)", el("i", { style: "background:#b45309" }), "load"),
      el("div", { class: "msg" }, as.last_scale_reason
        ? `last decision: ${as.last_scale_reason} — ${as.last_scale_message || ""} (${ago(as.last_scale_time, Date.parse(snap.generated_at))})`
        : (last ? `last decision: ${last.reason}` : "no decision yet"))));
  }
}

async function refresh() {
  const err = document.getElementById("error");
  try {
    const resp = await fetch("/api/dashboard", { cache: "no-store" });
    if (!resp.ok) throw new Error(`GET /api/dashboard: ${resp.status} ${await resp.text()}`);
    const snap = await resp.json();
    document.getElementById("meta").textContent =
      `scheduler ${snap.scheduler} · leader ${snap.leader || "none"} · ${snap.workers.length} workers · updated ${new Date(snap.generated_at).toLocaleTimeString()}`;
    renderApps(snap); renderWorkers(snap); renderJobs(snap); renderScaling(snap);
    err.hidden = true;
    document.body.dataset.loaded = "true";
  } catch (e) {
    err.textContent = String(e.message || e);
    err.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
