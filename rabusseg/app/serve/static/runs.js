// Runs page: list, curves, evaluation summary, per-image gallery (worst first), comparison of two runs.
"use strict";

const $ = id => document.getElementById(id);
const view = {runs: [], current: null, details: null, rows: [], shown: 24};
const enc = name => name.split("/").map(encodeURIComponent).join("/");

function points(rows, key) { return rows.filter(r => r[key] !== undefined && r[key] !== null).map(r => [r.step, r[key]]); }

function drawCurves(curves) {
  const box = $("curves");
  box.innerHTML = "";
  const losses = {};
  for (const key of ["loss/total", "loss/sup", "loss/unsup", "loss/arp", "loss/cra"]) {
    const p = points(curves.train, key);
    if (p.length) losses[key.replace("loss/", "")] = p;
  }
  box.appendChild(rb.lineChart("training losses", losses));
  box.appendChild(rb.lineChart("learning rate", {lr: points(curves.train, "lr")}));
  if (curves.val.length) {
    const val = {dice: points(curves.val, "dice")};
    if (curves.val.some(r => r.teacher_dice !== undefined)) {
      val.student = points(curves.val, "student_dice"); val.teacher = points(curves.val, "teacher_dice");
    }
    box.appendChild(rb.lineChart("validation Dice", val));
  }
  if (curves.pseudo.length) {
    box.appendChild(rb.lineChart("pseudo-labels (monitored unlabelled images)", {
      "pseudo-label Dice": points(curves.pseudo, "pl_dice"), "student Dice": points(curves.pseudo, "student_dice"),
      "kept share": points(curves.pseudo, "kept_share"), "kept accuracy": points(curves.pseudo, "kept_accuracy"),
      "lesion share of kept": points(curves.pseudo, "kept_lesion_share")}));
  }
}

function drawSummary(name) {
  const ev = view.details.evaluations[name];
  const table = $("summary");
  table.innerHTML = "<thead><tr><th>metric</th><th>mean</th><th>std</th><th>95% CI</th><th>n</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const [metric, s] of Object.entries(ev.metrics)) {
    const ci = s.ci95 ? `[${rb.fmt(s.ci95[0])}, ${rb.fmt(s.ci95[1])}]` : "–";
    body.insertAdjacentHTML("beforeend", `<tr><td>${metric}</td><td>${rb.fmt(s.mean)}</td><td>${rb.fmt(s.std)}</td><td>${ci}</td><td>${s.n ?? "–"}</td></tr>`);
  }
  table.appendChild(body);
}

async function loadGallery() {
  const evaluation = $("evaluation").value;
  const data = await rb.json(`/api/runs/${enc(view.current)}/gallery?evaluation=${encodeURIComponent(evaluation)}`);
  view.rows = data.rows; view.images = data.images; view.shown = 24;
  $("gallery-note").textContent = data.note || "";
  $("gallery-view").hidden = false;
  drawGallery();
}

function drawGallery() {
  const order = $("order").value, rows = [...view.rows];
  if (order === "worst") rows.sort((a, b) => (a.dice ?? 0) - (b.dice ?? 0));
  else if (order === "best") rows.sort((a, b) => (b.dice ?? 0) - (a.dice ?? 0));
  else rows.sort((a, b) => a.id.localeCompare(b.id));
  const box = $("gallery");
  box.innerHTML = "";
  const evaluation = encodeURIComponent($("evaluation").value);
  for (const r of rows.slice(0, view.shown)) {
    const fig = document.createElement("figure");
    fig.dataset.id = r.id; fig.dataset.dice = r.dice;
    if (view.images) fig.innerHTML = `<img loading="lazy" alt="${r.id}" src="/api/runs/${enc(view.current)}/images/${encodeURIComponent(r.id)}.png?evaluation=${evaluation}">`;
    fig.insertAdjacentHTML("beforeend", `<figcaption>${r.id} · ${r.class ?? ""} · Dice ${rb.fmt(r.dice)}</figcaption>`);
    box.appendChild(fig);
  }
  if (rows.length > view.shown) {
    const more = document.createElement("button");
    more.textContent = `show ${Math.min(24, rows.length - view.shown)} more of ${rows.length - view.shown}`;
    more.onclick = () => { view.shown += 24; drawGallery(); };
    box.appendChild(more);
  }
}

async function compare() {
  const b = $("compare-with").value;
  if (!b) return;
  try {
    const c = await rb.json(`/api/compare?a=${encodeURIComponent(view.current)}&b=${encodeURIComponent(b)}&evaluation=${encodeURIComponent($("evaluation").value)}`);
    $("compare-summary").textContent = `${c.n} images${c.same_split ? ` of ${c.split}` : " (different splits!)"}: ` +
      `${b} better on ${c.wins_b}, ${view.current} better on ${c.wins_a}, ${c.ties} ties; mean Dice difference (B − A) ${c.mean_diff >= 0 ? "+" : ""}${c.mean_diff.toFixed(3)}`;
    const svg = $("scatter"), ns = "http://www.w3.org/2000/svg";
    svg.innerHTML = `<rect x="30" y="10" width="280" height="280" fill="#fff" stroke="#ccc"/><line x1="30" y1="290" x2="310" y2="10" stroke="#9ca3af" stroke-dasharray="4"/>` +
      `<text x="170" y="315" font-size="11" text-anchor="middle">Dice ${view.current}</text><text x="12" y="150" font-size="11" transform="rotate(-90 12 150)" text-anchor="middle">Dice ${b}</text>`;
    for (const p of c.pairs) {
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("cx", 30 + 280 * (p.dice_a ?? 0)); dot.setAttribute("cy", 290 - 280 * (p.dice_b ?? 0)); dot.setAttribute("r", 3);
      dot.setAttribute("fill", (p.dice_b ?? 0) > (p.dice_a ?? 0) ? "#16a34a" : "#dc2626"); dot.setAttribute("fill-opacity", 0.6);
      const tip = document.createElementNS(ns, "title"); tip.textContent = `${p.id}: ${rb.fmt(p.dice_a)} → ${rb.fmt(p.dice_b)}`;
      dot.appendChild(tip); svg.appendChild(dot);
    }
    $("compare-table").innerHTML = "<thead><tr><th>image</th><th>Dice A</th><th>Dice B</th><th>B − A</th></tr></thead><tbody>" +
      c.most_different.map(p => `<tr><td>${p.id}</td><td>${rb.fmt(p.dice_a)}</td><td>${rb.fmt(p.dice_b)}</td><td>${p.diff >= 0 ? "+" : ""}${p.diff.toFixed(3)}</td></tr>`).join("") + "</tbody>";
    rb.showError("");
  } catch (err) { rb.showError(err.message); }
}

async function select(name) {
  view.current = name;
  for (const tr of $("run-rows").children) tr.classList.toggle("selected", tr.dataset.name === name);
  try {
    view.details = await rb.json(`/api/runs/${enc(name)}/details`);
  } catch (err) { rb.showError(err.message); return; }
  $("run-title").textContent = name;
  $("run-view").hidden = false;
  drawCurves(view.details.curves);
  const evals = Object.keys(view.details.evaluations);
  rb.options($("evaluation"), evals);
  $("compare-view").hidden = !evals.length;
  rb.options($("compare-with"), ["", ...view.runs.map(r => r.name).filter(n => n !== name)], ["(choose a run)", ...view.runs.map(r => r.name).filter(n => n !== name)]);
  if (evals.length) { drawSummary(evals[0]); await loadGallery(); } else { $("summary").innerHTML = "<tr><td>no evaluation yet</td></tr>"; $("gallery-view").hidden = true; }
}

async function init() {
  $("evaluation").addEventListener("change", () => { drawSummary($("evaluation").value); loadGallery(); });
  $("order").addEventListener("change", drawGallery);
  $("compare-with").addEventListener("change", compare);
  try { view.runs = await rb.json("/api/runs"); } catch (err) { rb.showError(err.message); return; }
  const body = $("run-rows");
  for (const r of view.runs) {
    const tr = document.createElement("tr");
    tr.dataset.name = r.name; tr.dataset.testid = "run";
    tr.innerHTML = `<td>${r.name}</td><td>${r.method ?? "–"}</td><td>${r.steps ?? "–"}</td><td>${rb.fmt(r.test_dice)}</td>`;
    tr.onclick = () => select(r.name);
    body.appendChild(tr);
  }
  if (!view.runs.length) body.innerHTML = "<tr><td colspan=4 class=note>no runs found</td></tr>";
  document.body.dataset.ready = "1";
}

init();
