"""Batch scoring with Dask: a Predictor is shipped to the workers (it pickles as its model bytes and
manifest; each worker rebuilds its own ONNX Runtime session) and scores the dataframe partition by partition.

    import dask.dataframe as dd
    from torchport.runtime import Predictor
    from torchport.runtime.dask import predict_dask
    scored = predict_dask(dd.read_parquet("data/*.parquet"), Predictor("bundles/seed"))
    scored.to_parquet("scored/")
"""
from __future__ import annotations

from typing import Any

from torchport.runtime.errors import InputError
from torchport.runtime.predictor import Predictor


def _score_partition(part: Any, predictor: Predictor, suffix: str) -> Any:
    pred = predictor.predict(part[predictor.feature_names])
    pred.columns = [f"{t}{suffix}" for t in predictor.target_names]
    return part.join(pred)


def predict_dask(ddf: Any, predictor: Predictor, suffix: str = "_pred") -> Any:
    """A lazy dask DataFrame: ``ddf`` with one ``<target><suffix>`` float32 column per target.
    Features are matched by column name; partitions are scored where they live."""
    import pandas as pd

    missing = [f for f in predictor.feature_names if f not in ddf.columns]
    if missing:
        raise InputError(f"the dask DataFrame lacks the feature column(s) {', '.join(map(repr, missing))}; "
                         f"the model expects {predictor.feature_names}")
    meta = ddf._meta.join(pd.DataFrame({f"{t}{suffix}": pd.Series(dtype="float32")
                                        for t in predictor.target_names}))
    return ddf.map_partitions(_score_partition, predictor, suffix, meta=meta)
