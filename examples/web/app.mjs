// The page: a form built from the manifest's feature names, the prediction, and a box to score several
// rows at once, each with its 95% prediction interval and whether it lies outside the training data (when
// the bundle keeps what intervals need: intervals.mjs). Values are shown rounded; each <output> and table
// cell keeps the exact answer (float32, or float64 for a float64 bundle) in its data-value (data-lower,
// data-upper) attribute.
import { loadBundle, predict } from "./bundle.mjs";
import { forIntervals } from "./encoding.mjs";
import { intervalsOf } from "./intervals.mjs";

const LEVEL = 0.95;
// intervals of the model's design (with an encoding: ./encoding.mjs); null without them. An interval the bundle
// cannot give (too few calibration rows for LEVEL) leaves the predictions shown and says why in ``where``.
const withIntervals = (manifest, rows, answers, where) => {
  if (!manifest.intervals) return null;
  try {
    const seen = forIntervals(manifest, rows);
    return intervalsOf(seen.manifest, seen.rows, answers, LEVEL);
  } catch (e) {
    showError(where, `no ${LEVEL * 100}% interval: ${e.message}`);
    return null;
  }
};

const $ = (id) => document.getElementById(id);
const shown = (v) => (Number.isFinite(v) ? Number(v.toPrecision(6)).toString() : String(v));

function element(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function showError(where, message) {
  where.textContent = message;
  where.hidden = false;
}

function describe(manifest) {
  const m = manifest.model || {};
  const kind = m.kind === "mlp" ? `MLP ${(m.hidden || []).join(",")} ${m.activation}` : (m.kind || "model");
  $("title").textContent = `${manifest.targets.join(", ")} ~ ${manifest.features.join(", ")}`;
  const parity = manifest.parity ? (manifest.parity.passed ? "parity passed" : "parity FAILED") : "parity not run";
  const rows = manifest.training ? `, trained on ${manifest.training.dataset.rows} rows` : "";
  $("about").textContent = `${kind}${rows}; ${parity} at export`;
}

// A feature's column among the training statistics (which describe the model's design: with categorical
// columns, one per dummy column), or -1.
function statsColumn(manifest, name) {
  return manifest.training ? manifest.training.dataset.features.indexOf(name) : -1;
}

const columnOf = (manifest, j) => (manifest.encoding ? manifest.encoding.columns[j] : null);

function buildForm(manifest) {
  const stats = manifest.training ? manifest.training.feature_stats : null;
  const fields = $("fields");
  manifest.features.forEach((name, j) => {
    const id = `feature-${j}`;
    const row = element("div", { class: "field" });
    row.append(element("label", { for: id }, name));
    const column = columnOf(manifest, j);
    const at = statsColumn(manifest, name);
    if (column && column.kind === "categorical") {  // one option per level the model was trained on
      const select = element("select", { id, name, "data-feature": name });
      column.levels.forEach((level) => select.append(element("option", { value: level }, level)));
      row.append(select);
      row.append(element("small", {}, `${column.levels.length} levels`));
    } else {
      const input = element("input", { id, name, type: "text", inputmode: "decimal", autocomplete: "off",
                                       "data-feature": name, ...(column && column.impute ? {} : { required: "" }) });
      if (stats && at >= 0) input.value = shown(stats.mean[at]);
      row.append(input);
      if (stats && at >= 0) {
        const empty = column && column.impute ? `; empty: the training ${column.impute.replace("_", " ")}` : "";
        row.append(element("small", {}, `training data: ${shown(stats.min[at])} to ${shown(stats.max[at])}${empty}`));
      }
    }
    fields.append(row);
  });
  const results = $("results");
  manifest.targets.forEach((name, k) => {
    const line = element("p", { class: "result" });
    line.append(element("span", { class: "target" }, `${name} = `));
    line.append(element("output", { id: `prediction-${k}`, for: manifest.features.map((_, j) => `feature-${j}`).join(" ") }));
    if (manifest.intervals) {
      line.append(element("span", { class: "muted" }, ` ${LEVEL * 100}% prediction interval `));
      line.append(element("output", { id: `interval-${k}`, class: "interval" }));
    }
    results.append(line);
  });
  results.append(element("p", { id: "domain", class: "warning", role: "status", hidden: "" }));
}

function formRow(manifest) {
  return manifest.features.map((name, j) => {
    const text = $(`feature-${j}`).value.trim();
    const column = columnOf(manifest, j);
    if (column && column.kind === "categorical") return text;
    if (column && column.impute && text === "") return null;
    const value = Number(text);
    if (text === "" || !Number.isFinite(value)) throw new Error(`${name}: "${text}" is not a number`);
    return value;
  });
}

// One run at a time, in the order asked (typing fires one per key).
let queue = Promise.resolve();
const inTurn = (task) => (queue = queue.then(task, task));

async function predictForm(bundle) {
  const error = $("form-error");
  error.hidden = true;
  try {
    const row = formRow(bundle.manifest);
    const answers = await predict(bundle, [row]);
    const bands = withIntervals(bundle.manifest, [row], answers, error);
    answers[0].forEach((v, k) => {
      const out = $(`prediction-${k}`);
      out.value = shown(v);
      out.dataset.value = String(v);
      out.dataset.inputs = JSON.stringify(row);
      if (bands) {
        const band = $(`interval-${k}`);
        const [lower, upper] = [bands.lower[0][k], bands.upper[0][k]];
        band.value = `${shown(lower)} to ${shown(upper)}`;
        Object.assign(band.dataset, { lower: String(lower), upper: String(upper), inputs: JSON.stringify(row) });
      } else if ($(`interval-${k}`)) {
        const band = $(`interval-${k}`);
        band.value = "";
        for (const key of ["lower", "upper", "inputs"]) delete band.dataset[key];
      }
    });
    const domain = $("domain");
    domain.hidden = !(bands && bands.out_of_domain[0]);
    domain.textContent = domain.hidden ? "" : `Outside the training data: ${bands.reasons[0]}; the model extrapolates here.`;
    domain.dataset.flag = String(Boolean(bands && bands.out_of_domain[0]));
  } catch (e) {
    bundle.manifest.targets.forEach((_, k) => {
      const out = $(`prediction-${k}`);
      out.value = "";
      delete out.dataset.value;
      delete out.dataset.inputs;
    });
    showError(error, e.message);
  }
}

// Rows as CSV (comma, semicolon, tab or spaces; with categorical columns, whose levels may hold spaces, not
// spaces): a first line of feature names orders the columns by name, otherwise the values are in the
// manifest's feature order. Categorical cells stay text, and empty cells of imputed columns become null.
export function parseRows(text, features, manifest = {}) {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
  const split = (line) => line.split(manifest.encoding ? /[,;\t]/ : /[,;\t ]+/).map((cell) => cell.trim());
  const header = (cells) => (manifest.encoding ? features.every((f) => cells.includes(f))
                                               : cells.some((cell) => !Number.isFinite(Number(cell))));
  let order = features.map((_, j) => j);
  if (lines.length && header(split(lines[0]))) {
    const names = split(lines.shift());
    order = features.map((f) => {
      const at = names.indexOf(f);
      if (at < 0) throw new Error(`the header line has no column ${f} (it has ${names.join(", ")})`);
      return at;
    });
  }
  return lines.map((line, i) => {
    const cells = split(line);
    return order.map((at, j) => {
      const column = columnOf(manifest, j);
      if (column && column.kind === "categorical" && cells[at] !== undefined) return cells[at];
      if (column && column.impute && cells[at] === "") return null;
      const value = Number(cells[at]);
      if (cells[at] === undefined || !Number.isFinite(value)) {
        throw new Error(`row ${i + 1}, ${features[j]}: "${cells[at] ?? ""}" is not a number`);
      }
      return value;
    });
  });
}

async function scoreRows(bundle) {
  const { manifest } = bundle;
  const error = $("batch-error");
  const table = $("batch-table");
  error.hidden = true;
  table.replaceChildren();
  try {
    const rows = parseRows($("batch-rows").value, manifest.features, manifest);
    const answers = await predict(bundle, rows);
    const bands = withIntervals(manifest, rows, answers, error);
    const head = element("tr");
    // the answers first, so that they show on a narrow screen before the table scrolls
    const bandColumns = bands ? [...manifest.targets.map((t) => `${t} ${LEVEL * 100}% interval`), "outside the training data"] : [];
    ["#", ...manifest.targets, ...bandColumns, ...manifest.features].forEach((c) => head.append(element("th", { scope: "col" }, c)));
    table.append(element("thead"));
    table.tHead.append(head);
    const body = element("tbody");
    rows.forEach((row, i) => {
      const tr = element("tr");
      tr.append(element("th", { scope: "row" }, String(i + 1)));
      answers[i].forEach((v, k) => tr.append(element("td", { class: "answer", "data-row": i, "data-target": k,
                                                              "data-value": String(v) }, shown(v))));
      if (bands) {
        answers[i].forEach((_, k) => tr.append(element("td", { class: "interval", "data-row": i, "data-target": k,
          "data-lower": String(bands.lower[i][k]), "data-upper": String(bands.upper[i][k]) },
          `${shown(bands.lower[i][k])} to ${shown(bands.upper[i][k])}`)));
        tr.append(element("td", { class: "domain", "data-row": i, "data-flag": String(bands.out_of_domain[i]),
                                  title: bands.reasons[i] }, bands.out_of_domain[i] ? "yes" : "no"));
      }
      row.forEach((v) => tr.append(element("td", {}, shown(v))));
      body.append(tr);
    });
    table.append(body);
    $("batch-count").textContent = `${rows.length} row${rows.length === 1 ? "" : "s"} scored`;
  } catch (e) {
    $("batch-count").textContent = "";
    showError(error, e.message);
  }
}

async function main() {
  const base = new URL(new URLSearchParams(location.search).get("bundle") || "bundle/", location.href);
  const status = $("status");
  let bundle;
  try {
    bundle = await loadBundle(base);
  } catch (e) {
    status.hidden = true;
    showError($("load-error"), e.message);
    document.body.dataset.state = "error";
    return;
  }
  describe(bundle.manifest);
  buildForm(bundle.manifest);
  if ((bundle.manifest.files || {})["report/index.html"]) {
    $("report-link").href = new URL("report/index.html", base).href;
    $("report").hidden = false;
  }
  $("checksum").textContent = `model.onnx sha256 ${bundle.sha256.slice(0, 12)}... matches the manifest (checked in this page)`;
  $("form").addEventListener("submit", (event) => { event.preventDefault(); inTurn(() => predictForm(bundle)); });
  $("form").addEventListener("input", () => inTurn(() => predictForm(bundle)));
  $("batch-form").addEventListener("submit", (event) => { event.preventDefault(); inTurn(() => scoreRows(bundle)); });
  $("batch-rows").placeholder = `${bundle.manifest.features.join(",")}\n` +
    bundle.manifest.features.map((_, j) => {
      const column = columnOf(bundle.manifest, j);
      return column && column.kind === "categorical" ? column.levels[0] : "1.5";
    }).join(",");
  status.hidden = true;
  $("model").hidden = false;
  await inTurn(() => predictForm(bundle));
  document.body.dataset.state = "ready";
}

main();
