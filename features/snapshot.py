"""Snapshot features: the dataset's feature row of each account, as known at its ``as_of``.

The one definition of "the features of an account snapshot", shared by the dataset build
(``liqrisk.pipelines.build``), the event back-tests and the scoring service, so that a
snapshot scored online gets exactly the row the model was trained on:

- position features (``liqrisk.features.position``) from what the engine knows of each
  position at as_of (``liqrisk.features.replay.state_at_as_of``): last complete close, tier,
  σ_d and liquidity, with ``horizon = feature_horizon`` (the longest label horizon of the
  build: ``dist_*_sigma`` scale with it);
- market features (``liqrisk.features.market_features``) of the account's *anchor* symbol,
  its largest position by entry notional (:func:`anchor_keys`);
- ``status``: ``ok``, ``in_liquidation`` (already meets ``E <= MM`` at as_of: not a
  prediction case) or ``error`` (the engine's message in ``reason``), decided as the engine
  decides before it walks.

Every value uses only bars complete at or before the account's as_of.
"""

from collections.abc import Callable, Mapping

import pandas as pd

from liqrisk.features.instruments import Instrument
from liqrisk.features.market import Market
from liqrisk.features.market_features import MARKET_FEATURES, market_features
from liqrisk.features.position import POSITION_FEATURES, account_position_features
from liqrisk.features.replay import state_at_as_of

IN_LIQUIDATION = "in liquidation at as_of"
SNAPSHOT_KEYS: tuple[str, ...] = ("account_id", "as_of", "symbol", "asset_class", "margin_mode")
SNAPSHOT_COLUMNS: tuple[str, ...] = (
    *SNAPSHOT_KEYS,
    *POSITION_FEATURES,
    *MARKET_FEATURES,
    "status",
    "reason",
)
# keys (``symbol``, ``as_of``, any index) -> ``MARKET_FEATURES`` on the same index
MarketFeatures = Callable[[pd.DataFrame], pd.DataFrame]


def snapshot_features(
    market: Market,
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
    *,
    feature_horizon: pd.Timedelta,
    market_part: MarketFeatures,
    state: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One row per account (index ``account``, in order of appearance) with ``SNAPSHOT_COLUMNS``.

    Parameters
    ----------
    market : Market
        The bars laid out for the engine (``market_from_bars``).
    instruments : mapping of symbol to Instrument
    positions : DataFrame
        ``POSITION_COLUMNS`` (``liqrisk.features.replay``), the rows of an account together,
        and ``account_id`` (else the account code, as text).
    feature_horizon : Timedelta
        The horizon ``dist_*_sigma`` are scaled to: the longest label horizon of the dataset
        the model was trained on.
    market_part : callable
        Market features of ``(symbol, as_of)`` keys: :func:`market_features_from_bars`, or a
        cache that returns the same values.
    state : (DataFrame, DataFrame), optional
        ``state_at_as_of(market, instruments, positions)`` when the caller has it already.

    Returns
    -------
    DataFrame
        Feature values of ``error`` rows are whatever could be computed (NaN where nothing).
    """
    keys = anchor_keys(positions)
    rows = position_snapshot(market, instruments, positions, feature_horizon=feature_horizon, state=state)
    table = join_snapshot(rows, market_part(keys[["symbol", "as_of"]]), keys, instruments)
    return table[list(SNAPSHOT_COLUMNS)]


def market_features_from_bars(
    bars: pd.DataFrame, bar_lengths: Mapping[str, pd.Timedelta]
) -> MarketFeatures:
    """``market_part`` of :func:`snapshot_features` computed from the bars on every call."""
    return lambda keys: market_features(bars, bar_lengths, keys)


def anchor_keys(positions: pd.DataFrame) -> pd.DataFrame:
    """Per account (index ``account``): ``account_id``, ``as_of`` and the symbol of its largest
    position by entry notional, whose market features describe the account."""
    size = positions["qty"] * positions["entry_price"].abs()
    largest = size.groupby(positions["account"], sort=False).idxmax()
    keys = positions.loc[largest, ["account", "as_of", "symbol"]].set_index("account")
    ids = positions.groupby("account", sort=False)["account_id"].first() if "account_id" in positions else keys.index.astype(str)
    return keys.assign(account_id=ids)


def position_snapshot(
    market: Market,
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
    *,
    feature_horizon: pd.Timedelta,
    state: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Per account (index ``account``): ``account_id, as_of, margin_mode``, ``POSITION_FEATURES``,
    ``status`` and ``reason`` (``""``, :data:`IN_LIQUIDATION` or the engine's error).

    ``state`` is ``state_at_as_of(market, instruments, positions)``, computed here if not given.
    """
    state, decided = state if state is not None else state_at_as_of(market, instruments, positions)
    features = account_position_features(
        pd.concat([positions, state.drop(columns="error")], axis=1), horizon=feature_horizon
    )
    first = positions.groupby("account", sort=False)
    ids = first["account_id"].first() if "account_id" in positions else first["account"].first().astype(str)
    out = pd.DataFrame(
        {
            "account_id": ids,
            "as_of": first["as_of"].first(),
            "margin_mode": first["margin_mode"].first(),
        }
    )
    reason = decided["error"].where(decided["status"] != "in_liquidation", IN_LIQUIDATION)
    return out.join(features).assign(status=decided["status"], reason=reason)


def join_snapshot(
    rows: pd.DataFrame,
    market_part: pd.DataFrame,
    keys: pd.DataFrame,
    instruments: Mapping[str, Instrument],
) -> pd.DataFrame:
    """Per-account ``rows`` joined with their anchor's market features, ``symbol`` and
    ``asset_class`` (all on the ``account`` index)."""
    joined = rows.join(market_part).join(keys[["symbol"]])
    asset_class = {s: i.asset_class for s, i in instruments.items()}
    return joined.assign(asset_class=joined["symbol"].astype(str).map(asset_class))
