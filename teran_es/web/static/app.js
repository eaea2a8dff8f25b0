// The teran-es search page: plain JavaScript over the JSON API (/api/...), no build step.
"use strict";

const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#9a6324", "#800000"];
const $ = (id) => document.getElementById(id);
let lastQuery = "";
let shownImage = null;

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function svg(tag, attrs, text = "") {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(`${message} (${response.status})`);
  }
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function ms(seconds) { return `${(seconds * 1000).toFixed(1)} ms`; }

async function search(event) {
  if (event) event.preventDefault();
  const q = $("q").value.trim();
  if (!q) { showError("type a few words"); return; }
  const params = new URLSearchParams({ q, k: $("k").value });
  if ($("exact").checked) params.set("exact", "true");
  else params.set("candidates", $("candidates").value);
  showError("");
  $("status").textContent = "searching ...";
  $("grid").setAttribute("aria-busy", "true");
  const started = performance.now();
  try {
    const result = await api(`/api/search?${params}`);
    lastQuery = q;
    renderHits(result, performance.now() - started);
  } catch (e) {
    $("grid").replaceChildren();
    $("latency").textContent = "";
    showError(e.message);
  } finally {
    $("status").textContent = "";
    $("grid").removeAttribute("aria-busy");
  }
}

function renderHits(result, roundTripMs) {
  const t = result.timings;
  const stages = ["encode", "recall", "rerank", "fetch"].filter((s) => s in t).map((s) => `${s} ${ms(t[s])}`);
  const mode = result.exact ? "exact scan of" : "reranked";
  $("latency").textContent =
    `${result.hits.length} hits, ${mode} ${result.candidates} images: ${stages.join(" · ")} ` +
    `(server ${ms(Object.values(t).reduce((a, b) => a + b, 0))}, round trip ${roundTripMs.toFixed(0)} ms)`;
  const figures = result.hits.map((hit) => {
    const figure = el("figure", { class: "hit", tabindex: "0", "data-id": hit.id, "data-rank": hit.rank });
    figure.append(el("img", { src: hit.thumbnail, alt: hit.caption || hit.id, loading: "lazy" }));
    const caption = el("figcaption");
    caption.append(el("span", { class: "rank" }, `${hit.rank}.`), " ",
      el("span", { class: "score" }, hit.score.toFixed(3)), el("br"),
      el("span", { class: "caption" }, hit.caption || hit.id));
    figure.append(caption);
    figure.addEventListener("click", () => openImage(hit.id));
    figure.addEventListener("keydown", (e) => { if (e.key === "Enter") openImage(hit.id); });
    return figure;
  });
  $("grid").replaceChildren(...figures);
  if (result.message) $("status").textContent = result.message;
}

async function openImage(id) {
  showError("");
  try {
    const info = await api(`/api/images/${encodeURIComponent(id)}`);
    shownImage = id;
    $("detail-title").textContent = id;
    $("detail-image").src = info.image;
    $("detail-image").alt = info.captions[0] || id;
    $("detail-captions").replaceChildren(...info.captions.map((c) => el("li", {}, c)));
    $("detail-words").replaceChildren();
    $("detail-score").textContent = "";
    $("overlay").replaceChildren();
    if (!$("detail").open) $("detail").showModal();
    if (lastQuery) await drawAlignment(id, lastQuery);
  } catch (e) {
    showError(e.message);
  }
}

async function drawAlignment(id, q) {
  const view = await api(`/api/images/${encodeURIComponent(id)}/alignment?${new URLSearchParams({ q })}`);
  const overlay = $("overlay");
  const size = 384;
  const byRegion = new Map();
  if (view.boxes) {
    // shade each region by how well its best word aligns with it: dark = little alignment
    const best = view.boxes.map((_, j) => Math.max(...view.matrix.map((row) => row[j])));
    const low = Math.min(...best), high = Math.max(...best);
    view.boxes.forEach(([x1, y1, x2, y2], j) => {
      const strength = high > low ? (best[j] - low) / (high - low) : 1;
      overlay.append(svg("rect", { x: x1 * size, y: y1 * size, width: (x2 - x1) * size, height: (y2 - y1) * size,
        class: "heat", "fill-opacity": (0.45 * (1 - strength)).toFixed(3) }));
    });
  }
  const items = view.words.map((w, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const item = el("li");
    item.append(el("span", { class: "swatch", style: `background:${colour}` }),
      `${w.word} → region ${w.region} (${w.score.toFixed(3)})`);
    if (view.boxes) {
      const [x1, y1, x2, y2] = view.boxes[w.region].map((v) => v * size);
      const shared = byRegion.get(w.region) || 0;  // words sharing a region: nested boxes, stacked labels
      byRegion.set(w.region, shared + 1);
      const inset = 3 * shared;
      overlay.append(svg("rect", { x: x1 + inset, y: y1 + inset, width: x2 - x1 - 2 * inset,
        height: y2 - y1 - 2 * inset, stroke: colour, class: "word-box" }));
      overlay.append(svg("text", { x: x1 + inset + 4, y: y1 + inset + 17 + 17 * shared, fill: colour }, w.word));
    }
    return item;
  });
  if (!view.boxes) items.push(el("li", {}, "(this model's regions have no boxes to draw)"));
  $("detail-words").replaceChildren(...items);
  // the hit's score: with a query bank it is not the words' values summed, so say what it is
  $("detail-score").textContent = view.normaliser === null
    ? `score ${view.score.toFixed(3)} (the alignment)`
    : `score ${view.score.toFixed(3)} = alignment ${view.alignment.toFixed(3)} − query-bank normaliser ` +
      (view.normaliser < 0 ? `(${view.normaliser.toFixed(3)})` : view.normaliser.toFixed(3));
}

async function findCaptions(url, options, title) {
  showError("");
  $("status").textContent = "finding captions (the first time encodes the collection's captions) ...";
  try {
    const result = await api(url, options);
    $("caption-title").textContent =
      `${title}: best of ${result.captions} captions (scan ${ms(result.timings.scan)})`;
    $("caption-list").replaceChildren(...result.hits.map((h) => {
      const item = el("li", { "data-id": h.image_id });
      item.append(el("img", { src: h.thumbnail, alt: "" }), `${h.caption} `,
        el("span", { class: "score" }, `(${h.score.toFixed(3)}, ${h.image_id})`));
      return item;
    }));
    $("caption-results").hidden = false;
  } catch (e) {
    showError(e.message);
  } finally {
    $("status").textContent = "";
  }
}

async function health() {
  try {
    const h = await api("/api/health");
    $("attribution").textContent = h.attribution || "";
    $("status").textContent = `${h.images} images, ${h.backend.kind} index`;
  } catch (e) {
    showError(e.message);
  }
}

$("search-form").addEventListener("submit", search);
$("exact").addEventListener("change", () => { $("candidates").disabled = $("exact").checked; });
$("close").addEventListener("click", () => $("detail").close());
$("find-captions").addEventListener("click", () => {
  if (!shownImage) return;
  $("detail").close();
  findCaptions(`/api/images/${encodeURIComponent(shownImage)}/captions?k=10`, undefined, `captions for ${shownImage}`);
});
$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (!file) return;
  const name = encodeURIComponent(file.name.slice(0, 200));
  findCaptions(`/api/captions?k=10&name=${name}`, { method: "POST", body: file,
    headers: { "Content-Type": file.type || "application/octet-stream" } }, `captions for ${file.name}`);
});
health();
