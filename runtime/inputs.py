"""The input rules of every way torchport runs a bundle (the Predictor, and torch-side formats loaded with
torchport.export.load_model): a 2-D numeric array of the model's width, a DataFrame matched to the features
by column name, or a list of rows; NaN and infinities refused naming the first bad cell; the answer of the
same kind as the input."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from torchport.runtime.errors import InputError, InputTypeError


def is_dataframe(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "columns")


def as_matrix(x: Any, features: Sequence[str]) -> np.ndarray:
    """The input as a 2-D numeric numpy array with one column per feature, in order (not yet of the model's
    dtype)."""
    features = list(features)
    if is_dataframe(x):
        missing = [c for c in features if c not in x.columns]
        if missing:
            raise InputError(f"the DataFrame lacks the feature column(s) {', '.join(map(repr, missing))}; "
                             f"the model expects {features}")
        x = x[features].to_numpy()
    elif not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x, dtype=np.float64)  # rounded once, to the model's dtype, when it runs
        except (ValueError, TypeError) as e:
            raise InputError(f"cannot turn the input into a (rows, {len(features)}) float array: "
                             f"{e}; give a 2-D array, a DataFrame or a list of equal-length rows") from None
    if x.dtype.kind not in "fiu":
        raise InputTypeError(f"expected numbers (float or int); got dtype {x.dtype}: convert the input, "
                             "e.g. x.astype('float32'), after checking it holds numbers")
    if x.ndim != 2 or x.shape[1] != len(features):
        hint = "; for one row use x.reshape(1, -1)" if x.ndim == 1 and x.shape[0] == len(features) else ""
        raise InputError(f"expected a 2-D input of shape (rows, {len(features)}) with columns "
                         f"{features}; got shape {x.shape}{hint}")
    return x


def refuse_nonfinite(a: np.ndarray, features: Sequence[str], first_row: int = 0) -> None:
    """Raise naming the first NaN/inf cell of ``a``, rows counted from ``first_row`` (none: return)."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    raise InputError(f"row {row + first_row} (0-based), column {features[col]!r} holds "
                     f"{a[row, col]}: NaN and infinite inputs are refused; clean the data or pass "
                     "allow_nonfinite=True")


def answer_like(x: Any, result: np.ndarray, targets: Sequence[str]) -> Any:
    """``result`` as the kind ``x`` was: a DataFrame (same index, target columns), an array, or a list."""
    if is_dataframe(x):
        import pandas as pd
        return pd.DataFrame(result, index=x.index, columns=list(targets))
    if isinstance(x, np.ndarray):
        return result
    return result.tolist()
