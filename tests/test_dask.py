"""Dask on a real LocalCluster with two worker processes: partition-wise scoring equals single-process."""
import pickle

import numpy as np
import pandas as pd
import pytest

from torchport.runtime import Predictor


def test_predictor_pickles_and_rebuilds_its_session(seed_bundle):
    p = Predictor(seed_bundle, providers="cpu")
    q = pickle.loads(pickle.dumps(p))
    assert q.providers == p.providers and q.feature_names == p.feature_names
    assert q.predict([[3.0], [1.0]]) == p.predict([[3.0], [1.0]])


def test_local_cluster_two_processes(seed_bundle, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    from dask.distributed import Client, LocalCluster

    from torchport.runtime.dask import predict_dask

    rng = np.random.default_rng(0)
    parts = []
    for i in range(4):
        frame = pd.DataFrame({"island": [f"p{i}-{j}" for j in range(2500)], "area": rng.uniform(0, 5, 2500)})
        frame.to_parquet(tmp_path / f"part-{i}.parquet")
        parts.append(frame)
    whole = pd.concat(parts, ignore_index=True)
    predictor = Predictor(seed_bundle, providers="cpu")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        ddf = dd.read_parquet(str(tmp_path / "*.parquet"))
        assert ddf.npartitions >= 2
        scored = predict_dask(ddf, predictor).compute()
        workers = client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2
    scored = scored.sort_values("island").reset_index(drop=True)
    expected = whole.sort_values("island").reset_index(drop=True)
    expected["ntv_rich_pred"] = predictor.predict(expected[["area"]])["ntv_rich"].to_numpy()
    assert list(scored.columns) == ["island", "area", "ntv_rich_pred"]
    np.testing.assert_array_equal(scored["ntv_rich_pred"].to_numpy(), expected["ntv_rich_pred"].to_numpy())
    assert scored["island"].tolist() == expected["island"].tolist()
    np.testing.assert_array_equal(scored["area"].to_numpy(), expected["area"].to_numpy())
