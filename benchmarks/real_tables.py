"""Real public tables with `torchport train`'s defaults: NIST StRD Longley and Norris (tests/data/nist, with
their certified values), the tutorial's 3-feature table and scikit-learn's diabetes table (10 features, 442
rows), each trained as a user would (`torchport train --data FILE --target y` plus any options given here).
Prints, per table: the optimizer the defaults chose, R^2 against the exact least-squares fit's, the largest
distance of the exported model's answers (ONNX Runtime, on the training rows) from the exact least-squares
predictions in units of the residual standard error, how many significant digits of NIST's certified
estimates and standard errors the inference table has, and the parity verdict with the worst copy's error
over float32 torch's. Saves the figures as JSON.

examples:
  python -m torchport.benchmarks.real_tables
  python -m torchport.benchmarks.real_tables --model mlp
  python -m torchport.benchmarks.real_tables --optimizer sgd
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from torchport.benchmarks.timing import RESULTS_DIR
from torchport.train.datasets import load_dataset
from torchport.runtime.files import write_json
from torchport.runtime.predictor import Predictor
from torchport.train.metrics import least_squares_coefficients

NIST = Path(__file__).resolve().parent.parent / "tests" / "data" / "nist"


def digits(value: float, certified: float) -> float:
    """StRD's log relative error: how many significant digits agree (99 for equal values)."""
    return 99.0 if value == certified else -math.log10(abs(value - certified) / abs(certified))


def tables(folder: Path) -> dict[str, tuple[str, str, list[str] | None]]:
    """Each table's file, target and features (None: every other column)."""
    from sklearn.datasets import load_diabetes
    diabetes = folder / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "y"}).to_csv(diabetes, index=False)
    return {"longley": (str(NIST / "longley.csv"), "y", None), "norris": (str(NIST / "norris.csv"), "y", None),
            "plant_richness_mlr": ("plant_richness_mlr", "ntv_rich", ["area", "latitude", "dist_mainland"]),
            "diabetes": (str(diabetes), "y", None)}


def figures(name: str, data_arg: str, target: str, features: list[str] | None, out: Path, extra: list[str],
            certified: dict) -> dict:
    """Train one table with `torchport train` and measure its bundle."""
    command = [str(Path(sys.executable).parent / "torchport"), "train", "--data", data_arg, "--target", target,
               "--out", str(out), "--no-progress", "--no-plots", *extra]
    if features:
        command += ["--features", ",".join(features)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        return {"table": name, "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    training = json.loads((out / "manifest.json").read_text())["training"]
    parity = json.loads((out / "manifest.json").read_text())["parity"]
    data = load_dataset(data_arg, [target], features)
    weight, bias = least_squares_coefficients(data.X, data.y)
    exact = (data.X @ weight.T + bias)[:, 0]
    fitted = Predictor(out).predict(data.X)[:, 0].astype(np.float64)
    dof = len(exact) - data.X.shape[1] - 1
    residual_se = float(np.sqrt(np.sum((data.y[:, 0] - exact) ** 2) / dof))
    row = {"table": name, "rows": int(len(data.X)), "features": int(data.X.shape[1]),
           "cond_x1": float(np.linalg.cond(np.column_stack([data.X, np.ones(len(data.X))]))),
           "optimizer": training["optimizer"], "r2": training["metrics"]["r2"],
           "exact_r2": training["exact_least_squares"]["r2"], "max_abs_from_exact": float(np.abs(fitted - exact).max()),
           "residual_se": residual_se, "parity_passed": parity["passed"],
           "worst_vs_torch": max((p.get("vs_torch") or 0.0) for p in parity["pairs"]),
           "warnings": training.get("warnings", [])}
    row["from_exact_in_residual_se"] = row["max_abs_from_exact"] / residual_se
    inference = training.get("inference")
    if name in certified and inference:
        c, t = certified[name], inference["targets"][0]
        row["certified_digits"] = {
            "estimates": min(digits(x["estimate"], c["estimate"][i]) for i, x in enumerate(t["coefficients"])),
            "std_errors": min(digits(x["std_error"], c["std_error"][i]) for i, x in enumerate(t["coefficients"])),
            "residual_sd": digits(t["residual_se"], c["residual_sd"]), "r2": digits(t["r2"], c["r_squared"])}
    return row


def line(row: dict) -> str:
    if "returncode" in row:
        return f"{row['table']}: torchport train exited {row['returncode']}: {row['stderr'].strip()[-300:]}"
    text = (f"{row['table']} ({row['rows']} x {row['features']}, cond([X, 1]) {row['cond_x1']:.2g}): "
            f"{row['optimizer']}, R^2 {row['r2']:.6f} (exact {row['exact_r2']:.6f}); max |onnx - exact| "
            f"{row['max_abs_from_exact']:.3g} = {row['from_exact_in_residual_se']:.2g} x residual SE "
            f"{row['residual_se']:.4g}")
    if "certified_digits" in row:
        d = row["certified_digits"]
        text += (f"; certified digits: estimates {d['estimates']:.1f}, std errors {d['std_errors']:.1f}, "
                 f"residual SD {d['residual_sd']:.1f}, R^2 {d['r2']:.1f}")
    text += f"; parity {'PASSED' if row['parity_passed'] else 'FAILED'} (worst {row['worst_vs_torch']:.2g}x torch's)"
    return text + ("; warning: " + row["warnings"][0] if row["warnings"] else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torchport.benchmarks.real_tables", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["linear", "mlp"], help="passed to torchport train (default: its default)")
    ap.add_argument("--optimizer", help="passed to torchport train (default: its default)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, metavar="DIR",
                    help=f"folder for real_tables[_<options>].json (default: {RESULTS_DIR})")
    args = ap.parse_args(argv)
    extra = [*(["--model", args.model] if args.model else []), *(["--optimizer", args.optimizer] if args.optimizer
                                                                  else [])]
    certified = json.loads((NIST / "certified.json").read_text())
    with tempfile.TemporaryDirectory(prefix="torchport-real-tables-") as tmp:
        rows = [figures(name, *spec, Path(tmp) / name, extra, certified) for name, spec in tables(Path(tmp)).items()]
    for row in rows:
        print(line(row))
    suffix = "".join(f"_{v}" for v in (args.model, args.optimizer) if v)
    path = args.out / f"real_tables{suffix}.json"
    write_json(path, {"benchmark": "real_tables", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "options": extra, "tables": rows})
    print(f"saved {path}")
    return 0 if all("returncode" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
