// The four pages. Each render(page, state, go) reads its state from the URL (with defaults from /api/meta),
// draws its controls, asks the read API, and draws charts (each with its numbers as a table).
import { ApiError, api, apiAll, meta } from "./app.js";
import { barChart, drawn, el, lineChart } from "./charts.js";

const FIRST_CHART = "first-chart";
const TOP_CHOICES = ["5", "10", "15", "20"];
const TOTALS_SHOWN = 100;

// --- shared pieces ---------------------------------------------------------------------------------

function select(name, label, options, value, onchange) {
  const node = el("select", { name, "aria-label": label, onchange: (e) => onchange(e.target.value) },
    options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  return el("label", {}, label, node);
}

function monthBounds(state, m) {
  const months = m.months;
  const last = months[months.length - 1] || "";
  const pick = (v, fallback) => (months.includes(v) ? v : fallback);
  const to = pick(state.to, last);
  const from = pick(state.from, months[Math.max(0, months.indexOf(to) - 11)] || "");
  return from <= to ? { from, to } : { from: to, to: from };
}

function defaultMetric(m) {
  return m.revenue_metrics.find((x) => m.metrics.includes(x)) || m.metrics[0] || "";
}

function rangeControls(s, m, go) {
  const months = m.months.map((x) => [x, x]);
  return [select("from", "From", months, s.from, (v) => go({ ...s, from: v })),
    select("to", "To", months, s.to, (v) => go({ ...s, to: v }))];
}

function marketControl(s, m, go) {
  const all = m.all_marketplace;
  const options = [[all, `${all} (every marketplace)`], ...m.marketplaces.filter((x) => x !== all).map((x) => [x, x])];
  return select("marketplace", "Marketplace", options, s.marketplace, (v) => go({ ...s, marketplace: v }));
}

function topControl(s, go) {
  return select("top", "Top", TOP_CHOICES.map((x) => [x, x]), s.top, (v) => go({ ...s, top: v }));
}

function monthsOf(from, to, m) {
  return m.months.filter((x) => x >= from && x <= to);
}

function nameOf(row, kind) {
  const id = row[`${kind}_id`], name = row[`${kind}_name`];
  if (name !== undefined && name !== null) return name;
  if (id === 0) return "Unassigned";
  return name === null ? `${kind} ${id} (no name)` : `${kind} ${id}`;  // null: the id has no row of names
}

function card(...children) {
  return el("div", { class: "card" }, ...children);
}

// A table whose column headers sort it; the sort is part of the page state (the URL).
function sortableTable(id, columns, rows, s, go) {
  const key = columns.some((c) => c.key === s.sort) ? s.sort : columns.find((c) => c.sortDefault)?.key;
  const dir = s.dir === "asc" ? 1 : -1;
  const col = columns.find((c) => c.key === key);
  const sorted = col ? [...rows].sort((a, b) => dir * compare(col.value(a), col.value(b))) : rows;
  const header = columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null,
    "aria-sort": c.key === key ? (dir > 0 ? "ascending" : "descending") : null },
  el("button", { type: "button", "data-sort": c.key,
    onclick: () => go({ ...s, sort: c.key, dir: c.key === key && dir < 0 ? "asc" : "desc" }) },
  c.label + (c.key === key ? (dir > 0 ? " ▲" : " ▼") : ""))));
  return el("table", { "data-table": id }, el("thead", {}, el("tr", {}, header)),
    el("tbody", {}, sorted.map((r) => el("tr", { "data-id": r.id },
      columns.map((c) => el("td", { class: c.num ? "num" : null }, c.text ? c.text(r) : c.value(r)))))));
}

function compare(a, b) {
  return typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b));
}

function money(text) {
  const n = Number(text);
  return Number.isFinite(n) ? n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : text;
}

// A 400 on `limit`: the server's [api] max_limit is lower than the rows asked for.
function limitTooHigh(error) {
  return error instanceof ApiError && error.status === 400 && error.parameter === "limit";
}

// The first `most` rows: `limit` rows per answer, or the server's default where [api] max_limit is lower.
async function upTo(endpoint, params, limit, most = limit) {
  try {
    return (await apiAll(endpoint, { ...params, limit }, most)).data.slice(0, most);
  } catch (error) {
    if (!limitTooHigh(error)) throw error;
    return (await apiAll(endpoint, params, most)).data.slice(0, most);
  }
}

// --- brands and categories -------------------------------------------------------------------------

const TIER_PAGES = {
  brands: { title: "Brands", kind: "brand", endpoint: "dashboard-data", chart: "line", markets: true },
  categories: { title: "Categories", kind: "category", endpoint: "categories-dashboard-data", chart: "bar",
    markets: false },
};

// One row per id over the range, largest first.
async function totals(spec, params) {
  const key = `${spec.kind}_id`;
  const rows = await upTo(spec.endpoint, { ...params, group: "total", order: "value_desc" }, TOTALS_SHOWN);
  return rows.map((r) => ({ id: r[key], name: nameOf(r, spec.kind), value: Number(r.value), text: r.value }));
}

function tierState(state, m, spec) {
  const metric = m.metrics.includes(state.metric) ? state.metric : defaultMetric(m);
  const markets = [m.all_marketplace, ...m.marketplaces];
  const marketplace = spec.markets && markets.includes(state.marketplace) ? state.marketplace : m.all_marketplace;
  const top = TOP_CHOICES.includes(state.top) ? state.top : "10";
  const s = { ...monthBounds(state, m), metric, top, sort: state.sort, dir: state.dir };
  return spec.markets ? { ...s, marketplace } : s;
}

async function renderTier(name, page, state, go) {
  const spec = TIER_PAGES[name];
  const m = await meta();
  const s = tierState(state, m, spec);
  const metricControl = select("metric", "Metric", m.metrics.map((x) => [x, x]), s.metric, (v) => go({ ...s, metric: v }));
  page.append(el("h1", {}, spec.title),
    el("div", { class: "controls" }, ...rangeControls(s, m, go), spec.markets ? marketControl(s, m, go) : null,
      metricControl, topControl(s, go)),
    ...(spec.markets ? [] : [el("p", { class: "note" }, "The category tier totals every marketplace.")]));
  if (!m.months.length) return page.append(card(el("p", { class: "note" }, "No data yet: run `summarizer refresh`.")));
  const params = { from: s.from, to: s.to, metric: s.metric, ...(spec.markets ? { marketplace: s.marketplace } : {}) };
  const all = await totals(spec, params);
  const top = all.slice(0, Number(s.top));
  const chartCard = card();
  page.append(chartCard);
  chartCard.append(await tierChart(spec, s, m, params, top));
  drawn(FIRST_CHART);
  const columns = [
    { key: "name", label: spec.kind === "brand" ? "Brand" : "Category", value: (r) => r.name },
    { key: "id", label: "Id", num: true, value: (r) => r.id },
    { key: "value", label: `Total ${s.metric}`, num: true, value: (r) => r.value, text: (r) => money(r.text), sortDefault: true },
  ];
  page.append(card(el("h2", {}, `${spec.title}: total ${s.metric}, ${s.from} to ${s.to}`),
    el("p", { class: "note" }, `The ${all.length} largest; click a heading to sort.`),
    sortableTable(`${name}-totals`, columns, all, s, go)));
}

async function tierChart(spec, s, m, params, top) {
  const key = `${spec.kind}_id`;
  const labels = monthsOf(s.from, s.to, m);
  const rows = top.length ? (await apiAll(spec.endpoint, { ...params, [key]: top.map((t) => t.id) })).data : [];
  const cell = new Map(rows.map((r) => [`${r[key]}|${r.month}`, r.value]));
  const series = top.map((t) => {
    const texts = labels.map((month) => cell.get(`${t.id}|${month}`) ?? null);
    return { name: t.name, key: String(t.id), texts: texts.map((x) => x ?? ""), values: texts.map((x) => (x === null ? null : Number(x))) };
  });
  const title = `Top ${top.length} ${spec.kind === "brand" ? "brands" : "categories"} by ${s.metric}, per month`;
  const chart = { id: `${spec.kind}-months`, title, labels, labelName: "Month", series };
  return spec.chart === "line" ? lineChart(chart) : barChart({ ...chart, stacked: true });
}

// --- profitability ---------------------------------------------------------------------------------

const FIELDS = ["revenue", "cost", "profit"];
const ONE_ANSWER = 10000, ALL_ROWS = 200000;  // [api] max_limit's default; more brands than a shop has

// One row per brand (or category) over the range: the `first` by profit, or every one.
async function profitRows(params, first = 0) {
  const grouped = { ...params, group: "total", order: first ? "value_desc" : "month" };
  const rows = await upTo("profitability-data", grouped, first || ONE_ANSWER, first || ALL_ROWS);
  return rows.map((r) => {
    const [revenue, cost, profit] = FIELDS.map((f) => Number(r[f]));
    return { id: r[`${params.by}_id`], name: nameOf(r, params.by), texts: r, revenue, cost, profit,
      margin: revenue > 0 ? profit / revenue : null };
  });
}

async function renderProfitability(page, state, go) {
  const m = await meta();
  const by = state.by === "category" ? "category" : "brand";
  const markets = [m.all_marketplace, ...m.marketplaces];
  const s = { ...monthBounds(state, m), marketplace: markets.includes(state.marketplace) ? state.marketplace : m.all_marketplace,
    by, top: TOP_CHOICES.includes(state.top) ? state.top : "10", sort: state.sort, dir: state.dir };
  page.append(el("h1", {}, "Profitability"),
    el("div", { class: "controls" }, ...rangeControls(s, m, go), marketControl(s, m, go),
      select("by", "By", [["brand", "brand"], ["category", "category"]], s.by, (v) => go({ ...s, by: v })), topControl(s, go)),
    el("p", { class: "note", "data-metrics": "revenue" }, `Revenue: ${m.revenue_metrics.join(" + ") || "(none)"}.`),
    el("p", { class: "note", "data-metrics": "cost" }, `Cost: ${m.cost_metrics.join(" + ") || "(none)"}. Profit = revenue − cost.`));
  if (!m.months.length) return page.append(card(el("p", { class: "note" }, "No data yet: run `summarizer refresh`.")));
  const params = { from: s.from, to: s.to, marketplace: s.marketplace, by: s.by };
  const top = (await profitRows(params, Number(s.top))).sort((a, b) => b.profit - a.profit || a.id - b.id)
    .slice(0, Number(s.top));
  const fields = [["revenue", "#2456a6"], ["cost", "#d1495b"], ["profit", "#1e7a35"]];
  const chart = { id: "profit-top", title: `Revenue, cost and profit of the top ${top.length} ${by === "brand" ? "brands" : "categories"} by profit, ${s.from} to ${s.to}`,
    labels: top.map((t) => t.name), labelName: by === "brand" ? "Brand" : "Category", stacked: false,
    series: fields.map(([f, color]) => ({ name: f, key: f, color, values: top.map((t) => t[f]), texts: top.map((t) => t.texts[f]) })) };
  page.append(card(barChart(chart)));
  drawn(FIRST_CHART);
  const columns = [
    { key: "name", label: by === "brand" ? "Brand" : "Category", value: (r) => r.name },
    ...fields.map(([f]) => ({ key: f, label: f[0].toUpperCase() + f.slice(1), num: true, value: (r) => r[f],
      text: (r) => money(r.texts[f]), sortDefault: f === "profit" })),
    { key: "margin", label: "Margin", num: true, value: (r) => r.margin ?? -Infinity,
      text: (r) => (r.margin === null ? "–" : `${(100 * r.margin).toFixed(1)} %`) },
  ];
  const rows = await profitRows(params);
  page.append(card(el("h2", {}, `Every ${by}: ${rows.length}`), sortableTable("profit-totals", columns, rows, s, go)));
}

// --- operations ------------------------------------------------------------------------------------

async function health() {
  try {
    return (await api("health")).data;
  } catch (error) {
    if (error instanceof ApiError && error.status === 503 && error.detail) return { ...error.detail, status: error.code, message: error.message };
    throw error;
  }
}

function seconds(x) {
  if (x === null || x === undefined) return "–";
  if (x < 120) return `${x.toFixed(1)} s`;
  if (x < 7200) return `${(x / 60).toFixed(1)} min`;
  return `${(x / 3600).toFixed(1)} h`;
}

function freshnessCard(h) {
  const share = h.age_seconds === null ? 1 : Math.min(1, h.age_seconds / h.max_age_seconds);
  return card(el("h2", {}, "Freshness"),
    el("p", { class: `big fresh-${h.status}`, "data-freshness": h.status }, h.status === "ok" ? "Fresh" : h.status.replace("_", " ")),
    el("p", {}, `Last success ${seconds(h.age_seconds)} ago; allowed: ${seconds(h.max_age_seconds)} ([api] max_age).`),
    el("div", { class: `meter${share >= 1 ? " over" : ""}`, role: "meter", "aria-valuemin": 0, "aria-valuemax": h.max_age_seconds,
      "aria-valuenow": h.age_seconds ?? h.max_age_seconds, "aria-label": "age of the last success against max_age" },
    el("span", { style: `width:${(100 * share).toFixed(1)}%` })),
    el("p", { class: "note" }, h.message));
}

// The change-stream follower ([follow] enabled): where it is, how far behind, how fast, its last error.
function followCard(f) {
  const rows = [["Position", f.position], ["Last batch (UTC)", (f.applied_at || "never").replace("T", " ").slice(0, 19)],
    ["Lag of the last batch", seconds(f.lag_seconds)], ["Waiting", f.waiting === null ? "–" : `${f.waiting.toLocaleString()} bytes`],
    ["Throughput", `${(f.rate ?? 0).toLocaleString()} changes/s`],
    ["Since the handover", `${f.changes.toLocaleString()} changes in ${f.batches.toLocaleString()} batches`]];
  return card(el("h2", {}, "Follower"),
    el("p", { class: `big fresh-${f.error ? "stale" : "ok"}`, "data-follow": f.error ? "error" : "ok" }, f.error ? "Stopped" : "Following"),
    el("table", { "data-table": "follow" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v))))),
    f.error ? el("p", { class: "note" }, f.error) : el("p", { class: "note" }, "Every committed change is applied within seconds; the nightly refresh is the safety net."));
}

// An incremental run records its month replacements as one "months" step: shown apart from the rest.
function incremental(r) {
  return r.mode === "full" ? 0 : r.steps.months ?? 0;
}

function runsChart(runs, steps) {
  const ordered = [...runs].reverse();
  const labels = ordered.map((r) => `#${r.id}${r.status === "succeeded" ? "" : " ✗"}`);
  const parts = [...steps.map((step) => [step, (r) => r.steps[step] ?? 0]),
    ["months (incremental)", incremental],
    ["other", (r) => (r.other_seconds === null ? null : Math.max(0, r.other_seconds - incremental(r)))]];
  const series = parts.map(([name, value], i) => {
    const values = ordered.map(value);
    return { name, key: name.split(" ")[0], color: i === parts.length - 1 ? "#9aa3b2" : undefined,
      values: values.map((v) => v ?? 0), texts: values.map((v) => (v === null ? "" : Number(v).toFixed(3))) };
  });
  return barChart({ id: "runs-steps", title: `The last ${runs.length} runs: seconds per step (✗: did not succeed)`,
    labels, labelName: "Run", stacked: true, series });
}

function runsTable(runs) {
  return el("table", { "data-table": "runs" },
    el("thead", {}, el("tr", {}, ["Run", "Status", "Mode", "Months", "Started (UTC)", "Duration", "Error"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, runs.map((r) => el("tr", { "data-id": r.id, "data-status": r.status },
      el("td", {}, `#${r.id}`), el("td", { class: `status-${r.status}` }, r.status), el("td", {}, r.mode),
      el("td", {}, r.months || "all"), el("td", {}, (r.started_at || "").replace("T", " ").slice(0, 19)),
      el("td", { class: "num" }, seconds(r.duration_seconds)),
      el("td", { title: r.error || "" }, (r.error || "").split("\n")[0].slice(0, 90))))));
}

function unassignedCard(rows, unassignedId) {
  const chart = { id: "unassigned-share", width: 560, title: `Unassigned share per tier (raw rows under id ${unassignedId}), %`,
    labels: rows.map((r) => r.tier), labelName: "Tier", stacked: false,
    series: [{ name: "share %", key: "share", values: rows.map((r) => 100 * (r.share ?? 0)),
      texts: rows.map((r) => (r.share === null ? "" : (100 * r.share).toFixed(3))) },
    ] };
  return card(barChart(chart), el("p", { class: "note" }, rows.map((r) =>
    `${r.tier}: ${r.unassigned_raw_rows.toLocaleString()} of ${r.raw_rows.toLocaleString()} raw rows (${r.unassigned_rows.toLocaleString()} of ${r.rows.toLocaleString()} tier rows)`).join("; ")));
}

function rowsChart(runs) {
  const ordered = [...runs].reverse().filter((r) => r.status === "succeeded" && r.rows);
  const series = ["asin", "brand", "category"].map((tier) => ({ name: `tier ${tier}`, key: tier,
    values: ordered.map((r) => r.rows[tier] ?? null), texts: ordered.map((r) => String(r.rows[tier] ?? "")) }));
  return lineChart({ id: "rows-per-tier", title: "Rows per tier after each successful run", labels: ordered.map((r) => `#${r.id}`),
    labelName: "Run", series });
}

async function renderOperations(page, state, go) {
  const limit = ["10", "30", "100"].includes(state.runs) ? state.runs : "30";
  const s = { runs: limit };
  page.append(el("h1", {}, "Operations"), el("div", { class: "controls" },
    select("runs", "Runs shown", [["10", "10"], ["30", "30"], ["100", "100"]], limit, (v) => go({ ...s, runs: v }))));
  const [h, runs] = await Promise.all([health(), api("runs", { limit })]);
  const grid = el("div", { class: "grid" }, freshnessCard(h));
  if (h.follow) grid.append(followCard(h.follow));
  page.append(grid, card(runs.data.length ? runsChart(runs.data, runs.meta.steps) : el("p", { class: "note" }, "No runs yet.")));
  drawn(FIRST_CHART);
  page.append(card(el("h2", {}, "Runs"), runsTable(runs.data)), card(rowsChart(runs.data)));
  const unassigned = await api("unassigned");
  grid.append(unassignedCard(unassigned.data, unassigned.meta.unassigned_id));
}

export const PAGES = {
  brands: { title: "Brands", render: (page, state, go) => renderTier("brands", page, state, go) },
  categories: { title: "Categories", render: (page, state, go) => renderTier("categories", page, state, go) },
  profitability: { title: "Profitability", render: renderProfitability },
  operations: { title: "Operations", render: renderOperations },
};
