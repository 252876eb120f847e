// The app shell: the key login and a hash router (#/cohorts, #/patient/ID, #/query,
// #/cypher). Without an accepted key no page is drawn and nothing is fetched but the key check.
import { ApiError, getJSON, key } from "./api.js";
import { cohortsPage } from "./cohorts.js";
import { cypherPage } from "./cypher.js";
import { patientPage } from "./patient.js";
import { queryPage } from "./query.js";

const $ = (id) => document.getElementById(id);
const PAGES = { cohorts: cohortsPage, patient: patientPage, query: queryPage, cypher: cypherPage };

function showLogin(message) {
  key.clear();
  $("nav").hidden = true;
  $("view").replaceChildren();
  $("error").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("key").focus();
}

function showError(error) {
  if (error instanceof ApiError && error.status === 401) return;  // the login is shown
  $("error").textContent = error.message || String(error);
  $("error").hidden = false;
}

async function route() {
  if (!key.get()) return showLogin();
  const [, name = "cohorts", ...rest] = location.hash.split("/");
  const page = PAGES[name] || cohortsPage;
  $("login").hidden = true;
  $("nav").hidden = false;
  $("error").hidden = true;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === (PAGES[name] ? name : "cohorts"));
  }
  // a fresh container per visit: a page still loading for an earlier visit draws into
  // its own, detached one
  const view = document.createElement("div");
  $("view").replaceChildren(view);
  try {
    await page(view, rest.map(decodeURIComponent).join("/"));
  } catch (error) {
    showError(error);
  }
}

async function login(event) {
  event.preventDefault();
  const candidate = $("key").value.trim();
  try {
    await getJSON("/cohorts", candidate);  // the key check: any keyed route would do
  } catch (error) {
    const message = error instanceof ApiError && error.status === 401 ? REFUSED : `The service could not check the key: ${error.message}`;
    showLogin(message);
    return;
  }
  key.set(candidate);
  $("key").value = "";
  await route();
}

const REFUSED = "The API key was not accepted: enter a key the service knows.";
$("login-form").addEventListener("submit", login);
window.addEventListener("casegraph:unauthorised", () => showLogin(REFUSED));
$("logout").addEventListener("click", () => showLogin());
window.addEventListener("hashchange", route);
route();
