#!/usr/bin/env node
// Score rows with a torchport bundle from Node.js.
// Reads manifest.json for the feature order and tensor names, checks model.onnx against its sha256,
// runs the bundle's golden cases (golden.json: rows with their float64 answers and the bound rounding may
// account for) to check the model computes here what it computed at export, then runs the
// rows with onnxruntime-node (CPU) and prints one JSON array of predictions per input row.
//
//   node score.mjs BUNDLE_DIR [--interval LEVEL [--mean]] < rows.json
// rows.json: [[3.0], [1.5]] (features in manifest order) or [{"area": 3.0}, ...] (matched by name); a bundle
// with categorical columns takes their levels as strings ([[3078.5, 2.8, "IBM"]]), and one with imputed
// columns takes null there (../web/encoding.mjs maps them as the manifest's encoding says).
// With --interval 0.9 it prints one JSON object instead: prediction, lower, upper (one array per row),
// out_of_domain (one bool per row) and reasons (intervals.mjs; --mean: a linear model's interval for the mean).
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { encodeRows, forIntervals } from "../web/encoding.mjs";
import { intervalsOf } from "./intervals.mjs";

function fail(message) {
  process.stderr.write(`torchport-score: error: ${message}\n`);
  process.exit(2);
}

function checkedFile(dir, manifest, name) {
  const bytes = readFileSync(join(dir, name));
  const digest = createHash("sha256").update(bytes).digest("hex");
  if (!manifest.files[name] || digest !== manifest.files[name].sha256) {
    throw new Error(`${join(dir, name)} does not match the manifest's sha256`);
  }
  return bytes;
}

export async function selfCheck(dir, { manifest, session }) {
  if (!manifest.golden) return { checked: false, rows: 0 };  // a bundle from before golden cases
  const golden = JSON.parse(checkedFile(dir, manifest, manifest.golden.file).toString("utf8"));
  const out = await predict({ manifest, session }, golden.inputs, { codes: true });
  let worst = { share: 0 };
  out.forEach((row, i) => row.forEach((value, j) => {
    const error = Math.abs(value - golden.answers[i][j]);
    const share = golden.bound[j] > 0 ? error / golden.bound[j] : (error > 0 ? Infinity : 0);
    if (!(share <= worst.share)) worst = { share, i, j, value, error };
  }));
  if (!(worst.share <= 1)) {
    const { i, j, value, error } = worst;
    throw new Error(`self-check failed: golden row ${i}, target ${JSON.stringify(manifest.targets[j])}: the ` +
      `float64 answer is ${golden.answers[i][j]}, this model gives ${value}, off by ${error}, beyond the ` +
      `${golden.bound[j]} that ${dtypeOf(manifest)} rounding may account for`);
  }
  return { checked: true, rows: golden.inputs.length, share: worst.share };
}

export async function loadBundle(dir) {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  } catch (e) {
    throw new Error(`${join(dir, "manifest.json")}: ${e.message}`);
  }
  if (manifest.parity && manifest.parity.passed === false) {
    throw new Error(`${dir}: this bundle failed its parity check and was published marked failed`);
  }
  const bytes = checkedFile(dir, manifest, "model.onnx");
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["cpu"] });
  const bundle = { manifest, session };
  bundle.selfCheck = await selfCheck(dir, bundle);
  return bundle;
}

// The model's dtype (its input tensor's, in the manifest): float32, or float64 for a float64 bundle.
export function dtypeOf(manifest) {
  return manifest.inputs[0].dtype === "float64" ? "float64" : "float32";
}

export function toMatrix(rows, features, dtype = "float32", manifest = null, codes = false) {
  if (manifest && manifest.encoding) {  // categorical and imputed columns: ../web/encoding.mjs
    return new ort.Tensor(dtype, encodeRows(manifest, rows, codes, dtype), [rows.length, features.length]);
  }
  const size = rows.length * features.length;
  const data = dtype === "float64" ? new Float64Array(size) : new Float32Array(size);
  rows.forEach((row, i) => {
    features.forEach((name, j) => {
      const value = Array.isArray(row) ? row[j] : row[name];
      if (typeof value !== "number" || !Number.isFinite(value)) {
        throw new Error(`row ${i + 1}, feature ${JSON.stringify(name)}: expected a finite number, got ${JSON.stringify(value)}`);
      }
      data[i * features.length + j] = value;
    });
    if (Array.isArray(row) && row.length !== features.length) {
      throw new Error(`row ${i + 1}: expected ${features.length} values (${features.join(", ")}), got ${row.length}`);
    }
  });
  return new ort.Tensor(dtype, data, [rows.length, features.length]);
}

export async function predict({ manifest, session }, rows, { codes = false } = {}) {
  const input = toMatrix(rows, manifest.features, dtypeOf(manifest), manifest, codes);
  const result = await session.run({ [manifest.inputs[0].name]: input });
  const out = result[manifest.outputs[0].name];
  const width = manifest.targets.length;
  return rows.map((_, i) => Array.from(out.data.slice(i * width, (i + 1) * width)));
}

// The rows as arrays of numbers in the manifest's feature order (objects matched by name).
export function inOrder(rows, features) {
  return rows.map((row) => features.map((name, j) => (Array.isArray(row) ? row[j] : row[name])));
}

export async function predictInterval(bundle, rows, level = 0.95, kind = "prediction") {
  const predictions = await predict(bundle, rows);
  const seen = forIntervals(bundle.manifest, inOrder(rows, bundle.manifest.features));  // an encoding: the design
  return intervalsOf(seen.manifest, seen.rows, predictions, level, kind);
}

const USAGE = "usage: node score.mjs BUNDLE_DIR [--interval LEVEL [--mean]] < rows.json";

// The options after BUNDLE_DIR: --interval LEVEL (once) and --mean (once, with --interval); anything else is
// refused by name rather than ignored (a mistyped --intreval would otherwise print plain predictions).
function parseOptions(options) {
  let level = null;
  let mean = false;
  for (let i = 0; i < options.length; i++) {
    const option = options[i];
    if (option === "--interval" && level === null) {
      const text = options[++i];
      level = Number(text);
      if (text === undefined || text.trim() === "" || !(level > 0 && level < 1)) {
        fail(`--interval takes a level between 0 and 1 (0.9), got ${text === undefined ? "nothing" : JSON.stringify(text)}`);
      }
    } else if (option === "--mean" && !mean) {
      mean = true;
    } else if (option === "--interval" || option === "--mean") {
      fail(`${option} is given twice; ${USAGE}`);
    } else {
      fail(`unknown option ${JSON.stringify(option)}; ${USAGE}`);
    }
  }
  if (mean && level === null) fail(`--mean goes with --interval LEVEL; ${USAGE}`);
  return { level, kind: mean ? "mean" : "prediction" };
}

async function main() {
  const [dir, ...options] = process.argv.slice(2);
  if (!dir || dir.startsWith("--")) fail(USAGE);
  const { level, kind } = parseOptions(options);
  let rows;
  try {
    rows = JSON.parse(readFileSync(0, "utf8"));
  } catch (e) {
    fail(`stdin is not JSON: ${e.message}`);
  }
  if (!Array.isArray(rows)) fail("stdin must hold a JSON array of rows");
  try {
    const bundle = await loadBundle(dir);
    const answer = level === null ? await predict(bundle, rows) : await predictInterval(bundle, rows, level, kind);
    process.stdout.write(JSON.stringify(answer) + "\n");
  } catch (e) {
    fail(e.message);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main();
