// The layer studio: a layered player (every layer in sync, a live recomposite of the shown ones) and, for an
// engine folder, a shard browser. Reads window.STUDIO_DATA (assets/data.js) through common.js; loads nothing else.
"use strict";

const player = { sample: null, images: {}, frame: 0, playing: false, timer: null, layers: {} };

// Whole-number upscaling to about 240 px wide: with image-rendering: pixelated every clip pixel stays square.
function scaleFor(sample) {
  return Math.max(1, Math.floor(240 / sample.width));
}

function makeCanvas(sample, id) {
  const canvas = el("canvas", { id, width: sample.width, height: sample.height });
  canvas.style.width = sample.width * scaleFor(sample) + "px";
  canvas.style.height = sample.height * scaleFor(sample) + "px";
  return canvas;
}

function loadImages(sample) {
  const images = {};
  const waits = [];
  sample.layers.forEach((layer) => {
    images[layer.name] = layer.frames.map((src) => {
      const img = new Image();
      img.src = src;
      waits.push(img.decode());
      return img;
    });
  });
  return Promise.all(waits).then(() => images);
}

function drawLayer(name) {
  const sample = player.sample;
  const layer = sample.layers.find((l) => l.name === name);
  const ctx = document.getElementById("layer-" + name).getContext("2d");
  const state = player.layers[name];
  ctx.clearRect(0, 0, sample.width, sample.height);
  if (layer.kind === "rgba") drawChecker(ctx, sample);
  ctx.globalAlpha = state.opacity;
  ctx.drawImage(player.images[name][player.frame], 0, 0);
  ctx.globalAlpha = 1;
}

// The recomposite: shown layers over a checkerboard, bg first, then the foregrounds farthest first (front last).
function drawRecomposite() {
  const sample = player.sample;
  const ctx = document.getElementById("recomposite").getContext("2d");
  drawChecker(ctx, sample);
  const order = ["bg", ...sample.depth.slice().reverse()];
  order.forEach((name) => {
    const state = player.layers[name];
    if (!state.shown) return;
    ctx.globalAlpha = state.opacity;
    ctx.drawImage(player.images[name][player.frame], 0, 0);
  });
  ctx.globalAlpha = 1;
}

function draw() {
  player.sample.layers.forEach((layer) => drawLayer(layer.name));
  drawRecomposite();
  document.getElementById("scrub").value = player.frame;
  document.getElementById("frame-label").textContent = `frame ${player.frame + 1} / ${player.sample.frames}`;
  document.body.dataset.frame = player.frame;
}

function step(delta) {
  const n = player.sample.frames;
  player.frame = (player.frame + delta + n) % n;
  draw();
}

function setPlaying(playing) {
  player.playing = playing;
  clearInterval(player.timer);
  if (playing) player.timer = setInterval(() => step(1), 1000 / player.sample.fps);
  document.getElementById("play").textContent = playing ? "pause" : "play";
  document.body.dataset.playing = playing ? "1" : "0";
}

function layerTile(sample, layer) {
  const state = player.layers[layer.name];
  const toggle = el("input", { type: "checkbox", id: "show-" + layer.name, checked: "" });
  toggle.addEventListener("change", () => {
    state.shown = toggle.checked;
    tile.classList.toggle("hidden", !state.shown);
    draw();
  });
  const opacity = el("input", { type: "range", id: "opacity-" + layer.name, min: 0, max: 1, step: 0.05, value: 1 });
  opacity.addEventListener("input", () => {
    state.opacity = Number(opacity.value);
    draw();
  });
  const caption = el("figcaption", {}, toggle, el("label", { for: "show-" + layer.name }, layer.name), opacity);
  const tile = el("figure", { class: "tile" }, makeCanvas(sample, "layer-" + layer.name), caption);
  return tile;
}

function showSample(index) {
  setPlaying(false);
  document.body.dataset.ready = "0";
  const sample = DATA.samples[index];
  player.sample = sample;
  player.frame = 0;
  player.layers = {};
  sample.layers.forEach((l) => { player.layers[l.name] = { shown: true, opacity: 1 }; });
  document.querySelectorAll(".card").forEach((c) => c.classList.toggle("current", Number(c.dataset.index) === index));
  document.getElementById("sample-title").textContent = `${sample.key} (K = ${sample.K}, ${sample.origin})`;
  const scrub = document.getElementById("scrub");
  scrub.max = sample.frames - 1;
  const tiles = document.getElementById("tiles");
  tiles.replaceChildren(
    el("figure", { class: "tile" }, makeCanvas(sample, "recomposite"), el("figcaption", {}, "recomposite (shown layers)")),
    ...sample.layers.map((layer) => layerTile(sample, layer)));
  document.getElementById("metrics").replaceChildren(...metricsTable(sample));
  return loadImages(sample).then((images) => {
    player.images = images;
    draw();
    document.body.dataset.ready = "1";
  });
}

// The evaluation's per-layer scores and accuracy against the truth, where the page was built from a run.
function metricsTable(sample) {
  if (!sample.metrics.length) return [];
  const rows = sample.metrics.map((m) => el("tr", {}, el("td", {}, m.layer), el("td", {}, m.metric),
    el("td", {}, typeof m.value === "number" ? m.value.toFixed(4) : String(m.value))));
  return [el("table", { id: "metrics-table" }, el("tr", {}, el("th", {}, "layer"), el("th", {}, "metric"),
    el("th", {}, "value")), ...rows)];
}

function buildPlayer() {
  const play = el("button", { id: "play" }, "play");
  play.addEventListener("click", () => setPlaying(!player.playing));
  const prev = el("button", { id: "prev" }, "\u25c0 frame");
  prev.addEventListener("click", () => { setPlaying(false); step(-1); });
  const next = el("button", { id: "next" }, "frame \u25b6");
  next.addEventListener("click", () => { setPlaying(false); step(1); });
  const scrub = el("input", { type: "range", id: "scrub", min: 0, max: 0, value: 0 });
  scrub.addEventListener("input", () => { player.frame = Number(scrub.value); draw(); });
  return el("section", { id: "player" }, el("h2", { id: "sample-title" }),
    el("div", { class: "controls" }, play, prev, next, scrub, el("span", { id: "frame-label" })),
    el("div", { id: "tiles", class: "tiles" }), el("div", { id: "metrics" }));
}

function card(sample, index) {
  const blend = sample.layers.find((l) => l.name === "blend");
  const facts = el("dl", {});
  const rows = [["key", sample.key], ["origin", sample.origin], ["K", String(sample.K)]];
  Object.entries(sample.captions).forEach(([layer, text]) => rows.push(["caption " + layer, text]));
  Object.entries(sample.scores).forEach(([name, value]) => rows.push([name, JSON.stringify(value)]));
  rows.forEach(([k, v]) => facts.append(el("dt", {}, k), el("dd", {}, v)));
  const node = el("div", { class: "card", "data-index": index, "data-origin": sample.origin, "data-k": sample.K },
    el("img", { src: blend.frames[0], alt: sample.key }), facts);
  node.addEventListener("click", () => showSample(index));
  return node;
}

function filterSelect(id, label, values) {
  const select = el("select", { id }, el("option", { value: "" }, "all"));
  [...new Set(values)].sort().forEach((v) => select.append(el("option", { value: v }, v)));
  select.addEventListener("change", applyFilters);
  return el("label", {}, label + " ", select);
}

function applyFilters() {
  const origin = document.getElementById("filter-origin").value;
  const k = document.getElementById("filter-k").value;
  document.querySelectorAll(".card").forEach((c) => {
    const keep = (!origin || c.dataset.origin === origin) && (!k || c.dataset.k === k);
    c.style.display = keep ? "" : "none";
  });
}

function buildBrowser() {
  const samples = DATA.samples;
  return el("section", { id: "browser" }, el("h2", {}, `samples (${samples.length})`),
    el("div", { class: "controls" },
      filterSelect("filter-origin", "origin", samples.map((s) => s.origin)),
      filterSelect("filter-k", "K", samples.map((s) => String(s.K)))),
    el("div", { id: "grid", class: "grid" }, ...samples.map(card)));
}

function buildQuarantine() {
  const rows = DATA.quarantine;
  const columns = ["input", "stage", "error_type", "message", "attempts"];
  const table = el("table", { id: "quarantine" },
    el("tr", {}, ...columns.map((c) => el("th", {}, c))),
    ...rows.map((r) => el("tr", {}, ...columns.map((c) => el("td", {}, String(r[c] ?? ""))))));
  return el("section", {}, el("h2", {}, `quarantine (${rows.length})`), rows.length ? table : "nothing quarantined");
}

function main() {
  document.title = DATA.title;
  const root = document.getElementById("studio");
  root.append(el("h1", {}, DATA.title), el("p", {}, "from " + DATA.source));
  if (!DATA.samples.length) {
    root.append(el("p", {}, "no samples in this folder"));
    document.body.dataset.ready = "1";
    return;
  }
  root.append(buildPlayer());
  if (DATA.kind === "engine" || DATA.samples.length > 1) root.append(buildBrowser());
  if (DATA.kind === "engine") root.append(buildQuarantine());
  showSample(0);
}

main();
