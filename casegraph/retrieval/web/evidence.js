// Patch-level evidence (docs/evidence.md): each slide's scores on its patch grid drawn on a
// canvas with a colour bar, the top patches, and the gene groups the neighbours lean on;
// and the method's track record when the answer carries one. Canvas pixels are drawn by
// script, so the page's CSP (no inline styles) holds.
import { h, num, table, td } from "./dom.js";

// matplotlib's inferno (non-negative scores) and RdBu_r (signed), a few stops each
const INFERNO = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
const DIVERGING = [[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]];
const GRID_PX = 320;

function ramp(stops, t) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function scale(evidence) {
  const top = Math.max(Math.abs(evidence.score_min), Math.abs(evidence.score_max)) || 1;
  if (evidence.signed) return { colour: (v) => ramp(DIVERGING, (v / top + 1) / 2), lo: -top, hi: top };
  return { colour: (v) => ramp(INFERNO, v / top), lo: 0, hi: top };
}

function gridCanvas(grid, colour) {
  const px = Math.max(1, Math.floor(GRID_PX / Math.max(grid.rows, grid.cols)));
  const canvas = h("canvas", { class: "heatmap", width: grid.cols * px, height: grid.rows * px,
    title: `${grid.slide}: ${grid.n_patches} patches, ${grid.cell}-px cells` });
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#e9ecf1";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  grid.values.forEach((row, r) => row.forEach((v, c) => {
    if (v === null) return;
    ctx.fillStyle = colour(v);
    ctx.fillRect(c * px, r * px, px, px);
  }));
  return canvas;
}

function colourBar(sc, label) {
  const canvas = h("canvas", { class: "colour-bar", width: 200, height: 12 });
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < 200; x += 1) {
    ctx.fillStyle = sc.colour(sc.lo + (x / 199) * (sc.hi - sc.lo));
    ctx.fillRect(x, 0, 1, 12);
  }
  return h("div", { class: "colour-bar-box" }, h("span", { class: "note" }, num(sc.lo, 4)),
    canvas, h("span", { class: "note" }, `${num(sc.hi, 4)} (${label})`));
}

export function evidencePanel(evidence) {
  if (!evidence) return h("p", { class: "note" }, "No patch-level evidence for this answer.");
  const sc = scale(evidence);
  const slides = evidence.slides.map((g) => h("div", { class: "card" },
    h("strong", {}, `${g.slide} · ${g.n_patches} patches`), gridCanvas(g, sc.colour)));
  return h("div", { class: "evidence", id: "evidence" },
    h("p", { class: "note" }, `${evidence.attribution}: ${evidence.description}` +
      (evidence.model_version ? ` · version ${evidence.model_version}` : "")),
    colourBar(sc, evidence.attribution),
    h("div", { class: "cards" }, slides),
    evidence.notes.length ? h("ul", {}, evidence.notes.map((n) => h("li", {}, n))) : "",
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("strong", {}, "Top patches"),
        table(["slide", "patch", "x", "y", "score"], evidence.top.slice(0, 10).map((p) =>
          h("tr", { class: "top-patch" }, td(p.slide, "id"), td(p.index, "num"),
            td(p.x ?? "—", "num"), td(p.y ?? "—", "num"), td(num(p.score, 5), "num"))))),
      h("div", { class: "card" }, h("strong", {}, "Gene groups the neighbours lean on"),
        groupTable(evidence.gene_groups))));
}

function groupTable(groups) {
  if (!groups.length) return h("p", { class: "note" }, "No authentic genomics among the neighbours.");
  return table(["group", "modality", "neighbours", "their mean", "cohort mean ± sd", "shift (sd)",
    "spread"], groups.map((g) => h("tr", { class: "group-lean" }, td(g.group), td(g.modality),
    td(g.n_neighbours, "num"), td(num(g.neighbours_mean, 2), "num"),
    td(`${num(g.cohort_mean, 2)} ± ${num(g.cohort_sd, 2)}`, "num"), td(num(g.shift, 2), "num"),
    td(num(g.spread, 2), "num"))));
}

// The method's validated record and auto's choice (the answer's track_record and
// method_choice, casegraph/retrieval/track_record.py), when the answer carries them.
function metric(m) {
  return m && m.mean !== null && m.mean !== undefined ? `${num(m.mean)} ± ${num(m.sd)} (${m.n} folds)` : "—";
}

export function trackRecordPanel(answer) {
  const record = answer.track_record;
  const choice = answer.method_choice;
  if (!record && !choice) return "";
  const rows = [];
  if (record) {
    rows.push(table(["", record.method + (record.version ? ` (${record.version})` : ""),
      record.baseline ? `WSI-only baseline ${record.baseline.method}` : "WSI-only baseline"],
    ["harrell_c", "uno_c", "ibs"].map((m) => h("tr", { class: "record-row" }, td(m),
      td(metric(record[m]), "num"), td(record.baseline ? metric(record.baseline[m]) : "—", "num")))));
    if (record.folds) rows.push(h("p", { class: "note" }, `validated on ${record.folds}` +
      (record.linked ? ` (${record.linked})` : "")));
    if (record.calibration) {
      const cal = record.calibration;
      rows.push(h("p", { class: "note" }, `calibration: ${cal.inside} of ${cal.times.length} ` +
        `time points inside the neighbourhood's 95% band · ${cal.note}`));
    }
    if (record.baseline && record.baseline.note) rows.push(h("p", { class: "note" }, record.baseline.note));
    if (record.note) rows.push(h("p", { class: "note" }, record.note));
  }
  if (choice) {
    rows.push(h("p", {}, `method auto chose ${choice.method}` +
      (choice.cohort ? ` for cohort ${choice.cohort}` : "") + `: ${choice.reason}`));
    if (choice.candidates.length) {
      rows.push(table(["candidate", "version", "Harrell C"], choice.candidates.map((c) =>
        h("tr", {}, td(c.method), td(c.version ?? "—", "id"), td(metric(c.harrell_c), "num")))));
    }
  }
  return h("div", { class: "card", id: "track-record" }, h("strong", {}, "Track record"), rows);
}
