// zoo serve: the interactive map. Draws /api/map's points as SVG, coloured by a label,
// each group's region outlined by its convex hull; hover names a model, click opens it.
"use strict";

(function () {
  const box = document.getElementById("map");
  if (!box) return;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 900, H = 600, PAD = 40;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  const colorBy = box.dataset.color || "dataset";
  const focus = box.dataset.focus || "";
  const hover = document.getElementById("hover");

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  // Andrew's monotone chain: the hull of a group's points, counter-clockwise.
  function hull(pts) {
    const p = pts.slice().sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    if (p.length < 3) return p;
    const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    const lower = [], upper = [];
    for (const q of p) {
      while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], q) <= 0) lower.pop();
      lower.push(q);
    }
    for (const q of p.slice().reverse()) {
      while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], q) <= 0) upper.pop();
      upper.push(q);
    }
    return lower.slice(0, -1).concat(upper.slice(0, -1));
  }

  function draw(data) {
    box.textContent = "";
    const pts = data.points;
    if (!pts.length) {
      box.textContent = "no models to draw in family " + data.family;
      return;
    }
    const xs = pts.map(p => p.x), ys = pts.map(p => p.y);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    // One scale for both axes: distances on the page keep their proportions.
    const span = Math.max((x1 - x0) / (W - 2 * PAD), (y1 - y0) / (H - 2 * PAD)) || 1;
    const sx = v => W / 2 + (v - (x0 + x1) / 2) / span;
    const sy = v => H / 2 - (v - (y0 + y1) / 2) / span;
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                           "aria-label": `map of family ${data.family}`}, box);
    const groups = [...new Set(pts.map(p => p[colorBy] ?? "(none)"))].sort();
    const color = g => PALETTE[groups.indexOf(g) % PALETTE.length];
    const regions = el("g", {class: "regions"}, svg);
    if (colorBy !== "kind") {
      for (const g of groups) {
        if (g === "(none)") continue;
        const h = hull(pts.filter(p => (p[colorBy] ?? "(none)") === g).map(p => [sx(p.x), sy(p.y)]));
        if (h.length < 2) continue;
        el(h.length === 2 ? "polyline" : "polygon",
           {points: h.map(q => q.join(",")).join(" "), class: "region", stroke: color(g), fill: color(g),
            "data-group": g}, regions);
      }
    }
    const dots = el("g", {class: "points"}, svg);
    for (const p of pts) {
      const g = p[colorBy] ?? "(none)";
      const c = el("circle", {cx: sx(p.x), cy: sy(p.y), r: p.name === focus ? 8 : 5, fill: color(g),
                              class: "point" + (p.name === focus ? " focus" : ""), "data-name": p.name,
                              tabindex: 0}, dots);
      el("title", {}, c).textContent = `${p.name} (${p.kind}; dataset ${p.dataset ?? "-"}, task ${p.task ?? "-"})`;
      const say = () => { hover.textContent = `${p.name}: ${p.kind}, dataset ${p.dataset ?? "-"}, task ${p.task ?? "-"}`; };
      c.addEventListener("mouseenter", say);
      c.addEventListener("focus", say);
      const open = () => { window.location.href = "/models/" + encodeURIComponent(p.name); };
      c.addEventListener("click", open);
      c.addEventListener("keydown", e => { if (e.key === "Enter") open(); });
    }
    const legend = document.createElement("ul");
    legend.className = "legend";
    for (const g of groups) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = color(g);
      li.appendChild(sw);
      li.appendChild(document.createTextNode(`${colorBy} ${g}`));
      legend.appendChild(li);
    }
    box.appendChild(legend);
    const ex = data.explained && data.explained.length ? ` (PC1 ${(100 * data.explained[0]).toFixed(0)} %, ` +
      `PC2 ${(100 * data.explained[1]).toFixed(0)} % of variance)` : "";
    const cap = document.createElement("p");
    cap.className = "note";
    const shown = pts.length < data.total ? `${pts.length} of ${data.total} models (a uniform sample)` :
      `${pts.length} models`;
    cap.textContent = `${shown} of family ${data.family}, ${data.method.toUpperCase()} of d=${data.dim} sketches${ex}`;
    box.appendChild(cap);
    box.dataset.drawn = String(pts.length);
  }

  fetch(box.dataset.src).then(r => r.json().then(d => ({ok: r.ok, d}))).then(({ok, d}) => {
    if (!ok) throw new Error(d.error || "the map could not be drawn");
    draw(d);
  }).catch(e => {
    box.textContent = String(e.message || e);
    box.classList.add("error");
    box.dataset.drawn = "0";
  });
})();
