"""Venue parameters per asset class, used wherever an instrument leaves a key out.

Every value and its source are documented in ``docs/instruments.md``.
"""

from typing import Any

ASSET_CLASSES = ("crypto", "fx", "equity", "commodity", "index")

# Provisional values; docs/instruments.md holds the sources.
ASSET_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "crypto": {
        "tiers": [[50_000.0, 0.004, 0.0], [None, 0.005, 50.0]],
        "taker_fee": 0.0005,
        "liquidation_fee": 0.0125,
        "latency_bars": 0,
        "slippage_to_extreme": 0.1,
        "impact_coef": 1.0,
        "depth_notional": None,
    },
    "fx": {
        "tiers": [[None, 1 / 60, 0.0]],
        "taker_fee": 0.00002,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.5,
        "impact_coef": 1.0,
        "depth_notional": 1e10,
    },
    "equity": {
        "tiers": [[None, 0.25, 0.0]],
        "taker_fee": 0.0,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.05,
        "impact_coef": 1.0,
        "depth_notional": None,
    },
    "commodity": {
        "tiers": [[None, 0.05, 0.0]],
        "taker_fee": 0.0001,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.1,
        "impact_coef": 1.0,
        "depth_notional": 1e9,
    },
    "index": {
        "tiers": [[None, 0.025, 0.0]],
        "taker_fee": 0.0001,
        "liquidation_fee": 0.0,
        "latency_bars": 0,
        "slippage_to_extreme": 0.1,
        "impact_coef": 1.0,
        "depth_notional": 5e9,
    },
}
