"""Margin math for linear contracts with quote-currency P&L, vectorised over positions.

Symbols follow ``docs/liquidation-contract.md``: side ``s`` (+1 long, -1 short),
quantity ``q``, entry ``e``, collateral ``C``, maintenance rate ``m`` and amount
``a`` of the position's tier. Every function takes scalars or numpy arrays and
broadcasts; cross-margin sums are taken per account with ``np.add.at`` or
``np.bincount`` by the caller, or with ``cross_*`` below.
"""

import numpy as np
from numpy.typing import ArrayLike, NDArray

Float = NDArray[np.float64]


def unrealised_pnl(side: ArrayLike, qty: ArrayLike, entry: ArrayLike, price: ArrayLike) -> Float:
    """``s·q·(P − e)``: the position's P&L at price ``P``."""
    return np.asarray(side) * np.asarray(qty) * (np.asarray(price) - np.asarray(entry))


def equity(
    collateral: ArrayLike, side: ArrayLike, qty: ArrayLike, entry: ArrayLike, price: ArrayLike
) -> Float:
    """``E(P) = C + s·q·(P − e)`` for isolated positions."""
    return np.asarray(collateral) + unrealised_pnl(side, qty, entry, price)


def maintenance_margin(qty: ArrayLike, price: ArrayLike, mmr: ArrayLike, amount: ArrayLike) -> Float:
    """``MM(P) = m·q·P − a`` with the tier's rate ``m`` and maintenance amount ``a``."""
    return np.asarray(mmr) * np.asarray(qty) * np.asarray(price) - np.asarray(amount)


def margin_ratio(maintenance: ArrayLike, equity_: ArrayLike) -> Float:
    """``MR = MM / E``; ``inf`` where equity is zero or below (liquidated whatever MM is)."""
    mm, eq = np.asarray(maintenance, dtype=float), np.asarray(equity_, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(eq > 0, mm / np.where(eq > 0, eq, 1.0), np.inf)


def is_liquidatable(equity_: ArrayLike, maintenance: ArrayLike) -> NDArray[np.bool_]:
    """The contract's one liquidation condition, ``E ≤ MM``."""
    return np.asarray(equity_) <= np.asarray(maintenance)


def liquidation_price(
    side: ArrayLike,
    qty: ArrayLike,
    entry: ArrayLike,
    collateral: ArrayLike,
    mmr: ArrayLike,
    amount: ArrayLike,
) -> Float:
    """``L = (s·q·e − C − a) / (q·(s − m))``: the price at which ``E = MM`` (isolated)."""
    s, q = np.asarray(side, dtype=float), np.asarray(qty, dtype=float)
    return (s * q * np.asarray(entry) - np.asarray(collateral) - np.asarray(amount)) / (
        q * (s - np.asarray(mmr))
    )


def bankruptcy_price(side: ArrayLike, qty: ArrayLike, entry: ArrayLike, collateral: ArrayLike) -> Float:
    """``B = e − s·C/q``: the price at which equity is exactly zero (isolated)."""
    return np.asarray(entry) - np.asarray(side) * np.asarray(collateral) / np.asarray(qty)


def tier_of(notional: ArrayLike, caps: ArrayLike) -> NDArray[np.intp]:
    """Index of the first tier whose ``notional_cap`` is at or above the notional.

    Equal to ``len(caps)`` where the notional is above the last cap (venues refuse
    such positions: the caller reports an error).
    """
    return np.searchsorted(np.asarray(caps, dtype=float), np.asarray(notional), side="left")


def replay_units(account: ArrayLike, isolated: ArrayLike) -> NDArray[np.intp]:
    """Replay unit of each position: a cross account pools its positions, an isolated
    account replays each position on its own. Rows of an account must be together."""
    account, isolated = np.asarray(account), np.asarray(isolated, dtype=bool)
    new_unit = np.ones(len(account), dtype=bool)
    if len(account):
        new_unit[1:] = isolated[1:] | (account[1:] != account[:-1])
    return np.cumsum(new_unit) - 1


def cross_sum(values: ArrayLike, account: ArrayLike, n_accounts: int) -> Float:
    """Sum per account of per-position values (``account`` holds 0-based account codes)."""
    return np.bincount(np.asarray(account), weights=np.asarray(values, dtype=float), minlength=n_accounts)


def cross_equity(
    collateral: ArrayLike,
    side: ArrayLike,
    qty: ArrayLike,
    entry: ArrayLike,
    price: ArrayLike,
    account: ArrayLike,
) -> Float:
    """``E = C + Σ s_i·q_i·(P_i − e_i)`` per cross account (``collateral`` one per account)."""
    collateral = np.asarray(collateral, dtype=float)
    return collateral + cross_sum(unrealised_pnl(side, qty, entry, price), account, collateral.size)


def cross_maintenance_margin(
    qty: ArrayLike, price: ArrayLike, mmr: ArrayLike, amount: ArrayLike, account: ArrayLike, n_accounts: int
) -> Float:
    """``MM = Σ (m_i·q_i·P_i − a_i)`` per cross account."""
    return cross_sum(maintenance_margin(qty, price, mmr, amount), account, n_accounts)
