import numpy as np
import pandas as pd
import pytest

from liqrisk.models.bundle import BIAS
from liqrisk.models.reasons import REASON_WORDS, ranked_reasons, top_reasons
from liqrisk.models.train import ASSET_CLASSES, FEATURES, frame_of_matrix, matrix_value


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    pushes = pd.DataFrame(
        {"leverage": [0.5, -0.1], "asset_class": [-2.0, 0.0], "vol_1d": [0.1, 0.3], BIAS: [9.0, 9.0]},
        index=[10, 20],
    )
    values = pd.DataFrame(
        {
            "vol_1d": [0.02, np.nan],
            "asset_class": pd.Categorical(["fx", None], categories=["crypto", "fx"]),
            "leverage": [3.0, np.inf],
        },
        index=[10, 20],
    )
    return pushes, values


def test_reasons_are_the_largest_pushes_with_their_values() -> None:
    pushes, values = _frames()
    first, second = top_reasons(pushes, values, k=2)
    assert first == [
        {"feature": "asset_class", "description": REASON_WORDS["asset_class"], "contribution": -2.0, "value": "fx"},
        {"feature": "leverage", "description": REASON_WORDS["leverage"], "contribution": 0.5, "value": 3.0},
    ]
    assert [(r["feature"], r["value"]) for r in second] == [("vol_1d", None), ("leverage", None)]
    assert [len(r) for r in top_reasons(pushes, values, k=10)] == [3, 3]  # bias is never a reason
    assert top_reasons(pushes, values, k=0) == [[], []]


def test_reasons_name_a_feature_missing_from_the_values() -> None:
    pushes, values = _frames()
    with pytest.raises(KeyError, match="vol_1d"):
        top_reasons(pushes, values.drop(columns="vol_1d"), k=1)


def test_reasons_of_a_matrix_are_those_of_its_frame() -> None:
    # the service reads the values from the model matrix, without building the model frame
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(6, len(FEATURES)))
    matrix[:, -1] = [0, 1, 4, np.nan, 3, 2]  # asset_class codes, one unknown
    matrix[1, 0] = np.nan
    pushes = rng.normal(size=(6, len(FEATURES) + 1))
    pushes[:, [0, -1]] += 20.0  # leverage the first reason (one of its values missing); the bias never
    pushes[:, -2] += 8.0  # asset_class the second
    names = [*FEATURES, BIAS]
    frame = frame_of_matrix(matrix, pd.RangeIndex(6))
    expected = top_reasons(pd.DataFrame(pushes, columns=names), frame, k=4)
    assert ranked_reasons(pushes, names, lambda i, feature: matrix_value(matrix, i, feature), k=4) == expected
    assert [row[0]["feature"] for row in expected] == ["leverage"] * 6
    assert expected[1][0]["value"] is None
    assert [row[1]["value"] for row in expected] == [ASSET_CLASSES[c] for c in (0, 1, 4)] + [None, ASSET_CLASSES[3], ASSET_CLASSES[2]]
