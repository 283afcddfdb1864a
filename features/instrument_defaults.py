"""Venue parameters per asset class, used wherever an instrument leaves a key out.

Every value, its source and the reasoning behind the judgement calls are in
``docs/instruments.md``; the section named in each comment below is where to look.
Tier tables are ``[[notional_cap or None, mmr, maintenance_amount], ...]`` and are
continuous: ``a_k = a_{k-1} + cap_{k-1} * (m_k - m_{k-1})``.
"""

from typing import Any

ASSET_CLASSES = ("crypto", "fx", "equity", "commodity", "index")

Tiers = list[list[float | None]]

# --- Binance USDⓈ-M "Leverage and Margin" tables (docs/instruments.md, "Crypto") -------------

# BTCUSDT as of 2025-08-19 (rule update time on Binance's leverage-margin page / public
# brackets endpoint); 12 tiers, 150x in tier 1.
BINANCE_BTCUSDT_TIERS: Tiers = [
    [300_000, 0.004, 0],
    [800_000, 0.005, 300],
    [3_000_000, 0.0065, 1_500],
    [12_000_000, 0.01, 12_000],
    [70_000_000, 0.02, 132_000],
    [100_000_000, 0.025, 482_000],
    [230_000_000, 0.05, 2_982_000],
    [480_000_000, 0.10, 14_482_000],
    [600_000_000, 0.125, 26_482_000],
    [800_000_000, 0.15, 41_482_000],
    [1_200_000_000, 0.25, 121_482_000],
    [1_800_000_000, 0.50, 421_482_000],
]

# BTCUSDT as announced for 2021-03-18 (125x); kept for replays of 2020-2022 events.
BINANCE_BTCUSDT_TIERS_2021: Tiers = [
    [50_000, 0.004, 0],
    [250_000, 0.005, 50],
    [1_000_000, 0.01, 1_300],
    [10_000_000, 0.025, 16_300],
    [20_000_000, 0.05, 266_300],
    [50_000_000, 0.10, 1_266_300],
    [100_000_000, 0.125, 2_516_300],
    [200_000_000, 0.15, 5_016_300],
    [300_000_000, 0.25, 25_016_300],
    [500_000_000, 0.50, 100_016_300],
]

# ETHUSDT as of 2025-08-19.
BINANCE_ETHUSDT_TIERS: Tiers = [
    [300_000, 0.004, 0],
    [800_000, 0.005, 300],
    [3_000_000, 0.0065, 1_500],
    [12_000_000, 0.01, 12_000],
    [50_000_000, 0.02, 132_000],
    [65_000_000, 0.025, 382_000],
    [150_000_000, 0.05, 2_007_000],
    [320_000_000, 0.10, 9_507_000],
    [400_000_000, 0.125, 17_507_000],
    [530_000_000, 0.15, 27_507_000],
    [800_000_000, 0.25, 80_507_000],
    [1_200_000_000, 0.50, 280_507_000],
]

# SOLUSDT, brackets update time 2025-06-23.
BINANCE_SOLUSDT_TIERS: Tiers = [
    [50_000, 0.005, 0],
    [400_000, 0.0065, 75],
    [1_000_000, 0.01, 1_475],
    [4_000_000, 0.02, 11_475],
    [8_000_000, 0.025, 31_475],
    [40_000_000, 0.05, 231_475],
    [80_000_000, 0.10, 2_231_475],
    [100_000_000, 0.125, 4_231_475],
    [200_000_000, 0.25, 16_731_475],
    [400_000_000, 0.50, 66_731_475],
]

# XRPUSDT, brackets update time 2025-07-17.
BINANCE_XRPUSDT_TIERS: Tiers = [
    [40_000, 0.005, 0],
    [80_000, 0.006, 40],
    [150_000, 0.01, 360],
    [400_000, 0.0125, 735],
    [1_000_000, 0.02, 3_735],
    [2_000_000, 0.025, 8_735],
    [10_000_000, 0.05, 58_735],
    [20_000_000, 0.10, 558_735],
    [25_000_000, 0.125, 1_058_735],
    [50_000_000, 0.25, 4_183_735],
    [100_000_000, 0.50, 16_683_735],
]

# DOGEUSDT, 2025 (transcription without a capture date).
BINANCE_DOGEUSDT_TIERS: Tiers = [
    [80_000, 0.0065, 0],
    [150_000, 0.01, 280],
    [750_000, 0.0125, 655],
    [2_000_000, 0.02, 6_280],
    [4_000_000, 0.025, 16_280],
    [20_000_000, 0.05, 116_280],
    [40_000_000, 0.10, 1_116_280],
    [50_000_000, 0.125, 2_116_280],
    [100_000_000, 0.25, 8_366_280],
    [200_000_000, 0.50, 33_366_280],
]

# BNBUSDT (transcription; its stated capture date is not verifiable, see the doc).
BINANCE_BNBUSDT_TIERS: Tiers = [
    [10_000, 0.005, 0],
    [200_000, 0.006, 10],
    [400_000, 0.01, 810],
    [1_500_000, 0.02, 4_810],
    [3_000_000, 0.025, 12_310],
    [15_000_000, 0.05, 87_310],
    [30_000_000, 0.10, 837_310],
    [37_500_000, 0.125, 1_587_310],
    [75_000_000, 0.25, 6_274_810],
    [150_000_000, 0.50, 25_024_810],
]

# Mid-cap altcoin table (75x) that Binance applied in 2021 to ADA, BNB, DOT, EOS, ETC, LINK,
# LTC, TRX, XLM, XMR, XRP, XTZ, BCH: the crypto class default (for ADA, LINK, LTC, AVAX,
# APT, ARB, ATOM and any crypto symbol without its own table).
BINANCE_MIDCAP_ALT_TIERS_2021: Tiers = [
    [10_000, 0.0065, 0],
    [50_000, 0.01, 35],
    [250_000, 0.02, 535],
    [1_000_000, 0.05, 8_035],
    [2_000_000, 0.10, 58_035],
    [5_000_000, 0.125, 108_035],
    [10_000_000, 0.15, 233_035],
    [5_000_000_000, 0.25, 1_233_035],
]

# Small-cap altcoin table (50x) from Binance's announcement for 2025-09-15 (HIVE, POWR, SIREN,
# BNT, SQD, SKYAI "after" column). The announcement gives rates only: the amounts follow from
# continuity. Not used by the bundled symbols; for new listings.
BINANCE_SMALLCAP_ALT_TIERS_2025: Tiers = [
    [5_000, 0.015, 0],
    [10_000, 0.025, 50],
    [20_000, 0.05, 300],
    [50_000, 0.10, 1_300],
    [250_000, 0.125, 2_550],
    [4_500_000, 0.1667, 12_975],
    [7_500_000, 0.25, 387_825],
    [12_500_000, 0.50, 2_262_825],
]

# Bybit BTCUSDT risk-limit tiers as published on Bybit's "Margin Parameters" page (first 20
# tiers shown there; Bybit publishes the deduction itself). Cross-check only.
BYBIT_BTCUSDT_TIERS: Tiers = [
    [2_000_000, 0.005, 0],
    [2_600_000, 0.0056, 1_200],
    [3_200_000, 0.0063, 3_020],
    [3_800_000, 0.0067, 4_300],
    [4_400_000, 0.0071, 5_820],
    [5_000_000, 0.0077, 8_460],
    [5_600_000, 0.0091, 15_460],
    [8_500_000, 0.01, 20_500],
    [10_000_000, 0.013, 46_000],
    [14_000_000, 0.015, 66_000],
    [20_000_000, 0.016, 80_000],
    [28_000_000, 0.02, 160_000],
    [38_000_000, 0.025, 300_000],
    [50_000_000, 0.029, 452_000],
    [55_000_000, 0.03, 502_000],
    [60_000_000, 0.035, 777_000],
    [65_000_000, 0.036, 837_000],
    [70_000_000, 0.038, 967_000],
    [75_000_000, 0.04, 1_107_000],
    [80_000_000, 0.045, 1_482_000],
]

VENUE_TIER_TABLES: dict[str, Tiers] = {
    "BINANCE_BTCUSDT_TIERS": BINANCE_BTCUSDT_TIERS,
    "BINANCE_BTCUSDT_TIERS_2021": BINANCE_BTCUSDT_TIERS_2021,
    "BINANCE_ETHUSDT_TIERS": BINANCE_ETHUSDT_TIERS,
    "BINANCE_SOLUSDT_TIERS": BINANCE_SOLUSDT_TIERS,
    "BINANCE_XRPUSDT_TIERS": BINANCE_XRPUSDT_TIERS,
    "BINANCE_DOGEUSDT_TIERS": BINANCE_DOGEUSDT_TIERS,
    "BINANCE_BNBUSDT_TIERS": BINANCE_BNBUSDT_TIERS,
    "BINANCE_MIDCAP_ALT_TIERS_2021": BINANCE_MIDCAP_ALT_TIERS_2021,
    "BINANCE_SMALLCAP_ALT_TIERS_2025": BINANCE_SMALLCAP_ALT_TIERS_2025,
    "BYBIT_BTCUSDT_TIERS": BYBIT_BTCUSDT_TIERS,
}

# Binance USDⓈ-M fees (docs/instruments.md, "Crypto").
BINANCE_TAKER_FEE_VIP0 = 0.0005
BINANCE_LIQUIDATION_FEE_BTC_ETH = 0.0125  # exchangeInfo "liquidationFee", BTCUSDT/ETHUSDT/XRPUSDT
BINANCE_LIQUIDATION_FEE_ALT = 0.015  # LTCUSDT/BCHUSDT/SOLUSDT; alts range 1.0%-2.0%

# --- ESMA product intervention on retail CFDs (docs/instruments.md, "ESMA") -------------------
# Minimum initial margin by underlying (leverage 30:1 ... 2:1) and the margin close-out rule:
# positions are closed when equity falls to 50% of the initial margin, so mmr = 0.5 * initial.
ESMA_INITIAL_MARGIN: dict[str, float] = {
    "major_fx": 1 / 30,
    "non_major_fx": 0.05,
    "gold": 0.05,
    "major_index": 0.05,
    "non_major_index": 0.10,
    "commodity": 0.10,
    "equity": 0.20,
    "crypto": 0.50,
}
ESMA_CLOSE_OUT_FRACTION = 0.5
ESMA_MAJOR_CURRENCIES = frozenset({"USD", "EUR", "JPY", "GBP", "CAD", "CHF"})
ESMA_MAJOR_INDICES = frozenset(
    {"FTSE 100", "CAC 40", "DAX", "DJIA", "S&P 500", "NASDAQ", "NASDAQ 100", "Nikkei 225",
     "ASX 200", "EURO STOXX 50"}
)


def esma_tiers(category: str) -> Tiers:
    """One flat tier whose rate is the ESMA close-out level for ``category``."""
    return [[None, ESMA_CLOSE_OUT_FRACTION * ESMA_INITIAL_MARGIN[category], 0.0]]


# --- US stock margin (docs/instruments.md, "Equity") -----------------------------------------
REG_T_INITIAL_MARGIN = 0.50
FINRA_4210_MAINTENANCE_LONG = 0.25
FINRA_4210_MAINTENANCE_SHORT = 0.30  # stocks at or above $5; the contract keeps one rate

ASSET_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    # docs/instruments.md, "Crypto"
    "crypto": {
        "tiers": BINANCE_MIDCAP_ALT_TIERS_2021,
        "taker_fee": BINANCE_TAKER_FEE_VIP0,
        "liquidation_fee": BINANCE_LIQUIDATION_FEE_ALT,
        "latency_bars": 0,
        "slippage_to_extreme": 0.1,
        "impact_coef": 1.0,
        "depth_notional": None,
        "bar_length": None,  # inferred from the bars (a symbol can come at 5m, 1h and 4h)
    },
    # docs/instruments.md, "FX"
    "fx": {
        "tiers": esma_tiers("major_fx"),
        "taker_fee": 0.0001,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.5,
        "impact_coef": 1.0,
        "depth_notional": 1e8,
        "bar_length": None,
    },
    # docs/instruments.md, "Equity"
    "equity": {
        "tiers": [[None, FINRA_4210_MAINTENANCE_LONG, 0.0]],
        "taker_fee": 0.0001,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.1,
        "impact_coef": 1.0,
        "depth_notional": None,
        "bar_length": None,
    },
    # docs/instruments.md, "Commodity"
    "commodity": {
        "tiers": esma_tiers("commodity"),
        "taker_fee": 0.0002,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.1,
        "impact_coef": 1.0,
        "depth_notional": 2e8,
        "bar_length": None,
    },
    # docs/instruments.md, "Index"
    "index": {
        "tiers": esma_tiers("major_index"),
        "taker_fee": 0.0001,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.1,
        "impact_coef": 1.0,
        "depth_notional": 2e8,
        "bar_length": None,
    },
}
