// Cypher console: not served yet; the page says so in one line (the CLI has it).
import { h } from "./dom.js";

export async function cypherPage(view) {
  view.append(h("h1", {}, "Cypher console"),
    h("p", { class: "note", id: "cypher-unavailable" },
      "This service has no Neo4j configured: run read-only Cypher with `casegraph cypher`."));
}
