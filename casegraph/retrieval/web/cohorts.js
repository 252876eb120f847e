// Cohorts: counts, censoring, a KM curve per cohort, its patients, the model versions
// with their lineage (derived versions under their parent) and counts.
import { getJSON, q } from "./api.js";
import { kmChart, kmLegend } from "./charts.js";
import { badge, h, num, table, td } from "./dom.js";

export async function cohortsPage(view) {
  const [cohorts, versions, runs] = await Promise.all([getJSON("/cohorts"), getJSON("/versions"),
    getJSON("/cv-runs")]);
  view.append(h("h1", {}, "Cohorts"), table(
    ["cohort", "source", "patients", "with slides", "with genomics", "censored"],
    cohorts.map((c) => h("tr", { class: "cohort-row" }, td(c.name, "id"), td(c.source ?? "—"),
      td(c.n_patients, "num"), td(c.n_with_slides, "num"), td(c.n_with_genomics, "num"),
      td(c.censoring_rate === null ? "—" : `${(100 * c.censoring_rate).toFixed(0)}%`, "num")))));
  const cards = h("div", { class: "cards" });
  view.append(h("h2", {}, "Survival per cohort (Kaplan-Meier, 95% log-log band)"), cards);
  const curves = await Promise.all(cohorts.map((c) => getJSON(`/cohorts/${q(c.name)}/km`)));
  curves.forEach((curve) => {
    cards.append(h("div", { class: "card km" }, h("strong", {}, curve.label),
      kmChart([curve]), h("div", {}, kmLegend([curve]))));
  });
  view.append(h("h2", {}, "Model versions"), versionTree(versions));
  view.append(h("h2", {}, "Cross-validation runs (mean ± sd over folds)"), cvTable(runs));
  view.append(h("h2", {}, "Patients"));
  for (const c of cohorts) {
    const patients = await getJSON(`/cohorts/${q(c.name)}/patients`);
    view.append(h("details", {}, h("summary", {}, `${c.name}: ${patients.length} patients`),
      table(["patient", "outcome", "slides", "genomics", "histology"],
        patients.map((p) => h("tr", {},
          h("td", { class: "id" }, h("a", { href: `#/patient/${q(p.patient_id)}`,
            class: "patient-link" }, p.patient_id)),
          td(`${num(p.time, 1)} mo, ${p.event ? "died" : "censored"}`),
          td(p.n_slides, "num"), h("td", {}, badge(p.genomics)),
          h("td", {}, badge(p.histology)))))));
  }
}

function versionTree(versions) {
  if (!versions.length) return h("p", { class: "note" }, "No model version in this store.");
  const ids = new Set(versions.map((v) => v.version_id));
  const children = new Map();
  for (const v of versions) {
    const parent = ids.has(v.parent_id) ? v.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(v);
  }
  const rows = [];
  const walk = (parent, depth) => {
    for (const v of children.get(parent) || []) {
      const counts = Object.entries(v.counts).map(([k, n]) => `${k} ${n}`).join(", ");
      rows.push(h("tr", { class: "version-row" },
        td(`${"↳ ".repeat(depth)}${v.version_id}`, "id"), td(v.model), td(v.cohort ?? "all"),
        td(v.parent_id ?? "trained", "id"), td(new Date(v.created_at).toISOString().slice(0, 19)),
        td(counts)));
      walk(v.version_id, depth + 1);
    }
  };
  walk(null, 0);
  return table(["version", "model", "cohort", "derived from", "created (UTC)", "counts"], rows);
}

function cvTable(runs) {
  if (!runs.length) return h("p", { class: "note" }, "No cross-validation run in this store.");
  const names = Object.keys(runs[0].metrics);
  const cell = (m) => (m.mean === null ? "—"
    : `${num(m.mean)}${m.std === null ? "" : ` ± ${num(m.std)}`}`);
  return table(["run", "model", "cohort", "splits", "folds", ...names],
    runs.map((r) => h("tr", { class: "cv-row" }, td(r.run_id, "id"), td(r.model), td(r.cohort),
      td(r.split_set), td(r.n_folds, "num"), names.map((n) => td(cell(r.metrics[n]), "num")))));
}
