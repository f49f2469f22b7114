// The demo page: plain JavaScript, drawing from the JSON of /api/* (SVG and canvas).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const state = { runs: [], limits: {}, run: null, image: null };

function element(id) {
  return document.getElementById(id);
}

function showError(message) {
  const box = element("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function svgNode(name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  return node;
}

async function callApi(path, options) {
  const response = await fetch(path, options);
  let body;
  try {
    body = await response.json();
  } catch (error) {
    throw new Error(`${path}: HTTP ${response.status}, not JSON`);
  }
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function fillNbest(list, nbest) {
  list.replaceChildren();
  for (const hypothesis of nbest) {
    const item = document.createElement("li");
    item.textContent = hypothesis.text;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hypothesis.score.toFixed(3);
    item.appendChild(score);
    list.appendChild(item);
  }
}

// -- runs ---------------------------------------------------------------------------------
async function loadRuns() {
  const answer = await callApi("/api/runs");
  state.runs = answer.runs;
  state.limits = answer.limits;
  const select = element("run-select");
  for (const run of state.runs) {
    const option = document.createElement("option");
    option.value = run.name;
    option.textContent = `${run.name} (${run.kind === "translate" ? "translation" : "captioning"})`;
    select.appendChild(option);
  }
  const wanted = new URLSearchParams(location.search).get("run");
  if (wanted && state.runs.some((run) => run.name === wanted)) select.value = wanted;
  select.addEventListener("change", () => chooseRun(select.value));
  element("limits").textContent =
    `Limits: text up to ${state.limits.max_text_characters} characters; images up to ` +
    `${(state.limits.max_image_bytes / 1e6).toFixed(1)} MB and ` +
    `${(state.limits.max_image_pixels / 1e6).toFixed(0)} megapixels; beam size up to ` +
    `${state.limits.max_beam_size}. Model calls are served one at a time.`;
  if (state.runs.length) chooseRun(select.value);
}

function chooseRun(name) {
  state.run = state.runs.find((run) => run.name === name);
  const run = state.run;
  const config = run.config;
  showError("");
  element("translate-section").hidden = run.kind !== "translate";
  element("caption-section").hidden = run.kind !== "caption";
  if (run.kind === "translate") {
    element("translate-beam").value = run.beam_size;
    element("translate-beam").max = state.limits.max_beam_size;
    element("run-description").textContent =
      `${config.attention} attention, ${config.units} units` +
      (config.data ? `, data ${config.data}` : ", generated number phrases (English to German)");
    element("translate-result").hidden = true;
  } else {
    element("caption-beam").value = run.beam_size;
    element("caption-beam").max = state.limits.max_beam_size;
    element("run-description").textContent =
      `${config.backbone} backbone, ${config.attention} attention` +
      (run.hard_attention ? " (hard)" : "") + `, ${run.grid[0]}x${run.grid[1]} regions` +
      (config.data ? `, data ${config.data}` : ", generated scenes");
    element("caption-result").hidden = true;
  }
}

// -- translation --------------------------------------------------------------------------
async function translate(event) {
  event.preventDefault();
  showError("");
  const status = element("translate-status");
  status.textContent = "translating…";
  element("translate-button").disabled = true;
  try {
    const started = performance.now();
    const answer = await callApi("/api/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        text: element("source-text").value,
        beam_size: Number(element("translate-beam").value),
        run: state.run.name,
      }),
    });
    showTranslation(answer);
    status.textContent = `${((performance.now() - started) / 1000).toFixed(2)} s` +
      (answer.truncated ? " (the text was cut to the run's --max-tokens)" : "");
  } catch (error) {
    status.textContent = "";
    showError(error.message);
  } finally {
    element("translate-button").disabled = false;
  }
}

function showTranslation(answer) {
  element("translation").textContent = answer.translation;
  fillNbest(element("translate-nbest"), answer.nbest);
  const weights = answer.attention;
  const sourceStrip = tokenStrip(element("source-strip"), answer.source_tokens, "source");
  const targetStrip = tokenStrip(element("target-strip"), answer.target_tokens, "target");
  const matrix = drawAlignment(element("alignment"), answer);
  // Hovering a token shows what it attended to (a target token: its row) or what attended
  // to it (a source token: its column), on the strips and in the matrix.
  function highlight(side, index) {
    clearHighlight();
    if (!weights.length) return;
    const own = side === "target" ? targetStrip : sourceStrip;
    const other = side === "target" ? sourceStrip : targetStrip;
    own[index].classList.add("active");
    const values = side === "target" ? weights[index] : weights.map((row) => row[index]);
    const largest = Math.max(...values, 1e-9);
    values.forEach((value, position) => {
      other[position].style.background = `rgba(255, 140, 0, ${(value / largest).toFixed(3)})`;
    });
    matrix.highlight(side, index);
  }
  function clearHighlight() {
    for (const token of [...sourceStrip, ...targetStrip]) {
      token.classList.remove("active");
      token.style.background = "";
    }
    matrix.clear();
  }
  sourceStrip.forEach((token, index) => {
    token.addEventListener("mouseenter", () => highlight("source", index));
    token.addEventListener("mouseleave", clearHighlight);
  });
  targetStrip.forEach((token, index) => {
    token.addEventListener("mouseenter", () => highlight("target", index));
    token.addEventListener("mouseleave", clearHighlight);
  });
  matrix.onHover = highlight;
  matrix.onLeave = clearHighlight;
  element("translate-result").hidden = false;
}

function tokenStrip(container, tokens, side) {
  container.replaceChildren();
  return tokens.map((token, index) => {
    const span = document.createElement("span");
    span.className = `token ${side}-token`;
    span.dataset.index = index;
    span.textContent = token;
    container.appendChild(span);
    return span;
  });
}

function drawAlignment(container, answer) {
  container.replaceChildren();
  const weights = answer.attention;
  const matrix = { highlight() {}, clear() {}, onHover: null, onLeave: null };
  if (!weights.length) {
    container.textContent = "This run has no attention to show.";
    return matrix;
  }
  const cell = 26;
  const left = 10 + 7.5 * Math.max(...answer.target_tokens.map((token) => token.length));
  const top = 10 + 6 * Math.max(...answer.source_tokens.map((token) => token.length));
  const width = left + cell * answer.source_tokens.length + 10;
  const height = top + cell * answer.target_tokens.length + 10;
  const svg = svgNode("svg", { width, height, role: "img", "aria-label": "alignment matrix" });
  const sourceLabels = answer.source_tokens.map((token, column) => {
    const x = left + column * cell + cell / 2;
    const label = svgNode("text", {
      x, y: top - 6, transform: `rotate(-55 ${x} ${top - 6})`, class: "source-label",
    });
    label.textContent = token;
    label.addEventListener("mouseenter", () => matrix.onHover("source", column));
    label.addEventListener("mouseleave", () => matrix.onLeave());
    svg.appendChild(label);
    return label;
  });
  const targetLabels = answer.target_tokens.map((token, row) => {
    const label = svgNode("text", {
      x: left - 6, y: top + row * cell + cell / 2 + 4, "text-anchor": "end", class: "target-label",
    });
    label.textContent = token;
    label.addEventListener("mouseenter", () => matrix.onHover("target", row));
    label.addEventListener("mouseleave", () => matrix.onLeave());
    svg.appendChild(label);
    return label;
  });
  const cells = weights.map((rowWeights, row) => rowWeights.map((weight, column) => {
    const rect = svgNode("rect", {
      x: left + column * cell, y: top + row * cell, width: cell - 1, height: cell - 1,
      class: "cell", fill: `rgb(${[31, 119, 180].map((c) => Math.round(255 - (255 - c) * weight)).join(",")})`,
    });
    const title = svgNode("title");
    title.textContent = `${answer.target_tokens[row]} → ${answer.source_tokens[column]}: ${weight.toFixed(3)}`;
    rect.appendChild(title);
    rect.addEventListener("mouseenter", () => matrix.onHover("target", row));
    rect.addEventListener("mouseleave", () => matrix.onLeave());
    svg.appendChild(rect);
    return rect;
  }));
  matrix.highlight = (side, index) => {
    (side === "target" ? targetLabels : sourceLabels)[index].classList.add("active");
    const chosen = side === "target" ? cells[index] : cells.map((row) => row[index]);
    chosen.forEach((rect) => rect.classList.add("active"));
  };
  matrix.clear = () => {
    for (const label of [...sourceLabels, ...targetLabels]) label.classList.remove("active");
    for (const rect of cells.flat()) rect.classList.remove("active");
  };
  container.appendChild(svg);
  return matrix;
}

// -- captioning ---------------------------------------------------------------------------
async function captionFile(file) {
  showError("");
  if (!file) return;
  const status = element("caption-status");
  status.textContent = "captioning…";
  const form = new FormData();
  form.append("image", file);
  form.append("beam_size", element("caption-beam").value);
  form.append("run", state.run.name);
  try {
    const started = performance.now();
    const answer = await callApi("/api/caption", { method: "POST", body: form });
    const image = await loadImage(file);
    showCaption(answer, image);
    status.textContent = `${file.name}: ${((performance.now() - started) / 1000).toFixed(2)} s`;
  } catch (error) {
    status.textContent = "";
    showError(error.message);
  }
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    const url = URL.createObjectURL(file);
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`${file.name}: the browser cannot show this image`));
    image.src = url;
  });
}

function showCaption(answer, image) {
  element("caption").textContent = answer.caption;
  const preview = element("preview");
  preview.src = image.src;
  fillNbest(element("caption-nbest"), answer.nbest);
  const [rows, columns] = answer.grid;
  element("grid-description").textContent =
    `(${rows}x${columns} regions; lighter: more attention` +
    (answer.hard_attention ? "; hard: the region of most attention" : "") + ")";
  const panels = element("panels");
  panels.replaceChildren();
  answer.tokens.forEach((token, step) => {
    const weights = answer.attention[step];
    const box = document.createElement("div");
    box.className = "panel";
    box.appendChild(attentionCanvas(image, weights, rows, columns, "soft"));
    if (answer.hard_attention) {
      const hard = weights.map((_, region) => (region === answer.hard[step] ? 1 : 0));
      box.appendChild(attentionCanvas(image, hard, rows, columns, "hard"));
    }
    const word = document.createElement("div");
    word.className = "word";
    word.textContent = token;
    box.appendChild(word);
    panels.appendChild(box);
  });
  element("panel-legend").textContent = answer.hard_attention
    ? "In each panel: soft attention above, hard (its region of most attention) below."
    : "";
  element("caption-result").hidden = false;
}

// The image as the model saw it (squashed to a square), each region dimmed by how little
// attention it had and lit by how much (white, which shows on dark images too).
function attentionCanvas(image, weights, rows, columns, kind) {
  const size = 150;
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  canvas.className = kind;
  canvas.title = kind === "soft" ? "soft attention" : "hard attention";
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, size, size);
  const largest = Math.max(...weights, 1e-9);
  for (let row = 0; row < rows; row++) {
    for (let column = 0; column < columns; column++) {
      const weight = weights[row * columns + column] / largest;
      const x0 = Math.round((column * size) / columns);
      const y0 = Math.round((row * size) / rows);
      const x1 = Math.round(((column + 1) * size) / columns);
      const y1 = Math.round(((row + 1) * size) / rows);
      context.fillStyle = `rgba(0, 0, 0, ${(0.75 * (1 - weight)).toFixed(3)})`;
      context.fillRect(x0, y0, x1 - x0, y1 - y0);
      context.fillStyle = `rgba(255, 255, 255, ${(0.45 * weight).toFixed(3)})`;
      context.fillRect(x0, y0, x1 - x0, y1 - y0);
    }
  }
  return canvas;
}

function setUpDropZone() {
  const zone = element("drop-zone");
  element("image-file").addEventListener("change", (event) => captionFile(event.target.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    captionFile(event.dataTransfer.files[0]);
  });
}

element("translate-form").addEventListener("submit", translate);
setUpDropZone();
loadRuns().catch((error) => showError(error.message));
