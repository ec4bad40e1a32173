#!/usr/bin/env node
// Score rows with a torchport bundle from Node.js.
// Reads manifest.json for the feature order and tensor names, checks model.onnx against its sha256,
// runs it with onnxruntime-node (CPU), and prints one JSON array of predictions per input row.
//
//   node score.mjs BUNDLE_DIR < rows.json
// rows.json: [[3.0], [1.5]] (features in manifest order) or [{"area": 3.0}, ...] (matched by name).
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";

function fail(message) {
  process.stderr.write(`torchport-score: error: ${message}\n`);
  process.exit(2);
}

export async function loadBundle(dir) {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  } catch (e) {
    throw new Error(`${join(dir, "manifest.json")}: ${e.message}`);
  }
  const bytes = readFileSync(join(dir, "model.onnx"));
  const digest = createHash("sha256").update(bytes).digest("hex");
  if (digest !== manifest.files["model.onnx"].sha256) {
    throw new Error(`${join(dir, "model.onnx")} does not match the manifest's sha256`);
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["cpu"] });
  return { manifest, session };
}

export function toMatrix(rows, features) {
  const data = new Float32Array(rows.length * features.length);
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
  return new ort.Tensor("float32", data, [rows.length, features.length]);
}

export async function predict({ manifest, session }, rows) {
  const input = toMatrix(rows, manifest.features);
  const result = await session.run({ [manifest.inputs[0].name]: input });
  const out = result[manifest.outputs[0].name];
  const width = manifest.targets.length;
  return rows.map((_, i) => Array.from(out.data.slice(i * width, (i + 1) * width)));
}

async function main() {
  const dir = process.argv[2];
  if (!dir) fail("usage: node score.mjs BUNDLE_DIR < rows.json");
  let rows;
  try {
    rows = JSON.parse(readFileSync(0, "utf8"));
  } catch (e) {
    fail(`stdin is not JSON: ${e.message}`);
  }
  if (!Array.isArray(rows)) fail("stdin must hold a JSON array of rows");
  try {
    const bundle = await loadBundle(dir);
    process.stdout.write(JSON.stringify(await predict(bundle, rows)) + "\n");
  } catch (e) {
    fail(e.message);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main();
