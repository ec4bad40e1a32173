"""NIST StRD's eleven linear least squares datasets (tests/data/nist) and the least-squares core
(train/lstsq.py) that reaches their certified values."""
import numpy as np
import pytest

from nist import CERTIFIED, NAMES, digits, exact_fit_of_the_data, raw_rows, table


@pytest.mark.parametrize("name", NAMES)
def test_the_nist_files_hold_nists_data_and_certified_values(name):
    """The row counts are NIST's, and the exact rational fit of the files' data gives every certified value
    to 14 digits or more: a changed digit in the data or in a certified value would not."""
    c = CERTIFIED[name]
    assert len(raw_rows(name)) == c["rows"]
    assert len(c["terms"]) == len(c["estimate"]) == len(c["std_error"]) == len(c["features"]) + c.get("intercept", True)
    exact = exact_fit_of_the_data(name)
    for key in ("estimate", "std_error"):
        for value, certified in zip(exact[key], c[key]):
            assert digits(value, certified) >= 14, (key, value, certified)
    for key in ("residual_sd", "r_squared", "ss_regression", "ss_residual"):
        assert digits(exact[key], c[key]) >= 14, (key, exact[key], c[key])


def test_the_tables_are_float64_columns_of_the_data():
    filip = table("filip")
    assert filip.X.shape == (82, 10) and filip.X.dtype == np.float64
    assert filip.X[0, 9] == float("-6.860120914") ** 10 and filip.features[-1] == "x10"
    assert table("noint1").intercept is False and table("longley").X.shape == (16, 6)
