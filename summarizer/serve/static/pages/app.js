// The pages' shell: the router (each page's state is in the URL hash), the API client and shared controls.
import { el } from "./charts.js";
import { PAGES } from "./views.js";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.parameter = error.parameter;
    this.detail = error.detail;
    this.code = error.code;
  }
}

export async function api(endpoint, params = {}) {
  const response = await fetch(`/api/${endpoint}${query(params)}`, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// Every page of a paged answer (meta.next), up to `most` rows.
export async function apiAll(endpoint, params, most = 20000) {
  let body = await api(endpoint, params);
  const rows = [...body.data];
  while (body.meta && body.meta.next && rows.length < most) {
    const response = await fetch(body.meta.next, { headers: { Accept: "application/json" } });
    body = await response.json();
    if (!response.ok) throw new ApiError(response.status, body);
    rows.push(...body.data);
  }
  return { data: rows, meta: body.meta };
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const item of Array.isArray(v) ? v : [v]) if (item !== undefined && item !== null && item !== "") search.append(k, item);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

let metaPromise = null;
export function meta() {
  metaPromise = metaPromise || api("meta").then((b) => b.data).catch((e) => { metaPromise = null; throw e; });
  return metaPromise;
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, search = ""] = hash.split("?");
  return { name: PAGES[name] ? name : "brands", state: Object.fromEntries(new URLSearchParams(search)) };
}

// Change the current page's state: the URL changes first, then the page redraws from it.
export function navigate(name, state) {
  const text = query(state);
  const target = `#/${name}${text}`;
  if (location.hash !== target) location.hash = target;
}

let rendering = 0;
async function render() {
  const { name, state } = route();
  const ticket = ++rendering;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const view = document.getElementById("view");
  const page = el("section", { "data-page": name, "data-state": "loading" });
  view.replaceChildren(page);  // drawn into as the answers arrive: the first chart shows before the rest
  document.title = `${PAGES[name].title} · summarizer`;
  try {
    await PAGES[name].render(page, state, (next) => navigate(name, next));
    page.dataset.state = "ready";
  } catch (error) {
    page.dataset.state = "error";
    if (ticket === rendering) page.append(el("p", { class: "error", role: "alert" }, `Could not load: ${error.message}`));
  }
}

window.addEventListener("hashchange", render);
render();
