// salesfc dashboard: small SVG line charts with a band, drawn from the API's JSON.
// No library, no build step: the pages load this one file from the app itself.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const QUANTILES = "0.1,0.5,0.9";

function svgEl(tag, attrs, parent) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "-";
  const a = Math.abs(x);
  return a >= 1000 ? Math.round(x).toLocaleString("en") : a >= 10 ? x.toFixed(1) : x.toFixed(2);
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  opts.headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  const res = await fetch(path, opts);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${res.status} ${body.error || ""}: ${detail || res.statusText}`);
  }
  return body;
}

// spec: {labels: [x...], series: [{name, cls, values: [y|null...], dots}], band: {lo, hi, name},
//        yLabel}. Values line up with labels; null leaves a gap.
function drawChart(svg, spec) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const small = svg.classList.contains("small");
  const W = small ? 720 : 1000, H = small ? 240 : 320;
  const m = { l: 52, r: 12, t: 12, b: 40 };
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const n = spec.labels.length;
  const all = [];
  for (const s of spec.series) for (const v of s.values) if (v !== null) all.push(v);
  if (spec.band) for (const v of spec.band.hi) if (v !== null) all.push(v);
  const top = Math.max(1, ...all) * 1.08;
  const bottom = Math.min(0, ...all);
  const x = (i) => m.l + (n <= 1 ? 0 : (i * (W - m.l - m.r)) / (n - 1));
  const y = (v) => H - m.b - ((v - bottom) * (H - m.t - m.b)) / (top - bottom);
  const axes = svgEl("g", { class: "axes" }, svg);
  for (let k = 0; k <= 4; k++) {
    const v = bottom + ((top - bottom) * k) / 4;
    svgEl("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: "grid" }, axes);
    svgEl("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, axes).textContent = fmt(v);
  }
  const ticks = n <= 1 ? [0] : [0, Math.floor((n - 1) / 3), Math.floor((2 * (n - 1)) / 3), n - 1];
  for (const i of new Set(ticks)) {
    const anchor = i === 0 ? "start" : i === n - 1 ? "end" : "middle";
    svgEl("text", { x: x(i), y: H - m.b + 16, "text-anchor": anchor }, axes).textContent =
      String(spec.labels[i]);
  }
  if (spec.xLabel) {
    svgEl("text", { x: (W + m.l) / 2, y: H - 6, "text-anchor": "middle", class: "axis-label" }, axes)
      .textContent = spec.xLabel;
  }
  if (spec.band) {
    const idx = [];
    spec.band.lo.forEach((v, i) => { if (v !== null && spec.band.hi[i] !== null) idx.push(i); });
    const pts = idx.map((i) => `${x(i)},${y(spec.band.lo[i])}`)
      .concat(idx.slice().reverse().map((i) => `${x(i)},${y(spec.band.hi[i])}`));
    svgEl("polygon", { points: pts.join(" "), class: "band", "data-n": idx.length }, svg)
      .appendChild(svgEl("title", {})).textContent = spec.band.name || "P10-P90";
  }
  const legend = svgEl("g", { class: "legend" }, svg);
  let lx = m.l + 8;
  spec.series.forEach((s) => {
    const idx = [];
    s.values.forEach((v, i) => { if (v !== null) idx.push(i); });
    svgEl("polyline", {
      points: idx.map((i) => `${x(i)},${y(s.values[i])}`).join(" "),
      class: `line ${s.cls}`, "data-n": idx.length,
    }, svg);
    if (s.dots) {
      const g = svgEl("g", { class: `points ${s.cls}` }, svg);
      for (const i of idx) {
        const c = svgEl("circle", { cx: x(i), cy: y(s.values[i]), r: 2.6, class: `pt ${s.cls}` }, g);
        svgEl("title", {}, c).textContent = `${spec.labels[i]}: ${fmt(s.values[i])}`;
      }
    }
    svgEl("rect", { x: lx, y: m.t, width: 12, height: 4, class: `key ${s.cls}` }, legend);
    const t = svgEl("text", { x: lx + 16, y: m.t + 6 }, legend);
    t.textContent = s.name;
    lx += 24 + 7 * s.name.length;
  });
  if (spec.band) {
    svgEl("rect", { x: lx, y: m.t - 2, width: 12, height: 8, class: "key band" }, legend);
    svgEl("text", { x: lx + 16, y: m.t + 6 }, legend).textContent = spec.band.name || "P10-P90";
  }
}

function note(id, text, isError) {
  const p = document.getElementById(id);
  if (!p) return;
  p.textContent = text;
  p.classList.toggle("error", Boolean(isError));
}

// ------------------------------------------------------------------ overview: jobs' progress
function followJobs() {
  const rows = Array.from(document.querySelectorAll("tr.job"))
    .filter((r) => ["queued", "running"].includes(r.dataset.status));
  if (!rows.length) return;
  const tick = async () => {
    let active = 0;
    for (const row of rows) {
      if (!["queued", "running"].includes(row.dataset.status)) continue;
      try {
        const job = await api(`/v1/jobs/${encodeURIComponent(row.dataset.jobId)}`);
        row.dataset.status = job.status;
        row.querySelector(".status").textContent = job.status;
        row.querySelector("progress").value = job.progress;
        row.querySelector(".message").textContent = job.message || "";
        if (["queued", "running"].includes(job.status)) active += 1;
      } catch (err) { row.querySelector(".message").textContent = String(err.message); }
    }
    if (active) setTimeout(tick, 2000);
  };
  setTimeout(tick, 2000);
}

// ------------------------------------------------------------------ accuracy: by horizon
async function accuracyPage() {
  const svg = document.getElementById("by-horizon");
  if (!svg) return;
  try {
    const manifest = await api(`/v1/models/${encodeURIComponent(svg.dataset.version)}`);
    const byH = (manifest.metrics || {}).by_horizon || {};
    const hs = Object.keys(byH).map(Number).sort((a, b) => a - b);
    const pick = (k) => hs.map((h) => (byH[h][k] === undefined ? null : byH[h][k]));
    drawChart(svg, {
      labels: hs, xLabel: "days ahead",
      series: [
        { name: "RMSSE", cls: "mean", values: pick("rmsse"), dots: true },
        { name: "WAPE", cls: "whatif", values: pick("wape"), dots: true },
      ],
    });
    note("by-horizon-note", `${hs.length} horizons, from the bundle's backtest (GET /v1/models/{version}).`);
  } catch (err) { note("by-horizon-note", String(err.message), true); }
}

// ------------------------------------------------------------------ SKU page
let skuState = null;

function forecastSpec(history, fc, baseline) {
  const labels = history.map((d) => d.date).concat(fc.days.map((d) => d.date));
  const pad = (arr) => history.map(() => null).concat(arr);
  const series = [
    { name: "history", cls: "history", values: history.map((d) => d.units).concat(fc.days.map(() => null)) },
  ];
  if (baseline) series.push({ name: "baseline", cls: "baseline", values: pad(fc.days.map((d) => d.baseline_mean)) });
  series.push({ name: baseline ? "what-if" : "forecast", cls: baseline ? "whatif" : "mean",
    values: pad(fc.days.map((d) => d.mean)), dots: true });
  return {
    labels, series,
    band: { lo: pad(fc.days.map((d) => d.quantiles.p10)), hi: pad(fc.days.map((d) => d.quantiles.p90)), name: "P10-P90" },
  };
}

async function skuPage() {
  const island = document.getElementById("sku-data");
  if (!island) return;
  const data = JSON.parse(island.textContent);
  const sku = encodeURIComponent(data.sku);
  const svg = document.getElementById("forecast-chart");
  if (data.product.status === "discontinued") {
    drawChart(svg, { labels: data.history.map((d) => d.date),
      series: [{ name: "history", cls: "history", values: data.history.map((d) => d.units) }] });
    note("forecast-note", "Discontinued: no forecast, no what-if.");
    note("explain-note", "Discontinued: nothing to explain.");
    document.getElementById("whatif").hidden = true;
    return;
  }
  try {
    const res = await api(`/v1/forecast/${sku}?quantiles=${QUANTILES}`);
    const fc = res.forecasts[0];
    skuState = { data, fc, version: res.model_version };
    drawChart(svg, forecastSpec(data.history, fc, false));
    const total = fc.days.reduce((a, d) => a + d.mean, 0);
    note("forecast-note", `${fc.days.length} days from ${res.model_version}: ${fmt(total)} units expected` +
      (fc.cold_start ? " (cold start: from attributes)" : "") + (fc.note ? ` · ${fc.note}` : ""));
    const form = document.getElementById("whatif");
    form.elements.start.value = fc.days[0].date;
    form.elements.end.value = fc.days[fc.days.length - 1].date;
    form.addEventListener("submit", whatIf);
  } catch (err) { note("forecast-note", String(err.message), true); }
  try {
    const ex = await api(`/v1/forecast/${sku}/explain`);
    const sums = {};
    for (const d of ex.days) for (const [g, v] of Object.entries(d.contributions)) sums[g] = (sums[g] || 0) + v;
    drawBars(document.getElementById("explain-chart"), sums);
    note("explain-note", `Units over ${ex.days.length} days added (or taken) by each group, beside a baseline of ` +
      `${fmt(ex.days.reduce((a, d) => a + d.baseline, 0))} (${ex.method}).`);
  } catch (err) { note("explain-note", String(err.message), true); }
}

function drawBars(svg, values) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const names = Object.keys(values);
  // Group names on the left, bars either side of zero, values in a column on the right.
  const W = 480, row = 26, H = 12 + row * names.length;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const span = Math.max(1e-9, ...names.map((k) => Math.abs(values[k])));
  const left = 120, right = W - 60, mid = (left + right) / 2, half = (right - left) / 2;
  svgEl("line", { x1: mid, x2: mid, y1: 4, y2: H - 4, class: "grid" }, svg);
  names.forEach((k, i) => {
    const v = values[k], w = (Math.abs(v) / span) * half;
    svgEl("text", { x: left - 8, y: 22 + i * row, "text-anchor": "end" }, svg).textContent = k;
    svgEl("rect", { x: v >= 0 ? mid : mid - w, y: 10 + i * row, width: Math.max(w, 0.5), height: 16,
      class: `bar ${v >= 0 ? "up" : "down"}`, "data-group": k }, svg);
    svgEl("text", { x: W - 4, y: 22 + i * row, "text-anchor": "end" }, svg).textContent =
      (v >= 0 ? "+" : "") + fmt(v);
  });
}

async function whatIf(event) {
  event.preventDefault();
  if (!skuState) return;
  const f = event.target.elements;
  const sku = skuState.data.sku;
  const start = f.start.value, end = f.end.value;
  const scenario = { prices: [], promotions: [] };
  if (f.price.value) scenario.prices.push({ sku, start, end, price: Number(f.price.value) });
  if (f.depth.value) scenario.promotions.push({ sku, start, end, depth: Number(f.depth.value) / 100 });
  if (!scenario.prices.length && !scenario.promotions.length) {
    note("whatif-note", "Give a price or a promotion depth.", true);
    return;
  }
  try {
    const res = await api("/v1/forecast", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ skus: [sku], quantiles: QUANTILES.split(",").map(Number), scenario }),
    });
    const fc = res.forecasts[0];
    drawChart(document.getElementById("forecast-chart"), forecastSpec(skuState.data.history, fc, true));
    const mine = fc.days.reduce((a, d) => a + d.mean, 0);
    const base = fc.days.reduce((a, d) => a + (d.baseline_mean || 0), 0);
    const pct = base > 0 ? ` (${((100 * (mine - base)) / base).toFixed(1)}%)` : "";
    note("whatif-note", `What-if ${fmt(mine)} units against a baseline of ${fmt(base)}: ` +
      `${mine >= base ? "+" : ""}${fmt(mine - base)}${pct}.`);
  } catch (err) { note("whatif-note", String(err.message), true); }
}

// ------------------------------------------------------------------ totals
async function totalsPage() {
  const cards = Array.from(document.querySelectorAll("section.total"));
  await Promise.all(cards.map(async (card) => {
    const svg = card.querySelector("svg");
    const out = card.querySelector(".period");
    try {
      const q = `level=${encodeURIComponent(card.dataset.level)}&key=${encodeURIComponent(card.dataset.key)}&quantiles=${QUANTILES}`;
      const t = await api(`/v1/forecast/aggregate?${q}`);
      drawChart(svg, {
        labels: t.days.map((d) => d.date),
        series: [{ name: "mean", cls: "mean", values: t.days.map((d) => d.mean), dots: true }],
        band: { lo: t.days.map((d) => d.quantiles.p10), hi: t.days.map((d) => d.quantiles.p90), name: "P10-P90" },
      });
      const d1 = t.days[0];
      out.textContent = `${t.period.start} to ${t.period.end}: ${fmt(t.period.mean)} units from ` +
        `${t.skus} SKUs; first day ${fmt(d1.mean)} [P10 ${fmt(d1.quantiles.p10)}, P90 ${fmt(d1.quantiles.p90)}]`;
    } catch (err) { out.textContent = String(err.message); out.classList.add("error"); }
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const done = () => document.body.setAttribute("data-ready", "1");
  const run = { overview: async () => followJobs(), accuracy: accuracyPage, sku: skuPage, totals: totalsPage }[page];
  (run ? run() : Promise.resolve()).finally(done);
});
