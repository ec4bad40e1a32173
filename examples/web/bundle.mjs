// A torchport bundle in the browser, without the page: read manifest.json, fetch model.onnx, check its
// sha256 against the manifest with Web Crypto, and run it with onnxruntime-web (the WebAssembly build,
// served from the installed npm package at ./ort/).
import * as ort from "./ort/ort.wasm.min.mjs";
import { encodeRows } from "./encoding.mjs";

ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
// A plain static server gives no cross-origin isolation, so no shared memory for threads; one thread is
// also the quickest for a model this small.
ort.env.wasm.numThreads = 1;

async function fetchOk(url, what) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${what} (${url}) could not be fetched: HTTP ${response.status}`);
  return response;
}

export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Loads the bundle at `base` (a URL ending in /); refuses a model.onnx whose sha256 differs from the manifest's.
export async function loadBundle(base) {
  const manifest = await (await fetchOk(new URL("manifest.json", base), "manifest.json")).json();
  if (manifest.format !== "torchport.bundle" || !Array.isArray(manifest.features)) {
    throw new Error("manifest.json is not a torchport bundle manifest");
  }
  const entry = (manifest.files || {})["model.onnx"];
  if (!entry || typeof entry.sha256 !== "string") throw new Error("manifest.json lists no sha256 for model.onnx");
  const bytes = new Uint8Array(await (await fetchOk(new URL("model.onnx", base), "model.onnx")).arrayBuffer());
  const digest = await sha256Hex(bytes);
  if (digest !== entry.sha256) {
    throw new Error(`model.onnx does not match the manifest (sha256 ${digest.slice(0, 16)}..., expected ` +
                    `${entry.sha256.slice(0, 16)}...): the file was changed or corrupted, so nothing is predicted`);
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  return { manifest, session, sha256: digest };
}

// rows: arrays in the manifest's feature order (numbers; a categorical column's level as text; null where
// the bundle imputes: ./encoding.mjs). Returns one array of target values per row (answers in the model's
// dtype, the manifest's input dtype: float32, or float64 for a float64 bundle, as JavaScript numbers).
export async function predict({ manifest, session }, rows) {
  const width = manifest.features.length;
  const dtype = manifest.inputs[0].dtype === "float64" ? "float64" : "float32";
  const data = encodeRows(manifest, rows, false, dtype);
  const input = new ort.Tensor(dtype, data, [rows.length, width]);
  const result = await session.run({ [manifest.inputs[0].name]: input });
  const out = result[manifest.outputs[0].name].data;
  const targets = manifest.targets.length;
  return rows.map((_, i) => Array.from(out.slice(i * targets, (i + 1) * targets)));
}
