"""pandera models of the project's frames, checked at pipeline boundaries (not inside loops).

``Bars`` is the normalised bars frame that ``liqrisk.pipelines.bars.read_bars`` returns
and everything downstream (features, the replay engine) may rely on.
"""

from typing import Annotated

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series


class Bars(pa.DataFrameModel):
    """Normalised OHLCV bars, one row per (symbol, bar open time).

    - ``symbol``: ``category`` with string categories (the house style for symbols:
      one dictionary per frame, cheap grouping; pandas 3 groups categoricals with
      ``observed=True`` by default, so unused categories never show up as empty groups).
    - ``ts``: the bar's OPEN time, ``datetime64[us, UTC]``.
    - ``open``/``high``/``low``/``close``: ``float64``, never NaN (a missing price makes
      the file invalid, liquidation contract, "Malformed input").
    - ``volume``: ``float64``, NaN where the source has none (FX, mark prices).

    Frame-level guarantees: columns in this order and no others, no duplicate
    ``(symbol, ts)``, ``high >= low``. OHLC consistency (``high >= max(open, close)``)
    and positive prices are NOT part of the type: the replay contract accepts bars
    that fail them (``checks="contract"``), so they are loader checks, not schema ones.
    """

    symbol: Series[pd.CategoricalDtype] = pa.Field(nullable=False)
    ts: Series[Annotated[pd.DatetimeTZDtype, "us", "UTC"]] = pa.Field(nullable=False)
    open: Series[np.float64] = pa.Field(nullable=False)
    high: Series[np.float64] = pa.Field(nullable=False)
    low: Series[np.float64] = pa.Field(nullable=False)
    close: Series[np.float64] = pa.Field(nullable=False)
    volume: Series[np.float64] = pa.Field(nullable=True)

    class Config:
        strict = True
        ordered = True
        unique = ["symbol", "ts"]

    @pa.check("symbol", name="string_categories")
    def _string_categories(cls, symbol: Series) -> bool:
        return pd.api.types.is_string_dtype(symbol.cat.categories)

    @pa.dataframe_check(name="high_not_below_low")
    def _high_not_below_low(cls, df: pd.DataFrame) -> Series[bool]:
        return df["high"] >= df["low"]


BARS_COLUMNS: tuple[str, ...] = ("symbol", "ts", "open", "high", "low", "close", "volume")
