// Figures drawn as SVG by hand: Kaplan-Meier steps with their band, censor ticks and the
// numbers at risk; predicted survival as steps; a patient's neighbourhood as a graph.
import { s } from "./dom.js";

const M = { left: 44, right: 16, top: 12, bottom: 34 };

function niceTicks(max, count = 5) {
  if (!(max > 0)) return [0];
  const raw = max / count;
  const step = [1, 2, 2.5, 5, 10].map((f) => f * 10 ** Math.floor(Math.log10(raw)))
    .find((x) => x >= raw);
  const ticks = [];
  for (let t = 0; t <= max + 1e-9; t += step) ticks.push(Number(t.toFixed(6)));
  return ticks;
}

// Step path through (0, 1), then S just after each time: [[x, y], ...] in data units.
function steps(times, values, start = 1) {
  const points = [[0, start]];
  let last = start;
  times.forEach((t, i) => {
    points.push([t, last], [t, values[i]]);
    last = values[i];
  });
  return points;
}

function frame(width, height, maxTime, rowsBelow = 0) {
  const plotH = height - M.top - M.bottom - rowsBelow * 14;
  const x = (t) => M.left + (t / maxTime) * (width - M.left - M.right);
  const y = (v) => M.top + (1 - v) * plotH;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const ticks = niceTicks(maxTime);
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { class: "grid", x1: x(0), x2: x(maxTime), y1: y(v), y2: y(v) }),
      s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(2)));
  }
  for (const t of ticks) {
    svg.append(s("line", { class: "axis", x1: x(t), x2: x(t), y1: y(0), y2: y(0) + 4 }),
      s("text", { x: x(t), y: y(0) + 15, "text-anchor": "middle" }, String(t)));
  }
  svg.append(s("path", { class: "axis", d: `M${x(0)},${y(1)}V${y(0)}H${x(maxTime)}` }),
    s("text", { x: x(maxTime), y: y(0) + 27, "text-anchor": "end", class: "muted" },
      "months"));
  return { svg, x, y, ticks, plotBottom: y(0) };
}

function pathOf(points, x, y) {
  return points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`)
    .join("");
}

function atRiskAt(curve, t) {
  const i = curve.times.findIndex((u) => u >= t);
  return i < 0 ? 0 : curve.at_risk[i];
}

// curves: [{label, times, survival, lower, upper, at_risk, censored}]
export function kmChart(curves, { width = 460, height = 260 } = {}) {
  const maxTime = Math.max(1, ...curves.flatMap((c) => c.times));
  const { svg, x, y, ticks, plotBottom } = frame(width, height, maxTime, curves.length + 1);
  curves.forEach((curve, i) => {
    const cls = `s${i % 4}`;
    const upper = steps(curve.times, curve.upper);
    const lower = steps(curve.times, curve.lower).reverse();
    svg.append(s("path", { class: `km-band ${cls}`, d: `${pathOf([...upper, ...lower], x, y)}Z` }));
    svg.append(s("path", { class: `km-line ${cls}`,
      d: pathOf(steps(curve.times, curve.survival), x, y) }));
    curve.times.forEach((t, j) => {
      if (curve.censored[j] > 0) {
        svg.append(s("line", { class: `tick ${cls}`, x1: x(t), x2: x(t),
          y1: y(curve.survival[j]) - 4, y2: y(curve.survival[j]) + 4 }));
      }
    });
  });
  // numbers at risk under the axis, one row per curve
  const top = plotBottom + 40;
  svg.append(s("text", { x: 4, y: top, class: "muted" }, "at risk"));
  curves.forEach((curve, i) => {
    const rowY = top + 14 * (i + 1);
    svg.append(s("rect", { x: 8, y: rowY - 8, width: 14, height: 8, class: `s${i % 4}` },
      s("title", {}, curve.label)));
    for (const t of ticks) {
      svg.append(s("text", { x: x(t), y: rowY, "text-anchor": "middle" },
        String(atRiskAt(curve, t))));
    }
  });
  return svg;
}

export function kmLegend(curves) {
  return curves.map((c, i) => s("svg", { width: 300, height: 16 },
    s("rect", { x: 0, y: 4, width: 14, height: 8, class: `s${i % 4}` }),
    s("text", { x: 20, y: 12 }, `${c.label} (n=${c.n}, median ${c.median_survival ?? "not reached"})`)));
}

// points: [{time (end of the bin; null = the open last bin), survival}]: S drops to
// S_j at the end of bin j and holds until the next bin's end (a discrete-time model).
export function survivalSteps(points, { width = 400, height = 200 } = {}) {
  const finite = points.filter((p) => p.time !== null);
  const end = Math.max(1, ...finite.map((p) => p.time)) * 1.15;
  const { svg, x, y } = frame(width, height, end);
  const path = steps(finite.map((p) => p.time), finite.map((p) => p.survival));
  path.push([end, path[path.length - 1][1]]);
  svg.append(s("path", { class: "km-line s0", d: pathOf(path, x, y) }));
  for (const p of finite) {
    svg.append(s("circle", { cx: x(p.time), cy: y(p.survival), r: 3, class: "s0" }));
  }
  return svg;
}

// The query (or stored patient) in the middle, its neighbours around it: edge width and
// label = weight, node colour = outcome (death observed or censored).
export function neighbourhoodGraph(centre, neighbours, { width = 560, height = 420 } = {}) {
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    class: "graph" });
  const cx = width / 2, cy = height / 2, radius = Math.min(width, height) / 2 - 60;
  const maxW = Math.max(1e-9, ...neighbours.map((n) => n.weight));
  const placed = neighbours.map((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, neighbours.length) - Math.PI / 2;
    return { ...n, x: cx + radius * Math.cos(a), y: cy + radius * Math.sin(a) };
  });
  for (const n of placed) {
    svg.append(s("line", { class: "edge", x1: cx, y1: cy, x2: n.x, y2: n.y,
      "stroke-width": (1 + 7 * (n.weight / maxW)).toFixed(2) }));
    svg.append(s("text", { x: (cx + n.x) / 2, y: (cy + n.y) / 2 - 3, "text-anchor": "middle",
      class: "muted" }, n.weight.toFixed(3)));
  }
  for (const n of placed) {
    svg.append(s("circle", { class: `node ${n.event ? "dead" : "alive"}`, cx: n.x, cy: n.y,
      r: 9 }, s("title", {}, `${n.patient_id}: ${n.time.toFixed(1)} mo, ${n.event ? "died" : "censored"}`)));
    svg.append(s("text", { class: "node-label", x: n.x, y: n.y + 22, "text-anchor": "middle" },
      n.patient_id));
  }
  const centreClass = centre.event === null || centre.event === undefined ? "query"
    : `query ${centre.event ? "dead" : "alive"}`;
  svg.append(s("circle", { class: `node ${centreClass}`, cx, cy, r: 13, fill: "#fff" }),
    s("text", { class: "node-label", x: cx, y: cy + 28, "text-anchor": "middle" }, centre.label));
  svg.append(s("circle", { class: "node dead", cx: 14, cy: height - 30, r: 6 }),
    s("text", { x: 26, y: height - 26 }, "death observed"),
    s("circle", { class: "node alive", cx: 14, cy: height - 12, r: 6 }),
    s("text", { x: 26, y: height - 8 }, "censored"));
  return svg;
}

// Cypher rows as a graph: each node (a value with "labels") once, keyed by its id-like
// property; the nodes of one row joined in column order (a path's nodes likewise), the
// edge named by the row's relationship (a value with "type") and its weight if any.
const NODE_KEYS = ["patient_id", "version_id", "slide_id", "query_id", "name", "id"];

function nodeKey(node) {
  const field = NODE_KEYS.find((k) => node[k] !== undefined);
  return field ? `${node.labels.join(":")}/${node[field]}` : JSON.stringify(node);
}

export function cypherGraph(rows, { width = 640, height = 460 } = {}) {
  const nodes = new Map();
  const edges = [];
  for (const row of rows) {
    const inRow = [];
    const rels = [];
    for (const value of row) {
      const values = Array.isArray(value) ? value : [value];
      for (const v of values) {
        if (v && typeof v === "object" && Array.isArray(v.labels)) {
          const k = nodeKey(v);
          if (!nodes.has(k)) nodes.set(k, v);
          inRow.push(k);
        } else if (v && typeof v === "object" && typeof v.type === "string") rels.push(v);
      }
    }
    for (let i = 1; i < inRow.length; i += 1) {
      edges.push({ a: inRow[i - 1], b: inRow[i], rel: rels[i - 1] || rels[0] || null });
    }
  }
  if (!nodes.size) return null;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    class: "graph cypher-graph" });
  const keys = [...nodes.keys()];
  const cx = width / 2, cy = height / 2, radius = Math.min(width, height) / 2 - 50;
  const at = new Map(keys.map((k, i) => {
    const a = (2 * Math.PI * i) / keys.length - Math.PI / 2;
    return [k, keys.length === 1 ? [cx, cy] : [cx + radius * Math.cos(a), cy + radius * Math.sin(a)]];
  }));
  for (const e of edges) {
    const [x1, y1] = at.get(e.a);
    const [x2, y2] = at.get(e.b);
    svg.append(s("line", { class: "edge", x1, y1, x2, y2, "stroke-width": 2 }));
    if (e.rel) {
      const label = e.rel.weight !== undefined ? `${e.rel.type} ${Number(e.rel.weight).toFixed(3)}`
        : e.rel.type;
      svg.append(s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 3, "text-anchor": "middle",
        class: "muted" }, label));
    }
  }
  for (const [k, node] of nodes) {
    const [x, y] = at.get(k);
    const outcome = node.event === undefined ? "other" : node.event ? "dead" : "alive";
    svg.append(s("circle", { class: `node ${outcome}`, cx: x, cy: y, r: 9 },
      s("title", {}, JSON.stringify(node))));
    svg.append(s("text", { class: "node-label", x, y: y + 22, "text-anchor": "middle" },
      k.split("/").slice(1).join("/") || node.labels.join(":")));
  }
  return svg;
}

// A patient's case-graph neighbourhood as the graph backend holds it (GET
// /patients/{id}/graph): the patient in the centre, hop-1 neighbours on an inner ring,
// hop-2 on an outer ring next to the neighbour that reached them first. Edge width = weight
// (relative to the heaviest); the patient's own edges are labelled with their weight, the
// others carry it as a tooltip (a 2-hop picture of k=10 has ~100 edges: labels would hide
// it). Node colour = death observed or censored.
export function caseGraph(graph, { width = 640, height = 560 } = {}) {
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    class: "graph case-graph" });
  const cx = width / 2, cy = (height - 30) / 2;
  const outer = Math.min(width, height - 30) / 2 - 34;
  const inner = graph.hops > 1 ? outer * 0.5 : outer;
  const ring1 = graph.nodes.filter((n) => n.hop === 1);
  const firstParent = new Map();
  for (const e of graph.edges) if (!firstParent.has(e.target)) firstParent.set(e.target, e.source);
  const at = new Map([[graph.patient_id, [cx, cy]]]);
  const angle = new Map();
  ring1.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, ring1.length) - Math.PI / 2;
    angle.set(n.id, a);
    at.set(n.id, [cx + inner * Math.cos(a), cy + inner * Math.sin(a)]);
  });
  const ring2 = graph.nodes.filter((n) => n.hop >= 2)
    .sort((a, b) => (angle.get(firstParent.get(a.id)) ?? 0) - (angle.get(firstParent.get(b.id)) ?? 0));
  ring2.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, ring2.length) - Math.PI / 2 + Math.PI / ring1.length;
    at.set(n.id, [cx + outer * Math.cos(a), cy + outer * Math.sin(a)]);
  });
  // width spans the weights' own range: similarities of one graph often differ in the 3rd digit
  const weights = graph.edges.map((e) => e.weight);
  const lo = Math.min(...weights), span = Math.max(1e-9, Math.max(...weights) - lo);
  const labels = [];
  for (const e of graph.edges) {
    const [x1, y1] = at.get(e.source) || [cx, cy];
    const [x2, y2] = at.get(e.target) || [cx, cy];
    const seedEdge = e.source === graph.patient_id;
    const rel = (e.weight - lo) / span;
    svg.append(s("line", { class: seedEdge ? "edge" : "edge far", x1, y1, x2, y2,
      "stroke-width": (seedEdge ? 1 + 6 * rel : 0.5 + 2 * rel).toFixed(2) },
    s("title", {}, `${e.source} → ${e.target}: weight ${e.weight.toFixed(3)} (rank ${e.rank})`)));
    if (seedEdge) {
      labels.push(s("text", { class: "muted edge-weight", x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 3,
        "text-anchor": "middle" }, e.weight.toFixed(3)));
    }
  }
  svg.append(...labels);  // over every line
  for (const n of graph.nodes) {
    const [x, y] = at.get(n.id);
    const seed = n.id === graph.patient_id;
    svg.append(s("circle", { class: `node patient hop${n.hop} ${n.event ? "dead" : "alive"}${seed ? " query" : ""}`,
      cx: x, cy: y, r: seed ? 12 : n.hop === 1 ? 8 : 5 },
    s("title", {}, `${n.id} (${n.cohort}, hop ${n.hop}): ${n.time.toFixed(1)} mo, ` +
      (n.event ? "died" : "censored"))));
    if (n.hop <= 1) {
      svg.append(s("text", { class: "node-label", x, y: y + (seed ? 26 : 20),
        "text-anchor": "middle" }, n.id));
    }
  }
  svg.append(s("circle", { class: "node dead", cx: 14, cy: height - 30, r: 6 }),
    s("text", { x: 26, y: height - 26 }, "death observed"),
    s("circle", { class: "node alive", cx: 14, cy: height - 12, r: 6 }),
    s("text", { x: 26, y: height - 8 }, "censored"),
    s("text", { x: width - 8, y: height - 8, "text-anchor": "end", class: "muted" },
      `${graph.version} · ${graph.backend} · ${graph.nodes.length} patients, ${graph.edges.length} edges`));
  return svg;
}
