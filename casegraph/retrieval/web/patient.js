// Patient: outcome and modalities with provenance; similar patients from a chosen version
// (full ids), their outcomes and gene-group summaries; the neighbourhood KM beside the
// cohort's; the neighbourhood as a graph; its 1-2 hop case-graph neighbourhood from the
// graph backend; which of its patches drive the answer (or a
// patch-scoring version's scores); the patient's prediction by every version.
import { ApiError, getJSON, q } from "./api.js";
import { caseGraph, kmChart, kmLegend, neighbourhoodGraph, survivalSteps } from "./charts.js";
import { badge, h, num, outcome, table, td } from "./dom.js";
import { evidencePanel } from "./evidence.js";

export async function patientPage(view, patientId) {
  const input = h("input", { id: "patient-id", placeholder: "patient id", value: patientId || "",
    required: true });
  view.append(h("h1", {}, "Patient"), h("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/patient/${q(input.value.trim())}`;
  } }, input, h("button", { type: "submit" }, "Open")));
  if (!patientId) {
    view.append(h("p", { class: "note" }, "Enter a patient id, or pick one on the Cohorts page."));
    return;
  }
  const [patient, versions] = await Promise.all([
    getJSON(`/patients/${q(patientId)}`), getJSON("/versions")]);
  view.append(summary(patient));
  const chooser = h("select", { id: "version" },
    h("option", { value: "auto" }, "auto (newest MSRL version, else model-free)"),
    h("option", { value: "knn" }, "model-free (slide-embedding kNN)"),
    versions.filter((v) => v.model.toLowerCase().startsWith("msrl"))
      .map((v) => h("option", { value: v.version_id }, v.version_id)));
  const k = h("input", { id: "k", type: "number", min: 1, max: 100, value: 10 });
  const similarBox = h("div", { id: "similar" });
  const evidenceFrom = h("select", { id: "evidence-from" },
    h("option", { value: "" }, "the similar-patients answer above"),
    versions.filter((v) => PATCH_MODELS.includes(v.model.toLowerCase()))
      .map((v) => h("option", { value: v.version_id }, `${v.model}: ${v.version_id}`)));
  const evidenceBox = h("div", { id: "patient-evidence" });
  const reloadEvidence = () => evidence(evidenceBox, patient, chooser.value, evidenceFrom.value,
    Number(k.value) || 10);
  const hops = h("select", { id: "graph-hops" }, h("option", { value: "1" }, "1 hop"),
    h("option", { value: "2" }, "2 hops"));
  const graphVersion = h("select", { id: "graph-version" },
    h("option", { value: "" }, "newest synced"),
    versions.map((v) => h("option", { value: v.version_id }, `${v.model}: ${v.version_id}`)));
  const graphBox = h("div", { id: "case-graph" });
  const reloadGraph = () => drawCaseGraph(graphBox, patient, graphVersion.value, hops.value,
    Number(k.value) || 10);
  hops.addEventListener("change", reloadGraph);
  graphVersion.addEventListener("change", reloadGraph);
  const reload = () => Promise.all([
    similar(similarBox, patient, chooser.value, Number(k.value) || 10), reloadEvidence(),
    reloadGraph()]);
  chooser.addEventListener("change", reload);
  k.addEventListener("change", reload);
  evidenceFrom.addEventListener("change", reloadEvidence);
  view.append(h("h2", {}, "Similar patients"),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); reload(); } }, h("label", {}, "from ", chooser), h("label", {}, "k ", k)),
    similarBox,
    h("h2", {}, "Case-graph neighbourhood"),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); reloadGraph(); } },
      h("label", {}, "version ", graphVersion), h("label", {}, "", hops)),
    graphBox,
    h("h2", {}, "Which patches drive the answer"),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); reloadEvidence(); } },
      h("label", {}, "scores from ", evidenceFrom)),
    evidenceBox,
    h("h2", {}, "Predictions by every model version"), await predictions(patient, versions));
  await reload();
}

// families whose versions score patches themselves (attention, gradient or cluster shares)
const PATCH_MODELS = ["abmil", "late_fusion", "murrenet", "ccl"];

async function evidence(box, patient, choice, version, k) {
  box.replaceChildren(h("p", { class: "note" }, "Scoring the patches…"));
  const query = version ? `k=${k}&model_version=${q(version)}` : params(choice, k);
  try {
    box.replaceChildren(evidencePanel(
      await getJSON(`/patients/${q(patient.patient_id)}/evidence?${query}`)));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    box.replaceChildren(h("p", { class: "note", id: "evidence-error" }, error.message));
  }
}

async function drawCaseGraph(box, patient, version, hops, k) {
  box.replaceChildren(h("p", { class: "note" }, "Reading the case graph…"));
  const query = `hops=${q(hops)}&k=${k}` + (version ? `&version=${q(version)}` : "");
  try {
    const graph = await getJSON(`/patients/${q(patient.patient_id)}/graph?${query}`);
    box.replaceChildren(h("div", { class: "card" }, caseGraph(graph)));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    box.replaceChildren(h("p", { class: "note", id: "graph-error" }, error.message));
  }
}

function summary(p) {
  return h("div", { class: "card" },
    h("p", {}, h("strong", { class: "id" }, p.patient_id), ` · cohort ${p.cohort} · case `,
      h("span", { class: "id" }, p.case_id), p.oncotree_code ? ` · ${p.oncotree_code}` : ""),
    h("p", {}, "Outcome: ", outcome(p.time, p.event)),
    h("p", {}, `Slides: ${p.n_slides} · histology `, badge(p.histology), " · genomics ",
      badge(p.genomics)));
}

function params(choice, k) {
  const base = `k=${k}`;
  if (choice === "auto" || choice === "knn") return `${base}&method=${choice}`;
  return `${base}&method=msrl&model_version=${q(choice)}`;
}

async function similar(box, patient, choice, k) {
  box.replaceChildren(h("p", { class: "note" }, "Finding similar patients…"));
  let answer, km;
  try {
    const query = params(choice, k);
    [answer, km] = await Promise.all([
      getJSON(`/patients/${q(patient.patient_id)}/similar?${query}`),
      getJSON(`/patients/${q(patient.patient_id)}/km?${query}`)]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    box.replaceChildren(h("p", { class: "error" }, error.message));
    return;
  }
  box.replaceChildren(
    h("p", { class: "note" }, `Answered by ${answer.method}` +
      (answer.model_version ? ` (${answer.model_version})` : "") +
      (answer.fallback_reason ? `: ${answer.fallback_reason}` : "")),
    neighboursTable(answer.neighbours),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("strong", {}, "Neighbourhood"),
        neighbourhoodGraph({ label: patient.patient_id, event: patient.event }, answer.neighbours)),
      h("div", { class: "card" }, h("strong", {}, "Neighbourhood vs cohort (95% log-log band)"),
        kmChart([km.neighbourhood, km.cohort_curve], { height: 290 }),
        h("div", {}, kmLegend([km.neighbourhood, km.cohort_curve])))));
}

export function neighboursTable(neighbours) {
  return table(["rank", "patient", "cohort", "similarity", "weight", "outcome", "oncotree",
    "genomics", "histology", "gene groups (RNA mean / CNV mean / mutated)"],
  neighbours.map((n) => h("tr", { class: "neighbour-row" }, td(n.rank, "num"),
    h("td", { class: "id" }, h("a", { href: `#/patient/${q(n.patient_id)}` }, n.patient_id)),
    td(n.cohort), td(num(n.similarity), "num"), td(num(n.weight), "num"),
    h("td", {}, outcome(n.time, n.event)), td(n.oncotree_code ?? "—"),
    h("td", {}, badge(n.genomics)), h("td", {}, badge(n.histology)),
    td(groups(n.genomic_groups)))));
}

function groups(summaries) {
  const entries = Object.entries(summaries || {});
  if (!entries.length) return "—";
  return entries.map(([name, g]) =>
    `${name}: ${num(g.rna_mean, 2)} / ${num(g.cnv_mean, 2)} / ${g.n_mutated ?? "—"}`).join("; ");
}

async function predictions(patient, versions) {
  if (!versions.length) return h("p", { class: "note" }, "No model version in this store.");
  const rows = await Promise.all(versions.map(async (v) => {
    try {
      const p = await getJSON(`/versions/${q(v.version_id)}/predictions/${q(patient.patient_id)}`);
      return h("tr", { class: "prediction-row" }, td(v.version_id, "id"), td(v.model),
        td(num(p.risk), "num"), td(p.stored ? "stored" : "computed"),
        h("td", {}, p.survival.length ? survivalSteps(p.survival, { width: 260, height: 130 })
          : "risk only"));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      return h("tr", {}, td(v.version_id, "id"), td(v.model), h("td", { colspan: 3 }, error.message));
    }
  }));
  return table(["version", "model", "risk", "row", "predicted survival (steps)"], rows);
}
