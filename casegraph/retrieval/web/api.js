// The JSON API, as every client sees it: each call sends the key in X-API-Key.
const KEY = "casegraph.apiKey";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

// Any 401 means the key in hand is not (or no longer) accepted: the shell asks again.
function refused(status) {
  if (status === 401) window.dispatchEvent(new CustomEvent("casegraph:unauthorised"));
}

function detailOf(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail) && body.detail.length) {
    const first = body.detail[0];
    return `${(first.loc || []).slice(1).join(".")}: ${first.msg}`;
  }
  return `the service answered ${status}`;
}

export async function getJSON(path, apiKey = key.get()) {
  const response = await fetch(path, { headers: { "X-API-Key": apiKey || "" } });
  const body = await response.json().catch(() => null);
  refused(response.status);
  if (!response.ok) throw new ApiError(response.status, detailOf(response.status, body));
  return body;
}

export async function postJSON(path, body) {
  const response = await fetch(path, { method: "POST", body: JSON.stringify(body),
    headers: { "X-API-Key": key.get() || "", "Content-Type": "application/json" } });
  const answer = await response.json().catch(() => null);
  refused(response.status);
  if (!response.ok) throw new ApiError(response.status, detailOf(response.status, answer));
  return answer;
}

// A multipart POST with upload progress (fetch has none): onProgress(fraction | null),
// null once the upload is sent and the service is working on it.
export function postForm(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("X-API-Key", key.get() || "");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => onProgress(e.lengthComputable ? e.loaded / e.total : null);
    xhr.upload.onload = () => onProgress(null);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else {
        refused(xhr.status);
        reject(new ApiError(xhr.status, detailOf(xhr.status, xhr.response)));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "the service could not be reached"));
    xhr.send(form);
  });
}

export const q = encodeURIComponent;
