// Cypher console: read-only queries with JSON parameters against the case graph in Neo4j
// (the service runs them in read transactions, so the database refuses writes); results
// as a table and, when rows hold nodes, as a graph; the cookbook queries one click away.
import { ApiError, getJSON, postJSON } from "./api.js";
import { cypherGraph } from "./charts.js";
import { h, table, td } from "./dom.js";

export async function cypherPage(view) {
  const status = await getJSON("/cypher");
  view.append(h("h1", {}, "Cypher console"));
  if (!status.available) {
    view.append(h("p", { class: "note", id: "cypher-unavailable" }, status.message));
    return;
  }
  const query = h("textarea", { id: "cypher-query", rows: 8, cols: 100, spellcheck: "false" },
    "MATCH (p:Patient) RETURN p.patient_id AS patient, p.cohort AS cohort LIMIT 10");
  const params = h("textarea", { id: "cypher-params", rows: 3, cols: 100, spellcheck: "false" },
    "{}");
  const out = h("div", { id: "cypher-result" });
  const run = async (event) => {
    event.preventDefault();
    let values;
    try {
      values = JSON.parse(params.value || "{}");
    } catch (error) {
      out.replaceChildren(h("p", { class: "error" }, `parameters are not JSON: ${error.message}`));
      return;
    }
    out.replaceChildren(h("p", { class: "note" }, "running…"));
    try {
      const answer = await postJSON("/cypher", { query: query.value, params: values });
      out.replaceChildren(...render(answer));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      out.replaceChildren(h("p", { class: "error", id: "cypher-error" }, error.message));
    }
  };
  const book = status.cookbook.map((c) => h("button", { type: "button", class: "cookbook",
    onclick: () => {
      query.value = c.query;
      params.value = JSON.stringify(Object.fromEntries(c.params.map((p) => [p, ""])));
    } }, c.name));
  view.append(h("p", { class: "note" }, status.message),
    book.length ? h("p", {}, "Cookbook: ", book) : "",
    h("form", { id: "cypher-form", onsubmit: run },
      h("p", {}, query), h("p", {}, "parameters (JSON) ", params),
      h("button", { type: "submit" }, "Run (read-only)")), out);
}

function cell(value) {
  return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
}

function render(answer) {
  const parts = [h("p", { class: "note" }, `${answer.rows.length} rows` +
    (answer.truncated ? " (more left off)" : "")),
  table(answer.columns, answer.rows.map((row) => h("tr", { class: "cypher-row" },
    row.map((v) => td(cell(v), "id")))))];
  const graph = cypherGraph(answer.rows);
  if (graph) parts.push(h("div", { class: "card" }, h("strong", {}, "As a graph"), graph));
  return parts;
}
