"""What the bundle's HTML report shows, built from the manifest's records (the training record, the model
spec, the parity report, the files): cells that keep their value, its display format and the manifest path
it came from, so a reader (or a test) can tie every figure on the page back to manifest.json. Fields that a
record gains later (another set of metrics, another parity figure) are found from the dataclasses."""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from torchport.runtime.bundle import Bundle, Manifest, PairResult, ParityReport
from torchport.runtime.intervals import LEVERAGE_SLACK, T_METHOD
from torchport.train.datasets import published_fit
from torchport.train.inference import Inference
from torchport.train.metrics import FitMetrics, LeastSquares
from torchport.export.module_spec import ModuleSpec
from torchport.train.models import ModelSpec
from torchport.train.record import TrainingRecord

PLOT_CAPTIONS = {"regression.png": "data and the fitted line", "predicted_vs_observed.png":
                 "predicted against observed", "loss.png": "training loss per epoch", "residuals.png":
                 "residuals against fitted values"}
FILE_ROLES = {"model.onnx": "the model for ONNX Runtime (raw features in, targets out)",
              "model.large_batch.onnx": "the same model rewritten for speed (Mul+Add, scaling folded in)",
              "model.threaded.onnx": "the large-batch graph with hidden biases in a ones column, for several threads",
              "model.torchscript.pt": "the same model as TorchScript", "checkpoint.pt": "the torch weights",
              "model.pt2": "the same model as a torch.export ExportedProgram",
              "model.aoti.pt2": "the same model compiled by AOTInductor for the CPU",
              "model.aoti.cuda.pt2": "the same model compiled by AOTInductor for CUDA",
              "report/inference.txt": "the inference table as text"}
# The columns every pair has; any other field of PairResult is shown after them.
PAIR_FIELDS = ("reference", "candidate", "max_abs", "max_rel", "max_scaled", "passed", "worst")


@dataclass(frozen=True)
class Cell:
    """One value on the page: shown with ``spec`` (None as n/a), tied to the manifest by ``key`` (its path in
    manifest.json, keys and list indices, or None for a value the manifest does not hold)."""
    value: Any
    key: tuple | None = None
    spec: str = ".6g"


@dataclass(frozen=True)
class Table:
    """A table of cells (or plain text) with a title and notes under it (text, or a sequence of parts);
    ``align`` says per column "text" or "num" (default: found from the cells)."""
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    notes: tuple[Any, ...] = ()
    align: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plot:
    """A PNG of the bundle's report folder, inlined as a data: URI."""
    name: str
    caption: str
    data_uri: str


def model_text(spec: ModelSpec | ModuleSpec) -> str:
    """``linear`` or ``mlp 32,32 relu``, with dropout and scaling when they apply; a module torchport did not
    define by its class."""
    if isinstance(spec, ModuleSpec):
        return spec.description
    text = spec.kind if spec.kind == "linear" else f"mlp {','.join(map(str, spec.hidden))} {spec.activation}"
    if spec.dropout:
        text += f", dropout {spec.dropout:g} while training"
    scaled = [name for name, on in (("features", spec.scale_features), ("targets", spec.scale_targets)) if on]
    return text + (f"; {' and '.join(scaled)} standardised inside the model" if scaled else "")


def summary(m: Manifest, record: TrainingRecord | None, spec: ModelSpec | ModuleSpec) -> list[tuple[str, list]]:
    """(label, parts) pairs for the summary list; a part is text or a Cell."""
    task = f"{', '.join(m.targets)} ~ {', '.join(m.features)}"
    items: list[tuple[str, list]] = [("task", [f"regression: {task}"]),
                                     ("model", [model_text(spec), f" ({spec.n_features} -> {spec.n_targets})"])]
    if m.encoding is not None:  # categorical and imputed columns, coded inside the graph
        items.append(("encoding", [m.encoding.describe()]))
    if record is None:
        return items + [("training", ["no training record: the bundle was written from a module torchport "
                                      "did not train"])]
    d, s = record.dataset, record.settings
    batch = s.get("batch_size")
    opt = [record.optimizer.upper(), ", lr ", Cell(record.lr, ("training", "lr"), "g")]
    if s.get("momentum"):
        opt.append(f", momentum {s['momentum']:g}")
    opt.append(f", {'full batch' if batch is None else f'mini-batches of {batch} rows'}")
    if s.get("lr_schedule", "none") != "none":
        opt.append(f", {s['lr_schedule']} schedule")
    epochs = [Cell(record.epochs_run, ("training", "epochs_run"), "d"), f" of {s.get('epochs', record.epochs_run)}"]
    if record.best_epoch is not None:
        epochs += ["; best epoch ", Cell(record.best_epoch, ("training", "best_epoch"), "d")]
    return items + [
        ("data", [d.source if d.name in d.source else f"{d.name} ({d.source})"]),
        ("fingerprint", ["sha256 ", Cell(d.fingerprint_sha256, ("training", "dataset", "fingerprint_sha256"), "s")]),
        ("rows", [Cell(d.rows, ("training", "dataset", "rows"), "d")]),
        ("optimizer", opt), ("epochs", epochs), ("seed", [str(s.get("seed", "n/a"))]),
        ("device", [Cell(record.device, ("training", "device"), "s")]),
        ("final loss", [Cell(record.final_loss, ("training", "final_loss"), ".6g"),
                        " (MSE on standardised targets)" if spec.scale_targets else " (MSE)"]),
        ("time to fit", [Cell(record.fit_seconds, ("training", "fit_seconds"), ".3g"), " s"]),
    ]


def _fit_row(label: str, fit: FitMetrics, key: tuple, m: Manifest, published: dict | None) -> tuple:
    """One row of the fit table: the coefficients per target, R^2, MSE, and the prediction at 3."""
    cells: list[Any] = [label]
    for j in range(len(m.targets)):
        for i in range(len(m.features)):
            w = fit.weight[j][i] if fit.weight is not None else None
            cells.append(Cell(w, (*key, "weight", j, i) if w is not None else None, ".5f"))
        b = fit.bias[j] if fit.bias is not None else None
        cells.append(Cell(b, (*key, "bias", j) if b is not None else None, ".5f"))
    cells += [Cell(fit.r2, (*key, "r2"), ".5f"), Cell(fit.mse, (*key, "mse"), ".6f")]
    if published is not None:
        linear = fit.weight is not None and fit.weight[0][0] is not None and fit.bias[0] is not None
        cells.append(Cell(fit.weight[0][0] * 3 + fit.bias[0] if linear else None, None, ".5f"))
    return tuple(cells)


def fit_table(m: Manifest, record: TrainingRecord, spec: ModelSpec) -> Table:
    """torchport's fit beside the exact least-squares optimum (and the tutorial's, on its data)."""
    several = len(m.targets) > 1
    columns = ["fit"]
    for t in m.targets:
        prefix = f"{t}: " if several else ""
        columns += [f"{prefix}weight w" if len(m.features) == 1 else f"{prefix}w[{f}]" for f in m.features]
        columns.append(f"{prefix}bias b")
    columns += ["R^2", "MSE"]
    published = published_fit(record.dataset.name, record.dataset.features, record.dataset.targets)
    rows = []
    if published is not None:
        columns.append(f"pred({m.features[0]}=3)")
        rows.append(("tutorial (published)", Cell(published["weight"], spec=".5f"), Cell(published["bias"], spec=".5f"),
                     Cell(published["r2"], spec=".5f"), Cell(None), Cell(published["pred3"], spec=".5f")))
    label = f"torchport {record.optimizer.upper()}" + ("" if spec.kind == "linear" else f" ({spec.kind})")
    rows.append(_fit_row(label, record.metrics, ("training", "metrics"), m, published))
    rows.append(_fit_row("exact least squares (float64)", record.exact_least_squares,
                         ("training", "exact_least_squares"), m, published))
    notes = [f"{name}: {why}" for fit in (record.metrics, record.exact_least_squares)
             for name, why in fit.undefined.items()]
    if spec.kind != "linear":
        notes.append("an MLP has no weight and bias to compare; the exact fit is the best linear model")
    notes.append("R^2 and MSE on the training data; with several targets R^2 is their plain average")
    return Table("fit", tuple(columns), tuple(rows), tuple(notes))


def metric_sets(record: TrainingRecord) -> Table:
    """Every set of metrics the record holds (the training rows', and held-out rows' where recorded)."""
    rows = []
    for f in dataclasses.fields(record):
        fit = getattr(record, f.name)
        if isinstance(fit, FitMetrics) and not isinstance(fit, LeastSquares):
            label = f"all {record.dataset.rows} rows" if f.name == "metrics" else f.name.replace("_", " ")
            rows.append((label, Cell(fit.mse, ("training", f.name, "mse"), ".6g"),
                         Cell(fit.r2, ("training", f.name, "r2"), ".5f")))
    vf = record.settings.get("val_fraction") or 0
    notes = []
    if record.val_loss is not None:
        notes.append(f"validation loss at the last epoch: {record.val_loss:.6g} (the training loss on the "
                     f"held-out {vf:g} of the rows, in the units the model was trained in)")
    if not vf:
        notes.append(f"no rows were held out (val_fraction 0): every figure uses all {record.dataset.rows} rows")
    return Table("metrics by rows", ("rows", "MSE", "R^2"), tuple(rows), tuple(notes))


def inference_tables(inference: Inference) -> list[Table]:
    """The least-squares coefficient table per target, with the fit statistics as notes (R^2 about zero,
    said so, for a model without an intercept)."""
    level = f"{inference.confidence * 100:g}%"
    r2 = "R^2" if inference.fit_intercept else "uncentred R^2"
    model = " + ".join(inference.features) + ("" if inference.fit_intercept else ", no intercept")
    tables = []
    for t_i, t in enumerate(inference.targets):
        key = ("training", "inference", "targets", t_i)
        rows = tuple((c.term, *(Cell(getattr(c, k), (*key, "coefficients", i, k), ".6g") for k in
                                ("estimate", "std_error", "t", "p", "ci_low", "ci_high")))
                     for i, c in enumerate(t.coefficients))
        stat = {k: Cell(getattr(t, k), (*key, k), ".6g") for k in t.NUMBERS}
        notes = ((f"{r2} ", stat["r2"], f", adjusted {r2} ", stat["adj_r2"], "; F ", stat["f"], f" on {t.df_model} and "
                  f"{t.df_resid} DF, p ", stat["f_p"], "; residual standard error ", stat["residual_se"],
                  f" on {t.df_resid} degrees of freedom"),
                 f"n = {t.n}; {inference.method}; {inference.library}")
        tables.append(Table(f"{t.target} ~ {model}",
                            ("term", "estimate", "std error", "t", "p", f"{level} CI low", f"{level} CI high"),
                            rows, notes))
    return tables


def interval_table(m: Manifest) -> Table | None:
    """The prediction intervals the bundle gives: how they are made, their coverage and mean width on
    held-out rows measured at training, per target, and when a row is flagged out of domain."""
    iv = m.intervals
    if iv is None:
        return None
    centre = "the exact fit's float64 answer" if iv.linear is not None and iv.linear.coef is not None else \
        "the model's own prediction"
    how = ("exact t intervals of the linear model (from the least-squares fit's (X'X)^-1 and residual variance, "
           f"centred on {centre})" if iv.method == T_METHOD else
           f"split-conformal intervals from the absolute residuals of {iv.conformal.source}")
    cov = iv.coverage
    rows = tuple((t, Cell(cov.covered[j], ("intervals", "coverage", "covered", j), ".3f"),
                  Cell(cov.width[j], ("intervals", "coverage", "width", j), ".4g")) for j, t in enumerate(m.targets)) \
        if cov else ()
    notes: list = [how]
    if cov:
        notes.append((f"{cov.level:.0%} prediction intervals over ", Cell(cov.rows, ("intervals", "coverage", "rows"),
                                                                           "d"), f" {cov.how}"))
    else:
        notes.append("no held-out rows to measure coverage on: train with --val-fraction (or --calibration-fraction)")
    domain = (f"a row is flagged out of domain when a feature lies beyond its training range by more than "
              f"{iv.domain.margin:.0%} of that range")
    if iv.domain.max_leverage is not None:
        domain += (f", or its leverage x'(X'X)^-1 x exceeds the largest of the training rows "
                   f"({iv.domain.max_leverage:.4g}, relative slack {LEVERAGE_SLACK:g})")
    notes.append(domain)
    return Table("prediction intervals", ("target", "coverage on held-out rows", "mean width"), rows, tuple(notes))


def plots(bundle: Bundle) -> list[Plot]:
    """The report's PNGs, each read through its sha256 check."""
    names = sorted(n for n in bundle.manifest.files if n.startswith("report/") and n.endswith(".png"))
    return [Plot(n, PLOT_CAPTIONS.get(n.rsplit("/", 1)[1], n),
                 "data:image/png;base64," + base64.b64encode(bundle.read(n)).decode("ascii")) for n in names]


def _extra_fields(obj: Any, known: Sequence[str]) -> list[str]:
    """Scalar fields of a record's dataclass that the report does not know by name (added later)."""
    return [f.name for f in dataclasses.fields(obj) if f.name not in known
            and isinstance(getattr(obj, f.name), (int, float, str, bool, type(None)))]


def parity_table(parity: ParityReport) -> Table:
    """One row per pair of backends: the largest differences, the verdict and the worst element."""
    extra = _extra_fields(parity.pairs[0], PAIR_FIELDS) if parity.pairs else []
    columns = ("reference", "candidate", "result", "max |diff|", "max rel", "max scaled", *extra, "worst element")
    rows = []
    for i, p in enumerate(parity.pairs):
        key, w = ("parity", "pairs", i), p.worst
        worst = (f"{w.case}, row {w.row}, column {w.column}: {p.reference} ",
                 Cell(w.reference, (*key, "worst", "reference"), ".9g"), f", {p.candidate} ",
                 Cell(w.value, (*key, "worst", "value"), ".9g"), " (abs ", Cell(w.abs, (*key, "worst", "abs"), ".3g"),
                 ", rel ", Cell(w.rel, (*key, "worst", "rel"), ".3g"), ")")
        rows.append((p.reference, p.candidate, Cell(p.passed, (*key, "passed"), "verdict"),
                     Cell(p.max_abs, (*key, "max_abs"), ".3g"), Cell(p.max_rel, (*key, "max_rel"), ".3g"),
                     Cell(p.max_scaled, (*key, "max_scaled"), ".3g"),
                     *(Cell(getattr(p, name), (*key, name), ".3g") for name in extra), worst))
    notes: list = [f"cases: {', '.join(f'{c.name} ({c.rows})' for c in parity.cases)}"]
    criterion = parity.criterion or f"|candidate - reference| <= {parity.atol:g} + {parity.rtol:g} x |reference|"
    notes.append(f"criterion {criterion}, {parity.dtype}; ONNX Runtime providers "
                 f"{', '.join(parity.providers) or 'n/a'}")
    if parity.training_rows:
        notes.append(f"training rows: {parity.training_rows}")
    notes += [f"{name.replace('_', ' ')}: {getattr(parity, name)}"
              for name in _extra_fields(parity, ("passed", "atol", "rtol", "dtype", "training_rows", "criterion"))]
    notes += [f"problem: {p}" for p in parity.problems]
    return Table("parity", columns, tuple(rows), tuple(notes))


def files_table(m: Manifest, this: str) -> Table:
    """Every file of the bundle with its size and sha256 (the report itself excepted: it cannot hold its
    own hash; manifest.json has it)."""
    rows = tuple((name, FILE_ROLES.get(name, "report plot" if name.endswith(".png") else ""),
                  Cell(e.bytes, ("files", name, "bytes"), ",d"), Cell(e.sha256, ("files", name, "sha256"), "s"))
                 for name, e in m.files.items() if name != this)
    return Table("files", ("file", "what it is", "bytes", "sha256"), rows,
                 (f"{this} (this page) and manifest.json are in the bundle too; manifest.json holds this page's "
                  "sha256",))
