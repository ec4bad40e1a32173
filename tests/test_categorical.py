"""Tables as they come: categorical columns and missing values coded inside the bundle. statsmodels' Grunfeld
data (invest ~ value + capital + C(firm)) against statsmodels' own OLS; the same answers from the Predictor
(DataFrame, rows, object arrays), the torch-side formats, `torchport predict` (CSV and Parquet) and
`torchport serve` (tritonclient over REST and gRPC in both input layouts, plain JSON); unseen levels refused
naming them (or scored as the reference level and flagged); t intervals against statsmodels' get_prediction;
the Node.js and web examples; an MLP on statsmodels' Fair data with two categorical columns; a float64 bundle
(NIST's Filip) with a categorical column; missing values refused without --impute and filled with the training
mean with it."""
import json
import shutil
import subprocess
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.datasets import fair, grunfeld

from conftest import ROOT, run_cli
from servers import infer_json, request, serving
from torchport.runtime import Predictor
from torchport.runtime.bundle import load_manifest
from torchport.runtime.encoding import design
from torchport.runtime.errors import InputError
from torchport.runtime.predictor import UnseenLevelWarning
from torchport.train.datasets import load_dataset
from torchport.train.lstsq import fit_least_squares
from torchport.train.record import TrainingRecord

FEATURES = ["value", "capital", "firm"]


@pytest.fixture(scope="module")
def grunfeld_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("grunfeld") / "grunfeld.csv"
    grunfeld.load_pandas().data.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def grunfeld_bundle(grunfeld_csv):
    out = grunfeld_csv.parent / "bundle"
    proc = run_cli("train", "--data", str(grunfeld_csv), "--target", "invest", "--features", ",".join(FEATURES),
                   "--out", str(out), "--no-plots", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def statsmodels_fit():
    return smf.ols("invest ~ value + capital + C(firm)", data=grunfeld.load_pandas().data).fit()


def test_grunfeld_fits_what_statsmodels_fits(grunfeld_csv, grunfeld_bundle, statsmodels_fit):
    data = load_dataset(str(grunfeld_csv), ["invest"], FEATURES)
    assert data.encoding.categorical == ["firm"]
    assert sorted(data.feature_names) == sorted(n for n in statsmodels_fit.params.index if n != "Intercept")
    fit = fit_least_squares(data.X, data.y)
    fitted = data.X @ fit.coef.reshape(-1) + fit.intercept.reshape(-1)
    expected = statsmodels_fit.fittedvalues.to_numpy()
    assert np.max(np.abs(fitted - expected) / np.abs(expected)) < 1e-8
    record = TrainingRecord.from_json(load_manifest(grunfeld_bundle).training)
    rows = {c.term: c for c in record.inference.targets[0].coefficients}
    for term in ("value", "capital"):
        for ours, theirs in ((rows[term].estimate, statsmodels_fit.params[term]),
                             (rows[term].std_error, statsmodels_fit.bse[term]),
                             (rows[term].t, statsmodels_fit.tvalues[term])):
            assert ours == pytest.approx(theirs, rel=1e-8)
        assert rows[term].p == pytest.approx(statsmodels_fit.pvalues[term], rel=1e-8, abs=1e-300)
    assert set(rows) == {"(intercept)", *data.feature_names}  # one row per level but the reference


def test_the_bundle_answers_on_string_firms(grunfeld_bundle, statsmodels_fit):
    frame = grunfeld.load_pandas().data
    expected = statsmodels_fit.fittedvalues.to_numpy()
    tolerance = 2 * float(np.spacing(np.float32(np.abs(expected).max())))  # two float32 ulps of the largest answer
    predictor = Predictor(grunfeld_bundle)
    from_frame = predictor.predict(frame[FEATURES])
    assert list(from_frame.columns) == ["invest"]
    answers = from_frame.to_numpy()[:, 0]
    assert np.max(np.abs(answers - expected)) < tolerance
    rows = frame[FEATURES].astype(object).to_numpy()
    assert np.array_equal(np.asarray(predictor.predict(rows.tolist()))[:, 0], answers)
    assert np.array_equal(predictor.predict(rows)[:, 0], answers)
    codes, flags = predictor.encode(rows)
    assert not flags.any() and np.array_equal(predictor.predict(codes)[:, 0], answers)
    assert predictor.self_check().checked
    manifest = load_manifest(grunfeld_bundle)
    firm = manifest.encoding.columns[2]
    assert firm.levels == tuple(sorted(frame["firm"].unique())) and firm.reference == "American Steel"
    from torchport.export import load_model
    for fmt in ("exported", "torchscript", "module"):
        torch_answers = load_model(grunfeld_bundle, fmt).predict(rows)[:, 0]
        assert np.max(np.abs(torch_answers - expected)) < tolerance, fmt


def test_an_unseen_firm_is_refused_naming_it_or_scored_as_the_reference_and_flagged(grunfeld_bundle):
    rows = [[3078.5, 2.8, "General Motors"], [3078.5, 2.8, "Ford"]]
    with pytest.raises(InputError, match=r"row 1 \(0-based\), column 'firm': 'Ford' is not a level") as e:
        Predictor(grunfeld_bundle).predict(rows)
    assert e.value.fixes[0].settings == {"unseen": "reference"}
    lenient = Predictor(grunfeld_bundle, unseen="reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = lenient.predict(rows)
    assert [w.message.rows for w in caught if isinstance(w.message, UnseenLevelWarning)] == [[1]]
    reference = lenient.predict([[3078.5, 2.8, "American Steel"]])
    assert answers[1] == reference[0]


def test_predict_scores_string_columns_in_csv_and_parquet(grunfeld_bundle, tmp_path):
    frame = grunfeld.load_pandas().data
    expected = Predictor(grunfeld_bundle).predict(frame[FEATURES]).to_numpy()[:, 0]
    for suffix in (".csv", ".parquet"):
        src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
        frame.to_csv(src, index=False) if suffix == ".csv" else frame.to_parquet(src)
        proc = run_cli("predict", str(grunfeld_bundle), "-i", str(src), "-o", str(dst), "--no-progress")
        assert proc.returncode == 0, proc.stderr
        scored = pd.read_csv(dst) if suffix == ".csv" else pd.read_parquet(dst)
        assert np.array_equal(scored["invest_pred"].to_numpy(np.float32), expected)
    frame.loc[5, "firm"] = "Ford"
    frame.to_csv(tmp_path / "unseen.csv", index=False)
    proc = run_cli("predict", str(grunfeld_bundle), "-i", str(tmp_path / "unseen.csv"), "-o", str(tmp_path / "u.csv"))
    assert proc.returncode == 2 and "row 6 (data row, 1-based), column 'firm': 'Ford' is not a level" in proc.stderr
    assert "--unseen reference" in proc.stderr and not (tmp_path / "u.csv").exists()
    proc = run_cli("predict", str(grunfeld_bundle), "-i", str(tmp_path / "unseen.csv"), "-o", str(tmp_path / "u.csv"),
                   "--unseen", "reference")
    assert proc.returncode == 0, proc.stderr
    flagged = pd.read_csv(tmp_path / "u.csv")
    assert flagged["unseen_level"].tolist() == [1 if i == 5 else 0 for i in range(len(frame))]


def _tritonclient_inputs(module, frame, layout):
    """tritonclient inputs for the rows of ``frame`` in one of the two layouts."""
    def tensor(name, values, datatype):
        item = module.InferInput(name, list(values.shape), datatype)
        if module.__name__.endswith("http"):
            item.set_data_from_numpy(values, binary_data=True)
        else:
            item.set_data_from_numpy(values)
        return item
    numeric = frame[["value", "capital"]].to_numpy(np.float32)
    firms = frame[["firm"]].astype(object).to_numpy()
    if layout == "columns":
        return [tensor("value", numeric[:, :1].copy(), "FP32"), tensor("capital", numeric[:, 1:].copy(), "FP32"),
                tensor("firm", firms, "BYTES")]
    return [tensor("features", numeric, "FP32"), tensor("categories", firms, "BYTES")]


def test_serve_answers_string_firms_over_rest_and_grpc_in_both_layouts(grunfeld_bundle):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    frame = grunfeld.load_pandas().data.iloc[::7].reset_index(drop=True)
    expected = Predictor(grunfeld_bundle).predict(frame[FEATURES]).to_numpy()
    with serving(grunfeld_bundle, grpc=True) as server:
        status, _, body = request(server, "GET", "/v2/models/bundle")
        meta = json.loads(body)
        assert status == 200 and [(t["name"], t["datatype"]) for t in meta["inputs"]] == \
            [("value", "FP32"), ("capital", "FP32"), ("firm", "BYTES")]
        assert [t["name"] for t in meta["parameters"]["input_layouts"]["split"]] == ["features", "categories"]
        for module, url in ((httpclient, server.url), (grpcclient, server.grpc_url)):
            client = module.InferenceServerClient(url)
            for layout in ("columns", "split"):
                answer = client.infer("bundle", _tritonclient_inputs(module, frame, layout)).as_numpy("targets")
                assert np.array_equal(answer, expected), (module.__name__, layout)
            unseen = frame.head(1).assign(firm="Ford")
            with pytest.raises(InferenceServerException, match="column 'firm': 'Ford' is not a level"):
                client.infer("bundle", _tritonclient_inputs(module, unseen, "split"))
        body = {"inputs": [{"name": "value", "shape": [len(frame), 1], "datatype": "FP32",
                            "data": frame["value"].tolist()},
                           {"name": "capital", "shape": [len(frame), 1], "datatype": "FP32",
                            "data": frame["capital"].tolist()},
                           {"name": "firm", "shape": [len(frame), 1], "datatype": "BYTES",
                            "data": frame["firm"].tolist()}]}
        status, _, raw = request(server, "POST", "/v2/models/bundle/infer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 200, raw
        answer = json.loads(raw)["outputs"][0]["data"]
        assert np.array_equal(np.asarray(answer, np.float32), expected[:, 0])
        status, answer = infer_json(server, [[1.0, 2.0]], model="bundle")
        assert status == 400 and "one input per feature column" in answer["error"]


def test_an_mlp_on_a_second_public_table_with_categorical_columns(tmp_path):
    """statsmodels' Fair data (6,366 women, Redbook 1974): occupation and the husband's occupation are codes
    1-6, taken as categorical; one-hot inside the bundle, parity passed, strings or numbers accepted."""
    data = fair.load_pandas().data
    src, out = tmp_path / "fair.csv", tmp_path / "fair-mlp"
    data.to_csv(src, index=False)
    proc = run_cli("train", "--data", str(src), "--target", "affairs", "--categorical",
                   "occupation,occupation_husb", "--model", "mlp", "--hidden", "16", "--epochs", "5",
                   "--no-plots", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = load_manifest(out)
    assert manifest.parity.passed and manifest.encoding.coding == "one-hot"
    occupation = manifest.encoding.columns[list(manifest.features).index("occupation")]
    assert occupation.levels == ("1", "2", "3", "4", "5", "6") and occupation.reference is None
    predictor = Predictor(out)
    assert predictor.self_check().checked
    features = list(manifest.features)
    as_text = data[features].astype({"occupation": str, "occupation_husb": str})
    assert np.array_equal(predictor.predict(data[features]).to_numpy(), predictor.predict(as_text).to_numpy())
    with pytest.raises(InputError, match="column 'occupation': '7' is not a level"):
        predictor.predict(data[features].head(1).assign(occupation=7.0))


def test_missing_values_are_refused_without_impute_and_filled_with_the_training_mean_with_it(
        grunfeld_csv, grunfeld_bundle, tmp_path):
    frame = pd.read_csv(grunfeld_csv)
    frame.loc[[3, 40], "capital"] = np.nan
    src = tmp_path / "holes.csv"
    frame.to_csv(src, index=False)
    proc = run_cli("train", "--data", str(src), "--target", "invest", "--features", ",".join(FEATURES),
                   "--out", str(tmp_path / "refused"), "--no-plots", "--no-progress")
    assert proc.returncode == 2 and not (tmp_path / "refused").exists()
    assert "column 'capital', row 4 (data row, 1-based) is missing" in proc.stderr and "--impute mean" in proc.stderr
    out = tmp_path / "imputed"
    proc = run_cli("train", "--data", str(src), "--target", "invest", "--features", ",".join(FEATURES),
                   "--impute", "mean", "--out", str(out), "--no-plots", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    manifest = load_manifest(out)
    capital = manifest.encoding.columns[1]
    assert capital.impute == "mean" and capital.fill == pytest.approx(frame["capital"].mean(), rel=1e-12)
    predictor = Predictor(out)
    assert predictor.self_check().checked
    holes = [[3078.5, None, "IBM"], [3078.5, float("nan"), "IBM"]]
    filled = [[3078.5, capital.fill, "IBM"]]
    assert np.array_equal(predictor.predict(holes), predictor.predict(filled * 2))
    codes, _ = predictor.encode(holes)
    assert np.isnan(codes[:, 1]).all() and design(manifest.encoding, codes)[0, 1] == capital.fill
    scored = tmp_path / "scored.csv"
    proc = run_cli("predict", str(out), "-i", str(src), "-o", str(scored), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    again = pd.read_csv(scored)
    assert again.loc[3, "invest_pred"] == pytest.approx(
        float(predictor.predict(frame.loc[[3], FEATURES].fillna({"capital": capital.fill})).iloc[0, 0]), rel=1e-6)
    with serving(out) as server:
        body = {"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [3078.5, None]},
                           {"name": "categories", "shape": [1, 1], "datatype": "BYTES", "data": ["IBM"]}]}
        status, _, raw = request(server, "POST", "/v2/models/imputed/infer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 200, raw
        assert json.loads(raw)["outputs"][0]["data"][0] == pytest.approx(float(predictor.predict(filled)[0][0]))
    from test_node_example import score_with_node
    proc = score_with_node(out, holes[:1])  # golden rows with null cells checked there too
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0][0] == pytest.approx(float(predictor.predict(filled)[0][0]), rel=1e-6)
    with pytest.raises(InputError, match=r"row 0 \(0-based\), column 'capital' is missing"):
        Predictor(grunfeld_bundle).predict([[3078.5, None, "IBM"]])  # a bundle that imputes nothing


def test_node_example_maps_levels_and_missing_cells_from_the_manifest(grunfeld_bundle, tmp_path):
    """examples/node/score.mjs (through examples/web/encoding.mjs): string firms, by position or by name, its
    self-check on golden rows of level codes, an unseen firm refused naming it."""
    from test_node_example import score_with_node

    frame = grunfeld.load_pandas().data.iloc[::5]
    rows = frame[FEATURES].astype(object).to_numpy().tolist()
    proc = score_with_node(grunfeld_bundle, rows)
    assert proc.returncode == 0, proc.stderr
    expected = Predictor(grunfeld_bundle).predict(rows)
    np.testing.assert_allclose(np.array(json.loads(proc.stdout)), expected, atol=1e-6 * np.abs(expected).max(), rtol=0)
    by_name = [{"firm": r[2], "capital": r[1], "value": r[0]} for r in rows]
    assert json.loads(score_with_node(grunfeld_bundle, by_name).stdout) == json.loads(proc.stdout)
    proc = score_with_node(grunfeld_bundle, [[1.0, 2.0, "Ford"]])
    assert proc.returncode == 2 and '"Ford" is not a level' in proc.stderr


@pytest.mark.full  # a headless Chromium
def test_the_web_example_offers_the_levels_and_equals_python(grunfeld_bundle, statsmodels_fit, tmp_path_factory):
    """examples/web: the firm is a list of the levels; the page's answers for typed rows and a pasted batch
    of string firms equal the Predictor's; its 95% interval equals the Predictor's, and statsmodels' to 1e-6
    of the width."""
    from browser import browser, score_batch, watch, web_server

    frame = grunfeld.load_pandas().data.iloc[::11]
    csv = "firm,value,capital\n" + "\n".join(f"{r.firm},{r.value!r},{r.capital!r}" for r in frame.itertuples())
    python = Predictor(grunfeld_bundle).predict(frame[FEATURES]).to_numpy()
    with browser(tmp_path_factory.mktemp("chromium-profile")) as context, web_server(grunfeld_bundle) as url:
        w = watch(context, url)
        w.page.wait_for_selector("body[data-state=ready], body[data-state=error]")
        assert w.page.evaluate("document.body.dataset.state") == "ready", w.page.text_content("#load-error")
        options = w.page.eval_on_selector_all("#feature-2 option", "els => els.map(e => e.value)")
        assert options == list(load_manifest(grunfeld_bundle).encoding.columns[2].levels)
        w.page.fill("#feature-0", "3078.5")
        w.page.fill("#feature-1", "2.8")
        w.page.select_option("#feature-2", "IBM")
        w.page.wait_for_function(
            "document.getElementById('prediction-0').dataset.inputs === '[3078.5,2.8,\"IBM\"]'")
        typed = float(w.page.get_attribute("#prediction-0", "data-value"))
        w.page.wait_for_function(
            "document.getElementById('interval-0').dataset.inputs === '[3078.5,2.8,\"IBM\"]'")
        band = [float(w.page.get_attribute("#interval-0", f"data-{b}")) for b in ("lower", "upper")]
        web = np.array(score_batch(w.page, csv, len(frame))).reshape(-1, 1)
    assert typed == pytest.approx(float(Predictor(grunfeld_bundle).predict([[3078.5, 2.8, "IBM"]])[0][0]), rel=1e-6)
    r = Predictor(grunfeld_bundle).predict_interval([[3078.5, 2.8, "IBM"]])  # intervals of the design, in JS too
    assert band == pytest.approx([r.lower[0][0], r.upper[0][0]], abs=1e-5 * abs(r.prediction[0][0]))
    sm_band = statsmodels_fit.get_prediction(pd.DataFrame({"value": [3078.5], "capital": [2.8], "firm": ["IBM"]})
                                             ).summary_frame(alpha=0.05)[["obs_ci_lower", "obs_ci_upper"]].to_numpy()[0]
    assert np.max(np.abs(np.array(band) - sm_band)) < 1e-6 * (sm_band[1] - sm_band[0])
    assert np.all(np.abs(web - python) <= 1e-6 * np.maximum(1.0, np.abs(python)))
    assert w.errors == []


@pytest.mark.full  # an AOTInductor compile
def test_the_aoti_package_takes_codes_and_load_model_maps_the_strings(grunfeld_csv, tmp_path):
    out = tmp_path / "aoti"
    proc = run_cli("train", "--data", str(grunfeld_csv), "--target", "invest", "--features", ",".join(FEATURES),
                   "--formats", "onnx,exported,aoti", "--out", str(out), "--no-plots", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert any(p.candidate == "aoti" and p.passed for p in load_manifest(out).parity.pairs)
    from torchport.export import load_model
    rows = grunfeld.load_pandas().data[FEATURES].astype(object).to_numpy()
    ours, onnx = load_model(out, "aoti").predict(rows), Predictor(out).predict(rows)
    assert np.max(np.abs(ours - onnx)) < 1e-5 * np.abs(onnx).max()


def test_the_encoding_is_learned_recorded_and_read_back():
    """fit_encoding on a small table: text and named columns categorical, levels in statsmodels' order,
    most frequent level for a categorical hole, an indicator where a column had holes; the record
    round-trips through strict JSON and design() computes the dummy, filled and indicator columns."""
    from torchport.runtime.encoding import Encoding
    from torchport.train.categorical import fit_encoding

    cells = {"x": [1.0, np.nan, 3.0, 4.0], "colour": ["red", "blue", None, "blue"], "size": [10, 2, 2, 10]}
    encoding, codes = fit_encoding(cells, ["x", "colour", "size"], "t", categorical=["size"], impute="mean",
                                   missing_indicator=True)
    x, colour, size = encoding.columns
    assert (x.kind, x.fill, x.indicator) == ("numeric", pytest.approx(8 / 3), True)
    assert (colour.levels, colour.reference, colour.impute, colour.fill, colour.indicator) == \
        (("blue", "red"), "blue", "most_frequent", 0.0, True)
    assert (size.levels, size.reference, size.indicator) == (("2", "10"), "2", False)  # numeric order
    assert encoding.design_names() == ["x", "x[missing]", "C(colour)[T.red]", "colour[missing]", "C(size)[T.10]"]
    assert Encoding.from_json(json.loads(json.dumps(encoding.to_json())), "e") == encoding
    np.testing.assert_array_equal(design(encoding, codes), [[1, 0, 1, 0, 1], [8 / 3, 1, 0, 0, 0],
                                                            [3, 0, 0, 1, 0], [4, 0, 0, 0, 1]])
    again, flags = encoding.codes([[4.0, None], ["red", "green"], ["10", 2.0]], unseen="reference")
    np.testing.assert_array_equal(again[:, 1:], [[1, 1], [0, 0]])
    assert np.isnan(again[1, 0]) and flags.tolist() == [False, True]
    from torchport.runtime.errors import DataError
    with pytest.raises(DataError, match=r"column 'colour', row 3 \(data row, 1-based\) is missing"):
        fit_encoding({**cells, "x": [1.0, 2.0, 3.0, 4.0]}, ["x", "colour"], "t")


def test_a_measured_plan_runs_imputed_rows(grunfeld_csv, tmp_path):
    """tune() times the golden rows, NaN cells included, without refusing them: they are the graph's input."""
    frame = pd.read_csv(grunfeld_csv)
    frame.loc[3, "capital"] = np.nan
    frame.to_csv(tmp_path / "holes.csv", index=False)
    out = tmp_path / "imputed"
    proc = run_cli("train", "--data", str(tmp_path / "holes.csv"), "--target", "invest", "--features",
                   ",".join(FEATURES), "--impute", "median", "--out", str(out), "--no-plots", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    predictor = Predictor(out)
    before = predictor.predict([[3078.5, None, "IBM"]])
    predictor.tune(max_rows=128, seconds=0.2)
    assert predictor.predict([[3078.5, None, "IBM"]]) == before and predictor.self_check().checked


def test_a_float64_bundle_with_a_categorical_column(tmp_path):
    """NIST's Filip (float32 cannot hold its fit) with a categorical column beside its ten powers of x: the
    bundle is float64, the coding inside it; strings and codes give the same float64 answers, within the
    precision bound of the float64 fit on the design."""
    from nist import table

    t = table("filip")
    path = t.csv(tmp_path / "filip.csv")
    frame = pd.read_csv(path)
    frame["half"] = np.where(np.arange(len(frame)) % 2 == 0, "even", "odd")
    frame.to_csv(path, index=False)
    out = tmp_path / "bundle"
    proc = run_cli("train", "--data", str(path), "--target", "y", "--out", str(out), "--no-progress", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    manifest = load_manifest(out)
    assert manifest.dtype == "float64" and manifest.encoding.categorical == ["half"] and manifest.parity.passed
    features = list(manifest.features)
    predictor = Predictor(out)
    answers = predictor.predict(frame[features])
    assert answers.to_numpy().dtype == np.float64
    codes, _ = predictor.encode(frame[features])
    assert codes.dtype == np.float64 and np.array_equal(predictor.predict(codes), answers.to_numpy())
    data = load_dataset(str(path), ["y"], features)
    fit = fit_least_squares(data.X, data.y)
    exact = data.X @ fit.coef.reshape(-1) + fit.intercept.reshape(-1)
    assert np.abs(answers.to_numpy()[:, 0] - exact).max() <= manifest.precision.bound[0]
    assert predictor.self_check().checked


def test_intervals_on_string_firms_equal_statsmodels_in_every_runtime(grunfeld_bundle, statsmodels_fit):
    """The t prediction intervals of invest ~ value + capital + C(firm) from string firms: the Predictor's
    equal statsmodels' get_prediction to 1e-6 of the width (centred on the float64 fit of the design), and so
    do serve's lower/upper and Node's. Node's equal the Predictor's to 1e-9 of the largest answer (both centre
    on the float64 values); serve's to 1e-5 of it (an FP32 request's values are float32); an unseen firm
    scored as the reference level is flagged out of domain."""
    frame = grunfeld.load_pandas().data
    expected = statsmodels_fit.get_prediction(frame).summary_frame(alpha=0.05)
    predictor = Predictor(grunfeld_bundle)
    r = predictor.predict_interval(frame[FEATURES], level=0.95)
    scale = np.abs(expected["mean"]).max()
    low, high = expected["obs_ci_lower"].to_numpy(), expected["obs_ci_upper"].to_numpy()
    width = high - low

    def off(lower, upper, at=slice(None)):  # the largest |bound - statsmodels'| / width, rows ``at``
        return max(np.max(np.abs(np.ravel(lower) - low[at]) / width[at]),
                   np.max(np.abs(np.ravel(upper) - high[at]) / width[at]))

    assert off(r.lower.to_numpy()[:, 0], r.upper.to_numpy()[:, 0]) < 1e-6  # centred on the float64 fit, on the design
    assert not r.out_of_domain.any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnseenLevelWarning)
        lenient = Predictor(grunfeld_bundle, unseen="reference").predict_interval([[3078.5, 2.8, "Ford"]])
    assert lenient.out_of_domain == [True] and "not trained on" in lenient.reasons[0]
    rows = frame[FEATURES].iloc[::9]
    few = predictor.predict_interval(rows.astype(object).to_numpy())
    assert shutil.which("node"), "node is not installed: see README (make setup needs Node.js 18+)"
    proc = subprocess.run(["node", str(ROOT / "examples" / "node" / "score.mjs"), str(grunfeld_bundle), "--interval",
                           "0.95"], input=json.dumps(rows.astype(object).to_numpy().tolist()), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    node = json.loads(proc.stdout)
    assert off(node["lower"], node["upper"], slice(None, None, 9)) < 1e-6
    node_lower, node_upper = np.ravel(node["lower"]), np.ravel(node["upper"])
    apart = max(np.abs(node_lower - few.lower[:, 0]).max(), np.abs(node_upper - few.upper[:, 0]).max()) / scale
    print(f"Grunfeld 95% intervals, Node against Python: max |bound difference| / largest answer {apart:.2e}")
    np.testing.assert_allclose(node_lower, few.lower[:, 0], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(node_upper, few.upper[:, 0], rtol=0, atol=1e-9 * scale)
    with serving(grunfeld_bundle) as server:
        body = {"inputs": [{"name": "features", "shape": [len(rows), 2], "datatype": "FP32",
                            "data": rows[["value", "capital"]].to_numpy().ravel().tolist()},
                           {"name": "categories", "shape": [len(rows), 1], "datatype": "BYTES",
                            "data": rows["firm"].tolist()}],
                "outputs": [{"name": "targets"}, {"name": "lower"}, {"name": "upper"}, {"name": "out_of_domain"}]}
        status, _, raw = request(server, "POST", "/v2/models/bundle/infer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 200, raw
        outputs = {o["name"]: o["data"] for o in json.loads(raw)["outputs"]}
    assert off(outputs["lower"], outputs["upper"], slice(None, None, 9)) < 1e-6
    np.testing.assert_allclose(outputs["lower"], few.lower[:, 0], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(outputs["upper"], few.upper[:, 0], rtol=0, atol=1e-5 * scale)
    assert outputs["out_of_domain"] == [False] * len(rows)


def test_serve_scores_an_unseen_firm_as_the_reference_when_asked_and_flags_it(grunfeld_bundle):
    ibm = grunfeld.load_pandas().data.query("firm == 'IBM'").iloc[0]  # a training row: inside the domain
    value, capital = float(ibm["value"]), float(ibm["capital"])
    body = {"inputs": [{"name": "features", "shape": [2, 2], "datatype": "FP32", "data": [value, capital] * 2},
                       {"name": "categories", "shape": [2, 1], "datatype": "BYTES", "data": ["Ford", "IBM"]}],
            "outputs": [{"name": "targets"}, {"name": "out_of_domain"}]}
    with serving(grunfeld_bundle) as server:
        status, _, raw = request(server, "POST", "/v2/models/bundle/infer", json.dumps(body).encode())
        assert status == 400 and "'Ford' is not a level" in json.loads(raw)["error"]
        assert "'unseen': 'reference'" in json.loads(raw)["error"]
        status, _, raw = request(server, "POST", "/v2/models/bundle/infer",
                                 json.dumps({**body, "parameters": {"unseen": "reference"}}).encode())
        assert status == 200, raw
        outputs = {o["name"]: o["data"] for o in json.loads(raw)["outputs"]}
        status, _, bad = request(server, "POST", "/v2/models/bundle/infer",
                                 json.dumps({**body, "parameters": {"unseen": "maybe"}}).encode())
    assert status == 400 and "parameter 'unseen'" in json.loads(bad)["error"]
    reference = Predictor(grunfeld_bundle).predict([[value, capital, "American Steel"], [value, capital, "IBM"]])
    assert outputs["out_of_domain"] == [True, False]
    assert np.array_equal(np.asarray(outputs["targets"], np.float32), np.asarray(reference, np.float32)[:, 0])


def test_encode_gives_codes_of_the_dtype_asked_and_refuses_others(grunfeld_bundle):
    """Predictor.encode's codes: the model's dtype by default, float64 when asked (intervals keep the values'
    digits that way); any other dtype is refused by name."""
    predictor = Predictor(grunfeld_bundle)
    rows = [[3078.5, 2.8, "IBM"], [1000.1, 0.3, "General Motors"]]
    default, _ = predictor.encode(rows)
    wide, _ = predictor.encode(rows, dtype=np.float64)
    assert default.dtype == predictor.dtype and wide.dtype == np.float64
    assert wide[0, 0] == 3078.5 and wide[1, 0] == 1000.1  # float64 keeps 1000.1; float32 would not
    np.testing.assert_array_equal(default, wide.astype(predictor.dtype))
    for bad in ("int8", "nonsense"):
        with pytest.raises(InputError, match=f"dtype must be float32 or float64; got '{bad}'"):
            predictor.encode(rows, dtype=bad)


def test_encode_imputes_the_exact_fill_in_float64_and_still_runs_float32():
    """The fill is kept in float64 and cast to the input's dtype: a float64 NaN gets the statistic itself
    (float32 buffers rounded 1700000123.456 to 1700000128.0); a float32 input gets it rounded once."""
    import torch
    from torchport.export.encoded import Encode
    from torchport.runtime.encoding import ColumnEncoding, Encoding
    fill = 1700000123.456
    encode = Encode(Encoding((ColumnEncoding("t", impute="mean", fill=fill),
                              ColumnEncoding("g", kind="categorical", levels=("a", "b", "c"), reference="a"))))
    wide = encode(torch.tensor([[float("nan"), 2.0], [5.0, 1.0]], dtype=torch.float64))
    assert wide.dtype == torch.float64 and wide[0, 0].item() == fill and wide[1, 0].item() == 5.0
    assert wide[:, 1:].tolist() == [[0.0, 1.0], [1.0, 0.0]]  # codes still match their levels in float64
    narrow = encode(torch.tensor([[float("nan"), 2.0], [5.0, 1.0]], dtype=torch.float32))
    assert narrow.dtype == torch.float32 and narrow[0, 0].item() == float(np.float32(fill))
    assert narrow[:, 1:].tolist() == [[0.0, 1.0], [1.0, 0.0]]
