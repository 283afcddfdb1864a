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
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from liqrisk.features._frames import Columns, frame_from_arrays
from liqrisk.features.instruments import Instrument
from liqrisk.features.market import Market
from liqrisk.features.market_features import MARKET_FEATURES, market_features
from liqrisk.features.position import (
    POSITION_FEATURES,
    group_starts,
    is_isolated,
    position_feature_arrays,
)
from liqrisk.features.replay import EngineState, PositionArrays, account_ids, state_at_as_of

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
_MARKET_COLUMNS = list(MARKET_FEATURES)
_SNAPSHOT_INDEX = Columns.of(SNAPSHOT_COLUMNS)


class MarketFeatureRows(Protocol):
    """A ``market_part`` that also answers on arrays (the service's caches): :func:`snapshot_features`
    calls ``rows`` and builds no keys frame. Both must give the same values."""

    def __call__(self, keys: pd.DataFrame) -> pd.DataFrame: ...

    def rows(self, symbol: np.ndarray, as_of_us: np.ndarray) -> np.ndarray:
        """``MARKET_FEATURES`` (columns, float64) of each ``symbol`` (text) at ``as_of_us`` (int64 µs)."""
        ...


def snapshot_features(
    market: Market,
    instruments: Mapping[str, Instrument],
    positions: pd.DataFrame,
    *,
    feature_horizon: pd.Timedelta,
    market_part: MarketFeatures | MarketFeatureRows,
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

    The row is :func:`join_snapshot` of :func:`position_snapshot` and the market features of
    :func:`anchor_keys`, from the same helpers, but assembled as arrays into one frame: the
    service calls this for a handful of accounts, where each intermediate frame would cost
    more than the arithmetic.
    """
    columns, index = snapshot_columns(
        market,
        instruments,
        positions,
        feature_horizon=feature_horizon,
        market_part=market_part,
        state=state,
    )
    return frame_from_arrays(columns, index=index, names=_SNAPSHOT_INDEX)


SnapshotColumns = dict[str, np.ndarray | pd.api.extensions.ExtensionArray]


def snapshot_columns(
    market: Market,
    instruments: Mapping[str, Instrument],
    positions: "pd.DataFrame | PositionArrays",
    *,
    feature_horizon: pd.Timedelta,
    market_part: MarketFeatures | MarketFeatureRows,
    state: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> tuple[SnapshotColumns, pd.Index]:
    """:func:`snapshot_features` before it becomes a frame: its columns (``SNAPSHOT_COLUMNS``,
    one value per account, in the frame's order) and its index. For a caller that reads a few
    columns of a handful of accounts (the service), the frame would cost more than the features."""
    state = state if state is not None else state_at_as_of(market, instruments, positions)
    read = _Read(positions, state)
    account = read("account")
    starts = group_starts(account)
    index = read.account_index()
    anchor = _anchor_rows(read("qty"), read("entry_price"), starts)
    named = _symbol_columns(read.columns.symbol_text(anchor), instruments)
    keys = _Keys(named["symbol"], read.columns.as_of[anchor], read("as_of_us")[anchor])
    parts = {
        **_position_columns(read, starts, feature_horizon=feature_horizon),
        **_market_columns(market_part, keys, index),
        **named,
    }
    return {c: parts[c] for c in SNAPSHOT_COLUMNS}, index


def market_features_from_bars(
    bars: pd.DataFrame, bar_lengths: Mapping[str, pd.Timedelta]
) -> MarketFeatures:
    """``market_part`` of :func:`snapshot_features` computed from the bars on every call."""
    return lambda keys: market_features(bars, bar_lengths, keys)


def anchor_keys(positions: pd.DataFrame) -> pd.DataFrame:
    """Per account (index ``account``, rows of an account together): ``account_id``, ``as_of``
    and the symbol of its largest position by entry notional (the first of equals), whose
    market features describe the account."""
    account = positions["account"].to_numpy()
    starts = group_starts(account)
    qty, entry = (positions[c].to_numpy(dtype=float) for c in ("qty", "entry_price"))
    largest = _anchor_rows(qty, entry, starts)
    return pd.DataFrame(
        {
            "as_of": positions["as_of"].array[largest],
            "symbol": positions["symbol"].array[largest],
            "account_id": account_ids(account, positions.get("account_id"), starts),
        },
        index=pd.Index(account[starts], name="account"),
    )


def _anchor_rows(qty: np.ndarray, entry_price: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Row of each account's anchor position: its largest by entry notional, the first of
    equals (``starts``: the first row of each account)."""
    return _first_largest(qty * np.abs(entry_price), starts)


def _first_largest(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Row of the first largest value in each group (groups start at ``starts``)."""
    if len(values) == len(starts):  # one row a group
        return starts
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    top = np.fmax.reduceat(values, starts)[group]
    is_top = (values == top) | (np.isnan(top) & (np.arange(len(values)) == starts[group]))
    rows = np.flatnonzero(is_top)
    return rows[group_starts(group[rows])]


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
    state = state if state is not None else state_at_as_of(market, instruments, positions)
    read = _Read(positions, state)
    columns = _position_columns(read, group_starts(read("account")), feature_horizon=feature_horizon)
    return pd.DataFrame(columns, index=read.account_index())


def _position_columns(
    read: "_Read", starts: np.ndarray, *, feature_horizon: pd.Timedelta
) -> dict[str, pd.api.extensions.ExtensionArray | np.ndarray]:
    """:func:`position_snapshot`'s columns, in order (``read``: the columns of the positions
    and of their state; ``starts``: the first row of each account)."""
    margin_mode = read("margin_mode")
    features = position_feature_arrays(
        account=read("account"),
        isolated=is_isolated(margin_mode),
        tier=read.known("tier", np.int64),
        horizon_days=feature_horizon / pd.Timedelta(days=1),
        **{c: read(c) for c in ("side", "qty", "entry_price", "collateral")},
        **{c: read.known(c, np.float64) for c in ("price", "mmr", "amount", "sigma_d", "liquidity")},
    )
    reason = read.decided("error", "account_error").copy()
    status = read.decided("status", "status")
    reason[status == "in_liquidation"] = IN_LIQUIDATION
    return {
        "account_id": read.columns.account_ids(starts),
        "as_of": read.columns.as_of[starts],
        "margin_mode": margin_mode[starts],
        **features,
        "status": status,
        "reason": reason,
    }


class _Read:
    """Columns of the positions and of their engine state as numpy arrays: from the arrays an
    :class:`~liqrisk.features.replay.EngineState` of the same positions holds, else read from
    the frames (the same values; reading costs ~10 µs a column, most of one account's time)."""

    def __init__(
        self, positions: "pd.DataFrame | PositionArrays", state: tuple[pd.DataFrame, pd.DataFrame]
    ) -> None:
        self.state = state
        self.held = state.arrays_of(positions) if isinstance(state, EngineState) else None
        self.columns = state.columns if self.held is not None else PositionArrays.of(positions)
        self._inputs = self.held if self.held is not None else self.columns.inputs()

    def __call__(self, column: str) -> np.ndarray:
        """A column of the positions: ``account`` as it is, ``margin_mode`` as objects,
        ``as_of_us`` (``as_of`` as int64 µs), the others float64."""
        return self._inputs[column]

    def account_index(self) -> pd.Index:
        """The per-account index (``account``)."""
        if self.held is not None:
            return self.state.account_index
        return self.state[1].index

    def known(self, column: str, dtype: type) -> np.ndarray:
        """A column of the per-position state (``state[0]``)."""
        if self.held is not None:
            return self.held[column]
        return self.state[0][column].to_numpy(dtype=dtype)

    def decided(self, column: str, held_as: str) -> np.ndarray:
        """A column of the per-account decisions (``state[1]``), as objects."""
        if self.held is not None:
            return self.held[held_as]
        return self.state[1][column].to_numpy(dtype=object)


def join_snapshot(
    rows: pd.DataFrame,
    market_part: pd.DataFrame,
    keys: pd.DataFrame,
    instruments: Mapping[str, Instrument],
) -> pd.DataFrame:
    """Per-account ``rows`` joined with their anchor's market features, ``symbol`` and
    ``asset_class`` (all on the ``account`` index)."""
    if not (rows.index.equals(market_part.index) and rows.index.equals(keys.index)):
        market_part, keys = market_part.reindex(rows.index), keys.reindex(rows.index)
    extra = {c: market_part[c].to_numpy() for c in market_part.columns}
    extra |= _symbol_columns(keys["symbol"].astype(str).to_numpy(dtype=object), instruments)
    return pd.concat([rows, pd.DataFrame(extra, index=rows.index)], axis=1)


def _symbol_columns(text: np.ndarray, instruments: Mapping[str, Instrument]) -> dict[str, np.ndarray]:
    """``symbol`` (text, objects) and its instrument's ``asset_class`` (NaN where none)."""
    classes = [instruments.get(s) for s in text.tolist()]
    asset_class = np.array([np.nan if i is None else i.asset_class for i in classes], dtype=object)
    return {"symbol": text, "asset_class": asset_class}


@dataclass(frozen=True)
class _Keys:
    """The ``(symbol, as_of)`` keys of the anchors: the symbol as text, as_of as the positions
    hold it and as µs."""

    text: np.ndarray
    as_of: pd.api.extensions.ExtensionArray
    as_of_us: np.ndarray


def _market_columns(
    market_part: MarketFeatures | MarketFeatureRows, keys: _Keys, index: pd.Index
) -> dict[str, np.ndarray]:
    """``MARKET_FEATURES`` columns of ``(symbol, as_of)`` keys (one per row of ``index``), from
    ``market_part``'s ``rows`` where it has one, else from the frame it answers for a keys frame
    (read as one float64 array: per-column reads of 50-odd columns would cost more than the lookup)."""
    rows = getattr(market_part, "rows", None)
    if rows is not None:
        values = rows(keys.text, keys.as_of_us)
    else:
        found = market_part(pd.DataFrame({"symbol": keys.text, "as_of": keys.as_of}, index=index))
        if not found.index.equals(index):
            found = found.reindex(index)
        if found.columns.tolist() != _MARKET_COLUMNS:
            found = found[_MARKET_COLUMNS]
        values = found.to_numpy(dtype=np.float64)
    return {c: values[:, j] for j, c in enumerate(_MARKET_COLUMNS)}
