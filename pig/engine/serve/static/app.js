// pig-engine search page: POST /v1/search, list the hits, play the chosen one from its start.
"use strict";

const KEY_STORE = "pig-api-key";
// The API sits beside the page: "/" normally, the proxy's prefix behind --root-path.
const BASE = new URL(".", location.href).pathname;
const $ = (id) => document.getElementById(id);

function apiKey() { return localStorage.getItem(KEY_STORE); }

function setKey(key) {
  localStorage.setItem(KEY_STORE, key);
  // <video> cannot send an Authorization header: the media route also reads this cookie.
  document.cookie = `pig_api_key=${encodeURIComponent(key)}; path=${BASE}v1/videos; SameSite=Strict`;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function clock(s) {
  const m = Math.floor(s / 60), sec = (s - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${sec}`;
}

function span(hit) {
  const start = hit.start_s ?? 0;
  if (hit.end_s === undefined || hit.end_s === null) {
    return start > 0 ? `from ${clock(start)}` : "whole video";
  }
  return `${clock(start)} – ${clock(hit.end_s)}`;
}

// A catalog id is unique only within its index: the hit's index goes with it.
function mediaUrl(hit) { return `${BASE}v1/videos/${hit.id}/media?index=${hit.index}`; }

function play(hit, item) {
  const start = hit.start_s ?? 0;
  const player = $("player");
  player.dataset.videoId = String(hit.id);
  player.dataset.index = String(hit.index);
  player.dataset.start = String(start);
  // The media fragment starts the download at the hit; currentTime makes sure of it.
  player.src = `${mediaUrl(hit)}#t=${start}`;
  player.addEventListener("loadedmetadata", () => { player.currentTime = start; }, { once: true });
  $("viewer").hidden = false;
  $("now-playing").textContent = `#${hit.rank} ${hit.path} (${span(hit)})`;
  document.querySelectorAll("#results li").forEach((li) => li.classList.toggle("playing", li === item));
}

function show(result) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of result.results) {
    const li = document.createElement("li");
    li.dataset.videoId = String(hit.id);
    li.dataset.index = String(hit.index);
    const name = hit.path.split("/").pop();
    li.innerHTML = `<span class="rank"></span><span class="score"></span><span class="name"></span>`;
    li.querySelector(".rank").textContent = `${hit.rank}`;
    li.querySelector(".score").textContent = hit.score.toFixed(4);
    li.querySelector(".name").textContent = name;
    const when = document.createElement("span");
    when.className = "span";
    when.textContent = span(hit);
    li.querySelector(".name").append(when);
    li.title = hit.path;
    li.addEventListener("click", () => play(hit, li));
    list.append(li);
  }
  if (result.results.length) play(result.results[0], list.firstChild);
}

async function search(event) {
  event?.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  const headers = { "Content-Type": "application/json" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  status("searching…");
  const t0 = performance.now();
  let response;
  try {
    response = await fetch(`${BASE}v1/search`, {
      method: "POST", headers, body: JSON.stringify({ query, k: Number($("k").value) || 10 }),
    });
  } catch (err) {
    status(`cannot reach the server (${err})`, true);
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("key").hidden = false;
    status("this server requires an API key", true);
    return;
  }
  if (!response.ok) {
    status(body.error?.message ?? `error ${response.status}`, true);
    return;
  }
  const result = body.results[0];
  const ms = (performance.now() - t0).toFixed(0);
  const gens = body.generations;
  status(`${result.results.length} results in ${ms} ms ` +
         `(index generation${gens.length > 1 ? "s" : ""} ${gens.join(", ")})`);
  show(result);
}

$("search").addEventListener("submit", search);
$("key").addEventListener("submit", (event) => {
  event.preventDefault();
  setKey($("api-key").value.trim());
  $("key").hidden = true;
  search();
});
if (apiKey()) setKey(apiKey());
