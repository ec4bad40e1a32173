import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from torchport.runtime.errors import DataError as RuntimeDataError
from torchport.runtime.errors import TorchportError
from torchport.train import DataError, load_dataset
from torchport.train.datasets import CITATION, load_islands


def test_islands_table_ships_with_the_package():
    t = load_islands()
    assert len(t) == 22
    assert {"island", "ntv_rich", "area_ha", "latitude", "dist_mainland_km"} <= set(t.columns)
    assert "McMaster" in CITATION


@pytest.mark.parametrize("name", ["plant_richness_lr", "plant_richness_mlr"])
def test_derived_datasets_equal_the_published_tables(name):
    ref = pd.read_csv(DATA / f"{name}.tsv", sep="\t")
    d = load_dataset(name)
    assert d.target_names == ["ntv_rich"]
    assert d.feature_names == [c for c in ref.columns if c != "ntv_rich"]
    np.testing.assert_allclose(d.y[:, 0], ref["ntv_rich"], atol=1e-8, rtol=0)
    np.testing.assert_allclose(d.X, ref[d.feature_names].to_numpy(), atol=1e-8, rtol=0)


def test_fingerprint_identifies_the_data():
    a, b = load_dataset("plant_richness_lr"), load_dataset("plant_richness_lr")
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != load_dataset("plant_richness_mlr").fingerprint


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_files_by_column_name(tmp_path, suffix):
    ref = pd.read_csv(DATA / "plant_richness_mlr.tsv", sep="\t")
    path = tmp_path / f"d{suffix}"
    if suffix == ".parquet":
        ref.to_parquet(path)
    else:
        ref.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    d = load_dataset(str(path), ["ntv_rich"], ["latitude", "area"])
    assert d.feature_names == ["latitude", "area"]
    np.testing.assert_allclose(d.X, ref[["latitude", "area"]].to_numpy())
    every = load_dataset(str(path), ["ntv_rich"])
    assert every.feature_names == ["area", "latitude", "dist_mainland"]


def test_missing_column_names_it_and_lists_the_others(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,a\n1,2\n")
    with pytest.raises(DataError, match=r"'b' not found; available columns: y, a") as e:
        load_dataset(str(path), ["y"], ["a", "b"])
    assert e.value.parameter == "features"
    with pytest.raises(DataError, match=r"'z' not found") as e:
        load_dataset(str(path), ["z"], ["a"])
    assert e.value.parameter == "target"


def test_non_numeric_value_names_column_and_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,a\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"d.csv: row 2 \(data row, 1-based\), column 'a': expected a finite number, "
                                        r"got 'oops'$"):
        load_dataset(str(path), ["y"], ["a"])


def test_nan_names_column_and_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,a\n1,2\n,3\n4,5\n")
    with pytest.raises(DataError, match=r"row 2 \(data row, 1-based\), column 'y': expected a finite number, got ''"):
        load_dataset(str(path), ["y"], ["a"])


def test_a_missing_value_in_a_dataframe_names_column_and_row():
    from torchport.train.datasets import from_frame
    frame = pd.DataFrame({"y": [1.0, None, 3.0], "a": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"column 'y', row 2 .*missing value"):
        from_frame(frame, ["y"], ["a"], "f", "a DataFrame")


def test_unknown_dataset_and_missing_file():
    with pytest.raises(DataError, match="unknown dataset 'nope'.*plant_richness_lr") as e:
        load_dataset("nope")
    assert e.value.parameter == "name_or_path" and isinstance(e.value, (TorchportError, ValueError))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("no/such/file.csv", ["y"])


def test_one_data_error_and_one_reader_for_names_and_files():
    assert DataError is RuntimeDataError  # the training side raises the runtime's DataError: one family
    with pytest.raises(DataError, match=r"data file d.csv does not exist"):
        load_dataset("d.csv", ["y"])
    assert load_dataset("plant_richness_lr").recipe == {"optimizer": "sgd"}  # the tutorial's data: its SGD
    assert load_dataset("plant_richness_lr", ["ntv_rich"], ["area"]).recipe == {"optimizer": "sgd"}
    assert load_dataset("plant_richness_mlr").recipe == {} and load_dataset("islands").recipe == {}


def test_file_needs_a_target(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,a\n1,2\n")
    with pytest.raises(DataError, match=r"no target column given; give target=\[\.\.\.\] with one or more of: y, a") as e:
        load_dataset(str(path))
    assert e.value.parameter == "target" and "--" not in str(e.value)


def test_every_column_a_target_leaves_no_features(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,a\n1,2\n")
    with pytest.raises(DataError, match=r"no feature columns left; give features=\[\.\.\.\]") as e:
        load_dataset(str(path), ["y", "a"])
    assert e.value.parameter == "features"
