// Charts drawn as inline SVG, each followed by its numbers as a table (for screen readers and copying).
// A chart is {id, title, labels: [x...], series: [{name, values: [number|null], texts: [string]}]}.

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2456a6", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f", "#e07a5f",
  "#3d405b", "#81b29a", "#b56576", "#6d597a", "#f2cc8f", "#118ab2", "#ef476f", "#06d6a0", "#7a7a7a"];
const H = 300, M = { top: 12, right: 12, bottom: 46, left: 64 };
let W = 1000;  // the drawing width of the chart being drawn: chart.width (set by root())

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 1e9) return (value / 1e9).toFixed(abs >= 1e10 ? 0 : 1) + "G";
  if (abs >= 1e6) return (value / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + "M";
  if (abs >= 1e3) return (value / 1e3).toFixed(abs >= 1e4 ? 0 : 1) + "k";
  return Number.isInteger(value) ? String(value) : value.toFixed(abs >= 10 ? 0 : 2);
}

function niceTicks(lo, hi, count = 5) {
  if (lo === hi) { hi = lo + 1; }
  const span = hi - lo, step0 = span / count, mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => span / s <= count) || 10 * mag;
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  if (ticks[ticks.length - 1] < hi) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

function frame(root, labels, ticks) {
  const y = scale(ticks[0], ticks[ticks.length - 1], H - M.bottom, M.top);
  for (const t of ticks) {
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "grid-line" }));
    root.append(svg("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, formatNumber(t)));
  }
  const every = Math.max(1, Math.ceil(labels.length / 12));
  const band = (W - M.left - M.right) / Math.max(labels.length, 1);
  labels.forEach((label, i) => {
    if (i % every) return;
    const x = M.left + band * (i + 0.5);
    root.append(svg("text", { x, y: H - M.bottom + 16, "text-anchor": "middle" }, String(label)));
  });
  return { y, band };
}

function scale(d0, d1, r0, r1) {
  return (v) => r0 + ((v - d0) / (d1 - d0 || 1)) * (r1 - r0);
}

function root(chart) {
  W = chart.width || 1000;
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: W < 1000 ? "chart narrow" : "chart", role: "img",
    "aria-label": `${chart.title}: chart; its numbers are in the table below it` });
}

function legend(series) {
  return el("ul", { class: "legend" }, series.map((s, i) =>
    el("li", {}, el("i", { style: `background:${s.color || PALETTE[i % PALETTE.length]}` }), s.name)));
}

export function lineChart(chart) {
  const node = root(chart);
  const all = chart.series.flatMap((s) => s.values).filter((v) => v !== null);
  const { y, band } = frame(node, chart.labels, niceTicks(Math.min(0, ...all), Math.max(0, ...all)));
  chart.series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const points = s.values.map((v, j) => (v === null ? null : [M.left + band * (j + 0.5), y(v)]));
    const d = points.map((p, j) => (p ? `${j && points[j - 1] ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}` : ""))
      .join("");
    node.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    points.forEach((p, j) => {
      if (!p) return;
      const dot = svg("circle", { cx: p[0], cy: p[1], r: 3, fill: color });
      dot.append(svg("title", {}, `${s.name}, ${chart.labels[j]}: ${s.texts[j]}`));
      node.append(dot);
    });
  });
  return wrap(chart, node);
}

// Bars per label: stacked (positive values up, negative down) or grouped side by side.
export function barChart(chart) {
  const node = root(chart);
  const n = chart.series.length;
  const sums = chart.labels.map((_, j) => chart.stacked
    ? [chart.series.reduce((a, s) => a + Math.min(0, s.values[j] || 0), 0),
       chart.series.reduce((a, s) => a + Math.max(0, s.values[j] || 0), 0)]
    : [Math.min(0, ...chart.series.map((s) => s.values[j] || 0)), Math.max(0, ...chart.series.map((s) => s.values[j] || 0))]);
  const { y, band } = frame(node, chart.labels, niceTicks(Math.min(0, ...sums.map((s) => s[0])),
    Math.max(0, ...sums.map((s) => s[1]))));
  const width = chart.stacked ? band * 0.7 : (band * 0.8) / n;
  chart.labels.forEach((label, j) => {
    let up = 0, down = 0;
    chart.series.forEach((s, i) => {
      const v = s.values[j] || 0;
      const color = s.color || PALETTE[i % PALETTE.length];
      let from = 0;
      if (chart.stacked) { from = v >= 0 ? up : down; if (v >= 0) up += v; else down += v; }
      const x = M.left + band * j + (chart.stacked ? band * 0.15 : band * 0.1 + width * i);
      const top = y(Math.max(from, from + v)), bottom = y(Math.min(from, from + v));
      const rect = svg("rect", { x: x.toFixed(1), y: top.toFixed(1), width: Math.max(width - 1, 1).toFixed(1),
        height: Math.max(bottom - top, v ? 0.5 : 0).toFixed(1), fill: color });
      rect.append(svg("title", {}, `${s.name}, ${label}: ${s.texts[j]}`));
      node.append(rect);
    });
  });
  node.append(svg("line", { x1: M.left, x2: W - M.right, y1: y(0), y2: y(0), stroke: "#888" }));
  return wrap(chart, node);
}

function wrap(chart, node) {
  const box = el("figure", { class: "chart-box", "data-chart": chart.id, style: "margin:0" },
    el("figcaption", {}, el("h2", {}, chart.title)), node, legend(chart.series),
    el("details", {}, el("summary", {}, "Numbers as a table"), numbersTable(chart)));
  return box;
}

// The chart's numbers: one row per label, one column per series, the exact text the API sent.
export function numbersTable(chart) {
  return el("table", { "data-numbers": chart.id },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, chart.labelName || ""),
      chart.series.map((s) => el("th", { scope: "col", class: "num", "data-key": s.key ?? s.name }, s.name)))),
    el("tbody", {}, chart.labels.map((label, j) => el("tr", {}, el("th", { scope: "row" }, String(label)),
      chart.series.map((s) => el("td", { class: "num" }, s.texts[j] ?? ""))))));
}

export function drawn(name) {
  // the benchmark's mark: the page's first chart is on screen
  if (!performance.getEntriesByName(name).length) performance.mark(name);
}
