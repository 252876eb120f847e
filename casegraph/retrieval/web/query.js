// Query: upload one or more .h5/.pt bags of a new patient; progress while it uploads and
// runs; the answer with its evidence: risk, predicted survival as steps, the neighbours
// (table and graph), the patch-level evidence (heatmap per slide, gene groups), the
// method's track record when present, the inputs' provenance and the notes. A refused upload shows the
// service's one-line error. With an optional genomics row (CSV/JSON, as `casegraph predict
// --genomics` takes), the chosen version also predicts from the bags and that row
// (POST /versions/{v}/predict): the similar-patients answer stays WSI-only.
import { ApiError, getJSON, postForm, q } from "./api.js";
import { neighbourhoodGraph, survivalSteps } from "./charts.js";
import { h, num, table, td } from "./dom.js";
import { evidencePanel, trackRecordPanel } from "./evidence.js";
import { neighboursTable } from "./patient.js";

export async function queryPage(view) {
  const files = h("input", { id: "bags", type: "file", multiple: true, accept: ".h5,.pt",
    required: true });
  const k = h("input", { id: "query-k", type: "number", min: 1, max: 100, value: 10 });
  const method = h("select", { id: "method" }, h("option", { value: "auto" }, "auto"),
    h("option", { value: "knn" }, "model-free kNN"), h("option", { value: "msrl" }, "MSRL"));
  const genomics = h("input", { id: "genomics", type: "file", accept: ".csv,.tsv,.json" });
  const versions = await getJSON("/versions");
  const genomicsVersion = h("select", { id: "genomics-version" },
    // trained versions first: the static k-NN graph predicts from no genomics
    [...versions].sort((a, b) => (a.model === "static-knn") - (b.model === "static-knn"))
      .map((v) => h("option", { value: v.version_id }, `${v.model}: ${v.version_id}`)));
  const progress = h("div", { id: "progress" });
  const answer = h("div", { id: "answer" });
  const withGenomics = h("div", { id: "genomics-answer" });
  const form = h("form", { class: "inline", id: "query-form" },
    h("label", {}, "bags (.h5 / .pt) ", files), h("label", {}, "k ", k),
    h("label", {}, "method ", method),
    h("label", {}, "genomics row (optional, .csv / .json) ", genomics),
    versions.length ? h("label", {}, "predicted by ", genomicsVersion) : "",
    h("button", { type: "submit" }, "Query"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new FormData();
    for (const file of files.files) body.append("files", file, file.name);
    body.append("k", k.value || "10");
    body.append("method", method.value);
    answer.replaceChildren();
    withGenomics.replaceChildren();
    if (genomics.files.length) {
      predictWithGenomics(withGenomics, files.files, genomics.files[0], genomicsVersion.value);
    }
    const bar = h("progress", { max: 1, value: 0 });
    const label = h("span", { class: "note" }, " uploading…");
    progress.replaceChildren(bar, label);
    try {
      const result = await postForm("/query", body, (fraction) => {
        if (fraction === null) {
          bar.removeAttribute("value");  // indeterminate: the service is working
          label.textContent = " running the query…";
        } else {
          bar.value = fraction;
        }
      });
      progress.replaceChildren();
      answer.append(...render(result));
    } catch (error) {
      progress.replaceChildren();
      if (error instanceof ApiError && error.status === 401) return;  // the login is shown
      answer.replaceChildren(h("p", { class: "error", id: "query-error" }, error.message));
    }
  });
  view.append(h("h1", {}, "Query a new patient"),
    h("p", { class: "note" }, "Patch-feature files (CLAM/TRIDENT .h5 or .pt) of one patient."),
    form, progress, withGenomics, answer);
}

async function predictWithGenomics(box, bags, row, versionId) {
  if (!versionId) {
    box.replaceChildren(h("p", { class: "error", id: "genomics-error" },
      "no model version in this store can use the genomics row"));
    return;
  }
  box.replaceChildren(h("p", { class: "note" }, "Predicting with the genomics row…"));
  try {
    const reads = await getJSON(`/versions/${q(versionId)}/inputs`);
    if (!reads.reads_genomics) {
      box.replaceChildren(h("p", { class: "error", id: "genomics-error" },
        `version ${versionId} does not read genomics: choose another to use the row`));
      return;
    }
    const body = new FormData();
    if (reads.uses_slides) for (const file of bags) body.append("files", file, file.name);
    body.append("genomics", row, row.name);
    const p = await postForm(`/versions/${q(versionId)}/predict`, body, () => {});
    const used = p.inferred ? `inferred the genomics ${row.name} did not cover`
      : `used the uploaded row ${row.name} (authentic genomics)`;
    box.replaceChildren(h("div", { class: "card", id: "genomics-summary" },
      h("p", {}, h("strong", {}, `risk ${num(p.risk)}`), ` by ${p.model} ${p.version_id}: `,
        used, reads.uses_slides ? " and the slides" : " alone (the version reads no slides)"),
      coverage(p.coverage),
      h("p", { class: "note" }, "The similar-patients answer below is WSI-only: the query " +
        "engine finds neighbours from the slides alone."),
      p.survival.length ? survivalSteps(p.survival, { width: 360, height: 160 }) : ""));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    box.replaceChildren(h("p", { class: "error", id: "genomics-error" }, error.message));
  }
}

function coverage(c) {
  if (!c || !c.groups || !c.groups.length) return "";
  const parts = c.groups.map((g) => `${g.group} ${g.given}/${g.expected}`);
  const missing = c.missing.length ? ` · ${c.missing.length} missing (set to the training mean)` : "";
  const unknown = c.unknown.length ? ` · ${c.unknown.length} not read by this version` : "";
  return h("p", { class: "note", id: "genomics-coverage" },
    `genomics given per group: ${parts.join(", ")}${missing}${unknown}`);
}

function render(r) {
  const points = r.survival.times.map((t, i) => ({ time: t, survival: r.survival.survival[i] }));
  return [
    h("h2", {}, "Answer"),
    h("div", { class: "card", id: "query-summary" },
      h("p", {}, h("strong", {}, `risk ${num(r.risk)}`), ` (higher = worse) · ${r.method}`,
        r.model_version ? ` · version ${r.model_version}` : "",
        ` · ${r.n_patches} patches from ${r.query_files.join(", ")}`),
      r.fallback_reason ? h("p", { class: "note" }, `model-free because ${r.fallback_reason}`) : "",
      r.notes.length ? h("ul", {}, r.notes.map((n) => h("li", {}, n))) : ""),
    trackRecordPanel(r),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("strong", {}, "Predicted survival (steps at the bin ends)"),
        survivalSteps(points)),
      h("div", { class: "card" }, h("strong", {}, "Neighbourhood"),
        neighbourhoodGraph({ label: "query" }, r.neighbours))),
    h("h2", {}, "Which patches drive the answer"), evidencePanel(r.evidence),
    h("h2", {}, "Neighbours"), neighboursTable(r.neighbours),
    h("h2", {}, "Inputs"),
    table(["input", "modality", "provenance", "detail"], r.inputs.map((i) => h("tr", {},
      td(i.name, "id"), td(i.modality), td(i.status), td(i.detail)))),
  ];
}
