"""Instrument defaults: complete, parseable, continuous tiers, ESMA-consistent, covering the data.

Sources for every number are in docs/instruments.md.
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from liqrisk.features import instrument_defaults as d
from liqrisk.features.instruments import KEYS, instrument_from_dict

DATA = Path(__file__).resolve().parents[2] / "data"
INSTRUMENTS_JSON = DATA / "instruments.json"
CONTRACT_KEYS = {  # the contract's instrument keys, asset_class aside
    "tiers", "taker_fee", "liquidation_fee", "latency_bars", "slippage_to_extreme",
    "impact_coef", "depth_notional", "bar_length",
}
NOT_TRADABLE = {"^VIX"}  # a volatility index, not a price anyone can trade (docs/instruments.md)

# Underlying index of each index symbol, to apply ESMA's "major index" list by name.
UNDERLYING_INDEX = {
    "ES=F": "S&P 500", "^GSPC": "S&P 500", "USA500IDXUSD": "S&P 500",
    "NQ=F": "NASDAQ 100", "USATECHIDXUSD": "NASDAQ 100",
    "YM=F": "DJIA", "^DJI": "DJIA", "USA30IDXUSD": "DJIA",
    "RTY=F": "Russell 2000", "^RUT": "Russell 2000",
    "^FCHI": "CAC 40", "^FTSE": "FTSE 100", "^GDAXI": "DAX", "^STOXX50E": "EURO STOXX 50",
}
GOLD = {"GC=F", "XAUUSD"}

# Binance tables whose symbols carry them in data/instruments.json (spot and -PERP alike).
SYMBOL_TABLES = {
    "BTC": d.BINANCE_BTCUSDT_TIERS,
    "ETH": d.BINANCE_ETHUSDT_TIERS,
    "SOL": d.BINANCE_SOLUSDT_TIERS,
    "XRP": d.BINANCE_XRPUSDT_TIERS,
    "DOGE": d.BINANCE_DOGEUSDT_TIERS,
    "BNB": d.BINANCE_BNBUSDT_TIERS,
}


def _instruments() -> dict:
    return json.loads(INSTRUMENTS_JSON.read_text())


def _bundled_symbols() -> set[str]:
    symbols: set[str] = set()
    for path in sorted(DATA.glob("*.parquet")):
        if path.stem == "crypto_funding_8h":
            continue
        symbols |= set(pd.read_parquet(path, columns=["symbol"])["symbol"].unique())
    return symbols


def _all_tier_tables() -> dict[str, list]:
    tables = {f"venue:{name}": t for name, t in d.VENUE_TIER_TABLES.items()}
    tables |= {f"class:{cls}": v["tiers"] for cls, v in d.ASSET_CLASS_DEFAULTS.items()}
    tables |= {f"json:{s}": v["tiers"] for s, v in _instruments().items() if "tiers" in v}
    return tables


@pytest.mark.parametrize("asset_class", d.ASSET_CLASSES)
def test_every_asset_class_has_every_instrument_key(asset_class):
    assert set(d.ASSET_CLASS_DEFAULTS) == set(d.ASSET_CLASSES)
    assert set(d.ASSET_CLASS_DEFAULTS[asset_class]) == CONTRACT_KEYS
    assert CONTRACT_KEYS <= set(KEYS)


@pytest.mark.parametrize("asset_class", d.ASSET_CLASSES)
def test_every_asset_class_parses(asset_class):
    inst = instrument_from_dict(f"<{asset_class}>", {"asset_class": asset_class})
    assert inst.asset_class == asset_class
    assert inst.tier_mmr[0] > 0 and inst.tier_amount[0] == 0


@pytest.mark.parametrize("name, tiers", sorted(_all_tier_tables().items()))
def test_tier_maintenance_amounts_are_continuous(name, tiers):
    """MM = m·N − a is equal from both sides of every cap.

    That is a_k = a_{k-1} + cap_{k-1}·(m_k − m_{k-1}); published amounts must obey it.
    """
    assert tiers[0][2] == 0, f"{name}: first tier's maintenance amount must be 0"
    for (cap, m_lo, a_lo), (_, m_hi, a_hi) in zip(tiers, tiers[1:]):
        below, above = cap * m_lo - a_lo, cap * m_hi - a_hi
        assert math.isclose(below, above, abs_tol=1e-6), f"{name}: MM jumps at cap {cap}"
        assert m_hi > m_lo, f"{name}: rates must rise with the notional"


@pytest.mark.parametrize(
    "asset_class, category",
    [("fx", "major_fx"), ("commodity", "commodity"), ("index", "major_index")],
)
def test_esma_class_defaults_are_half_the_initial_margin(asset_class, category):
    (tier,) = d.ASSET_CLASS_DEFAULTS[asset_class]["tiers"]
    assert tier[0] is None and tier[2] == 0
    assert tier[1] == pytest.approx(0.5 * d.ESMA_INITIAL_MARGIN[category])


def test_esma_initial_margins_are_the_published_leverage_limits():
    # 30:1, 20:1, 10:1, 5:1, 2:1 (ESMA35-43-1000)
    leverage = {cat: 1 / im for cat, im in d.ESMA_INITIAL_MARGIN.items()}
    assert leverage == pytest.approx(
        {"major_fx": 30, "non_major_fx": 20, "gold": 20, "major_index": 20,
         "non_major_index": 10, "commodity": 10, "equity": 5, "crypto": 2}
    )


def _esma_category(symbol: str, asset_class: str) -> str:
    if asset_class == "fx":
        both = {symbol[:3], symbol[3:]} <= d.ESMA_MAJOR_CURRENCIES
        return "major_fx" if both else "non_major_fx"
    if asset_class == "commodity":
        return "gold" if symbol in GOLD else "commodity"
    index = UNDERLYING_INDEX[symbol]
    return "major_index" if index in d.ESMA_MAJOR_INDICES else "non_major_index"


ESMA_CLASSES = {"fx", "commodity", "index"}


@pytest.mark.parametrize(
    "symbol", sorted(s for s, v in _instruments().items() if v["asset_class"] in ESMA_CLASSES)
)
def test_esma_symbols_maintain_half_the_initial_margin_of_their_underlying(symbol):
    raw = _instruments()[symbol]
    inst = instrument_from_dict(symbol, raw)
    category = _esma_category(symbol, raw["asset_class"])
    assert inst.tier_mmr == pytest.approx((0.5 * d.ESMA_INITIAL_MARGIN[category],))
    assert inst.tier_caps == (math.inf,) and inst.tier_amount == (0.0,)


def test_instruments_json_covers_every_bundled_symbol():
    bundled = _bundled_symbols()
    listed = set(_instruments())
    assert bundled - NOT_TRADABLE - listed == set(), "symbols in data/ without an instrument entry"
    assert listed - bundled == set(), "instrument entries for symbols not in data/"
    assert listed & NOT_TRADABLE == set()


@pytest.mark.parametrize("symbol", sorted(_instruments()))
def test_every_instrument_entry_parses(symbol):
    raw = _instruments()[symbol]
    inst = instrument_from_dict(symbol, raw)
    assert inst.asset_class in d.ASSET_CLASSES
    if inst.asset_class == "fx" or symbol in {"XAUUSD", "BRENTCMDUSD"} or symbol.endswith("IDXUSD"):
        assert inst.depth_notional is not None, f"{symbol}: volume is NaN in the data"
    if symbol.endswith("-PERP"):
        assert inst.depth_notional is not None, f"{symbol}: mark-price bars carry no volume"


@pytest.mark.parametrize("base, tiers", sorted(SYMBOL_TABLES.items()))
def test_crypto_symbols_carry_their_venue_table(base, tiers):
    entries = _instruments()
    for symbol in (f"{base}USDT", f"{base}USDT-PERP"):
        assert entries[symbol]["tiers"] == tiers


def test_crypto_without_a_table_takes_the_midcap_default():
    entries = _instruments()
    bare = [s for s, v in entries.items() if v["asset_class"] == "crypto" and "tiers" not in v]
    assert bare and all(s.removesuffix("-PERP")[:-4] not in SYMBOL_TABLES for s in bare)
    inst = instrument_from_dict(bare[0], entries[bare[0]])
    assert list(inst.tier_mmr) == [t[1] for t in d.BINANCE_MIDCAP_ALT_TIERS_2021]


def test_wti_is_flagged_for_negative_prices():
    entries = _instruments()
    assert entries["CL=F"]["negative_prices"] is True
    assert not any(v.get("negative_prices") for s, v in entries.items() if s != "CL=F")
