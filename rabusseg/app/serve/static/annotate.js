// Annotate page: uncertainty queue, brush/eraser on the model's mask, undo/redo, safe save.
"use strict";

const $ = id => document.getElementById(id);
const ann = {id: null, image: null, mask: null, w: 0, h: 0, undo: [], redo: [], drawing: false, last: null};

function baseOf(split) { return split.replace(/\/unlabeled$/, ""); }

function draw() {
  const canvas = $("annotate"), ctx = canvas.getContext("2d");
  canvas.width = ann.w; canvas.height = ann.h;
  ctx.drawImage(ann.image, 0, 0);
  const frame = ctx.getImageData(0, 0, ann.w, ann.h), px = frame.data, m = ann.mask, w = ann.w;
  for (let i = 0; i < m.length; i++) {
    if (!m[i]) continue;
    const x = i % w, y = (i / w) | 0;
    const edge = x === 0 || y === 0 || x === w - 1 || y === ann.h - 1 || !m[i - 1] || !m[i + 1] || !m[i - w] || !m[i + w];
    if (edge) { px[4 * i] = 250; px[4 * i + 1] = 204; px[4 * i + 2] = 21; }
    else { px[4 * i] = 0.6 * px[4 * i] + 0.4 * 239; px[4 * i + 1] = 0.6 * px[4 * i + 1] + 0.4 * 68; px[4 * i + 2] = 0.6 * px[4 * i + 2] + 0.4 * 68; }
  }
  ctx.putImageData(frame, 0, 0);
  canvas.dataset.lesionPx = m.reduce((a, b) => a + b, 0);
}

function paint(x, y) {
  const r = Number($("brush-size").value), value = $("tool-eraser").checked ? 0 : 1;
  const x0 = Math.max(0, Math.floor(x - r)), x1 = Math.min(ann.w - 1, Math.ceil(x + r));
  const y0 = Math.max(0, Math.floor(y - r)), y1 = Math.min(ann.h - 1, Math.ceil(y + r));
  for (let yy = y0; yy <= y1; yy++) for (let xx = x0; xx <= x1; xx++) {
    if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) ann.mask[yy * ann.w + xx] = value;
  }
}

function stroke(from, to) {  // paint along the segment so fast strokes have no gaps
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / 2));
  for (let s = 0; s <= steps; s++) paint(from[0] + (to[0] - from[0]) * s / steps, from[1] + (to[1] - from[1]) * s / steps);
}

function imageXY(event) {
  const rect = $("annotate").getBoundingClientRect();
  return [(event.clientX - rect.left) * ann.w / rect.width, (event.clientY - rect.top) * ann.h / rect.height];
}

function pushUndo() { ann.undo.push(ann.mask.slice()); if (ann.undo.length > 50) ann.undo.shift(); ann.redo = []; }
function undo() { if (ann.undo.length) { ann.redo.push(ann.mask); ann.mask = ann.undo.pop(); draw(); } }
function redo() { if (ann.redo.length) { ann.undo.push(ann.mask); ann.mask = ann.redo.pop(); draw(); } }

async function open(id) {
  ann.id = id;
  for (const li of $("queue").children) li.classList.toggle("current", li.dataset.id === id);
  $("annotate-status").textContent = `Loading ${id} …`;
  try {
    const q = new URLSearchParams({checkpoint: $("checkpoint").value});
    const [image, pred, info] = await Promise.all([rb.loadImage(`/api/annotate/images/${encodeURIComponent(id)}.png`),
      rb.loadImage(`/api/annotate/images/${encodeURIComponent(id)}/prediction.png?${q}`), rb.json(`/api/annotate/images/${encodeURIComponent(id)}/info`)]);
    ann.image = image; ann.w = image.naturalWidth; ann.h = image.naturalHeight;
    const grey = rb.pixels(pred);
    ann.mask = new Uint8Array(grey.length);
    for (let i = 0; i < grey.length; i++) ann.mask[i] = grey[i] > 127 ? 1 : 0;
    ann.undo = []; ann.redo = []; ann.hasMask = info.has_mask;
    $("tools").hidden = false;
    draw();
    $("annotate").dataset.ready = "1";
    $("annotate-status").textContent = `${id} (${info.class || "unknown class"}): the model's mask as a start${info.has_mask ? "; a mask file already exists" : ""}.`;
    rb.showError("");
  } catch (err) { rb.showError(err.message); }
}

async function save(overwrite = false) {
  if (!ann.mask) return;
  const c = document.createElement("canvas");
  c.width = ann.w; c.height = ann.h;
  const ctx = c.getContext("2d"), img = ctx.createImageData(ann.w, ann.h);
  for (let i = 0; i < ann.mask.length; i++) { const v = ann.mask[i] ? 255 : 0; img.data.set([v, v, v, 255], 4 * i); }
  ctx.putImageData(img, 0, 0);
  const blob = await new Promise(resolve => c.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("split", $("split").value); form.append("target", $("target").value); form.append("overwrite", overwrite);
  form.append("mask", blob, `${ann.id}.png`);
  try {
    const out = await rb.json(`/api/annotate/images/${encodeURIComponent(ann.id)}/mask`, {method: "POST", body: form});
    $("annotate-status").textContent = `Saved ${out.mask} (${out.lesion_px} lesion px); ${out.labeled} now has ${out.labeled_count} images.`;
    $("train-command").hidden = false;
    $("train-command").textContent = `Train with the new labels:\n${out.command}`;
    const li = [...$("queue").children].find(l => l.dataset.id === ann.id);
    if (li) li.classList.add("saved");
    rb.showError("");
  } catch (err) {
    if (err.status === 409 && !overwrite) {
      if (window.confirm(`${err.message}\n\nReplace the existing mask of ${ann.id}?`)) return save(true);
      $("annotate-status").textContent = "Not saved: the existing mask was kept.";
      return;
    }
    rb.showError(err.message);
  }
}

function showQueue(rows) {
  const list = $("queue");
  list.innerHTML = "";
  for (const r of rows) {
    const li = document.createElement("li");
    li.dataset.id = r.id; li.dataset.testid = "queue-item"; li.setAttribute("data-testid", "queue-item");
    li.textContent = `${r.id} (score ${rb.fmt(r.score)})`;
    li.onclick = () => open(r.id);
    list.appendChild(li);
  }
}

async function rank() {
  const q = new URLSearchParams({split: $("split").value, checkpoint: $("checkpoint").value});
  const bar = $("rank-progress");
  try {
    let job = await rb.json(`/api/annotate/rank?${q}`, {method: "POST"});
    bar.hidden = false;
    while (job.state === "running") {
      bar.max = job.total || 1; bar.value = job.done;
      $("annotate-status").textContent = `Ranking ${job.done} / ${job.total} …`;
      await new Promise(resolve => setTimeout(resolve, 400));
      job = await rb.json(`/api/annotate/rank?${q}`);
    }
    bar.value = bar.max;
    if (job.state === "failed") throw new Error(job.error);
    showQueue(job.rows);
    $("annotate-status").textContent = `${job.rows.length} images ranked; pick one.`;
  } catch (err) { rb.showError(err.message); }
}

async function init() {
  $("split").addEventListener("change", () => { $("target").value = `${baseOf($("split").value)}_annotated`; });
  $("rank").addEventListener("click", rank);
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });
  const canvas = $("annotate");
  canvas.addEventListener("pointerdown", e => {
    if (!ann.mask) return;
    pushUndo(); ann.drawing = true; ann.last = imageXY(e); paint(...ann.last); draw();
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", e => { if (!ann.drawing) return; const p = imageXY(e); stroke(ann.last, p); ann.last = p; draw(); });
  const end = () => { ann.drawing = false; };
  canvas.addEventListener("pointerup", end); canvas.addEventListener("pointerleave", end);
  $("undo").addEventListener("click", undo); $("redo").addEventListener("click", redo); $("save").addEventListener("click", () => save());
  document.addEventListener("keydown", e => {
    if (e.target.tagName === "INPUT" && e.target.type === "text") return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); e.shiftKey ? redo() : undo(); }
    else if ((e.ctrlKey || e.metaKey) && key === "y") { e.preventDefault(); redo(); }
    else if (key === "b") $("tool-brush").checked = true;
    else if (key === "e") $("tool-eraser").checked = true;
    else if (key === "[" || key === "]") { const s = $("brush-size"); s.value = Number(s.value) + (key === "]" ? 2 : -2); $("brush-size-value").textContent = s.value; }
    else if (key === "s" && !e.ctrlKey) save();
  });
  try {
    const [lists, checkpoints] = await Promise.all([rb.json("/api/annotate/lists"), rb.json("/api/checkpoints")]);
    rb.options($("split"), lists.lists);
    rb.options($("checkpoint"), checkpoints.map(c => c.name));
    $("target").value = lists.lists.length ? `${baseOf(lists.lists[0])}_annotated` : "";
  } catch (err) { rb.showError(err.message); }
  document.body.dataset.ready = "1";
}

init();
