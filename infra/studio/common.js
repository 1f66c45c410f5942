// What both studio pages share: element building and the checkerboard drawn under transparent layers.
"use strict";

const DATA = window.STUDIO_DATA;
const CHECKER = ["rgb(204,204,204)", "rgb(153,153,153)"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((c) => node.append(c));
  return node;
}

function drawChecker(ctx, sample) {
  const cell = sample.cell;
  for (let y = 0; y < sample.height; y += cell) {
    for (let x = 0; x < sample.width; x += cell) {
      ctx.fillStyle = CHECKER[(Math.floor(y / cell) + Math.floor(x / cell)) % 2];
      ctx.fillRect(x, y, cell, cell);
    }
  }
}
