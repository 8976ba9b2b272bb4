// The alarm queue: loaded once, then kept live by server-sent events; verdicts by button or key.
"use strict";
const queue = document.getElementById("queue");
const tpl = document.getElementById("card");
const f = {site: document.getElementById("f-site"), lane: document.getElementById("f-lane"),
           verdict: document.getElementById("f-verdict"), q: document.getElementById("f-q"),
           since: document.getElementById("f-since"), until: document.getElementById("f-until")};
const cards = new Map();   // record_id -> {item, node}
let selected = null;

function fmt(n) { return (n === null || n === undefined) ? "–" : Number(n).toFixed(3); }
function ago(s) {
  s = Math.max(0, Math.floor(s));
  return s < 60 ? s + " s" : s < 3600 ? Math.floor(s / 60) + " min " + (s % 60) + " s"
       : s < 172800 ? Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min"
       : Math.floor(s / 86400) + " days " + Math.floor((s % 86400) / 3600) + " h";   // an alarm kept past keep_days
}
function wallOf(input) { return input.value ? new Date(input.value).getTime() / 1000 : null; }
function isQueue() { return f.verdict.value === "open"; }

function params() {
  const p = new URLSearchParams();
  const v = f.verdict.value;
  p.set("status", v === "open" ? "open" : v === "all" ? "all" : "decided");
  if (!["open", "all", "decided"].includes(v)) p.set("verdict", v);
  if (f.site.value) p.set("site", f.site.value);
  if (f.lane.value) p.set("lane", f.lane.value);
  if (f.q.value) p.set("q", f.q.value);
  if (wallOf(f.since)) p.set("since", wallOf(f.since));
  if (wallOf(f.until)) p.set("until", wallOf(f.until));
  return p;
}

// Does a live item belong on the page under the current filters?
function belongs(item) {
  if (f.site.value && item.site_id !== f.site.value) return false;
  if (f.lane.value && item.prefix !== f.lane.value) return false;
  if (f.q.value || wallOf(f.since) || wallOf(f.until)) return cards.has(item.record_id);
  const v = f.verdict.value;
  if (v === "open") return !item.verdict;
  if (v === "decided") return !!item.verdict;
  if (v === "all") return true;
  return item.verdict === v;
}

function fill(node, item) {
  node.dataset.recordId = item.record_id;
  node.querySelector(".lane").textContent = item.site_id + " / " + item.scanner_id;
  node.querySelector(".item").textContent = item.item_id;
  const bv = node.querySelector(".box-verdict");
  bv.textContent = item.box_verdict.toUpperCase() + (item.box_reason ? " (" + item.box_reason + ")" : "")
    + (item.item_score !== null ? " score " + fmt(item.item_score) : "");
  bv.className = "box-verdict bv-" + item.box_verdict;
  const imgs = node.querySelector(".images");
  imgs.replaceChildren(...item.images.map((im) => {
    const fig = el("figure"); const img = el("img"); img.src = im.url; img.alt = im.label;
    fig.append(img, el("figcaption", null, im.label)); return fig;
  }));
  if (!item.images.length) imgs.append(el("p", "muted", "no picture (yet)"));
  const reasons = node.querySelector(".reasons");
  reasons.replaceChildren(...item.reasons.map((r) => el("li", null, r)));
  const rows = item.objects.filter((o) => o.anomalous || o.reasons.length).slice(0, 6);
  node.querySelector(".scores tbody").replaceChildren(...rows.map((o) => {
    const tr = el("tr");
    const why = o.reasons.map((r) => r.kind + (r.label ? ":" + r.label : "") + " " + fmt(r.score) + "/" + fmt(r.threshold));
    tr.append(el("td", null, (o.label || "object " + o.object_id) + (why.length ? " — " + why.join(", ") : "")),
              el("td", null, fmt(o.detector_score)), el("td", null, fmt(o.anomaly_score)), el("td", null, fmt(o.threshold)));
    return tr;
  }));
  node.querySelector(".scores").hidden = rows.length === 0;
  node.querySelector(".actions").replaceChildren(...item.actions.map((a) =>
    el("li", "action " + (a.outcome || ""), (a.action || "?") + ": " + (a.outcome || "?") + (a.detail ? " — " + a.detail : ""))));
  const decided = node.querySelector(".decided");
  decided.textContent = item.verdict
    ? item.verdict.replace(/_/g, " ") + " by " + item.operator + " at " + new Date(item.verdict_wall * 1000).toLocaleString()
      + " · to the box: " + (item.verdict_state || "?") + (item.verdict_error ? " (" + item.verdict_error + ")" : "")
    : "";
  decided.className = "decided " + (item.verdict_state || "");
  node.querySelectorAll("[data-verdict]").forEach((b) => { b.hidden = !!item.verdict; });
  const reopen = node.querySelector(".reopen");
  if (reopen) reopen.hidden = !item.verdict;
  node.classList.toggle("done", !!item.verdict);
}

function show(item, atEnd) {
  let entry = cards.get(item.record_id);
  if (!entry) {
    const node = tpl.content.firstElementChild.cloneNode(true);
    node.addEventListener("click", (ev) => {
      select(item.record_id);
      const b = ev.target.closest("button");
      if (b && b.dataset.verdict) decide(item.record_id, b.dataset.verdict);
      else if (b && b.classList.contains("reopen")) reopen(item.record_id);
    });
    entry = {item, node};
    cards.set(item.record_id, entry);
    if (atEnd) queue.append(node); else queue.prepend(node);
    node.dataset.shownWall = String(performance.timeOrigin + performance.now());
  }
  entry.item = item;
  fill(entry.node, item);
  option(f.lane, item.prefix);
  option(f.site, item.site_id);
  if (!selected) select(item.record_id);
  counts();
}

function drop(recordId) {
  const entry = cards.get(recordId);
  if (!entry) return;
  const next = entry.node.nextElementSibling || entry.node.previousElementSibling;
  entry.node.remove();
  cards.delete(recordId);
  if (selected === recordId) { selected = null; if (next) select(next.dataset.recordId); }
  counts();
}

function select(recordId) {
  if (selected && cards.has(selected)) cards.get(selected).node.classList.remove("selected");
  selected = recordId;
  const entry = cards.get(recordId);
  if (entry) { entry.node.classList.add("selected"); entry.node.scrollIntoView({block: "nearest"}); }
}

function counts() {
  document.getElementById("count").textContent = isQueue()
    ? cards.size + " alarm" + (cards.size === 1 ? "" : "s") + " waiting" : cards.size + " found";
}

async function decide(recordId, verdict) {
  const entry = cards.get(recordId);
  if (!entry || entry.item.verdict) return;
  const err = entry.node.querySelector(".error");
  err.textContent = "";
  try {
    const r = await post("/api/verdicts", {record_id: recordId, verdict});
    if (isQueue()) drop(recordId); else show(r.item, true);
  } catch (e) { err.textContent = e.message; }
}

async function reopen(recordId) {
  const entry = cards.get(recordId);
  try { const r = await post("/api/items/" + encodeURIComponent(recordId) + "/reopen"); show(r.item, true); }
  catch (e) { if (entry) entry.node.querySelector(".error").textContent = e.message; }
}

// (Re)load the list for the current filters. Live events that arrive while a load is in flight are kept and
// replayed on top of its answer (else an alarm pushed meanwhile would vanish); an older load never overwrites a
// newer one.
let loadSeq = 0, loading = 0, during = [];
async function load() {
  const mine = ++loadSeq;
  document.body.dataset.loading = String(++loading);
  try {
    const r = await fetch("/api/items?" + params(), {credentials: "same-origin"});
    if (r.status === 401) { location.href = "/login"; return; }
    const data = await r.json();
    if (mine !== loadSeq) return;
    cards.clear(); queue.replaceChildren(); selected = null;
    data.items.forEach((item) => show(item, true));
    during.forEach((item) => { if (belongs(item)) show(item, true); else drop(item.record_id); });
    counts();
  } finally {
    if (--loading === 0) during = [];
    document.body.dataset.loading = String(loading);
  }
}

function onLive(item, added) {
  if (loading) during.push(item);
  if (belongs(item)) show(item, true); else if (!added) drop(item.record_id);
}

async function loadLanes() {
  const r = await fetch("/api/lanes", {credentials: "same-origin"});
  if (!r.ok) return;
  const data = await r.json();
  overdue = data.overdue || overdue;
  data.lanes.forEach((lane) => showLane(lane, data.now));
  showOverdue();
  document.getElementById("brokers").replaceChildren(...data.brokers.map((b) => {
    const li = el("li", "lane-state " + (b.connected ? "online" : "offline"));
    li.append(el("b", null, b.name), el("span", "state", b.connected ? " connected" : " not connected"),
              el("div", "muted", b.host), el("div", "why", b.connected ? "" : b.error));
    return li;
  }));
  data.sites.forEach((s) => option(f.site, s));
}

// A filter choice for a lane or site heard of (from the lanes list or from an alarm of a new lane).
function option(select, value) {
  if (!value || [...select.options].some((o) => o.value === value)) return;
  const o = el("option", null, value); o.value = value; select.append(o);
}

// Open alarms older than keep_days: the retention keeps them until they are decided; the page says so, in total
// above the queue and per lane (kept across the lane events, which do not carry it).
let overdue = {keep_days: null, count: 0, oldest_wall: null, lanes: {}};
function olderThan(n) {
  return n + " open alarm" + (n === 1 ? "" : "s") + " older than " + overdue.keep_days + " days";
}
function showOverdue() {
  const p = document.getElementById("overdue");
  p.hidden = !overdue.count;
  p.textContent = overdue.count ? olderThan(overdue.count) + " (keep_days; the oldest received "
    + new Date(overdue.oldest_wall * 1000).toLocaleString() + "): kept until an operator gives a verdict" : "";
}

const lanes = new Map();
function showLane(lane, now) {
  let li = lanes.get(lane.prefix);
  if (!li) {
    li = el("li"); li.dataset.prefix = lane.prefix; lanes.set(lane.prefix, li);
    document.getElementById("lanes").append(li);
    option(f.lane, lane.prefix);
  }
  li.className = "lane-state " + lane.state;
  const last = lane.last_item_wall ? ago((now || Date.now() / 1000) - lane.last_item_wall) + " ago" : "none yet";
  li.replaceChildren(el("b", null, (lane.site_id || "?") + " / " + (lane.scanner_id || "?")),
    el("span", "state", " " + lane.state), el("div", "why", lane.why || ""),
    el("div", "muted", "broker " + lane.broker + " · last item " + last + (lane.last_item_id ? " (" + lane.last_item_id + ")" : "")));
  const old = overdue.lanes[lane.prefix];
  if (old) li.append(el("div", "overdue", olderThan(old)));
}

function live() {
  const badge = document.getElementById("live");
  const es = new EventSource("/events");
  let first = true;
  es.addEventListener("hello", () => {
    badge.textContent = "live"; badge.className = "live on";
    if (!first) { load(); loadLanes(); }   // reconnected: what happened meanwhile
    first = false;
  });
  es.addEventListener("alarm", (ev) => onLive(JSON.parse(ev.data), true));
  es.addEventListener("update", (ev) => onLive(JSON.parse(ev.data), false));
  es.addEventListener("lane", (ev) => showLane(JSON.parse(ev.data)));
  es.onerror = () => { badge.textContent = "reconnecting…"; badge.className = "live off"; };
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.closest("input, select, textarea") || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  const keys = {"1": "threat_confirmed", "2": "cleared", "3": "sent_to_search"};
  if (keys[ev.key] && selected) { ev.preventDefault(); decide(selected, keys[ev.key]); return; }
  if ((ev.key === "j" || ev.key === "k") && selected && cards.has(selected)) {
    const node = cards.get(selected).node;
    const next = ev.key === "j" ? node.nextElementSibling : node.previousElementSibling;
    if (next) select(next.dataset.recordId);
  }
});

document.getElementById("filters").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
[f.site, f.lane, f.verdict].forEach((s) => s.addEventListener("change", load));
document.getElementById("sign-out").addEventListener("click", async () => {
  try { await post("/logout"); } finally { location.href = "/login"; }
});
setInterval(() => {
  const now = Date.now() / 1000;
  cards.forEach(({item, node}) => {
    node.querySelector(".waited").textContent = item.verdict ? "" : "waiting " + ago(now - item.received_wall);
  });
}, 1000);
setInterval(loadLanes, 10000);

load().then(loadLanes).then(live);
