"""File scoring (torchport.runtime.scoring and .tables): both table backends write the same bytes and refuse
the same mistakes with the same messages, before any output exists; Parquet round trips; the predict
command's own checks."""
import argparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import DATA
from torchport.runtime import DataError, InputError, Predictor
from torchport.runtime import cli_predict
from torchport.runtime.scoring import _score, score_file
from torchport.runtime.tables import float_text

BACKENDS = ["pyarrow", "stdlib"]


@pytest.fixture(scope="module")
def seed():
    """The tutorial's linear model (a bundle kept in the repository): feature 'area', target 'ntv_rich'."""
    return Predictor(DATA / "v1" / "seed", providers="cpu")


@pytest.fixture(scope="module")
def mlp():
    """An MLP on three features (area, latitude, dist_mainland), target 'ntv_rich'."""
    return Predictor(DATA / "v1" / "mlp", providers="cpu")


def tricky_csv(rows: int, sep: str = ",") -> str:
    """A header and ``rows`` rows whose text cells need quoting, hold quotes, line breaks and non-ASCII."""
    names = ['plain', 'with, comma', 'with "quote"', "two\nlines", "tab\there", "", "Ærø", " padded "]
    lines = [sep.join(["name", "area", "note"])]
    for i in range(rows):
        name = names[i % len(names)]
        cell = '"' + name.replace('"', '""') + '"' if any(c in name for c in (sep, '"', "\n")) else name
        lines.append(sep.join([cell, repr(round(float(i % 97) / 13 - 1, 4)), str(i)]))
    return "\n".join(lines) + "\n"


def outputs(seed, src, tmp_path, chunk_rows=7, suffix=".csv"):
    """The bytes each backend writes for ``src``."""
    out = {}
    for name in BACKENDS:
        dst = tmp_path / f"out-{name}{suffix}"
        assert _score(seed, src, dst, chunk_rows, backend=name) == len(pacsv.read_csv(
            src, parse_options=pacsv.ParseOptions(delimiter="\t" if src.suffix == ".tsv" else ",",
                                                  newlines_in_values=True)))
        out[name] = dst.read_bytes()
    return out


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_both_backends_write_the_same_bytes(seed, tmp_path, suffix, sep):
    src = tmp_path / f"in{suffix}"
    src.write_text(tricky_csv(100, sep), encoding="utf-8")
    out = outputs(seed, src, tmp_path, suffix=suffix)
    assert out["pyarrow"] == out["stdlib"]
    lines = out["stdlib"].decode().split("\n")
    assert lines[0] == sep.join(["name", "area", "note", "ntv_rich_pred"])
    scored = pacsv.read_csv(tmp_path / f"out-stdlib{suffix}", parse_options=pacsv.ParseOptions(
        delimiter=sep, newlines_in_values=True), convert_options=pacsv.ConvertOptions(
        column_types={"name": pa.string(), "area": pa.string(), "note": pa.string()}))
    given = pacsv.read_csv(src, parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
                           convert_options=pacsv.ConvertOptions(column_types={"name": pa.string(),
                                                                              "area": pa.string(),
                                                                              "note": pa.string()}))
    for column in ("name", "area", "note"):  # passed through as their text
        assert scored.column(column).to_pylist() == given.column(column).to_pylist()
    x = np.array([float(a) for a in given.column("area").to_pylist()], dtype=np.float32).reshape(-1, 1)
    np.testing.assert_array_equal(scored.column("ntv_rich_pred").to_numpy().astype(np.float32),
                                  seed.predict(x)[:, 0])


def test_predictions_are_plain_unquoted_numbers(seed, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("area,label\n3,x\n0,\"y, z\"\n")
    for name in BACKENDS:
        dst = tmp_path / f"{name}.csv"
        _score(seed, src, dst, backend=name)
        assert dst.read_text() == 'area,label,ntv_rich_pred\n3,x,2.4034166\n0,"y, z",1.3305826\n'


def test_chunk_size_changes_nothing(seed, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text(tricky_csv(300))
    by_chunk = {rows: outputs(seed, src, tmp_path, chunk_rows=rows) for rows in (1, 64, 65536)}
    assert len({b for out in by_chunk.values() for b in out.values()}) == 1


def test_prediction_text_is_pyarrows_for_every_kind_of_float32():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        (10.0 ** rng.uniform(-9, 12, 20_000)).astype(np.float32),
        np.float32([0, -0.0, 1, 1e-6, 1e-7, 9.999999e-7, 1e9, 1e10, 123456789, 3.4e38, 1e-45, np.inf, -np.inf])])
    assert float_text(values) == pc.cast(pa.array(values), pa.string()).to_pylist()
    assert float_text(np.float32([2.4034166, 1e-7, 1e10])) == ["2.4034166", "1e-7", "1e+10"]


def test_blank_lines_and_empty_pass_through_cells_are_kept_apart(seed, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("\narea,b\n1,\n\n2,\"\"\n\n")
    out = outputs(seed, src, tmp_path)
    one, two = float_text(seed.predict(np.float32([[1], [2]]))[:, 0])
    assert out["pyarrow"] == out["stdlib"] == f"area,b,ntv_rich_pred\n1,,{one}\n2,,{two}\n".encode()


def test_header_only_input_gives_header_only_output(seed, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("area,other\n")
    out = outputs(seed, src, tmp_path)
    assert out["pyarrow"] == out["stdlib"] == b"area,other,ntv_rich_pred\n"


# ---- Parquet (pyarrow) -----------------------------------------------------------------------------------

def test_parquet_round_trips_keep_types(seed, tmp_path):
    area = np.random.default_rng(1).uniform(0, 5, 1000)
    table = pa.table({"id": pa.array(np.arange(1000), pa.int64()), "area": area,
                      "name": [f"island {i}" if i % 10 else None for i in range(1000)]})
    src = tmp_path / "in.parquet"
    pq.write_table(table, src, row_group_size=300)
    expected = seed.predict(area.astype(np.float32).reshape(-1, 1))[:, 0]
    assert score_file(seed, src, tmp_path / "out.parquet", chunk_rows=128) == 1000
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema == pa.schema([("id", pa.int64()), ("area", pa.float64()), ("name", pa.string()),
                                    ("ntv_rich_pred", pa.float32())])
    assert out.select(["id", "area", "name"]).equals(table)
    np.testing.assert_array_equal(out.column("ntv_rich_pred").to_numpy(), expected)
    score_file(seed, src, tmp_path / "out.csv", chunk_rows=128)
    text = (tmp_path / "out.csv").read_text().splitlines()
    assert text[0] == "id,area,name,ntv_rich_pred" and text[1].startswith("0,") and ",," in text[1]
    back = pacsv.read_csv(tmp_path / "out.csv")
    np.testing.assert_array_equal(back.column("ntv_rich_pred").to_numpy().astype(np.float32), expected)


def test_csv_to_parquet_keeps_cells_as_text(seed, tmp_path):
    src = tmp_path / "in.tsv"
    src.write_text("code\tarea\n007\t3\n1e3\t0\n")
    score_file(seed, src, tmp_path / "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("code").to_pylist() == ["007", "1e3"] and out.column("area").to_pylist() == ["3", "0"]
    assert out.column("ntv_rich_pred").type == pa.float32()


def test_parquet_without_pyarrow_names_the_extra(seed, tmp_path):
    (tmp_path / "in.csv").write_text("area\n1\n")
    pq.write_table(pa.table({"area": [1.0]}), tmp_path / "in.parquet")
    for src, dst, parameter in (("in.parquet", "out.csv", "src"), ("in.csv", "out.parquet", "dst")):
        with pytest.raises(InputError, match=r"Parquet needs pyarrow: pip install 'torchport\[io\]'") as e:
            _score(seed, tmp_path / src, tmp_path / dst, backend="stdlib")
        assert e.value.parameter == parameter
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "in.parquet"]


@pytest.mark.parametrize("column, message", [
    (pa.array([1.0, None, 2.0]), "row 2 (data row, 1-based), column 'area': expected a finite number, got an "
                                 "empty (null) cell"),
    (pa.array([1.0, 2.0, float("nan")]), "row 3 (data row, 1-based), column 'area': expected a finite number, "
                                         "got 'nan'"),
    (pa.array([1.0, 1e39, 2.0]), "row 2 (data row, 1-based), column 'area': expected a finite number, got "
                                 "'1e+39' (beyond float32's range)"),
    (pa.array(["1", "x", "2"]), "row 2 (data row, 1-based), column 'area': expected a finite number, got 'x'"),
    (pa.array([True, False, True]), "column 'area' holds bool values; expected numbers"),
])
def test_bad_parquet_cells_are_named(seed, tmp_path, column, message):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"area": column}), src)
    with pytest.raises(DataError) as e:
        score_file(seed, src, tmp_path / "out.parquet", chunk_rows=2)
    assert message in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_parquet_refusals(seed, tmp_path):
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    pq.write_table(pa.table({"area": [1.0], "ntv_rich_pred": [0.0]}), tmp_path / "scored.parquet")
    pq.write_table(pa.table({"area": [1.0], "tags": [[1, 2]]}), tmp_path / "nested.parquet")
    files = sorted(p.name for p in tmp_path.iterdir())
    for name, message in (("empty.parquet", "empty.parquet is empty; expected a Parquet file"),
                          ("junk.parquet", "cannot read"),
                          ("nested.parquet", "column 'tags' holds list<element: int64> values, which CSV cannot "
                                             "hold; write Parquet instead"),
                          ("scored.parquet", "already has the column(s) 'ntv_rich_pred', which the "
                                             "predictions would overwrite")):
        with pytest.raises(DataError) as e:
            score_file(seed, tmp_path / name, tmp_path / "out.csv")
        assert message in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == files


# ---- refusals: the same in both backends, before any output exists ----------------------------------------

LATER_CHUNK = "area\n" + "1.0\n" * 500 + "2.0\nnan\n3.0\n"


def bad_cell(row: int, got: str) -> str:
    return f": row {row} (data row, 1-based), column 'area': expected a finite number, got {got}"


SUFFIXES = "use .csv or .txt (comma-separated), .tsv or .tab (tab-separated), or .parquet"
REFUSALS = [
    # (file name, contents, the error's class, its message after "<file>")
    ("in.csv", "", DataError, " is empty; expected a header row naming the columns"),
    ("in.csv", "\n\n", DataError, " is empty; expected a header row naming the columns"),
    ("in.csv", "area,x,area\n1,2,3\n", DataError, ": the header repeats the column name(s) 'area'; give each "
                                                  "column its own name"),
    ("in.csv", "size,x\n1,2\n", DataError, ": missing feature column(s) 'area'; the model expects ['area'], the "
                                           "file has ['size', 'x']"),
    ("in.csv", "area,ntv_rich_pred\n1,2\n", DataError, " already has the column(s) 'ntv_rich_pred', which the "
                                                       "predictions would overwrite; rename or drop them"),
    ("in.csv", LATER_CHUNK, DataError, bad_cell(502, "'nan'")),
    ("in.csv", "area\n1\n\n2\noops\n", DataError, bad_cell(3, "'oops'")),  # blank lines are not rows
    ("in.csv", "area\n1\n1_000\n", DataError, bad_cell(2, "'1_000'")),
    ("in.csv", "area,b\n1,2\n,3\n", DataError, bad_cell(2, "''")),
    ("in.csv", "area\n-inf\n", DataError, bad_cell(1, "'-inf'")),
    ("in.csv", "area\n3e38\n4e38\n", DataError, bad_cell(2, "'4e38' (beyond float32's range)")),
    ("in.csv", "area,b\n1,2\n3\n", DataError, ": row 2 (data row, 1-based) has 1 field(s); the header has 2"),
    ("in.csv", 'area,b\n1,"x\ny"\n3,4,5\n', DataError, ": row 2 (data row, 1-based) has 3 field(s); the header "
                                                       "has 2"),
    ("in.xlsx", "area\n1\n", InputError, f": unsupported file type '.xlsx'; {SUFFIXES}"),
    ("in", "area\n1\n", InputError, f": no file type suffix; {SUFFIXES}"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, text, error, message", REFUSALS,
                         ids=[f"{i}-{t[:20]!r}" for i, (_, t, _, _) in enumerate(REFUSALS)])
def test_refusals_are_the_same_in_both_backends(seed, tmp_path, backend, name, text, error, message):
    src = tmp_path / name
    src.write_text(text)
    dst = tmp_path / "out.csv"
    with pytest.raises(error) as e:
        _score(seed, src, dst, chunk_rows=64, backend=backend)
    assert str(e.value) == f"{src}{message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output, no temp file


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_bad_cell_is_named_row_by_row(mlp, tmp_path, backend):
    src = tmp_path / "in.csv"
    src.write_text("dist_mainland,name,latitude,area\n" + "1,a,44,2\n" * 70 + "x,b,44,2\n1,c,44,y\n")
    with pytest.raises(DataError, match=r"row 71 \(data row, 1-based\), column 'dist_mainland': expected a "
                                        r"finite number, got 'x'$"):
        _score(mlp, src, tmp_path / "out.csv", chunk_rows=32, backend=backend)
    src.write_text("dist_mainland,name,latitude,area\n" + "1,a,44,2\n" * 70 + "1,c,44,y\nx,b,44,2\n")
    with pytest.raises(DataError, match=r"row 71 \(data row, 1-based\), column 'area': expected"):
        _score(mlp, src, tmp_path / "out.csv", chunk_rows=32, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failure_leaves_an_existing_output_as_it_was(seed, tmp_path, backend):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text(LATER_CHUNK)
    dst.write_text("old\n")
    with pytest.raises(DataError, match="row 502"):
        _score(seed, src, dst, chunk_rows=7, backend=backend)
    assert dst.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments_name_the_parameter(seed, tmp_path, backend):
    src = tmp_path / "in.csv"
    src.write_text("area\n1\n")
    (tmp_path / "folder.csv").mkdir()
    cases = [(tmp_path / "missing.csv", tmp_path / "o.csv", {}, "src", "missing.csv does not exist"),
             (tmp_path / "folder.csv", tmp_path / "o.csv", {}, "src", "folder.csv is not a file"),
             (src, tmp_path / "no" / "o.csv", {}, "dst", "the output directory"),
             (src, tmp_path / "o.tab", {"chunk_rows": 0}, "chunk_rows", "chunk_rows must be a whole number >= 1"),
             (src, src, {}, "dst", "dst must differ from src")]
    for s, d, kw, parameter, message in cases:
        with pytest.raises(InputError, match=message) as e:
            _score(seed, s, d, backend=backend, **kw)
        assert e.value.parameter == parameter
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv", "in.csv"]


def test_non_utf8_text_is_refused_by_both(seed, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"area,name\n1,\xff\xfe\n")
    for backend in BACKENDS:
        with pytest.raises(DataError, match="in.csv is not UTF-8 text"):
            _score(seed, src, tmp_path / "out.csv", backend=backend)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_progress_bar_on_stderr(seed, tmp_path, capsys):
    pytest.importorskip("tqdm")
    src = tmp_path / "in.csv"
    src.write_text("area\n1\n2\n")
    assert score_file(seed, src, tmp_path / "out.csv", progress=True) == 2
    assert "scoring" in capsys.readouterr().err


# ---- the predict command's own checks ---------------------------------------------------------------------

def command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_predict.add_arguments(parser)
    return parser.parse_args([str(DATA / "v1" / "seed"), *argv, "--providers", "cpu", "--no-progress"])


def test_predict_command_checks_its_flags(tmp_path, capsys):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("area\n3\n")
    for argv, parameter, message in (
            (["-i", str(tmp_path / "x.csv"), "-o", str(dst)], "input", f"input file {tmp_path / 'x.csv'} does not "
                                                                         "exist"),
            (["-i", str(src), "-o", str(src)], "output", f"{src} exists; use force=True (to replace it)"),
            (["-i", str(src), "-o", str(src), "--force"], "output", "--output must differ from --input")):
        with pytest.raises(InputError) as e:
            cli_predict.run(command(*argv))
        assert str(e.value) == message and e.value.parameter == parameter
    assert cli_predict.run(command("-i", str(src), "-o", str(dst))) == 0
    assert dst.read_text() == "area,ntv_rich_pred\n3,2.4034166\n"
    assert "scored 1 rows" in capsys.readouterr().err
    dst.write_text("old")
    assert cli_predict.run(command("-i", str(src), "-o", str(dst), "--force")) == 0
    assert dst.read_text().endswith("2.4034166\n")
