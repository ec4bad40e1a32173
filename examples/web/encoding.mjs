// Cells as a torchport bundle's graph takes them, from the manifest's "encoding" (absent: every feature a
// finite number): a categorical column's level becomes its code (its index in the column's levels; with
// `codes`, as in golden.json, the cells are the codes themselves), and a missing cell (null, NaN, "") becomes NaN where the
// bundle imputes that column, which the graph fills with the training statistic. The same rules as
// torchport.runtime.encoding; used by this page and by examples/node/score.mjs. No dependencies.

const MISSING = new Set(["", "NA", "NaN", "nan", "null", "None"]);

// A level's text as torchport writes it: strings trimmed, numbers in their shortest form (1.0 -> "1").
export function levelText(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "number") return Number.isNaN(value) ? null : String(value);
  const text = String(value).trim();
  if (MISSING.has(text)) return null;
  const number = Number(text);
  return Number.isFinite(number) ? String(number) : text;
}

// One cell of feature `j` as the graph's input; `where` names the row for errors; `codes`: a categorical
// cell is its level's code already.
export function encodeCell(manifest, j, value, where, codes = false) {
  const name = manifest.features[j];
  const column = manifest.encoding ? manifest.encoding.columns[j] : null;
  if (!column) {
    if (typeof value !== "number" || !Number.isFinite(value)) {
      throw new Error(`${where}, feature ${JSON.stringify(name)}: expected a finite number, got ${JSON.stringify(value)}`);
    }
    return value;
  }
  const missing = () => {
    if (column.impute === null) {
      throw new Error(`${where}, feature ${JSON.stringify(name)} is missing; this model imputes no value for it`);
    }
    return NaN;
  };
  if (column.kind === "categorical") {
    if (codes) {
      if (value === null) return missing();
      if (Number.isInteger(value) && value >= 0 && value < column.levels.length) return value;
      throw new Error(`${where}, feature ${JSON.stringify(name)}: ${JSON.stringify(value)} is not a level code`);
    }
    const text = levelText(value);
    if (text === null) return missing();
    const code = column.levels.indexOf(text);
    if (code < 0) {
      throw new Error(`${where}, feature ${JSON.stringify(name)}: ${JSON.stringify(text)} is not a level the ` +
                      `model was trained on (${column.levels.map((l) => JSON.stringify(l)).join(", ")})`);
    }
    return code;
  }
  if (value === null || value === undefined || (typeof value === "number" && Number.isNaN(value))) return missing();
  const number = typeof value === "string" && !MISSING.has(value.trim()) ? Number(value) : value;
  if (typeof value === "string" && MISSING.has(value.trim())) return missing();
  if (typeof number !== "number" || !Number.isFinite(number)) {
    throw new Error(`${where}, feature ${JSON.stringify(name)}: expected a finite number, got ${JSON.stringify(value)}`);
  }
  return number;
}

// Rows (arrays in the manifest's feature order, or objects by feature name) as one Float32Array (a
// Float64Array for dtype "float64"); `codes`: categorical cells are level codes (golden.json's rows).
export function encodeRows(manifest, rows, codes = false, dtype = "float32") {
  const width = manifest.features.length;
  const data = dtype === "float64" ? new Float64Array(rows.length * width) : new Float32Array(rows.length * width);
  rows.forEach((row, i) => {
    if (Array.isArray(row) && row.length !== width) {
      throw new Error(`row ${i + 1}: expected ${width} values (${manifest.features.join(", ")}), got ${row.length}`);
    }
    manifest.features.forEach((name, j) => {
      data[i * width + j] = encodeCell(manifest, j, Array.isArray(row) ? row[j] : row[name], `row ${i + 1}`, codes);
    });
  });
  return data;
}

// The model's design, as torchport.runtime.encoding.design computes it: what prediction intervals and domain
// flags are of (intervals.mjs) for a bundle with categorical or imputed columns. Names as statsmodels'
// formulas give them (C(firm)[T.IBM]; name[missing] for a missing-value indicator).
export function designNames(manifest) {
  return manifest.encoding.columns.flatMap((c) => {
    const names = c.kind !== "categorical" ? [c.name]
      : c.levels.filter((l) => l !== c.reference).map((l) => (c.reference !== null ? `C(${c.name})[T.${l}]` : `C(${c.name})[${l}]`));
    return c.indicator ? [...names, `${c.name}[missing]`] : names;
  });
}

// Rows (as encodeRows takes them) as design rows of numbers: missing cells filled with the training
// statistic, level codes as dummy or one-hot columns, missing-value indicators.
export function designRows(manifest, rows) {
  const width = manifest.features.length;
  const codes = encodeRows(manifest, rows, false, "float64");
  return rows.map((_, i) => manifest.encoding.columns.flatMap((c, j) => {
    const cell = codes[i * width + j];
    const missing = Number.isNaN(cell);
    const value = missing && c.impute !== null ? c.fill : cell;
    const out = c.kind !== "categorical" ? [value]
      : c.levels.map((l, k) => [l, k]).filter(([l]) => l !== c.reference).map(([, k]) => (value === k ? 1 : 0));
    return c.indicator ? [...out, missing ? 1 : 0] : out;
  }));
}

// What intervalsOf (intervals.mjs) takes for these rows: the manifest with the design's names as its
// features, and the design rows; the manifest and the rows as they are without an encoding.
export function forIntervals(manifest, rows) {
  if (!manifest.encoding) return { manifest, rows };
  return { manifest: { ...manifest, features: designNames(manifest) }, rows: designRows(manifest, rows) };
}
