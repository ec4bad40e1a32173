"""Least squares at any size: the TSQR reduction (train/tsqr.py), a file read in chunks
(train/streaming.py, `torchport train` on a file of 64 MiB or more) and a Dask collection reduced on the
workers of a real LocalCluster (train/dask_fit.py), each against the fit of the same rows held in memory."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from torchport.runtime.errors import DataError
from torchport.train import Regressor, load_dataset
from torchport.train.lstsq import fit_least_squares
from torchport.train.record import TrainingRecord
from torchport.train.streaming import fit_streamed
from torchport.train.tsqr import Reduction


def table(n: int = 30_000, seed: int = 0):
    """Six features (one a Unix time near 1.7e9 s, one offset by 10) and two targets, seeded."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)) * [1, 2, 3, 3e6, 5, 6] + [0, 0, 0, 1.7e9, 0, 10]
    Y = np.column_stack([X @ [1, -2, 0.5, 3e-6, 0.1, 0.01] + 3 + rng.standard_normal(n),
                         X[:, :2] @ [0.3, 0.7] + rng.standard_normal(n)])
    return X, Y


def reduce_in_chunks(X, Y, rows: int, fit_intercept: bool = True) -> Reduction:
    reduction = Reduction(X.shape[1], Y.shape[1], fit_intercept)
    for start in range(0, len(X), rows):
        reduction = reduction.add(X[start:start + rows], Y[start:start + rows])
    return reduction


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_chunks_reduce_to_the_whole_tables_tsqr_and_the_refined_fit(fit_intercept):
    X, Y = table()
    streamed = reduce_in_chunks(X, Y, 4096, fit_intercept).fit()
    whole = Reduction(6, 2, fit_intercept).add(X, Y).fit()
    refined = fit_least_squares(X, Y, fit_intercept)
    assert streamed.n_rows == 30_000 and streamed.full_rank and streamed.n_params == 6 + fit_intercept
    np.testing.assert_allclose(streamed.params, whole.params, rtol=1e-9 if fit_intercept else 1e-6)
    np.testing.assert_allclose(streamed.covariance, refined.covariance, rtol=1e-9)
    np.testing.assert_allclose(streamed.residual_ss, refined.residual_ss, rtol=1e-9)
    np.testing.assert_allclose(streamed.total_ss, refined.total_ss, rtol=1e-12)
    se = np.sqrt(np.diag(refined.covariance)[:, None] * refined.residual_ss / (30_000 - refined.n_params))
    assert np.max(np.abs(streamed.params - refined.params) / se) < (1e-6 if fit_intercept else 1e-2)


def test_reductions_merge_in_any_order_and_keep_the_rank_rules():
    X, Y = table(5000)
    a, b = Reduction(6, 2).add(X[:700], Y[:700]), Reduction(6, 2).add(X[700:], Y[700:])
    np.testing.assert_allclose(a.merge(b).fit().params, b.merge(a).fit().params, rtol=1e-9)
    doubled = np.column_stack([X, X[:, 1]])
    assert reduce_in_chunks(doubled, Y, 1000).fit().rank == 7
    constant = np.column_stack([X[:, :2], np.full(len(X), 0.1)])  # its chunk means are not exactly 0.1
    fit = reduce_in_chunks(constant, Y, 999).fit()
    assert fit.rank == 3 and fit.coef[0, 2] == 0 and fit.covariance is None


def test_a_file_read_in_chunks_gives_the_record_of_the_rows_held(tmp_path):
    X, Y = table(20_000)
    frame = pd.DataFrame(X, columns=[f"x{i + 1}" for i in range(6)]).assign(y=Y[:, 0])
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    streamed = fit_streamed(Regressor(), path, ["y"], chunk_rows=3000, sample_rows=500, seed=4)
    data = load_dataset(str(path), ["y"])
    held = TrainingRecord.from_fit(Regressor().fit(data.X, data.y), data)
    a, b = streamed.record, held
    assert a.dataset == b.dataset  # same rows, names and fingerprint
    assert (a.training_rows, a.optimizer, a.settings) == (20_000, "exact", b.settings)
    np.testing.assert_allclose([a.metrics.mse, a.metrics.r2], [b.metrics.mse, b.metrics.r2], rtol=1e-9)
    np.testing.assert_allclose(a.exact_least_squares.weight, b.exact_least_squares.weight, rtol=1e-9)
    np.testing.assert_allclose(a.feature_stats.std, b.feature_stats.std, rtol=1e-12)
    for ca, cb in zip(a.inference.targets[0].coefficients, b.inference.targets[0].coefficients):
        np.testing.assert_allclose([ca.estimate, ca.std_error, ca.p], [cb.estimate, cb.std_error, cb.p], rtol=1e-8)
    sample = streamed.sample
    assert sample.X.shape == (500, 6) and sample.feature_names == data.feature_names
    rows = {tuple(r) for r in data.X}
    assert all(tuple(r) in rows for r in sample.X)  # real rows, kept in file order
    positions = [int(np.flatnonzero((data.X == r).all(axis=1))[0]) for r in sample.X[:20]]
    assert positions == sorted(positions)


def test_a_bad_cell_in_a_streamed_file_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("y,x\n" + "".join(f"{i},{i * 2}\n" for i in range(50)) + "1,nan\n")
    with pytest.raises(DataError, match=r"row 51 .*nan"):
        fit_streamed(Regressor(), path, ["y"], chunk_rows=16)
    with pytest.raises(Exception, match="exact solution of a linear model"):
        fit_streamed(Regressor(optimizer="sgd"), tmp_path / "bad.csv", ["y"])


def test_a_dask_dataframe_is_reduced_on_the_workers():
    dd = pytest.importorskip("dask.dataframe")
    from dask.distributed import Client, LocalCluster
    X, Y = table(40_000)
    frame = pd.DataFrame(X, columns=[f"x{i + 1}" for i in range(6)]).assign(y=Y[:, 0])
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        ddf = dd.from_pandas(frame, npartitions=6)
        reg = Regressor().fit(ddf[[f"x{i + 1}" for i in range(6)]], ddf["y"])
    held = Regressor().fit(X, Y[:, 0])
    np.testing.assert_allclose(reg.coef_, held.coef_, rtol=1e-9)
    np.testing.assert_allclose(reg.intercept_, held.intercept_, rtol=1e-9)
    assert reg.predict(X[:3]).shape == (3,) and reg.n_features_in_ == 6 and reg.optimizer_ == "exact"
    np.testing.assert_allclose(reg.predict(X[:100]), held.predict(X[:100]), rtol=1e-6)
    with pytest.raises(Exception, match="exact solution of a linear model"):
        Regressor(model="mlp").fit(ddf[["x1"]], ddf["y"])


@pytest.mark.slow
def test_torchport_train_reads_a_large_file_in_chunks(tmp_path):
    """A 70 MB Parquet file (over the 64 MiB at which `torchport train` streams a linear model's exact fit)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    X, Y = table(1_300_000, seed=2)
    columns = {f"x{i + 1}": X[:, i] for i in range(6)} | {"y": Y[:, 0]}
    pq.write_table(pa.table(columns), tmp_path / "big.parquet")
    proc = run_cli("train", "--data", str(tmp_path / "big.parquet"), "--target", "y", "--out", str(tmp_path / "b"),
                   "--no-progress", "--no-plots", "--formats", "onnx")
    assert proc.returncode == 0, proc.stderr
    assert "(read in chunks (1,300,000 rows, never held at once): the bundle is verified on a seeded sample of " \
           "100,000 of them" in proc.stdout and "parity: PASSED" in proc.stdout
    training = json.loads((tmp_path / "b" / "manifest.json").read_text())["training"]
    assert training["training_rows"] == 1_300_000 and training["dataset"]["rows"] == 1_300_000
    reference = Reduction(6, 1).add(X, Y[:, :1]).fit()
    stored = [c["estimate"] for c in training["inference"]["targets"][0]["coefficients"]]
    np.testing.assert_allclose(stored, reference.params[:, 0], rtol=1e-9)
