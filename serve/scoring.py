"""Scoring: account snapshots in; per account the model's probabilities beside the rule baseline,
the reasons behind them, and optionally a what-if.

A batch is scored vectorised, against one version of the market (:class:`MarketView`): one
call computes the features of every account (``liqrisk.features.snapshot``, the function the
dataset build uses, so an account scored here gets exactly its training row), one call
predicts, one call explains. Choices, stated once:

- **as_of.** An account's own ``as_of``, else the request's, else the market's latest bar
  completion. Only bars complete at or before it are used. An as_of after the market's latest
  bar completion is an error for that account (nothing is known of those bars yet); an old
  as_of is fine (history is kept whole). An account the market's bars refuse for want of
  history (an as_of within :data:`HISTORY_WINDOW` of a symbol's first bar, where another
  file holds that symbol from earlier: ``MarketState.history``) is scored again on the longest
  bars of every symbol, and answered from them if they can; its reasons are then chosen among
  the accounts scored there.
- **Status.** ``in_liquidation`` (the account already meets ``E <= MM`` at the last close:
  reported with its baseline, not scored), ``error`` (a bad field, named by its path and the
  position's symbol, or what the engine cannot price: unknown symbol, too little history) or
  ``ok``. One bad account never stops the others.
- **Baseline.** The contract's formulas at the last close complete at or before as_of:
  equity, maintenance margin, margin ratio and leverage (the model's own inputs), the
  liquidation and bankruptcy prices where one price describes the account (one isolated
  position, or a cross account on one symbol; per position for isolated accounts in
  ``baseline["positions"]``), the distances to them (the uniform adverse move, a *fraction*
  of price, as the features define it: exactly ``|P - L| / P`` for one position), and the
  flags platforms use today: ``margin_call`` (margin ratio >= 0.8, Binance's margin call) and
  ``over_leverage_cap`` (leverage above the asset class's regulatory cap).
- **Reasons.** The ``reasons`` features with the largest exact contributions (TreeSHAP for
  LightGBM and HistGB, ``coef × value`` for the logistic model) to the log-odds of
  ``reason_label``'s uncalibrated classifier, in words (``liqrisk.models.reasons.REASON_WORDS``).
  Only ``ok`` rows are explained. If ``reason_label``'s model kind has no exact contributions,
  the reasons explain the same event at the nearest horizon whose model has them
  (``RiskModel.explained_label``); ``model.reasons_for`` names the label explained.
- **What-if.** ``{"add_collateral": x >= 0, "cut": c in [0, 1)}``: every position's quantity
  times ``1 - c``, the P&L of the closed part realised into collateral at the last close
  (the account's for cross margin, the position's own for isolated; entry prices unchanged,
  so the equity at the last close is the same and only the exposure falls), then ``x`` added
  to the collateral (for isolated margin spread over the positions in proportion to their
  entry notional). The changed account is scored like any other and shown beside the
  current one. Probabilities are not guaranteed to fall when collateral is added: the
  model is monotone only in leverage, margin ratio and the distances
  (``liqrisk.models.train.MONOTONE``), while the structural first-passage inputs and
  ``upnl_to_collateral`` move too and are unconstrained.
"""

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from liqrisk.features.accounts import SnapshotsBuilder, accounts_from_dicts, parse_as_of
from liqrisk.features.durations import parse_duration
from liqrisk.features.errors import InputError
from liqrisk.features.instruments import Instrument
from liqrisk.features.margin import (
    bankruptcy_price,
    liquidation_price,
    maintenance_margin,
    replay_units,
)
from liqrisk.features.position import group_starts, is_isolated
from liqrisk.features.replay import EngineState, PositionArrays, state_at_as_of
from liqrisk.features.snapshot import snapshot_columns
from liqrisk.models.baselines import leverage_score, margin_ratio_warning
from liqrisk.models.bundle import BIAS, RiskModel, matrix_contributions
from liqrisk.models.reasons import ranked_reasons
from liqrisk.models.shortfall import exposure
from liqrisk.models.train import FEATURES, matrix_value, model_matrix, uncalibrated
from liqrisk.serve.market import MarketState, MarketView

log = logging.getLogger(__name__)

DEFAULT_REASON_LABEL = "negative_24h"
DEFAULT_MAX_EXPLAINED = 10  # TreeSHAP costs ~50 predictions: 2-3 ms a row for 500 trees
_POSITION_FIELD = re.compile(r"^positions\[(\d+)\]")
_EXPLAINED_COLUMNS = (*FEATURES, BIAS)  # the columns of matrix_contributions
_OUTPUTS = ("p_liquidated", "p_negative", "expected_shortfall")  # per horizon, in this order (_horizons)


@dataclass(frozen=True)
class _Assessment:
    """What one features call and one predict call found for a set of accounts (by code)."""

    alive: np.ndarray  # the accounts (codes) not in error
    views: dict[int, dict[str, Any]]  # per account: status, error, horizons, baseline
    reasons: dict[int, list[dict[str, Any]]]
    price: np.ndarray  # last close per position (aligned with the positions)


class Scorer:
    """Scores account snapshots with one :class:`RiskModel` against a :class:`MarketState`.

    ``feature_horizon`` is the horizon the training set scaled ``dist_*_sigma`` to: the
    longest label horizon of its build, which is the model's longest horizon by default.
    """

    def __init__(
        self,
        model: RiskModel,
        *,
        name: str,
        version: str,
        market: MarketState,
        instruments: Mapping[str, Instrument],
        reasons: int = 3,
        reason_label: str = DEFAULT_REASON_LABEL,
        feature_horizon: str | None = None,
        max_explained: int = DEFAULT_MAX_EXPLAINED,
        explain_min: float = 0.0,
        threads: int | None = 1,
    ) -> None:
        if reason_label not in model.classifiers:
            raise ValueError(
                f"reason_label {reason_label!r} is not a label of the model: {sorted(model.classifiers)}"
            )
        self.model = model
        self.name = name
        self.version = str(version)
        self.market = market
        self.instruments = dict(instruments)
        self.reasons = int(reasons)
        explained = model.explained_label(reason_label)
        self.reason_label = explained or reason_label
        self.feature_horizon = parse_duration(
            feature_horizon or max(model.horizons, key=parse_duration), field="feature_horizon"
        )
        self.max_explained = int(max_explained)
        self.explain_min = float(explain_min)
        if threads is not None:
            model.set_threads(threads)
        self._model_ref = {
            "name": name,
            "version": self.version,
            "kinds": dict(model.kinds),
            "reasons_for": explained if self.reasons > 0 else None,
        }
        self._warm()

    def _warm(self) -> None:
        """Build what the model's fast paths keep per model (LightGBM boosters, HistGB's trees as
        a booster, logistic constants, LightGBM's single-row set-ups) on one row of missing
        numbers, so that the first request scored does not pay for them (the 2026-12-04
        champion's first call took 27-35 ms, the later ones 4-6 ms). Best effort: a model that
        cannot take the row builds them on its first request instead."""
        row = np.full((1, len(FEATURES)), np.nan)
        row[0, -1] = 0.0  # an asset class the model knows
        try:
            self.model.predict_values(row, np.ones(1))
            if self.reasons > 0:
                matrix_contributions(uncalibrated(self.model.classifiers[self.reason_label]), row)
        except Exception:  # warming must never stop a model from serving
            log.warning("warming the model's fast paths failed; the first request builds them", exc_info=True)

    @property
    def reasons_for(self) -> str | None:
        """The label whose log-odds the reasons explain; None when no reasons are given."""
        return self._model_ref["reasons_for"]

    def score(
        self,
        accounts: Sequence[Mapping[str, Any]],
        *,
        as_of: Any = None,
        what_if: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """One result per account, in order (the module docstring says what each field means).

        ``as_of`` (ISO 8601 text or a datetime) applies to accounts without their own.
        Raises ``InputError`` only for a bad request-level ``as_of`` or ``what_if``.
        """
        view = self.market.view()
        change = _what_if(what_if)
        default = parse_as_of(as_of, field="as_of") if as_of is not None else view.latest
        raws = [with_default_as_of(a, default) for a in accounts]
        history = self.market.history.view() if self.market.history is not None else None
        rows, short = self._score_on(view, raws, change, history)
        if short:  # refused for want of history: scored again on the longest bars, if they can
            again, _ = self._score_on(history, [raws[code] for code in short], change, None)
            for code, row in zip(short, again, strict=True):
                if row["status"] != "error":
                    rows[code] = row
        return rows

    def _score_on(
        self,
        view: MarketView,
        raws: list[Any],
        change: dict[str, float] | None,
        history: MarketView | None,
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """The rows of ``raws`` scored against ``view``; and the accounts (codes) the engine
        refused that ``history`` may have the bars for (:func:`_short_of_history`)."""
        parsed = accounts_from_dicts(raws)  # accounts are numbered 0..n-1 in order
        errors = _errors(parsed, raws, view)
        positions = parsed.position_arrays([not e for e in errors])
        current = self._assess(view, positions, explain=True)
        changed = None
        if change is not None and len(current.alive):
            mine = np.isin(positions.account, current.alive)
            changed = self._assess(
                view, _changed(positions.take(mine), current.price[mine], **change), explain=False
            )
        # one model reference for the call's rows (a copy: a caller changing it cannot reach the
        # scorer's); each row is built once, in its documented key order
        model = {**self._model_ref, "kinds": dict(self._model_ref["kinds"])}
        rows = [
            self._result(_account_id(raw, text), at, error, model, code, current, changed, change)
            for code, (raw, text, at, error) in enumerate(
                zip(raws, parsed.account_ids, _iso_times(parsed.as_of), errors, strict=True)
            )
        ]
        short = [] if history is None else _short_of_history(view, history, positions, current)
        return rows, short

    # --- the batch --------------------------------------------------------------------------

    def _assess(self, view: MarketView, positions: PositionArrays, *, explain: bool) -> _Assessment:
        if len(positions) == 0:
            return _Assessment(np.zeros(0, dtype=np.int64), {}, {}, np.zeros(0))
        state = state_at_as_of(view.market, self.instruments, positions)
        table, index = snapshot_columns(
            view.market,
            self.instruments,
            positions,
            feature_horizon=self.feature_horizon,
            market_part=view.market_features,
            state=state,
        )
        codes, statuses = index.to_numpy(), table["status"]
        ok, priced = statuses == "ok", statuses != "error"
        baseline = _baselines(_rows(table, priced), codes[priced], state) if priced.any() else {}
        ok_codes = codes[ok]
        matrix = model_matrix(_rows(table, ok)) if len(ok_codes) else None
        horizons, risk = self._horizons(ok_codes, matrix, _rows(table, ok, ("log_notional",)))
        views = {
            code: {
                "status": status,
                "error": str(reason) if status == "error" else None,
                "horizons": horizons.get(code),
                "baseline": baseline.get(code),
            }
            for code, status, reason in zip(
                codes.tolist(), statuses.tolist(), table["reason"].tolist(), strict=True
            )
        }
        reasons = (
            self._explain(ok_codes, matrix, risk)
            if explain and self.reasons > 0 and len(ok_codes)
            else {}
        )
        return _Assessment(codes[priced], views, reasons, state.arrays["price"])

    def _horizons(
        self, codes: np.ndarray, matrix: np.ndarray | None, table: Mapping[str, np.ndarray]
    ) -> tuple[dict[int, dict[str, Any]], np.ndarray]:
        """Per ok account (``codes``; ``matrix``: their model matrix; ``table``: their
        ``log_notional``), ``{horizon: {p_liquidated, p_negative, expected_shortfall}}``; and
        the calibrated probability of the reason label's event, per row."""
        if matrix is None:
            return {}, np.zeros(0)
        values = self.model.predict_values(matrix, exposure(table))
        horizons, outputs = self.model.horizons, self.model.outputs
        where = [outputs.index(f"{n}_{h}") for h in horizons for n in _OUTPUTS]
        # (row, horizon, output) as nested lists; a dict display per horizon (half the time of
        # dict(zip(...)) over 1,000 rows)
        rows = _numbers(values[:, where].reshape(len(codes), len(horizons), len(_OUTPUTS)))
        views = {
            code: {
                h: {"p_liquidated": liq, "p_negative": neg, "expected_shortfall": es}
                for h, (liq, neg, es) in zip(horizons, row, strict=True)
            }
            for code, row in zip(codes.tolist(), rows, strict=True)
        }
        event, horizon = self.reason_label.rsplit("_", 1)
        return views, values[:, outputs.index(f"p_{event}_{horizon}")]

    def _explain(
        self, codes: np.ndarray, matrix: np.ndarray, risk: np.ndarray
    ) -> dict[int, list[dict[str, Any]]]:
        """Reasons for the riskiest ok rows: at most ``max_explained``, P(reason label) at least
        ``explain_min`` (TreeSHAP is ~50 times a prediction: explaining every row of a large
        batch would cost more than scoring it)."""
        eligible = np.flatnonzero(np.nan_to_num(risk, nan=-1.0) >= self.explain_min)
        chosen = eligible[np.argsort(-risk[eligible], kind="stable")[: self.max_explained]]
        if chosen.size == 0:
            return {}
        chosen = np.sort(chosen)
        rows = matrix[chosen]
        pushes = matrix_contributions(uncalibrated(self.model.classifiers[self.reason_label]), rows)
        if pushes is None:
            return {}
        reasons = ranked_reasons(
            pushes, _EXPLAINED_COLUMNS, lambda i, feature: matrix_value(rows, i, feature), k=self.reasons
        )
        return dict(zip(codes[chosen].tolist(), reasons, strict=True))

    # --- one account ------------------------------------------------------------------------

    def _result(
        self,
        account_id: str | None,
        as_of: str | None,
        error: str,
        model: dict[str, Any],
        code: int,
        current: _Assessment,
        changed: _Assessment | None,
        change: dict[str, float] | None,
    ) -> dict[str, Any]:
        if error:
            return {
                "account_id": account_id,
                "as_of": as_of,
                "status": "error",
                "error": error,
                "model": model,
                "horizons": None,
                "baseline": None,
                "reasons": [],
                "explained": False,
                "what_if": None,
            }
        view = current.views[code]
        what_if = None
        if changed is not None and code in changed.views:
            what_if = {**change, **changed.views[code]}
        reasons = current.reasons.get(code)
        return {
            "account_id": account_id,
            "as_of": as_of,
            "status": view["status"],
            "error": view["error"],
            "model": model,
            "horizons": view["horizons"],
            "baseline": view["baseline"],
            "reasons": [] if reasons is None else reasons,
            "explained": reasons is not None,
            "what_if": what_if,
        }


# --- history ----------------------------------------------------------------------------------

# The engine's volatility needs daily returns in the 30 days before as_of: an as_of within this
# of a symbol's first bar may be refused for want of the bars before it.
HISTORY_WINDOW = pd.Timedelta(days=31)


def _short_of_history(
    view: MarketView, history: MarketView, positions: PositionArrays, current: _Assessment
) -> list[int]:
    """The accounts (codes) the engine refused on ``view`` with a position whose as_of is
    within :data:`HISTORY_WINDOW` of its symbol's first bar there, where ``history`` holds the
    symbol from earlier."""
    refused = [code for code, v in current.views.items() if v["status"] == "error"]
    if not refused:
        return []
    starts: dict[str, int | None] = {}  # per symbol: the as_of (us) before which to look again

    def start(symbol: str) -> int | None:
        if symbol not in starts:
            first, earliest = view.first_of(symbol), history.first_of(symbol)
            if first is None or earliest is None or earliest >= first:
                starts[symbol] = None
            else:
                limit = pd.Timestamp(first + HISTORY_WINDOW).as_unit("us")
                starts[symbol] = int(limit.asm8.view(np.int64))
        return starts[symbol]

    mine = np.isin(positions.account, refused)
    short = {
        code
        for code, symbol, at in zip(
            positions.account[mine].tolist(),
            positions.symbol[mine].tolist(),
            positions.as_of_us[mine].tolist(),
            strict=True,
        )
        if (limit := start(symbol)) is not None and at < limit
    }
    return sorted(short)


# --- request parts --------------------------------------------------------------------------


def _what_if(raw: Mapping[str, Any] | None) -> dict[str, float] | None:
    """``{"add_collateral": x >= 0, "cut": c in [0, 1)}`` (either may be left out) or None."""
    if raw is None:
        return None
    unknown = set(raw) - {"add_collateral", "cut"}
    if unknown:
        raise InputError(f"what_if: unknown field(s) {sorted(unknown)}; known: add_collateral, cut")
    out = {}
    for key, low, high in (("add_collateral", 0.0, np.inf), ("cut", 0.0, 1.0)):
        value = raw.get(key)
        value = 0.0 if value is None else value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (low <= value < high)
        ):
            bound = ">= 0" if key == "add_collateral" else "in [0, 1)"
            raise InputError(f"what_if.{key} must be a number {bound}, got {value!r}")
        out[key] = float(value)
    return out


def with_default_as_of(raw: Any, default: Any) -> Any:
    """The account object with ``as_of`` set to ``default`` where it has none (a new dict; one
    with its own is returned as it is, since nothing here changes an account, and a mapping
    that is not a dict as a dict; other values as they are, to become error rows)."""
    if type(raw) is not dict:  # the type test first: isinstance of an ABC cost ~1 us a call
        if not isinstance(raw, Mapping):
            return raw
        raw = dict(raw)
    if default is not None and raw.get("as_of") is None:
        return {**raw, "as_of": default}
    return raw


def _errors(parsed: SnapshotsBuilder, raws: Sequence[Any], view: MarketView) -> list[str]:
    """Per account code: the parse error (with the position's symbol), an as_of the market
    has not reached, or ``""``."""
    errors = [_with_symbol(e, raw) for e, raw in zip(parsed.errors, raws, strict=True)]
    if view.latest is None:
        return [e or "the market holds no bars yet" for e in errors]
    ahead = {t for t in set(parsed.as_of) if t > view.latest}  # NaT is never ahead
    for code, t in enumerate(parsed.as_of):
        if t in ahead and not errors[code]:
            errors[code] = (
                f"as_of {_iso(t)} is after the market's latest bar (complete at "
                f"{_iso(view.latest)}): no bars complete at {_iso(t)} are known yet"
            )
    return errors


def _with_symbol(message: str, raw: Any) -> str:
    """``positions[1].qty must be > 0 ...`` with ``(symbol BTCUSDT)`` where that position has one."""
    match = _POSITION_FIELD.match(message)
    if not match or not isinstance(raw, Mapping) or not isinstance(raw.get("positions"), list):
        return message
    i = int(match.group(1))
    position = raw["positions"][i] if i < len(raw["positions"]) else None
    symbol = position.get("symbol") if isinstance(position, Mapping) else None
    return f"{message} (symbol {symbol})" if isinstance(symbol, str) and symbol else message


def _iso_times(values: Sequence[pd.Timestamp]) -> list[str | None]:
    """:func:`_iso` of each timestamp, None for NaT (each distinct one formatted once)."""
    texts = {t: _iso(t) for t in set(values) if t is not pd.NaT}
    return [texts.get(t) for t in values]


def _account_id(raw: Any, text: str) -> str | None:
    if (
        isinstance(raw, Mapping)
        and isinstance(raw.get("account_id"), str | int)
        and not isinstance(raw.get("account_id"), bool)
    ):
        return str(raw["account_id"])
    return text or None


def _rows(
    table: Mapping[str, Any], keep: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The columns ``names`` (default: all) of ``table`` on the rows ``keep`` selects (a mask, or
    positions); the arrays themselves when a mask keeps every row, the common case."""
    names = table.keys() if names is None else names
    every = keep.dtype == bool and keep.all()
    return {c: table[c] if every else table[c][keep] for c in names}


# --- what-if --------------------------------------------------------------------------------


def _changed(
    positions: PositionArrays, price: np.ndarray, *, add_collateral: float, cut: float
) -> PositionArrays:
    """The positions after cutting every quantity by ``cut`` (P&L of the closed part realised
    into collateral at ``price``) and adding ``add_collateral`` (module docstring)."""
    isolated = is_isolated(positions.margin_mode)
    side, qty, entry, account = positions.side, positions.qty, positions.entry_price, positions.account
    collateral = positions.collateral.copy()
    if cut:
        realised = side * cut * qty * (price - entry)
        per_account = pd.Series(realised).groupby(account).transform("sum").to_numpy()
        collateral += np.where(isolated, realised, per_account)
    if add_collateral:
        weight = qty * entry
        share = weight / pd.Series(weight).groupby(account).transform("sum").to_numpy()
        collateral += add_collateral * np.where(isolated, share, 1.0)
    return dataclasses.replace(positions, qty=qty * (1.0 - cut) if cut else qty, collateral=collateral)


# --- the rule baseline ------------------------------------------------------------------------

# the engine state's per-position arrays the baseline reads
_BASELINE_INPUTS = (
    "account", "margin_mode", "side", "qty", "entry_price", "collateral", "price", "mmr", "amount"
)


def _baselines(
    table: Mapping[str, np.ndarray], accounts: np.ndarray, state: EngineState
) -> dict[int, dict[str, Any]]:
    """The rule view of each of ``accounts`` (codes; ``table``: their snapshot columns, row by
    row) from its positions at the last close, read from the engine's state of those positions
    (its arrays, no frame)."""
    every = state.arrays["account"]
    # every account of the state is described, the common case, unless some are in error
    keep = np.ones(len(every), dtype=bool) if len(group_starts(every)) == len(accounts) else np.isin(every, accounts)
    held = _rows(state.arrays, keep, _BASELINE_INPUTS)
    account, isolated = held["account"], is_isolated(held["margin_mode"])
    symbol = state.columns.symbol_text(keep)
    side, qty, entry, collateral = (held[c] for c in ("side", "qty", "entry_price", "collateral"))
    price, mmr, amount = (held[c] for c in ("price", "mmr", "amount"))
    starts = group_starts(account)  # the rows of an account are together
    stops = np.append(starts[1:], len(account))
    units = replay_units(account, isolated)
    first_of_unit = np.ones(len(units), dtype=bool)
    first_of_unit[1:] = units[1:] != units[:-1]

    def per_account(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts) if len(values) else values

    held = per_account(
        np.where(first_of_unit, collateral, 0.0)
    )  # the account's, or the sum of the positions'
    equity = held + per_account(side * qty * (price - entry))
    maintenance = per_account(maintenance_margin(qty, price, mmr, amount))
    signed_qty = per_account(side * qty)
    # one price describes the account: one isolated position, or a cross account on one symbol
    one_symbol = per_account((symbol != symbol[starts].repeat(stops - starts)).astype(float)) == 0
    single = (stops - starts == 1) | (one_symbol & ~isolated[starts])
    with np.errstate(divide="ignore", invalid="ignore"):
        # cross: E = MM and E = 0 solved for the one price (``liquidation_price`` summed over positions)
        cross_liq = (per_account(side * qty * entry) - held - per_account(amount)) / per_account(
            qty * (side - mmr)
        )
        cross_bankrupt = np.where(
            signed_qty != 0, (per_account(side * qty * entry) - held) / signed_qty, np.nan
        )
    n = stops - starts
    pos_liq = np.where(
        isolated,
        liquidation_price(side, qty, entry, collateral, mmr, amount),
        np.repeat(cross_liq, n),
    )
    pos_bankrupt = np.where(
        isolated, bankruptcy_price(side, qty, entry, collateral), np.repeat(cross_bankrupt, n)
    )
    described = np.repeat(single, n) | isolated
    pos_liq = np.where(described, pos_liq, np.nan)
    pos_bankrupt = np.where(described, pos_bankrupt, np.nan)

    codes = account[starts]
    rows = table if np.array_equal(codes, accounts) else _rows(table, pd.Index(accounts).get_indexer(codes))
    codes = codes.tolist()
    columns = {
        "margin_ratio": np.asarray(rows["margin_ratio"], dtype=float),
        "leverage": np.asarray(rows["leverage"], dtype=float),
        "equity": equity,
        "maintenance_margin": maintenance,
        "liquidation_price": np.where(single, pos_liq[starts], np.nan),
        "bankruptcy_price": np.where(single, pos_bankrupt[starts], np.nan),
        "distance_to_liquidation_pct": np.asarray(rows["dist_liq_pct"], dtype=float),
        "distance_to_bankruptcy_pct": np.asarray(rows["dist_bankrupt_pct"], dtype=float),
    }
    values = dict(zip(columns, _numbers(np.stack(list(columns.values()))), strict=True))
    values["margin_call"] = margin_ratio_warning(columns["margin_ratio"]).tolist()
    values["over_leverage_cap"] = (
        leverage_score(columns["leverage"], np.asarray(rows["asset_class"], dtype=object)) > 1.0
    ).tolist()
    prices, liquidation, bankruptcy = _numbers(np.stack([price, pos_liq, pos_bankrupt]))
    # a dict display per position: a third of the time of dict(zip(...)) over 2,000 of them
    per_position = [
        {
            "symbol": sym,
            "side": sd,
            "qty": q,
            "entry_price": e,
            "price": p_,
            "liquidation_price": liq,
            "bankruptcy_price": bank,
        }
        for sym, sd, q, e, p_, liq, bank in zip(
            symbol.tolist(),
            side.astype(int).tolist(),
            qty.tolist(),
            entry.tolist(),
            prices,
            liquidation,
            bankruptcy,
            strict=True,
        )
    ]
    keys = tuple(values)
    per_account = [dict(zip(keys, row, strict=True)) for row in zip(*values.values(), strict=True)]
    for row, lo, hi in zip(per_account, starts.tolist(), stops.tolist(), strict=True):
        row["positions"] = per_position[lo:hi]
    return dict(zip(codes, per_account, strict=True))


# --- plain values ---------------------------------------------------------------------------


def _numbers(values: Any) -> list[Any]:
    """Each value of an array or Series as a JSON-safe float, None for NaN and infinities (a
    list of lists for a 2-D array)."""
    array = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(array)
    if finite.all():
        return array.tolist()
    # as Python floats in an object array, None where not finite (a loop over the non-finite
    # ones cost 0.7 ms for the 2,000 positions of a batch, where cross accounts have no one
    # liquidation price)
    out = array.astype(object)
    out[~finite] = None
    return out.tolist()


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").isoformat().replace("+00:00", "Z")
