"""Predictor: one object that scores rows with an ONNX Runtime session over a bundle or an .onnx file."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from torchport.runtime.bundle import MANIFEST, ONNX_FILE, BundleError, load_manifest, read_checked
from torchport.runtime.providers import ProviderFallbackWarning, resolve_providers


def _is_dataframe(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "columns")


class Predictor:
    """Loads ``model.onnx`` (checked against the bundle's manifest) and answers ``predict``.

    ``providers``: "auto" (CUDA then CPU), "cpu", "cuda", or ONNX Runtime provider names in order.
    After construction ``providers`` lists what the session really uses."""

    def __init__(self, path: str | os.PathLike, providers: str | list[str] = "auto",
                 sess_options: ort.SessionOptions | None = None):
        path = Path(path)
        if path.is_dir():
            self.manifest = load_manifest(path)
            model_bytes = read_checked(path, ONNX_FILE, self.manifest)
            self.feature_names = list(self.manifest["features"])
            self.target_names = list(self.manifest["targets"])
            self.input_name = self.manifest["inputs"][0]["name"]
            self.output_name = self.manifest["outputs"][0]["name"]
            source = path / ONNX_FILE
        elif path.is_file():
            self.manifest = None
            model_bytes = path.read_bytes()
            source = path
        else:
            raise BundleError(f"{path} does not exist; give a bundle directory (with {MANIFEST}) "
                              "or an .onnx file")
        requested, notes = resolve_providers(providers)
        try:
            self._session = ort.InferenceSession(model_bytes, sess_options=sess_options, providers=requested)
        except Exception as e:  # onnxruntime raises its own exception types for invalid models
            raise BundleError(f"{source} is not a model ONNX Runtime can load: {e}") from None
        self.providers = self._session.get_providers()
        lost = [p for p in requested if p not in self.providers]
        notes += [f"{p} could not be initialised by onnxruntime {ort.__version__} (CUDA 13 / cuDNN 9 "
                  "libraries missing?)" for p in lost]
        if notes:
            warnings.warn("; ".join(notes) + f". Running on {', '.join(self.providers)}.",
                          ProviderFallbackWarning, stacklevel=2)
        self._check_graph(source)

    def _check_graph(self, source: Path) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        meta = self._session.get_modelmeta().custom_metadata_map
        if self.manifest is None:
            self.input_name, self.output_name = inputs[0].name, outputs[0].name
            n_in, n_out = inputs[0].shape[-1], outputs[0].shape[-1]
            self.feature_names = json.loads(meta["torchport.features"]) if "torchport.features" in meta \
                else [f"x{i}" for i in range(n_in if isinstance(n_in, int) else 1)]
            self.target_names = json.loads(meta["torchport.targets"]) if "torchport.targets" in meta \
                else [f"y{i}" for i in range(n_out if isinstance(n_out, int) else 1)]
        if len(inputs) != 1 or inputs[0].name != self.input_name or inputs[0].shape[-1] != len(self.feature_names):
            raise BundleError(f"{source}: the graph's inputs {[(i.name, i.shape) for i in inputs]} disagree "
                              f"with the manifest ({self.input_name!r}, {len(self.feature_names)} features)")
        if outputs[0].name != self.output_name or outputs[0].shape[-1] != len(self.target_names):
            raise BundleError(f"{source}: the graph's outputs {[(o.name, o.shape) for o in outputs]} "
                              f"disagree with the manifest ({self.output_name!r}, {len(self.target_names)} targets)")

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def _as_matrix(self, x: Any) -> np.ndarray:
        if _is_dataframe(x):
            missing = [c for c in self.feature_names if c not in x.columns]
            if missing:
                raise ValueError(f"the DataFrame lacks the feature column(s) {', '.join(map(repr, missing))}; "
                                 f"the model expects {self.feature_names}")
            x = x[self.feature_names].to_numpy()
        elif not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x, dtype=np.float32)
            except (ValueError, TypeError) as e:
                raise ValueError(f"cannot turn the input into a (rows, {self.n_features}) float array: "
                                 f"{e}; give a 2-D array, a DataFrame or a list of equal-length rows") from None
        if x.dtype.kind not in "fiu":
            raise TypeError(f"expected numeric input; got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-D input of shape (rows, {self.n_features}) with columns "
                             f"{self.feature_names}; got shape {x.shape}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, x: Any) -> Any:
        """Predict targets for rows of raw features; returns the same kind as given (array, DataFrame, list)."""
        matrix = self._as_matrix(x)
        out = self._session.run([self.output_name], {self.input_name: matrix})[0]
        if _is_dataframe(x):
            import pandas as pd
            return pd.DataFrame(out, index=x.index, columns=self.target_names)
        if isinstance(x, np.ndarray):
            return out
        return out.tolist()

    def __repr__(self) -> str:
        return (f"Predictor(features={self.feature_names}, targets={self.target_names}, "
                f"providers={self.providers})")
