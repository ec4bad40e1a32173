"""Files as people write them, read by one reader for `torchport train` and `torchport predict` with the same
rules: a UTF-8 byte order mark is dropped; comma, semicolon and tab are found from the header (or given with
--delimiter); one-column files work; a header that repeats a name is refused naming it; a decimal comma is
refused with a hint; predictions are written as plain unquoted numbers."""
import numpy as np
import pytest

from conftest import DATA, run_cli
from torchport.train.datasets import load_dataset
from torchport.runtime import DataError, Predictor
from torchport.runtime.scoring import _score
from torchport.runtime.tables import detect_delimiter, read_table

BACKENDS = ["pyarrow", "stdlib"]
MLR = DATA / "plant_richness_mlr.tsv"


def mlr_text(sep: str) -> str:
    return "\n".join(sep.join(line.split("\t")) for line in MLR.read_text().splitlines()) + "\n"


@pytest.mark.parametrize("name, text", [
    ("bom.csv", "\ufeff" + mlr_text(",")),  # what spreadsheet programs write
    ("semicolon.csv", mlr_text(";")),
    ("tab.csv", mlr_text("\t")),
    ("comma.tsv", mlr_text(",")),
    ("crlf.csv", mlr_text(",").replace("\n", "\r\n")),
])
def test_train_and_predict_read_the_same_file_the_same_way(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    data = load_dataset(str(path), ["ntv_rich"])
    reference = load_dataset(str(MLR), ["ntv_rich"])
    assert data.feature_names == ["area", "latitude", "dist_mainland"]  # the first name without its BOM
    assert np.array_equal(data.X, reference.X) and np.array_equal(data.y, reference.y)
    out = tmp_path / "b"
    proc = run_cli("train", "--data", str(path), "--target", "ntv_rich", "--out", str(out), "--no-progress",
                   "--no-plots")
    assert proc.returncode == 0, proc.stderr
    predictor = Predictor(out)
    expected = predictor.predict(reference.X)[:, 0]
    for backend in BACKENDS:
        scored = tmp_path / f"scored-{backend}.csv"
        assert _score(predictor, path, scored, backend=backend) == 22
        lines = scored.read_text().splitlines()
        assert lines[0] == "ntv_rich,area,latitude,dist_mainland,ntv_rich_pred" and '"' not in scored.read_text()
        np.testing.assert_array_equal(np.float32([line.split(",")[-1] for line in lines[1:]]), expected)


def test_the_delimiter_is_read_from_the_header(tmp_path):
    cases = {"a,b\n1,2\n": ",", "a;b\n1;2\n": ";", "a\tb\n1\t2\n": "\t", "area\n1\n2\n": ",",
             '"x;y",b\n1,2\n': ",", "a;b,c\n1;2,5\n": ",", "a;b;c\n1;2,5;3\n": ";"}
    for i, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"f{i}.csv"
        path.write_text(text)
        assert detect_delimiter(path, ",") == expected, text
    one = tmp_path / "one.tsv"
    one.write_text("area\n3\n")
    assert detect_delimiter(one, "\t") == "\t"


def test_a_one_column_file_scores(tmp_path):
    predictor = Predictor(DATA / "v1" / "seed", providers="cpu")
    src = tmp_path / "area.csv"
    src.write_text("area\n3\n0\n1.5\n")
    for backend in BACKENDS:
        dst = tmp_path / f"{backend}.csv"
        assert _score(predictor, src, dst, backend=backend) == 3
        assert dst.read_text().splitlines()[:2] == ["area,ntv_rich_pred", "3,2.4034166"]


def test_delimiter_given_overrides_the_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a;b,c\n1;2,5\n")
    header, columns = read_table(path, ["c"], delimiter="comma")
    assert header == ["a;b", "c"] and columns["c"].tolist() == [5.0]
    header, columns = read_table(path, ["a"], delimiter="semicolon")
    assert header == ["a", "b,c"] and columns["a"].tolist() == [1.0]
    proc = run_cli("predict", str(DATA / "v1" / "seed"), "-i", str(path), "-o", str(tmp_path / "o.csv"),
                   "--delimiter", "semicolon")
    assert proc.returncode == 2 and "missing feature column(s) 'area'" in proc.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_names_and_decimal_commas_are_refused_alike(tmp_path, backend):
    cases = [("area,x,area\n1,2,3\n", "the header repeats the column name(s) 'area'; give each column its own name"),
             ("area;x\n1,5;2\n", "row 1 (data row, 1-based), column 'area': expected a finite number, got '1,5' (a "
                                 "decimal comma: torchport reads '.' as the decimal mark and ',' only as a delimiter; "
                                 "save the file with '.' decimals")]
    predictor = Predictor(DATA / "v1" / "seed", providers="cpu")
    for i, (text, message) in enumerate(cases):
        path = tmp_path / f"f{i}.csv"
        path.write_text(text)
        with pytest.raises(DataError) as scoring:
            _score(predictor, path, tmp_path / "out.csv", backend=backend)
        with pytest.raises(DataError) as reading:
            read_table(path, ["area"], backend_name=backend)
        assert message in str(scoring.value) and message in str(reading.value)


def test_train_refuses_them_in_one_line_naming_them(tmp_path):
    (tmp_path / "dup.csv").write_text("y,a,a\n1,2,3\n4,5,6\n")
    (tmp_path / "comma.csv").write_text("y;a\n1,5;2\n2,5;3\n")
    for name, message in (("dup.csv", "the header repeats the column name(s) 'a'"), ("comma.csv", "decimal comma")):
        proc = run_cli("train", "--data", name, "--target", "y", "--no-progress", cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["comma.csv", "dup.csv"]


def test_a_large_file_is_read_by_pyarrow_with_the_same_values(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300_000, 3))
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("a,b,y\n")
        np.savetxt(f, values, delimiter=",", fmt="%.17g")
    header, arrow = read_table(path, ["a", "b", "y"], backend_name="pyarrow")
    _, stdlib = read_table(path, ["a", "b", "y"], backend_name="stdlib")
    assert header == ["a", "b", "y"]
    for j, name in enumerate(header):
        assert np.array_equal(arrow[name], values[:, j]) and np.array_equal(stdlib[name], values[:, j])
    seen = []
    read_table(path, lambda columns: columns[:1], on_rows=seen.append)
    assert seen[-1] == 300_000 and len(seen) >= 2  # read in chunks, progress after each
