// Query: upload one or more .h5/.pt bags of a new patient; progress while it uploads and
// runs; the answer with its evidence: risk, predicted survival as steps, the neighbours
// (table and graph), the patch-level evidence (heatmap per slide, gene groups), the
// method's track record when present, the inputs' provenance and the notes. A refused upload shows the
// service's one-line error.
import { ApiError, postForm } from "./api.js";
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
  const progress = h("div", { id: "progress" });
  const answer = h("div", { id: "answer" });
  const form = h("form", { class: "inline", id: "query-form" },
    h("label", {}, "bags (.h5 / .pt) ", files), h("label", {}, "k ", k),
    h("label", {}, "method ", method), h("button", { type: "submit" }, "Query"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new FormData();
    for (const file of files.files) body.append("files", file, file.name);
    body.append("k", k.value || "10");
    body.append("method", method.value);
    answer.replaceChildren();
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
    form, progress, answer);
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
