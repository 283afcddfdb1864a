"""LightGBM predictions of a few rows without ``Booster.predict``'s per-call set-up.

``Booster.predict`` on one row of a 200-tree model took 86 µs, of which the trees are about 10:
the rest is the Python wrapper and the C++ predictor it builds on every call. A service
answering one account makes five such calls (four models and TreeSHAP). LightGBM's C API has a
single-row path for this (``LGBM_BoosterPredictForMatSingleRowFast``, set up once per booster
and output in a ``FastConfig``): 14.5 µs for the same row and the same number, because it runs
the same predictor. :func:`predict` uses it for up to :data:`FEW_ROWS` rows on one thread and
``Booster.predict`` otherwise; the tests hold both equal to the last bit.

The C API is LightGBM's public one; the handles and error check come from ``lightgbm.basic``
(``_LIB``, ``_safe_call``, ``_c_str``), private names the package has kept since 3.x.
"""

import ctypes
import threading
import weakref
from typing import Literal

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _c_str, _safe_call

Output = Literal["raw", "normal", "contrib"]
FEW_ROWS = 16  # up to this many rows on one thread, a row-by-row fast call each
_PREDICT_TYPE = {"normal": 0, "raw": 1, "contrib": 3}  # C_API_PREDICT_NORMAL, _RAW_SCORE, _CONTRIB
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


def predict(booster: lgb.Booster, matrix: np.ndarray, output: Output, num_threads: int) -> np.ndarray:
    """``booster.predict(matrix, raw_score=output == "raw", pred_contrib=output == "contrib",
    num_threads=num_threads)``: the same numbers, in the same shape."""
    if num_threads == 1 and 0 < len(matrix) <= FEW_ROWS and matrix.ndim == 2:
        return _fast(booster, output, matrix.shape[1]).predict(matrix)
    return booster.predict(
        matrix,
        raw_score=output == "raw",
        pred_contrib=output == "contrib",
        num_threads=num_threads,
    )


class _FastRows:
    """One booster's ``FastConfig`` for one output and row width; freed with this object."""

    def __init__(self, booster: lgb.Booster, output: Output, ncol: int) -> None:
        handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_TYPE[output]),
                ctypes.c_int(0),  # start_iteration
                ctypes.c_int(-1),  # num_iteration: all
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(ncol),
                _c_str("num_threads=1"),
                ctypes.byref(handle),
            )
        )
        self._handle = handle
        self._finalizer = weakref.finalize(self, _LIB.LGBM_FastConfigFree, handle)
        self.ncol = ncol
        self.width = ncol + 1 if output == "contrib" else 1  # outputs per row

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(matrix, dtype=np.float64)
        out = np.empty(len(rows) * self.width)
        length = ctypes.c_int64(0)
        base, out_base, step = rows.ctypes.data, out.ctypes.data, self.ncol * 8
        for i in range(len(rows)):
            _safe_call(
                _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle,
                    ctypes.c_void_p(base + i * step),
                    ctypes.byref(length),
                    ctypes.c_void_p(out_base + i * self.width * 8),
                )
            )
        return out if self.width == 1 else out.reshape(len(rows), self.width)


_CONFIGS: "weakref.WeakKeyDictionary[lgb.Booster, dict[tuple[str, int], _FastRows]]" = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()  # set-up only; LightGBM locks the predictor of each call itself


def _fast(booster: lgb.Booster, output: Output, ncol: int) -> _FastRows:
    configs = _CONFIGS.get(booster)
    fast = None if configs is None else configs.get((output, ncol))
    if fast is None:
        with _LOCK:
            configs = _CONFIGS.setdefault(booster, {})
            fast = configs.get((output, ncol))
            if fast is None:
                fast = configs[(output, ncol)] = _FastRows(booster, output, ncol)
    return fast
