// The user-study page: each prompt's two outputs side by side (sides drawn and recorded by `layerflow study make`),
// the paper's questions per item, and the answers saved as a JSON file the participant downloads.
// Reads window.STUDIO_DATA (assets/data.js) through common.js; loads nothing else.
"use strict";

const SHOWN_LAYERS = ["fg", "bg", "blend"];
const views = [];  // {canvas, sample, frames: [Image], rgba}

function layerView(sample, name, id) {
  const layer = sample.layers.find((l) => l.name === name);
  const canvas = el("canvas", { id, width: sample.width, height: sample.height });
  const scale = Math.max(1, Math.floor(200 / sample.width));
  canvas.style.width = sample.width * scale + "px";
  canvas.style.height = sample.height * scale + "px";
  const frames = layer.frames.map((src) => { const img = new Image(); img.src = src; return img; });
  views.push({ canvas, sample, frames, rgba: layer.kind === "rgba" });
  return el("figure", { class: "tile" }, canvas, el("figcaption", {}, name));
}

function drawAll(tick) {
  views.forEach((v) => {
    const ctx = v.canvas.getContext("2d");
    ctx.clearRect(0, 0, v.sample.width, v.sample.height);
    if (v.rgba) drawChecker(ctx, v.sample);
    ctx.drawImage(v.frames[tick % v.frames.length], 0, 0);
  });
}

function answers() {
  const rater = document.getElementById("rater").value.trim();
  const chosen = [];
  DATA.items.forEach((item) => {
    DATA.questions.forEach((q) => {
      const picked = document.querySelector(`input[name="${item.id}/${q.id}"]:checked`);
      if (picked) chosen.push({ item: item.id, question: q.id, side: picked.value, system: item.sides[picked.value] });
    });
  });
  return { rater, study_seed: DATA.seed, items: DATA.items.length, questions: DATA.questions.length, answers: chosen };
}

function updateDownload() {
  const result = answers();
  const link = document.getElementById("download");
  link.href = "data:application/json;charset=utf-8," + encodeURIComponent(JSON.stringify(result, null, 1));
  link.download = `answers-${result.rater || "anonymous"}.json`;
  const total = DATA.items.length * DATA.questions.length;
  document.getElementById("progress").textContent = `${result.answers.length} / ${total} answered`;
}

function question(item, q) {
  const choices = ["left", "right"].map((side) => {
    const id = `${item.id}-${q.id}-${side}`;
    const radio = el("input", { type: "radio", name: `${item.id}/${q.id}`, value: side, id });
    radio.addEventListener("change", updateDownload);
    return el("label", { for: id }, radio, " " + side + " ");
  });
  return el("div", { class: "controls" }, el("span", {}, q.text), ...choices);
}

function itemSection(item) {
  const captions = el("dl", {});
  Object.entries(item.captions).forEach(([layer, text]) => captions.append(el("dt", {}, layer), el("dd", {}, text)));
  const side = (name) => el("div", {}, el("h3", {}, name),
    el("div", { class: "tiles" }, ...SHOWN_LAYERS.map((layer) => layerView(item[name], layer, `${item.id}-${name}-${layer}`))));
  return el("section", { class: "item", id: item.id }, el("h2", {}, `${item.id}: ${item.prompt}`), captions,
    el("div", { class: "tiles" }, side("left"), side("right")), ...DATA.questions.map((q) => question(item, q)));
}

function main() {
  document.title = DATA.title;
  const rater = el("input", { id: "rater", placeholder: "your name or id" });
  rater.addEventListener("input", updateDownload);
  const root = document.getElementById("studio");
  root.append(el("h1", {}, DATA.title),
    el("p", {}, "For each prompt, two systems' layered videos play side by side. Answer every question, then save your answers and send the file back."),
    el("div", { class: "controls" }, el("label", { for: "rater" }, "rater "), rater),
    ...DATA.items.map(itemSection),
    el("div", { class: "controls" }, el("a", { id: "download", href: "#" }, "save answers (JSON)"), el("span", { id: "progress" })));
  updateDownload();
  Promise.all(views.flatMap((v) => v.frames.map((img) => img.decode()))).then(() => {
    let tick = 0;
    drawAll(tick);
    setInterval(() => { tick += 1; drawAll(tick); }, 1000 / (DATA.items[0] ? DATA.items[0].left.fps : 8));
    document.body.dataset.ready = "1";
  });
}

main();
