from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from liqrisk.models import booster_rows


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(3000, 6)), columns=[f"x{i}" for i in range(6)])
    X["c"] = pd.Categorical(rng.integers(0, 4, len(X)))
    X.loc[X.index % 6 == 0, "x1"] = np.nan
    y = X["x0"] + X["x1"].fillna(1.0) * (X["c"].cat.codes == 2) > 0.3
    return {
        "classifier": lgb.LGBMClassifier(n_estimators=40, verbose=-1).fit(X, y).booster_,
        "regressor": lgb.LGBMRegressor(n_estimators=40, verbose=-1).fit(X, X["x0"] * 2.0).booster_,
    }


def _matrix(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, 7))
    m[:, 6] = rng.integers(-1, 5, n)  # a category code, -1 and 4 unseen
    m[::3, 1] = np.nan
    m[1::4, 6] = np.nan
    return m


@pytest.mark.parametrize("output", ["raw", "normal", "contrib"])
@pytest.mark.parametrize("n", [1, 2, booster_rows.FEW_ROWS, booster_rows.FEW_ROWS + 1, 200])
def test_few_rows_predict_as_booster_predict_does_to_the_last_bit(boosters, output, n) -> None:
    for booster in boosters.values():
        m = _matrix(n, seed=n)
        want = booster.predict(m, raw_score=output == "raw", pred_contrib=output == "contrib", num_threads=1)
        got = booster_rows.predict(booster, m, output, 1)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_rows_of_a_strided_or_other_typed_matrix_are_read_as_they_are(boosters) -> None:
    booster = boosters["classifier"]
    wide = np.hstack([_matrix(8, seed=1), np.zeros((8, 3))])
    strided = wide[::2, :7]  # every other row, a slice of wider rows
    assert not strided.flags.c_contiguous
    want = booster.predict(np.ascontiguousarray(strided), raw_score=True, num_threads=1)
    np.testing.assert_array_equal(booster_rows.predict(booster, strided, "raw", 1), want)
    np.testing.assert_array_equal(booster_rows.predict(booster, strided.astype(np.float32), "raw", 1),
                                  booster.predict(strided.astype(np.float32), raw_score=True, num_threads=1))


def test_threads_predicting_at_once_each_get_their_own_rows(boosters) -> None:
    booster = boosters["regressor"]
    matrices = [_matrix(1 + i % booster_rows.FEW_ROWS, seed=100 + i) for i in range(200)]
    want = [booster.predict(m, num_threads=1) for m in matrices]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda m: booster_rows.predict(booster, m, "normal", 1), matrices))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_a_row_of_the_wrong_width_is_refused_with_lightgbms_message(boosters) -> None:
    with pytest.raises(lgb.basic.LightGBMError, match="number of features"):
        booster_rows.predict(boosters["classifier"], np.zeros((1, 5)), "raw", 1)
