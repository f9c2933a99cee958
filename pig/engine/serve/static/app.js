// pig-engine search page. The query and its filters live in the URL (?q=...&by=...&folder=
// ...&dmin=...&dmax=...&like=ID:SEGMENT@INDEX): a search can be shared, and Back returns to
// the previous one. Without a query the page shows what is indexed (GET /v1/library).
"use strict";

const KEY_STORE = "pig-api-key";
// The API sits beside the page: "/" normally, the proxy's prefix behind --root-path.
const BASE = new URL(".", location.href).pathname;
const FIELDS = ["q", "k", "by", "folder", "dmin", "dmax"];
const $ = (id) => document.getElementById(id);

function apiKey() { return localStorage.getItem(KEY_STORE); }

function setKey(key) {
  localStorage.setItem(KEY_STORE, key);
  // <video> and <img> cannot send an Authorization header: media and thumbnails also read
  // this cookie.
  document.cookie = `pig_api_key=${encodeURIComponent(key)}; path=${BASE}v1/videos; SameSite=Strict`;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey()) h.Authorization = `Bearer ${apiKey()}`;
  return h;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function clock(s, digits = 1) {
  const m = Math.floor(s / 60), sec = (s - 60 * m).toFixed(digits).padStart(3 + digits, "0");
  return `${m}:${sec}`;
}

function span(hit) {
  const start = hit.start_s ?? 0;
  if (hit.end_s === undefined || hit.end_s === null) {
    return start > 0 ? `from ${clock(start)}` : "whole video";
  }
  const digits = hit.end_s - start < 1 ? 2 : 1;  // a one-frame video still shows its frame time
  return `${clock(start, digits)} – ${clock(hit.end_s, digits)}`;
}

// A catalog id is unique only within its index: the hit's index goes with it. The server
// says how a browser plays the span: the file, an MP4 copy, or an H.264 transcode of the span
// (whose 0 s is the span's start: offset_s), all on the index's time base.
function previewUrl(hit) {
  const start = hit.start_s ?? 0, end = hit.end_s ?? start + 60;
  return `${BASE}v1/videos/${hit.id}/preview?index=${hit.index}&start=${start}&end=${end}`;
}
function thumbUrl(hit) {
  return `${BASE}v1/videos/${hit.id}/thumbnail?segment=${hit.segment}&index=${hit.index}`;
}

// --- the URL is the state -------------------------------------------------------------
function readUrl() {
  const p = new URLSearchParams(location.search);
  const state = {};
  for (const f of FIELDS) state[f] = p.get(f) ?? "";
  state.like = p.get("like") ?? "";
  return state;
}

function fillForm(state) {
  $("query").value = state.q;
  $("k").value = state.k || "10";
  $("by").value = state.by || "video";
  $("folder").value = state.folder;
  $("dmin").value = state.dmin;
  $("dmax").value = state.dmax;
}

function formState(like = "") {
  const state = { like };
  for (const f of FIELDS) state[f] = $(f === "q" ? "query" : f).value.trim();
  if (like) state.q = "";
  return state;
}

function go(state) {
  const p = new URLSearchParams();
  for (const [name, value] of Object.entries(state)) {
    if (value && !(name === "k" && value === "10") && !(name === "by" && value === "video")) {
      p.set(name, value);
    }
  }
  history.pushState(null, "", p.toString() ? `?${p}` : location.pathname);
  run(state);
}

function requestBody(state) {
  const body = { k: Number(state.k) || 10, group_by: state.by || "video" };
  const like = /^(\d+)(?::(\d+))?(?:@(\d+))?$/.exec(state.like);
  if (like) {
    body.like = { id: Number(like[1]), index: Number(like[3] ?? 0) };
    if (like[2] !== undefined) body.like.segment = Number(like[2]);
  } else {
    body.query = state.q;
  }
  const filter = {};
  if (state.folder) filter.path = { glob: `${state.folder.replace(/\/+$/, "")}/*` };
  const duration = {};
  if (state.dmin !== "") duration.gte = Number(state.dmin);
  if (state.dmax !== "") duration.lte = Number(state.dmax);
  if (Object.keys(duration).length) filter.duration_s = duration;
  if (Object.keys(filter).length) body.filter = filter;
  return body;
}

// --- talking to the server ------------------------------------------------------------
async function call(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: headers() });
  } catch (err) {
    status(`cannot reach the server (${err})`, true);
    return null;
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("key").hidden = false;
    $("api-key").focus();
    status("this server requires an API key", true);
    return null;
  }
  if (!response.ok) {
    status(body.error?.message ?? `error ${response.status}`, true);
    return null;
  }
  return body;
}

async function run(state) {
  fillForm(state);
  $("results").replaceChildren();
  $("viewer").hidden = true;
  if (!state.q && !state.like) {
    await library();
    return;
  }
  $("library").hidden = true;
  status("searching…");
  const t0 = performance.now();
  const body = await call(`${BASE}v1/search`, { method: "POST", body: JSON.stringify(requestBody(state)) });
  if (!body) return;
  const result = body.results[0];
  const ms = (performance.now() - t0).toFixed(0);
  const gens = body.generations;
  status(`${result.results.length} results for ${result.query} in ${ms} ms ` +
         `(index generation${gens.length > 1 ? "s" : ""} ${gens.join(", ")})`);
  show(result, state);
}

async function library() {
  const lib = await call(`${BASE}v1/library`);
  if (!lib) return;
  const hours = lib.duration_s / 3600;
  const length = hours >= 1 ? `${hours.toFixed(1)} h` : `${(lib.duration_s / 60).toFixed(1)} min`;
  const list = (obj) => Object.entries(obj).map(([v, n]) => `${v || "?"} (${n})`).join(", ");
  const section = $("library");
  section.replaceChildren();
  for (const [label, text] of [
    ["indexed", `${lib.files} files, ${lib.segments} segments, ${length} in all`],
    ["formats", list(lib.extensions)], ["codecs", list(lib.codecs)], ["folders", list(lib.folders)],
  ]) {
    const p = document.createElement("p");
    const b = document.createElement("b");
    b.textContent = `${label}: `;
    p.append(b, text || "none");
    section.append(p);
  }
  section.hidden = false;
  $("folders").replaceChildren(...Object.keys(lib.folders).map((f) => {
    const o = document.createElement("option");
    o.value = f;
    return o;
  }));
  status(lib.files ? "type what you are looking for" : "the index is empty");
}

// --- showing hits ---------------------------------------------------------------------
async function play(hit, item) {
  const start = hit.start_s ?? 0;
  const player = $("player");
  $("viewer").hidden = false;
  $("now-playing").textContent = `#${hit.rank} ${hit.path} (${span(hit)})`;
  document.querySelectorAll("#results li").forEach((li) => li.classList.toggle("playing", li === item));
  const note = $("preview-note");
  note.classList.remove("error");
  note.textContent = "";
  player.removeAttribute("src");
  const response = await fetch(previewUrl(hit), { headers: headers() }).catch(() => null);
  const body = response ? await response.json().catch(() => ({})) : {};
  if (!response || !response.ok) {
    note.textContent = body.error?.message ?? "this file cannot be previewed";
    note.classList.add("error");
    player.load();
    player.dataset.videoId = String(hit.id);
    return;
  }
  if (body.kind !== "original") note.textContent = `preview: ${body.reason}`;
  const at = Math.max(start - body.offset_s, 0);
  player.dataset.seek = String(at);
  // The media fragment starts the download at the hit; currentTime makes sure of it.
  player.src = `${BASE}${body.url.replace(/^\//, "")}#t=${at}`;
  player.addEventListener("loadedmetadata", () => { player.currentTime = at; }, { once: true });
  player.addEventListener("error", () => {
    note.textContent = "this file cannot be played in this browser";
    note.classList.add("error");
  }, { once: true });
  player.dataset.index = String(hit.index);
  player.dataset.start = String(start);
  player.dataset.videoId = String(hit.id);  // last: the player is set up for this hit
}

function show(result, state) {
  const list = $("results");
  for (const hit of result.results) {
    const li = document.createElement("li");
    li.dataset.videoId = String(hit.id);
    li.dataset.index = String(hit.index);
    li.dataset.segment = String(hit.segment);
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = "";
    img.loading = "lazy";
    img.src = thumbUrl(hit);
    img.addEventListener("error", () => img.classList.add("missing"), { once: true });
    const text = document.createElement("div");
    text.innerHTML = `<span class="rank"></span> <span class="score"></span><span class="name"></span>`;
    text.querySelector(".rank").textContent = `${hit.rank}`;
    text.querySelector(".score").textContent = hit.score.toFixed(4);
    text.querySelector(".name").textContent = hit.path.split("/").pop();
    const when = document.createElement("span");
    when.className = "span";
    when.textContent = span(hit);
    const more = document.createElement("a");
    more.className = "more";
    more.textContent = "more like this";
    const like = `${hit.id}:${hit.segment}@${hit.index}`;
    more.href = `?like=${encodeURIComponent(like)}`;
    more.addEventListener("click", (event) => {
      event.preventDefault();
      event.stopPropagation();
      go({ ...formState(like), by: state.by });
    });
    text.querySelector(".name").append(when);
    text.append(more);
    li.append(img, text);
    li.title = hit.path;
    li.addEventListener("click", () => play(hit, li));
    list.append(li);
  }
  if (result.results.length) play(result.results[0], list.firstChild);
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  go(formState());
});
$("key").addEventListener("submit", (event) => {
  event.preventDefault();
  setKey($("api-key").value.trim());
  $("key").hidden = true;
  run(readUrl());
});
window.addEventListener("popstate", () => run(readUrl()));
if (apiKey()) setKey(apiKey());
run(readUrl());
