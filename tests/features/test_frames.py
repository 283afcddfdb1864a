"""``frame_from_arrays`` builds exactly the frame the constructor builds."""

import numpy as np
import pandas as pd
import pytest

from liqrisk.features._frames import Columns, frame_from_arrays

TEXT_CASES = [
    np.array(["a", "b"], dtype=object),
    np.array(["a", np.nan], dtype=object),
    np.array(["a", None], dtype=object),
    np.array([np.nan, np.nan], dtype=object),  # no text: the constructor keeps objects
    np.array([1, "a"], dtype=object),
    np.array([pd.Timestamp("2024-01-01", tz="UTC")] * 2, dtype=object),
]


@pytest.mark.parametrize("text", TEXT_CASES, ids=range(len(TEXT_CASES)))
def test_same_frame_as_the_constructor(text):
    columns = {
        "f": np.array([1.5, np.nan]),
        "x": text,
        "i": np.array([1, 2], dtype=np.int64),
        "t": pd.array(pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True)),
        "g": np.array([np.inf, 0.0]),
        "b": np.array([True, False]),
        "c": pd.Categorical(["u", "v"]),
    }
    order = Columns.of(["g", "x", "i", "t", "f", "c", "b"])
    index = pd.Index([7, 3], name="account")
    got = frame_from_arrays(columns, index=index, names=order)
    expected = pd.DataFrame({c: columns[c] for c in order.names}, index=index)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.dtypes.tolist() == expected.dtypes.tolist()


def test_no_rows_and_no_shared_state():
    order = Columns.of(["f", "x"])
    empty = frame_from_arrays({"f": np.zeros(0), "x": np.zeros(0, dtype=object)}, index=pd.RangeIndex(0), names=order)
    pd.testing.assert_frame_equal(empty, pd.DataFrame({"f": np.zeros(0), "x": np.zeros(0, dtype=object)}))

    values = np.array([1.0])
    one = frame_from_arrays({"f": values, "x": np.array(["a"], dtype=object)}, index=pd.RangeIndex(1), names=order)
    values[0] = 2.0  # the frame holds a copy
    one.columns.name = "renamed"  # and its own column index
    other = frame_from_arrays({"f": values, "x": np.array(["a"], dtype=object)}, index=pd.RangeIndex(1), names=order)
    assert one["f"].iat[0] == 1.0 and other.columns.name is None
