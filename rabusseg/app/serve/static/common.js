// Shared helpers of the workbench pages: fetch with JSON errors, the error banner, tiny SVG charts.
"use strict";

const rb = {
  showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = !message;
  },
  async json(url, options = {}) {
    const response = await fetch(url, options);
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  },
  loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(`could not load ${url}`));
      img.src = url;
    });
  },
  pixels(img) {  // grey values (R channel) of an image, as a Uint8ClampedArray of w*h
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
    const out = new Uint8ClampedArray(c.width * c.height);
    for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
    return out;
  },
  fmt(x, digits = 3) { return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits); },
  // A line chart: series = {label: [[x, y], ...]} drawn into a new <svg>.
  lineChart(title, series, width = 330, height = 200) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", width); svg.setAttribute("height", height);
    svg.setAttribute("data-title", title);
    const all = Object.values(series).flat().filter(p => Number.isFinite(p[1]));
    const colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
    const pad = {l: 42, r: 8, t: 20, b: 24};
    const text = (x, y, s, anchor = "start", size = 11) => {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("font-size", size); t.setAttribute("text-anchor", anchor);
      t.textContent = s; svg.appendChild(t); return t;
    };
    text(pad.l, 13, title, "start", 12);
    if (!all.length) { text(width / 2, height / 2, "no data", "middle"); return svg; }
    const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
    const sx = x => pad.l + (x - x0) / ((x1 - x0) || 1) * (width - pad.l - pad.r);
    const sy = y => height - pad.b - (y - y0) / ((y1 - y0) || 1) * (height - pad.t - pad.b);
    text(pad.l - 4, sy(y1) + 4, y1.toPrecision(3), "end", 10); text(pad.l - 4, sy(y0), y0.toPrecision(3), "end", 10);
    text(width - pad.r, height - 6, `step ${x1}`, "end", 10);
    Object.entries(series).forEach(([label, pts], k) => {
      pts = pts.filter(p => Number.isFinite(p[1]));
      if (!pts.length) return;
      const path = document.createElementNS(ns, "polyline");
      path.setAttribute("points", pts.map(p => `${sx(p[0])},${sy(p[1])}`).join(" "));
      path.setAttribute("fill", "none"); path.setAttribute("stroke", colors[k % colors.length]); path.setAttribute("stroke-width", 1.6);
      svg.appendChild(path);
      const legend = text(width - pad.r, pad.t + 12 * (k + 1), label, "end", 10);
      legend.setAttribute("fill", colors[k % colors.length]);
    });
    return svg;
  },
  options(select, values, labels = values) {
    select.innerHTML = "";
    values.forEach((v, i) => { const o = document.createElement("option"); o.value = v; o.textContent = labels[i]; select.appendChild(o); });
  },
};
