"""The scorer: the offline pipeline's scores for the same snapshot and bars, point in time, one
result per account whatever the others do, what-ifs and reasons."""

import copy
import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_support import small_risk_model, write_late_file, write_market

from liqrisk.features.market import market_from_bars
from liqrisk.models import booster_rows, fastpath
from liqrisk.models.bundle import BIAS, RiskModel
from liqrisk.models.reasons import REASON_WORDS
from liqrisk.models.splits import walk_forward_splits
from liqrisk.models.train import FEATURES, model_frame, train_split, uncalibrated
from liqrisk.pipelines.accounts import write_snapshots
from liqrisk.pipelines.bars import read_bars
from liqrisk.pipelines.build import BuildConfig, build_dataset
from liqrisk.pipelines.generator import GeneratorConfig, generate_accounts
from liqrisk.pipelines.instruments_file import read_instruments
from liqrisk.serve.market import MarketState
from liqrisk.serve.scoring import Scorer

DATA = Path(__file__).resolve().parents[2] / "data"
FILE = "crypto_perp_1h.parquet"
OUTPUTS = ("p_liquidated", "p_negative", "expected_shortfall")


@pytest.fixture(scope="module")
def model(make_dataset: Callable[..., pd.DataFrame]) -> RiskModel:
    return small_risk_model(make_dataset(4000, seed=1))


@pytest.fixture(scope="module")
def small_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("market") / "data"
    return write_market(folder, symbols={"BTCUSDT": 40_000.0, "ETHUSDT": 2_500.0}, start="2024-01-01", hours=24 * 40, seed=3)


@pytest.fixture
def scorer(model: RiskModel, small_market: Path) -> Scorer:
    market = MarketState.load(small_market)
    return Scorer(model, name="liqrisk", version="3", market=market, instruments=market.instruments)


def cross(account_id: str, symbol: str, *, collateral: float, side: int, qty: float, entry: float, **more) -> dict:
    position = {"symbol": symbol, "side": side, "qty": qty, "entry_price": entry}
    return {"account_id": account_id, "margin_mode": "cross", "collateral": collateral, "positions": [position], **more}


def last_close(scorer: Scorer, symbol: str) -> float:
    return float(scorer.market.view().bars_of(symbol)["close"].iloc[-1])


def with_kinds(
    model: RiskModel, make_dataset: Callable[..., pd.DataFrame], kinds: dict[str, str], *, n_estimators: int
) -> RiskModel:
    """``model`` with the classifier of each label in ``kinds`` fitted again as that kind (on the
    module's dataset, one walk-forward split)."""
    table = make_dataset(4000, seed=1)
    split = walk_forward_splits(table["as_of"], n_folds=1, horizon=pd.Timedelta(days=7))[0]
    fitted = {
        label: train_split(table, split, label=label, seed=0, n_estimators=n_estimators, models=(kind,))[kind]
        for label, kind in kinds.items()
    }
    return dataclasses.replace(model, classifiers={**model.classifiers, **fitted}, kinds={**model.kinds, **kinds})


def test_scores_equal_the_offline_pipelines_for_the_same_snapshots_and_bars(model: RiskModel, tmp_path: Path):
    catalog = read_instruments(DATA / "instruments.json")
    bars = read_bars(DATA / FILE).bars
    config = GeneratorConfig.from_dict({"event_share": 0.3})
    accounts = generate_accounts(market_from_bars(bars), catalog.instruments, config, n_accounts=80, seed=21)
    write_snapshots(accounts, tmp_path / "accounts.jsonl")
    drowned = cross("drowned", "BTCUSDT-PERP", collateral=10.0, side=1, qty=1.0, entry=1e6, as_of="2025-06-02T00:00:00Z")
    unknown = cross("unknown", "NOSUCH-PERP", collateral=10.0, side=1, qty=1.0, entry=1.0, as_of="2025-06-02T00:00:00Z")
    with (tmp_path / "accounts.jsonl").open("a") as handle:
        handle.write(json.dumps(drowned) + "\n" + json.dumps(unknown) + "\n")
    build = BuildConfig.from_dict(
        {"data_dir": str(DATA), "files": [FILE], "accounts": str(tmp_path / "accounts.jsonl"), "horizons": ["1h", "24h", "7d"]}
    )
    dataset = build_dataset(build)
    offline = model.predict(dataset.table).set_index(dataset.table["account_id"])

    market = MarketState.load(DATA, files=[FILE])
    scorer = Scorer(model, name="liqrisk", version="1", market=market, instruments=market.instruments)
    snapshots = [json.loads(line) for line in (tmp_path / "accounts.jsonl").read_text().splitlines()]
    results = {r["account_id"]: r for r in scorer.score(snapshots)}

    assert len(results) == 82 and len(offline) > 70
    for account_id, row in offline.iterrows():
        served = results[account_id]
        assert served["status"] == "ok", served["error"]
        for h in model.horizons:
            for name in OUTPUTS:
                assert served["horizons"][h][name] == pytest.approx(row[f"{name}_{h}"], rel=1e-12, abs=1e-12)
    excluded = dataset.excluded.set_index("account_id")
    assert excluded.loc["drowned", "status"] == "in_liquidation" and results["drowned"]["status"] == "in_liquidation"
    assert results["unknown"]["status"] == "error" and "unknown symbol 'NOSUCH-PERP'" in results["unknown"]["error"]


def test_bars_appended_after_as_of_change_nothing_at_that_as_of(scorer: Scorer):
    account = cross("a", "BTCUSDT", collateral=2_000.0, side=1, qty=0.2, entry=last_close(scorer, "BTCUSDT"))
    latest = scorer.market.latest
    now = scorer.score([account])[0]
    assert now["status"] == "ok" and now["as_of"] == latest.isoformat().replace("+00:00", "Z")
    ahead = scorer.score([account], as_of=latest + pd.Timedelta("1h"))[0]
    assert ahead["status"] == "error" and "no bars complete at" in ahead["error"]

    crash = scorer.market.view().bars_of("BTCUSDT").iloc[[-1]].copy()
    price = crash["close"].iloc[0]
    crash = crash.assign(ts=crash["ts"] + pd.Timedelta("1h"), open=price, high=price, low=price * 0.7, close=price * 0.75)
    assert scorer.market.append(crash) == 1

    again = scorer.score([account], as_of=latest)[0]
    assert again == now  # the same as_of knows nothing of the crash
    later = scorer.score([account])[0]  # the default as_of moved to the crash bar's end
    assert later["as_of"] != now["as_of"]
    assert later["baseline"]["equity"] < now["baseline"]["equity"]
    assert later["horizons"] != now["horizons"]


def test_each_account_gets_its_own_result_in_order(scorer: Scorer):
    price = last_close(scorer, "BTCUSDT")
    latest = scorer.market.latest
    earlier = (latest - pd.Timedelta("3D")).isoformat()
    batch = [
        cross("healthy", "BTCUSDT", collateral=5_000.0, side=1, qty=0.1, entry=price),
        cross("bad-qty", "ETHUSDT", collateral=100.0, side=1, qty=-2.0, entry=2_000.0),
        cross("drowned", "BTCUSDT", collateral=10.0, side=1, qty=1.0, entry=price * 2),
        {"account_id": "no-mode", "collateral": 1.0, "positions": []},
        cross("unknown", "DOGEUSDT", collateral=100.0, side=-1, qty=1.0, entry=0.1),
        cross("earlier", "ETHUSDT", collateral=5_000.0, side=-1, qty=1.0, entry=last_close(scorer, "ETHUSDT"), as_of=earlier),
    ]
    results = scorer.score(batch)

    assert [r["account_id"] for r in results] == [a["account_id"] for a in batch]
    assert [r["status"] for r in results] == ["ok", "error", "in_liquidation", "error", "error", "ok"]
    assert results[1]["error"] == "positions[0].qty must be > 0, got -2.0 (symbol ETHUSDT)"
    assert results[3]["error"].startswith("margin_mode is missing")
    assert results[4]["error"] == "positions[0].symbol: unknown symbol 'DOGEUSDT'"
    drowned = results[2]
    assert drowned["horizons"] is None and drowned["reasons"] == [] and drowned["baseline"]["margin_call"]
    assert results[5]["as_of"] == pd.Timestamp(earlier).isoformat().replace("+00:00", "Z")
    assert results[0]["as_of"] == latest.isoformat().replace("+00:00", "Z")
    alone = scorer.score([batch[0]])[0]
    assert alone["horizons"] == results[0]["horizons"]  # the others changed nothing


def test_result_shape_is_plain_json(scorer: Scorer):
    eth, btc = last_close(scorer, "ETHUSDT"), last_close(scorer, "BTCUSDT")
    isolated = {
        "account_id": 7,
        "margin_mode": "isolated",
        "positions": [
            {"symbol": "ETHUSDT", "side": -1, "qty": 2.0, "entry_price": eth, "collateral": 400.0},
            {"symbol": "BTCUSDT", "side": 1, "qty": 0.01, "entry_price": btc, "collateral": 100.0},
        ],
    }
    result = scorer.score([isolated], what_if={"add_collateral": 50.0})[0]
    json.dumps(result, allow_nan=False)
    assert set(result) >= {"account_id", "status", "error", "as_of", "model", "horizons", "baseline", "reasons", "what_if"}
    assert result["account_id"] == "7" and result["model"] == {
        "name": "liqrisk",
        "version": "3",
        "kinds": dict.fromkeys(scorer.model.classifiers, "lightgbm"),
        "reasons_for": "negative_24h",
    }
    assert set(result["horizons"]) == {"1h", "24h", "7d"}
    assert all(set(v) == set(OUTPUTS) for v in result["horizons"].values())
    baseline = result["baseline"]
    assert baseline["liquidation_price"] is None  # two isolated positions: one price each
    short, long = baseline["positions"]
    # L = (s·q·e − C − a) / (q·(s − m)) per isolated position, B = e − s·C/q
    assert short["price"] == eth < short["liquidation_price"] < short["bankruptcy_price"]
    assert long["price"] == btc > long["liquidation_price"] > long["bankruptcy_price"]
    assert short["bankruptcy_price"] == pytest.approx(eth + 400.0 / 2.0)
    assert long["bankruptcy_price"] == pytest.approx(btc - 100.0 / 0.01)


def test_what_if_moves_prices_and_distances_the_safe_way(scorer: Scorer):
    """Adding collateral or cutting positions always moves the contract's quantities the safe way;
    the probabilities usually follow but are not guaranteed to (module docstring of
    ``liqrisk.serve.scoring``: only leverage, margin ratio and the distances are monotone
    constraints of the model), so they are not asserted here."""
    price = last_close(scorer, "BTCUSDT")
    account = cross("a", "BTCUSDT", collateral=1_000.0, side=1, qty=0.2, entry=price * 1.02)
    current = scorer.score([account])[0]
    nothing = scorer.score([account], what_if={"add_collateral": 0.0, "cut": 0.0})[0]["what_if"]
    assert {k: nothing[k] for k in ("status", "horizons", "baseline")} == {
        k: current[k] for k in ("status", "horizons", "baseline")
    }
    now = current["baseline"]
    for what_if in ({"add_collateral": 500.0}, {"cut": 0.5}, {"add_collateral": 500.0, "cut": 0.5}):
        changed = scorer.score([account], what_if=what_if)[0]
        assert changed["horizons"] == current["horizons"] and changed["baseline"] == now
        new = changed["what_if"]["baseline"]
        assert changed["what_if"]["status"] == "ok"
        assert new["leverage"] < now["leverage"] and new["margin_ratio"] < now["margin_ratio"]
        assert new["liquidation_price"] < now["liquidation_price"] < price  # a long: further below
        assert new["distance_to_liquidation_pct"] > now["distance_to_liquidation_pct"]
        assert new["distance_to_bankruptcy_pct"] > now["distance_to_bankruptcy_pct"]
        expected_equity = now["equity"] + what_if.get("add_collateral", 0.0)  # a cut realises, not loses
        assert new["equity"] == pytest.approx(expected_equity, rel=1e-12)
    # a what-if can bring an account out of liquidation
    drowned = cross("d", "BTCUSDT", collateral=100.0, side=1, qty=0.2, entry=price * 1.05)
    rescued = scorer.score([drowned], what_if={"add_collateral": 5_000.0})[0]
    assert rescued["status"] == "in_liquidation" and rescued["what_if"]["status"] == "ok"
    assert rescued["what_if"]["horizons"] is not None


def test_every_feature_has_words():
    assert set(FEATURES) <= set(REASON_WORDS)
    assert all(words and words != name for name, words in REASON_WORDS.items())


def test_reasons_are_the_largest_exact_contributions(scorer: Scorer):
    price = last_close(scorer, "BTCUSDT")
    batch = [
        cross(f"a{i}", "BTCUSDT", collateral=c, side=1, qty=0.5, entry=price * e)
        for i, (c, e) in enumerate([(2_000.0, 1.0), (3_000.0, 1.05), (20_000.0, 0.9)])
    ]
    results = scorer.score(batch)
    view = scorer.market.view()
    from liqrisk.features.accounts import snapshots_from_dicts
    from liqrisk.features.snapshot import snapshot_features

    snaps = snapshots_from_dicts([dict(a, as_of=view.latest) for a in batch])
    positions = snaps.positions.assign(account_id=lambda p: p["account"].map(snaps.accounts["account_id"]))
    table = snapshot_features(
        view.market, scorer.instruments, positions, feature_horizon=scorer.feature_horizon, market_part=view.market_features
    )
    X = model_frame(table)
    raw = uncalibrated(scorer.model.classifiers[scorer.reason_label])
    pushes = scorer.model.contributions(table, scorer.reason_label)
    np.testing.assert_allclose(pushes.sum(axis=1), raw.predict(X, raw_score=True), rtol=1e-9, atol=1e-9)
    for i, result in enumerate(results):
        assert result["explained"] and len(result["reasons"]) == 3
        row = pushes.iloc[i].drop(BIAS)
        top = row.abs().sort_values(ascending=False, kind="stable").index[:3].tolist()
        assert [r["feature"] for r in result["reasons"]] == top
        for reason in result["reasons"]:
            assert reason["contribution"] == pytest.approx(row[reason["feature"]], rel=1e-12)
            assert reason["description"] == REASON_WORDS[reason["feature"]]


def test_only_the_riskiest_rows_are_explained_when_asked_to_cap(model: RiskModel, small_market: Path):
    market = MarketState.load(small_market)
    scorer = Scorer(model, name="m", version="1", market=market, instruments=market.instruments, max_explained=2)
    price = float(market.view().bars_of("BTCUSDT")["close"].iloc[-1])
    batch = [cross(f"a{i}", "BTCUSDT", collateral=1_000.0, side=1, qty=0.01 * (i + 1) ** 2, entry=price) for i in range(5)]
    results = scorer.score(batch)
    explained = [r for r in results if r["explained"]]
    assert len(explained) == 2 and all(r["reasons"] for r in explained)
    risk = [r["horizons"]["24h"]["p_negative"] for r in results]
    assert min(r["horizons"]["24h"]["p_negative"] for r in explained) >= sorted(risk)[-2]


def test_a_hist_gb_label_is_explained_by_its_own_trees(
    model: RiskModel, small_market: Path, make_dataset: Callable[..., pd.DataFrame]
):
    mixed = with_kinds(model, make_dataset, {"negative_24h": "hist_gb"}, n_estimators=20)
    assert mixed.explained_label("negative_24h") == "negative_24h"
    market = MarketState.load(small_market)
    scorer = Scorer(mixed, name="m", version="2", market=market, instruments=market.instruments)
    price = float(market.view().bars_of("BTCUSDT")["close"].iloc[-1])
    result = scorer.score([cross("h", "BTCUSDT", collateral=2_000.0, side=1, qty=0.5, entry=price)])[0]
    assert result["model"]["reasons_for"] == "negative_24h"
    assert result["explained"] and len(result["reasons"]) == 3


def test_reasons_come_from_the_nearest_explainable_label_when_the_preferred_has_none(
    model: RiskModel, small_market: Path, make_dataset: Callable[..., pd.DataFrame], make_unexplained_model
):
    # negative_24h served by a model without exact contributions: reasons explain negative_1h or _7d
    table = make_dataset(4000, seed=1)
    mixed = dataclasses.replace(
        model,
        classifiers={**model.classifiers, "negative_24h": make_unexplained_model(table, "negative_24h")},
        kinds={**model.kinds, "negative_24h": "other"},
    )
    assert mixed.explained_label("negative_24h") in ("negative_1h", "negative_7d")
    market = MarketState.load(small_market)
    scorer = Scorer(mixed, name="m", version="2", market=market, instruments=market.instruments)
    price = float(market.view().bars_of("BTCUSDT")["close"].iloc[-1])
    result = scorer.score([cross("h", "BTCUSDT", collateral=2_000.0, side=1, qty=0.5, entry=price)])[0]
    assert result["model"]["reasons_for"] == scorer.reason_label == mixed.explained_label("negative_24h")
    assert result["explained"] and len(result["reasons"]) == 3
    none_explainable = dataclasses.replace(mixed, kinds=dict.fromkeys(mixed.kinds, "other"))
    assert none_explainable.explained_label("negative_24h") is None
    silent = Scorer(none_explainable, name="m", version="3", market=market, instruments=market.instruments)
    result = silent.score([cross("h", "BTCUSDT", collateral=2_000.0, side=1, qty=0.5, entry=price)])[0]
    assert result["model"]["reasons_for"] is None and result["reasons"] == [] and result["status"] == "ok"


def test_plain_numbers_are_python_floats_with_none_for_nan_and_infinities():
    from liqrisk.serve.scoring import _numbers

    assert _numbers(np.array([[1.5, np.nan], [np.inf, -2.0]])) == [[1.5, None], [None, -2.0]]
    assert _numbers(pd.Series([3.0, -np.inf])) == [3.0, None] and _numbers(np.zeros(0)) == []
    assert all(type(v) is float for v in _numbers(np.array([1.0, 2.0], dtype=np.float32)))
    mixed = _numbers(np.array([[np.nan, 0.1, 2.0], [3.0, -np.inf, 1e30]], dtype=np.float32))
    assert [[type(v) for v in row] for row in mixed] == [[type(None), float, float], [float, type(None), float]]
    assert mixed[0][1] == float(np.float32(0.1))  # the float32's value, not 0.1


@pytest.mark.parametrize("kind", ["logistic", "lightgbm", "hist_gb"])
def test_an_account_scores_the_same_to_the_last_bit_alone_and_in_any_batch(
    model: RiskModel, small_market: Path, make_dataset: Callable[..., pd.DataFrame], kind: str
):
    # A logistic model (a matrix product would sum a row in an order set by the rows beside
    # it), tree models (a few rows go through LightGBM's single-row path, more through
    # Booster.predict) and accounts whose as_of see 3 to 31 days of history (a batch-wide
    # width of daily closes would sum each σ_d differently): bit-equal, or the store would
    # record a change on every re-score and the same account would get different scores by
    # its neighbours.
    market = MarketState.load(small_market)
    scorer = Scorer(
        with_kinds(model, make_dataset, dict.fromkeys(model.classifiers, kind), n_estimators=30),
        name="liqrisk", version="1", market=market, instruments=market.instruments,
    )
    rng = np.random.default_rng(7)
    first, latest = market.view().bars_of("BTCUSDT")["ts"].iloc[0], market.latest
    accounts = []
    for i in range(60):
        symbol = ("BTCUSDT", "ETHUSDT")[i % 2]
        as_of = latest if i % 3 else first + pd.Timedelta(days=int(rng.integers(4, 32)), hours=5)
        price = float(market.view().bars_of(symbol).set_index("ts")["close"].asof(as_of - pd.Timedelta("1h")))
        accounts.append(
            cross(f"a{i}", symbol, collateral=float(rng.uniform(200, 5_000)), side=int(rng.choice([-1, 1])),
                  qty=float(rng.uniform(0.5, 3.0)) * 1_000 / price, entry=price * float(rng.uniform(0.97, 1.03)),
                  as_of=as_of.isoformat())
        )
    together = scorer.score(accounts)
    assert sum(r["status"] == "ok" for r in together) > 50
    for account, batched in zip(accounts, together, strict=True):
        alone = scorer.score([account])[0]
        assert alone["horizons"] == batched["horizons"], account["account_id"]
        assert alone["baseline"] == batched["baseline"], account["account_id"]
        assert alone["reasons"] == batched["reasons"] or not batched["explained"], account["account_id"]


def test_a_new_scorer_has_built_its_fast_paths_before_the_first_request(
    model: RiskModel, small_market: Path, make_dataset: Callable[..., pd.DataFrame], monkeypatch: pytest.MonkeyPatch
):
    # HistGB's trees written as a booster, the logistic constants and LightGBM's single-row
    # set-ups are built when the scorer is (a model swap happens after that), not by the first
    # request after a load: once built, building again fails here and the request still scores
    kinds = dict(zip(model.classifiers, itertools.cycle(["hist_gb", "logistic", "lightgbm"]), strict=False))
    kinds["negative_24h"] = "hist_gb"  # the label reasons explain
    market = MarketState.load(small_market)
    scorer = Scorer(
        with_kinds(model, make_dataset, kinds, n_estimators=20),
        name="liqrisk", version="1", market=market, instruments=market.instruments,
    )

    def built_again(*args, **kwargs):
        raise AssertionError("built on a request")

    monkeypatch.setattr(fastpath, "_hist_gb_plan", built_again)
    monkeypatch.setattr(fastpath, "_logistic_plan", built_again)
    monkeypatch.setattr(booster_rows, "_FastRows", built_again)
    price = last_close(scorer, "BTCUSDT")
    result = scorer.score([cross("a", "BTCUSDT", collateral=2_000.0, side=1, qty=0.5, entry=price)])[0]
    assert result["status"] == "ok" and result["explained"] and result["model"]["reasons_for"] == "negative_24h"


def test_scoring_leaves_the_callers_accounts_as_they_were(scorer: Scorer):
    # accounts with their own as_of are read in place, not copied: nothing may change them
    price = last_close(scorer, "BTCUSDT")
    accounts = [
        cross("own", "BTCUSDT", collateral=2_000.0, side=1, qty=0.5, entry=price, as_of=scorer.market.latest.isoformat()),
        cross("default", "BTCUSDT", collateral=900.0, side=-1, qty=0.2, entry=price),
        {"account_id": "bad", "margin_mode": "cross", "positions": []},
    ]
    sent = copy.deepcopy(accounts)
    results = scorer.score(accounts, what_if={"add_collateral": 10.0, "cut": 0.5})
    assert [r["status"] for r in results] == ["ok", "ok", "error"]
    assert accounts == sent


def test_a_model_that_cannot_be_warmed_still_serves(
    model: RiskModel, small_market: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    market = MarketState.load(small_market)
    real = RiskModel.predict_values

    def fails_on_the_warming_row(self, matrix, notional, **kwargs):
        if np.isnan(matrix[:, :-1]).all():
            raise ValueError("cannot read a row of missing numbers")
        return real(self, matrix, notional, **kwargs)

    monkeypatch.setattr(RiskModel, "predict_values", fails_on_the_warming_row)
    with caplog.at_level("WARNING", logger="liqrisk.serve.scoring"):
        scorer = Scorer(model, name="liqrisk", version="3", market=market, instruments=market.instruments)
    assert "warming the model's fast paths failed" in caplog.text
    price = last_close(scorer, "BTCUSDT")
    assert scorer.score([cross("a", "BTCUSDT", collateral=2_000.0, side=1, qty=0.5, entry=price)])[0]["status"] == "ok"


def test_the_default_as_of_fills_only_accounts_without_one_and_changes_no_caller_object():
    from types import MappingProxyType

    from liqrisk.serve.scoring import with_default_as_of

    bare, own = {"account_id": "a"}, {"account_id": "b", "as_of": "2024-01-01T00:00:00Z"}
    assert with_default_as_of(bare, "2025-01-01T00:00:00Z") == {"account_id": "a", "as_of": "2025-01-01T00:00:00Z"}
    assert bare == {"account_id": "a"}  # a new dict, the caller's is left as it was
    assert with_default_as_of(own, "2025-01-01T00:00:00Z") is own
    assert with_default_as_of(bare, None) is bare
    assert with_default_as_of({"account_id": "c", "as_of": None}, "2025-01-01T00:00:00Z")["as_of"] == "2025-01-01T00:00:00Z"
    proxy = MappingProxyType({"account_id": "d"})
    assert type(with_default_as_of(proxy, None)) is dict and with_default_as_of(proxy, None) == {"account_id": "d"}
    assert with_default_as_of(proxy, "2025-01-01T00:00:00Z") == {"account_id": "d", "as_of": "2025-01-01T00:00:00Z"}
    for other in (None, 3, "text", [{"account_id": "e"}]):
        assert with_default_as_of(other, "2025-01-01T00:00:00Z") is other


def test_an_account_the_latest_bars_cannot_score_for_want_of_history_is_scored_on_the_longest(
    model: RiskModel, tmp_path: Path
):
    data = write_market(tmp_path / "data", symbols={"BTCUSDT": 40_000.0, "ETHUSDT": 2_500.0}, start="2024-01-01", hours=24 * 40, seed=3)
    write_late_file(data, "BTCUSDT", hours=24 * 12, extra_hours=24)  # BTCUSDT's latest bars begin on day 28
    market = MarketState.load(data)
    without_history = MarketState.load(data)
    without_history.history = None
    hourly = MarketState.load(data, files=["crypto_1h.parquet"])
    both, latest_only, long_only = (
        Scorer(model, name="liqrisk", version="3", market=m, instruments=m.instruments)
        for m in (market, without_history, hourly)
    )

    def day(d: int) -> str:
        return (pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=d)).isoformat()

    btc = {"collateral": 4_000.0, "side": 1, "qty": 0.1, "entry": 40_000.0}
    accounts = [
        cross("early", "BTCUSDT", **btc, as_of=day(20)),  # before the latest bars begin
        cross("early-eth", "ETHUSDT", collateral=4_000.0, side=-1, qty=1.0, entry=2_500.0, as_of=day(20)),
        cross("late", "BTCUSDT", **btc),  # at the market's latest bar
        cross("before-all", "BTCUSDT", **btc, as_of="2023-06-01T00:00:00+00:00"),  # no bars anywhere
        cross("two", "BTCUSDT", **btc, as_of=day(29)) | {"positions": [
            {"symbol": "BTCUSDT", "side": 1, "qty": 0.1, "entry_price": 40_000.0},
            {"symbol": "ETHUSDT", "side": 1, "qty": 1.0, "entry_price": 2_500.0},
        ]},  # a day of latest bars: too little for the volatility, priced on the longest
    ]
    what_if = {"cut": 0.25, "add_collateral": 100.0}

    rows = both.score(accounts, what_if=what_if)

    refused = latest_only.score(accounts, what_if=what_if)
    assert [r["status"] for r in refused] == ["error", "ok", "ok", "error", "error"]
    assert "insufficient history" in refused[0]["error"] and "insufficient history" in refused[4]["error"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "error", "ok"]
    for i in (0, 4):  # as the longest bars alone score them, what-if and reasons included
        assert rows[i] == long_only.score([accounts[i]], what_if=what_if)[0]
    assert rows[1:4] == refused[1:4]  # what the latest bars score, or refuse everywhere, is theirs
