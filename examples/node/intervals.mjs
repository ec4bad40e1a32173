// Prediction intervals and domain flags from a torchport bundle's manifest ("intervals"), in plain JavaScript
// (Node.js and browsers: the web example serves this file too), as torchport.runtime.intervals computes them:
// exact t intervals for a linear model from the exact fit's (X'X)^-1 and residual variance (centred on its
// float64 estimates where the manifest keeps them, else on the model's answers), split-conformal intervals
// from the sorted absolute residuals of held-out calibration rows, and per row whether it lies
// outside the training domain, with the reason. The t quantile is computed here: the regularized incomplete
// beta function by its continued fraction, inverted by bisection. See docs/intervals.md.

// log Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 significant digits).
const LANCZOS = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
  -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];

export function logGamma(x) {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = LANCZOS[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

function betaFraction(a, b, x) {
  const tiny = 1e-300;
  let c = 1, d = 1 - (a + b) * x / (a + 1);
  d = 1 / (Math.abs(d) > tiny ? d : tiny);
  let h = d;
  for (let m = 1; m < 100000; m++) {
    const m2 = 2 * m;
    for (const num of [m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                       -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))]) {
      d = 1 + num * d;
      d = 1 / (Math.abs(d) > tiny ? d : tiny);
      c = 1 + num / c;
      c = Math.abs(c) > tiny ? c : tiny;
      h *= d * c;
    }
    if (Math.abs(d * c - 1) < 1e-16) break;
  }
  return h;
}

export function incompleteBeta(a, b, x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x);
  if (x < (a + 1) / (a + b + 2)) return Math.exp(front) * betaFraction(a, b, x) / a;
  return 1 - Math.exp(front) * betaFraction(b, a, 1 - x) / b;
}

const tTail = (t, df) => 0.5 * incompleteBeta(df / 2, 0.5, df / (df + t * t));

// The p quantile (0.5 <= p < 1) of Student's t with df degrees of freedom.
export function tQuantile(p, df) {
  const tail = 1 - p;
  let lo = 0, hi = 1;
  while (tTail(hi, df) > tail) { lo = hi; hi *= 2; }
  for (let i = 0; i < 200; i++) {
    const mid = 0.5 * (lo + hi);
    if (mid === lo || mid === hi) break;
    if (tTail(mid, df) > tail) lo = mid; else hi = mid;
  }
  return 0.5 * (lo + hi);
}

// x'(X'X)^-1 x: |d W|^2 with d the row less the training means (the row itself without an intercept), W the
// manifest's whitening factor, plus 1/n with an intercept.
function leverage(linear, row) {
  const w = linear.whitening;
  const d = linear.fit_intercept ? row.map((v, j) => v - linear.mean[j]) : row;
  let s = 0;
  for (let k = 0; k < d.length; k++) {
    let z = 0;
    for (let j = 0; j < d.length; j++) z += d[j] * w[j][k];
    s += z * z;
  }
  return (linear.fit_intercept ? 1 / linear.n_rows : 0) + s;
}

// Half-widths (one array per row, one value per target) of the level intervals of kind "prediction" or "mean".
export function halfWidths(record, rows, level, kind = "prediction") {
  if (!(typeof level === "number" && level > 0 && level < 1)) throw new Error(`level must be between 0 and 1, got ${level}`);
  if (kind !== "prediction" && kind !== "mean") throw new Error(`kind must be "prediction" or "mean", got ${kind}`);
  if (record.method === "t") {
    const lin = record.linear;
    const q = tQuantile(0.5 + level / 2, lin.df_resid);
    return rows.map((row) => {
      const h = leverage(lin, row) + (kind === "prediction" ? 1 : 0);
      return lin.residual_variance.map((v) => q * Math.sqrt(v * h));
    });
  }
  if (kind === "mean") throw new Error("kind \"mean\" intervals exist for linear models only");
  const scores = record.conformal.scores;
  const n = scores[0].length;
  const k = Math.ceil((n + 1) * level - 1e-9);
  if (k > n) throw new Error(`a ${level} conformal interval needs at least ${Math.ceil(level / (1 - level))} calibration rows; this bundle kept ${n}`);
  const half = scores.map((s) => s[k - 1]);
  return rows.map(() => half.slice());
}

// Python's f"{v:.{digits}g}" (C's %g): fixed notation unless the exponent is below -4 or at least digits,
// trailing zeros dropped; reasons read the same in every runtime.
function formatG(v, digits) {
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  const [mantissa, exponent] = v.toExponential(digits - 1).split("e");
  const e = Number(exponent);
  if (e < -4 || e >= digits) {
    const m = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
    return `${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  return (Object.is(v, -0) ? "-" : "") + String(Number(v.toPrecision(digits)));
}
const g6 = (v) => formatG(v, 6);

// Per row: { flag, reason } ("" when inside the training domain), worded as torchport words it.
export function domainFlags(record, rows, features) {
  const { low, high, margin, max_leverage: maxLeverage } = record.domain;
  const LEVERAGE_SLACK = 1e-6;
  return rows.map((row) => {
    const said = [];
    row.forEach((v, j) => {
      const span = high[j] > low[j] ? high[j] - low[j] : Math.max(Math.abs(low[j]), 1);
      if (v < low[j] - margin * span || v > high[j] + margin * span) {
        said.push(`${features[j]} ${g6(v)} ${v < low[j] ? "below" : "above"} the training range ` +
                  `[${g6(low[j])}, ${g6(high[j])}] by more than ${Math.round(margin * 100)}% of it`);
      }
    });
    if (record.linear && maxLeverage !== null && maxLeverage !== undefined) {
      const h = leverage(record.linear, row);
      if (h > maxLeverage * (1 + LEVERAGE_SLACK)) said.push(`leverage ${formatG(h, 4)} above the training rows' largest, ${formatG(maxLeverage, 4)}`);
    }
    return { flag: said.length > 0, reason: said.join("; ") };
  });
}

// The intervals' centres (one array per row, one value per target): a linear model solved exactly keeps its
// float64 estimates (linear.coef, linear.intercept) and is centred on x coef' + intercept, its own float64
// answer; any other model (or a bundle without them) on its answers, the predictions.
export function centres(record, rows, predictions) {
  const lin = record.linear;
  if (!lin || !lin.coef) return predictions;
  return rows.map((row) => lin.coef.map((c, k) => row.reduce((s, v, j) => s + v * c[j], lin.intercept[k])));
}

// predictions: one array of target values per row (the model's answers, returned as prediction). Returns the
// intervals about centres(...).
export function intervalsOf(manifest, rows, predictions, level = 0.95, kind = "prediction") {
  if (!manifest.intervals) {
    throw new Error("this bundle keeps nothing to make intervals from (written before torchport kept them, or an " +
                    "MLP trained without held-out rows): retrain it with torchport");
  }
  const half = halfWidths(manifest.intervals, rows, level, kind);
  const domain = domainFlags(manifest.intervals, rows, manifest.features);
  const centre = centres(manifest.intervals, rows, predictions);
  return {
    prediction: predictions,
    lower: centre.map((p, i) => p.map((v, k) => v - half[i][k])),
    upper: centre.map((p, i) => p.map((v, k) => v + half[i][k])),
    out_of_domain: domain.map((d) => d.flag),
    reasons: domain.map((d) => d.reason),
  };
}
