// Segment page: upload, predict, re-threshold in the browser from the probability map.
"use strict";

const CONTOUR = [250, 204, 21];  // yellow outline
const FILL = [239, 68, 68];      // red fill
const state = {upload: null, frame: 0, image: null, probs: null, entropy: null, variance: null, pred: null};
const $ = id => document.getElementById(id);

function heat(v) {  // 0..255 -> a blue-to-red ramp
  const t = v / 255;
  return [Math.round(255 * Math.min(1, 2 * t)), Math.round(255 * (1 - Math.abs(2 * t - 1))), Math.round(255 * Math.min(1, 2 - 2 * t))];
}

function lesionMask(threshold) {
  const cut = threshold * 255, probs = state.probs, mask = new Uint8Array(probs.length);
  for (let i = 0; i < probs.length; i++) mask[i] = probs[i] > cut ? 1 : 0;
  return mask;
}

function render() {
  if (!state.image || !state.probs) return;
  const canvas = $("overlay"), w = state.image.naturalWidth, h = state.image.naturalHeight;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(state.image, 0, 0);
  const frame = ctx.getImageData(0, 0, w, h), px = frame.data;
  const threshold = Number($("threshold").value), alpha = Number($("opacity").value);
  const mask = lesionMask(threshold);
  if ($("show-heat").checked) {
    for (let i = 0; i < mask.length; i++) {
      const c = heat(state.probs[i]);
      for (let k = 0; k < 3; k++) px[4 * i + k] = 0.5 * px[4 * i + k] + 0.5 * c[k];
    }
  }
  if ($("show-uncertainty").checked && state.entropy) {
    const u = state.variance || state.entropy;
    for (let i = 0; i < mask.length; i++) {
      const v = u[i] / 255;
      px[4 * i] = (1 - v) * px[4 * i] + v * 255; px[4 * i + 1] = (1 - v) * px[4 * i + 1]; px[4 * i + 2] = (1 - v) * px[4 * i + 2] + v * 255;
    }
  }
  if ($("show-overlay").checked) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
        for (let k = 0; k < 3; k++) px[4 * i + k] = edge ? CONTOUR[k] : (1 - alpha) * px[4 * i + k] + alpha * FILL[k];
      }
    }
  }
  ctx.putImageData(frame, 0, 0);
  canvas.dataset.ready = "1";
  canvas.dataset.threshold = threshold.toFixed(2);
  updateFigures(mask);
}

function updateFigures(mask) {
  let area = 0, sum = 0, ent = 0;
  for (let i = 0; i < mask.length; i++) {
    ent += state.entropy ? state.entropy[i] : 0;
    if (mask[i]) { area++; sum += state.probs[i]; }
  }
  const info = state.upload, spacing = info.spacing_mm;
  $("fig-name").textContent = info.frames > 1 ? `${info.name} (frame ${state.frame})` : info.name;
  $("fig-size").textContent = `${info.width} × ${info.height} px`;
  $("fig-area").textContent = `${area} px`;
  $("fig-area").dataset.value = area;
  $("fig-area-mm").textContent = spacing ? (area * spacing[0] * spacing[1]).toFixed(1) : "spacing unknown";
  $("fig-mean-p").textContent = area ? (sum / area / 255).toFixed(3) : "–";
  $("fig-uncertainty").textContent = (ent / mask.length / 255).toFixed(3);
  const t = Number($("threshold").value).toFixed(2);
  for (const [id, key] of [["dl-mask", "mask"], ["dl-overlay", "overlay"], ["dl-probs", "probabilities"], ["dl-csv", "figures"]]) {
    $(id).href = `${state.pred.downloads[key]}&threshold=${t}`;
  }
}

async function predict() {
  const info = state.upload;
  $("overlay").dataset.ready = "";
  $("status").textContent = `Segmenting ${info.name} …`;
  const query = new URLSearchParams({checkpoint: $("checkpoint").value, tta: $("tta").checked});
  try {
    state.pred = await rb.json(`/api/uploads/${info.id}/frames/${state.frame}/predict?${query}`, {method: "POST"});
    const base = `/api/uploads/${info.id}/frames/${state.frame}`;
    const [image, probs, entropy] = await Promise.all([
      rb.loadImage(`${base}/image.png`), rb.loadImage(state.pred.maps.probabilities), rb.loadImage(state.pred.maps.entropy)]);
    state.image = image; state.probs = rb.pixels(probs); state.entropy = rb.pixels(entropy);
    state.variance = state.pred.maps.variance ? rb.pixels(await rb.loadImage(state.pred.maps.variance)) : null;
    $("view-controls").hidden = false;
    rb.showError("");
    render();
    $("status").textContent = `${info.name}: ${info.width} × ${info.height}, model ${state.pred.checkpoint}${state.pred.tta ? ", TTA" : ""}`;
  } catch (err) {
    rb.showError(err.message);
    $("status").textContent = "Segmentation failed.";
  }
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  $("status").textContent = `Uploading ${file.name} …`;
  try {
    state.upload = await rb.json("/api/uploads", {method: "POST", body: form});
  } catch (err) {
    rb.showError(err.message);
    $("status").textContent = "Upload refused.";
    return;
  }
  state.frame = 0;
  $("frame").max = state.upload.frames - 1; $("frame").value = 0; $("frame-value").textContent = "0";
  $("frame-control").hidden = state.upload.frames < 2;
  await predict();
}

async function init() {
  // Listeners first: a file chosen while the model list is still loading must not be lost.
  $("file").addEventListener("change", e => e.target.files[0] && upload(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });
  for (const id of ["threshold", "opacity", "show-overlay", "show-heat", "show-uncertainty"]) $(id).addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
    render();
  });
  for (const id of ["checkpoint", "tta"]) $(id).addEventListener("change", () => state.upload && predict());
  $("frame").addEventListener("change", () => { state.frame = Number($("frame").value); $("frame-value").textContent = state.frame; predict(); });
  try {
    const checkpoints = await rb.json("/api/checkpoints");
    rb.options($("checkpoint"), checkpoints.map(c => c.name), checkpoints.map(c => `${c.name} (${c.size || "full"} px, ${c.resize})`));
    if (!checkpoints.length) rb.showError("No model loaded: start the server with --checkpoint FILE.pt");
  } catch (err) { rb.showError(err.message); }
  document.body.dataset.ready = "1";
}

init();
